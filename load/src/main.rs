//! `omemo-load`: simulated OMEMO users against an echo peer on a throwaway Prosody.
//!
//! N users with M devices each (omemo-tokio clients in this process, every device new, so
//! the run starts with first contacts) keep W messages in flight each against `omemo-bot
//! run`, and against the slixmpp-omemo echo peer of the tests in the same run. Printed per
//! peer: echoes per second, round-trip latency (p50, p99, max), the peer's CPU time per
//! echoed message and its peak RSS (from the kernel's accounting of the process), and the
//! messages lost. `scripts/load` builds everything in release mode and runs it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use jid::BareJid;
use omemo::{Event, Manager, ManagerConfig, MemoryStore, Version, Versions, Via};
use omemo_tokio::{Client, ClientConfig, ClientEvent, Login, ServerAddr};
use tokio::time::Instant;

/// The password of every throwaway account.
const PASSWORD: &str = "load-test-password";

#[derive(Debug, Parser)]
#[command(
    name = "omemo-load",
    about = "Simulated OMEMO users against echo peers on a throwaway Prosody"
)]
struct Args {
    /// Simulated users (accounts).
    #[arg(long, default_value_t = 2)]
    users: usize,
    /// Devices per user; every one gets each echo, the first one sends.
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// Messages each user keeps in flight.
    #[arg(long, default_value_t = 10)]
    in_flight: usize,
    /// Messages each user sends.
    #[arg(long, default_value_t = 500)]
    messages: usize,
    /// Which echo peers to measure.
    #[arg(long, value_enum, default_value_t = Peers::Both)]
    against: Peers,
    /// The OMEMO version the users speak.
    #[arg(long, value_enum, default_value_t = UserVersion::Legacy)]
    version: UserVersion,
    /// The omemo-bot binary.
    #[arg(long, default_value = "target/release/omemo-bot")]
    bot: PathBuf,
    /// The Python of the venv with slixmpp-omemo (scripts/setup-test-env).
    #[arg(long, default_value = ".venv/bin/python")]
    python: PathBuf,
    /// Seconds a peer has for the whole load.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Sessions (each with its device record) put into the bot's store before it starts,
    /// as a long-running bot has them: start-up, memory and commits must not grow with
    /// them.
    #[arg(long, default_value_t = 0)]
    store_sessions: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Peers {
    Bot,
    Slixmpp,
    Both,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum UserVersion {
    Legacy,
    Omemo2,
}

impl UserVersion {
    fn version(self) -> Version {
        match self {
            Self::Legacy => Version::Legacy,
            Self::Omemo2 => Version::Omemo2,
        }
    }

    fn flavour(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::Omemo2 => "omemo2",
        }
    }
}

type Failure = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("omemo-load: {error}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("omemo-load: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the load against each peer; whether no message was lost.
async fn run(args: Args) -> Result<bool, Failure> {
    let server = Server::start()?;
    let mut reports = Vec::new();
    if args.against != Peers::Slixmpp {
        reports.push(measure(&args, &server, PeerKind::Bot).await?);
    }
    if args.against != Peers::Bot {
        reports.push(measure(&args, &server, PeerKind::Slixmpp).await?);
    }
    println!(
        "\n{} users x {} device(s), {} in flight each, {} messages each, users speak {}; \
         {} other sessions in the bot's store",
        args.users,
        args.devices,
        args.in_flight,
        args.messages,
        args.version.flavour(),
        args.store_sessions
    );
    println!(
        "{:<10} {:>7} {:>6} {:>9} {:>8} {:>8} {:>8} {:>12} {:>9} {:>5}",
        "peer",
        "echoes",
        "secs",
        "echoes/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "CPU µs/echo",
        "peak MiB",
        "lost"
    );
    for report in &reports {
        report.print();
    }
    for report in &reports {
        println!(
            "{}: ready {:.0} ms after its start; first echo (a first contact) after {:.1} ms",
            report.peer.name(),
            report.start_up.as_secs_f64() * 1e3,
            report.first_echo.as_secs_f64() * 1e3
        );
        if let Some((plain, omemo)) = report.one_at_a_time {
            println!(
                "{}: one message at a time, median round trip: unencrypted {:.2} ms, OMEMO {:.2} ms, OMEMO adds {:.2} ms",
                report.peer.name(),
                plain.as_secs_f64() * 1e3,
                omemo.as_secs_f64() * 1e3,
                (omemo.as_secs_f64() - plain.as_secs_f64()) * 1e3
            );
        }
    }
    println!(
        "(the load tool itself, one thread for every user: {:.1} s of CPU; round trips include its work)",
        own_cpu()?.as_secs_f64()
    );
    if let [bot, slixmpp] = reports.as_slice() {
        println!(
            "CPU per echo: slixmpp-omemo / omemo-bot = {:.1}x",
            slixmpp.cpu_per_echo_us() / bot.cpu_per_echo_us()
        );
    }
    Ok(reports.iter().all(|r| r.lost == 0))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PeerKind {
    Bot,
    Slixmpp,
}

impl PeerKind {
    fn name(self) -> &'static str {
        match self {
            Self::Bot => "omemo-bot",
            Self::Slixmpp => "slixmpp",
        }
    }
}

struct Report {
    peer: PeerKind,
    echoes: usize,
    lost: usize,
    elapsed: Duration,
    cpu: Duration,
    peak_rss_kib: u64,
    /// Round trips, sorted.
    rtts: Vec<Duration>,
    /// From the process start to its ready line.
    start_up: Duration,
    /// The round trip of the first message of the first user.
    first_echo: Duration,
    /// Medians of one message at a time, unencrypted and OMEMO (omemo-bot only).
    one_at_a_time: Option<(Duration, Duration)>,
}

impl Report {
    fn cpu_per_echo_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.echoes.max(1) as f64
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.rtts.is_empty() {
            return f64::NAN;
        }
        let index = ((self.rtts.len() - 1) as f64 * p).round() as usize;
        self.rtts[index].as_secs_f64() * 1e3
    }

    fn print(&self) {
        println!(
            "{:<10} {:>7} {:>6.1} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>12.0} {:>9.1} {:>5}",
            self.peer.name(),
            self.echoes,
            self.elapsed.as_secs_f64(),
            self.echoes as f64 / self.elapsed.as_secs_f64(),
            self.percentile(0.5),
            self.percentile(0.99),
            self.percentile(1.0),
            self.cpu_per_echo_us(),
            self.peak_rss_kib as f64 / 1024.0,
            self.lost
        );
    }
}

/// One load against one echo peer.
async fn measure(args: &Args, server: &Server, kind: PeerKind) -> Result<Report, Failure> {
    let tag = kind.name().replace('-', "");
    let echo: BareJid = format!("echo-{tag}@localhost").parse()?;
    server.add_user(&echo)?;
    if kind == PeerKind::Bot && args.store_sessions > 0 {
        fill_store(&server.dir.join("bot.db"), &echo, args.store_sessions)?;
    }
    let peer = EchoPeer::start(args, server, kind, &echo)?;
    let mut users = Vec::new();
    for u in 0..args.users {
        let jid: BareJid = format!("user{u}-{tag}@localhost").parse()?;
        server.add_user(&jid)?;
        let mut devices = Vec::new();
        for _ in 0..args.devices {
            devices.push(online_client(server, &jid, args.version.version()).await?);
        }
        users.push(devices);
    }
    eprintln!(
        "omemo-load: {} online, {} users ready; measuring",
        kind.name(),
        args.users
    );
    let cpu_before = peer.cpu()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    let mut tasks = Vec::new();
    // First contacts take turns (see `UserLoad::turn`); the first user's turn is now.
    let (first_turn, mut turn) = tokio::sync::oneshot::channel();
    let _ = first_turn.send(());
    for (u, devices) in users.into_iter().enumerate() {
        let mut devices = devices.into_iter();
        let Some(sender) = devices.next() else {
            continue;
        };
        for other in devices {
            tokio::task::spawn_local(drain(other));
        }
        let (pass_turn, next_turn) = tokio::sync::oneshot::channel();
        let load = UserLoad {
            user: u,
            echo: echo.clone(),
            messages: args.messages,
            in_flight: args.in_flight,
            deadline,
            turn: std::mem::replace(&mut turn, next_turn),
            pass_turn,
        };
        tasks.push(tokio::task::spawn_local(load.run(sender)));
    }
    let mut rtts = Vec::new();
    let mut lost = 0;
    let mut first_echo = Duration::ZERO;
    for task in tasks {
        let (user_rtts, user_lost) = task.await??;
        if rtts.is_empty() {
            first_echo = user_rtts.first().copied().unwrap_or_default();
        }
        rtts.extend(user_rtts);
        lost += user_lost;
    }
    let elapsed = started.elapsed();
    let cpu = peer.cpu()?.saturating_sub(cpu_before);
    let peak_rss_kib = peer.peak_rss_kib()?;
    let one_at_a_time = match kind {
        PeerKind::Bot => {
            let jid: BareJid = format!("latency-{tag}@localhost").parse()?;
            server.add_user(&jid)?;
            let client = online_client(server, &jid, args.version.version()).await?;
            Some(one_at_a_time(client, &echo, deadline).await?)
        }
        PeerKind::Slixmpp => None,
    };
    let start_up = peer.start_up;
    drop(peer);
    rtts.sort();
    Ok(Report {
        peer: kind,
        echoes: rtts.len(),
        lost,
        elapsed,
        cpu,
        peak_rss_kib,
        rtts,
        start_up,
        first_echo,
        one_at_a_time,
    })
}

/// Round trips sent in a latency probe of each kind.
const PROBES: usize = 100;

/// The median round trips of unencrypted and of OMEMO messages sent one at a time (after
/// a first OMEMO message that makes the session).
async fn one_at_a_time(
    mut client: Client<MemoryStore>,
    echo: &BareJid,
    deadline: Instant,
) -> Result<(Duration, Duration), Failure> {
    let mut plain = Vec::with_capacity(PROBES);
    let mut omemo = Vec::with_capacity(PROBES);
    for i in 0..=PROBES {
        let text = format!("probe {i}");
        let sent = Instant::now();
        client.send_encrypted(std::slice::from_ref(echo), &text)?;
        wait_for(&mut client, deadline, |event| match event {
            ClientEvent::Message { message, .. } => message.body.as_deref() == Some(text.as_str()),
            _ => false,
        })
        .await?;
        if i > 0 {
            omemo.push(sent.elapsed());
        }
        let sent = Instant::now();
        client.send_plain(echo.as_str(), &text).await?;
        wait_for(&mut client, deadline, |event| match event {
            ClientEvent::Plain { body, .. } => *body == text,
            _ => false,
        })
        .await?;
        plain.push(sent.elapsed());
    }
    client.close().await;
    plain.sort();
    omemo.sort();
    Ok((plain[PROBES / 2], omemo[PROBES / 2]))
}

/// Drives `client` until an event that `done` accepts.
async fn wait_for(
    client: &mut Client<MemoryStore>,
    deadline: Instant,
    done: impl Fn(&ClientEvent) -> bool,
) -> Result<(), Failure> {
    loop {
        match client.next_until(deadline).await? {
            Some(event) if done(&event) => return Ok(()),
            Some(_) => {}
            None => return Err("no echo before the deadline".into()),
        }
    }
}

/// Creates the bot's account in the store at `path` and adds `count` sessions, each with
/// a device record of its own JID (one real session state, repeated).
fn fill_store(path: &std::path::Path, bot: &BareJid, count: usize) -> Result<(), Failure> {
    use omemo::hazmat::{IdentityKeyPair, PreKey, PreKeyBundle, Session, SignedPreKey};
    use omemo::{Batch, DeviceRecord, Op, SqliteStore, Store, Trust};

    let mut rng = omemo::os_rng();
    let store = SqliteStore::open(path)?;
    let manager = Manager::open(
        store,
        bot,
        ManagerConfig::default(),
        &mut rng,
        omemo_tokio::unix_now(),
    )?;
    let mut store = manager.into_store()?;
    let own = IdentityKeyPair::generate(&mut rng);
    let peer = IdentityKeyPair::generate(&mut rng);
    let signed = SignedPreKey::generate(Version::Legacy, &mut rng, &peer, 1);
    let bundle = PreKeyBundle::new(&peer, &signed, &[PreKey::generate(&mut rng, 1)]);
    let mut session = Session::initiate(&mut rng, &own, &bundle)?;
    session.encrypt(b"a message")?;
    let state = session.to_bytes();
    let identity_key = Some(*peer.identity_key().curve25519().as_bytes());
    let mut batch = Batch::default();
    for i in 0..count {
        let jid = format!("contact{i}@example.org");
        batch.ops.push(Op::PutDevice(DeviceRecord {
            jid: jid.clone(),
            device_id: 1,
            listed: Versions::only(Version::Legacy),
            identity_key,
            trust: Trust::Blind,
            first_seen_at: Some(omemo_tokio::unix_now()),
            left_lists_at: None,
            last_message_at: Some(omemo_tokio::unix_now()),
            bundle_failed_at: None,
            bundle_failed: Versions::NONE,
            label: None,
            label_signature: None,
        }));
        batch.ops.push(Op::PutSession {
            jid,
            device_id: 1,
            version: Version::Legacy,
            state: state.clone(),
        });
        if batch.ops.len() >= 20_000 {
            store.commit(std::mem::take(&mut batch))?;
        }
    }
    store.commit(batch)?;
    Ok(())
}

/// A user's device that logged in and published, with a fresh memory store.
async fn online_client(
    server: &Server,
    jid: &BareJid,
    version: Version,
) -> Result<Client<MemoryStore>, Failure> {
    let config = ManagerConfig {
        versions: Versions::only(version),
        ..ManagerConfig::default()
    };
    let manager = Manager::open(
        MemoryStore::new(),
        jid,
        config,
        &mut omemo::os_rng(),
        omemo_tokio::unix_now(),
    )?;
    let login = Login {
        jid: jid.clone(),
        password: PASSWORD.to_owned(),
        server: Some(ServerAddr {
            host: "127.0.0.1".to_owned(),
            port: server.port,
        }),
        plaintext: true,
    };
    let client_config = ClientConfig {
        accept_subscriptions: true,
        ..ClientConfig::default()
    };
    let mut client = Client::start(login, manager, client_config)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.next_until(deadline).await? {
            Some(ClientEvent::Online { .. }) => return Ok(client),
            Some(_) => {}
            None => return Err(format!("{jid} not online within 30 s").into()),
        }
    }
}

/// What one user sends, and until when.
struct UserLoad {
    user: usize,
    echo: BareJid,
    messages: usize,
    in_flight: usize,
    deadline: Instant,
    /// First contacts take turns: a user sends its first message when the user before
    /// it got its first echo, and the rest at full speed. Users that fetch the bot's
    /// bundle at the same moment pick from the same prekeys, and a second key exchange
    /// on a used prekey cannot be read (the bot rebuilds the session; the message is
    /// lost): a property of X3DH, shown by scenario 10 of the end-to-end tests, not a
    /// load the tool should measure.
    turn: tokio::sync::oneshot::Receiver<()>,
    pass_turn: tokio::sync::oneshot::Sender<()>,
}

impl UserLoad {
    /// Sends the messages, at most `in_flight` unanswered at a time; the round trip of
    /// each echo, and how many never came back.
    async fn run(self, mut client: Client<MemoryStore>) -> Result<(Vec<Duration>, usize), String> {
        let mut waiting: HashMap<usize, Instant> = HashMap::new();
        let mut rtts = Vec::with_capacity(self.messages);
        let mut next = 0;
        let mut pass_turn = Some(self.pass_turn);
        // The turn of a user before that failed passes on too.
        let _ = self.turn.await;
        while rtts.len() < self.messages {
            if !rtts.is_empty()
                && let Some(pass) = pass_turn.take()
            {
                let _ = pass.send(());
            }
            // One message until the first echo, then `in_flight`.
            let window = if rtts.is_empty() { 1 } else { self.in_flight };
            while waiting.len() < window && next < self.messages {
                let body = format!("load {} {next}", self.user);
                client
                    .send_encrypted(std::slice::from_ref(&self.echo), &body)
                    .map_err(|e| e.to_string())?;
                waiting.insert(next, Instant::now());
                next += 1;
            }
            let event = client
                .next_until(self.deadline)
                .await
                .map_err(|e| e.to_string())?;
            match event {
                None => break,
                Some(ClientEvent::Message {
                    message,
                    via: Via::Direct,
                }) if message.sender == self.echo.as_str() => {
                    let number = message
                        .body
                        .as_deref()
                        .and_then(|b| b.strip_prefix(&format!("load {} ", self.user)))
                        .and_then(|n| n.parse::<usize>().ok());
                    if let Some(sent) = number.and_then(|n| waiting.remove(&n)) {
                        rtts.push(sent.elapsed());
                    }
                }
                Some(ClientEvent::Omemo(Event::NotSent { error, .. })) => {
                    eprintln!(
                        "omemo-load: user {}: a message was not sent: {error}",
                        self.user
                    );
                }
                Some(ClientEvent::Undecryptable { error, .. }) => {
                    eprintln!(
                        "omemo-load: user {}: undecryptable echo: {error}",
                        self.user
                    );
                }
                Some(_) => {}
            }
        }
        let lost = self.messages - rtts.len();
        client.close().await;
        Ok((rtts, lost))
    }
}

/// Keeps a receiving-only device reading (it gets every echo too).
async fn drain(mut client: Client<MemoryStore>) {
    while client.next().await.is_ok() {}
}

/// The echo peer's process.
struct EchoPeer {
    child: Child,
    /// From the start to its ready line.
    start_up: Duration,
}

impl EchoPeer {
    fn start(args: &Args, server: &Server, kind: PeerKind, jid: &BareJid) -> Result<Self, Failure> {
        let address = format!("127.0.0.1:{}", server.port);
        let log = server.dir.join(format!("{}.log", kind.name()));
        let mut command = match kind {
            PeerKind::Bot => {
                let mut command = Command::new(&args.bot);
                command
                    .args(["run", "--echo-plaintext", "--jid", jid.as_str()])
                    .args(["--password", PASSWORD])
                    .args(["--server", &address, "--insecure-plaintext", "--store"])
                    .arg(server.dir.join("bot.db"));
                command
            }
            PeerKind::Slixmpp => {
                let mut command = Command::new(&args.python);
                command
                    .arg("tests/e2e/slixmpp_peer.py")
                    .args(["echo", "--jid", jid.as_str(), "--password", PASSWORD])
                    .args([
                        "--server",
                        &address,
                        "--omemo-version",
                        args.version.flavour(),
                    ])
                    .arg("--store")
                    .arg(server.dir.join("slixmpp-store"));
                command
            }
        };
        let out = std::fs::File::create(&log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", kind.name()))?;
        let mut peer = Self {
            child,
            start_up: Duration::ZERO,
        };
        let ready = match kind {
            PeerKind::Bot => "own device lists and bundles published",
            PeerKind::Slixmpp => "READY",
        };
        let started = std::time::Instant::now();
        loop {
            if std::fs::read_to_string(&log).is_ok_and(|text| text.contains(ready)) {
                peer.start_up = started.elapsed();
                return Ok(peer);
            }
            if let Some(status) = peer.child.try_wait()? {
                return Err(
                    format!("{} exited ({status}); see {}", kind.name(), log.display()).into(),
                );
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "{} not ready within 60 s; see {}",
                    kind.name(),
                    log.display()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// User plus system CPU time of the process (all its threads), from /proc.
    fn cpu(&self) -> Result<Duration, Failure> {
        process_cpu(&self.child.id().to_string())
    }

    /// The peak resident set size (VmHWM) in KiB.
    fn peak_rss_kib(&self) -> Result<u64, Failure> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .ok_or("no VmHWM in /proc status")?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .ok_or("bad VmHWM line")?
            .parse()?)
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        // SIGTERM: both peers stop cleanly on it.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// This process's CPU time so far.
fn own_cpu() -> Result<Duration, Failure> {
    process_cpu("self")
}

/// User plus system CPU time of process `pid` (all its threads), from /proc.
fn process_cpu(pid: &str) -> Result<Duration, Failure> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64, Failure> {
        Ok(fields.get(i).ok_or("short /proc stat")?.parse()?)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(
        total as f64 / clock_ticks_per_second()?,
    ))
}

fn clock_ticks_per_second() -> Result<f64, Failure> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// A throwaway Prosody (scripts/prosody) in a temporary directory.
struct Server {
    dir: PathBuf,
    port: u16,
}

impl Server {
    fn start() -> Result<Self, Failure> {
        let dir = std::env::temp_dir().join(format!("omemo-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let out = Command::new("scripts/prosody")
            .arg("start")
            .arg(&dir)
            .env("PROSODY_LOG_LEVEL", "info")
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "scripts/prosody start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let port = String::from_utf8(out.stdout)?.trim().parse()?;
        Ok(Self { dir, port })
    }

    fn add_user(&self, jid: &BareJid) -> Result<(), Failure> {
        let status = Command::new("scripts/prosody")
            .arg("adduser")
            .arg(&self.dir)
            .args([jid.as_str(), PASSWORD])
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            return Err(format!("could not create {jid}").into());
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("scripts/prosody")
            .arg("stop")
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status();
        if std::env::var_os("LOAD_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("omemo-load: kept {}", self.dir.display());
        }
    }
}
