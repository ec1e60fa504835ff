//! The driver against a real server: a throwaway Prosody on loopback (`scripts/prosody`,
//! which `scripts/test` installs first). Clients of both versions exchange messages
//! directly and as carbons, and come back after the server restarts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use omemo::{BareJid, Event, Manager, ManagerConfig, SqliteStore, Version, Versions, Via};
use omemo_tokio::{
    Client, ClientConfig, ClientEvent, DriverError, Login, ServerAddr, Unreachable, unix_now,
};
use tokio::sync::mpsc;
use tokio::task::LocalSet;

const PASSWORD: &str = "driver-test-password";
const WAIT: Duration = Duration::from_secs(40);

/// A Prosody in a temporary directory, stopped on drop.
struct Prosody {
    dir: PathBuf,
    port: u16,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/prosody")
}

impl Prosody {
    fn start(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("omemo-tokio-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let output = Command::new(script())
            .arg("start")
            .arg(&dir)
            .env("PROSODY_LOG_LEVEL", "info")
            .output()
            .expect("scripts/prosody runs (scripts/prosody install puts Prosody in place)");
        assert!(
            output.status.success(),
            "Prosody did not start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let port = String::from_utf8(output.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        Self { dir, port }
    }

    fn add_user(&self, jid: &str) {
        let status = Command::new(script())
            .arg("adduser")
            .arg(&self.dir)
            .arg(jid)
            .arg(PASSWORD)
            .status()
            .unwrap();
        assert!(status.success(), "could not create {jid}");
    }

    fn stop(&self) {
        let status = Command::new(script())
            .arg("stop")
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn restart(&self) {
        self.stop();
        self.start_again_on(self.port);
    }

    /// Starts the stopped server again (its accounts kept) on `port`.
    fn start_again_on(&self, port: u16) {
        let status = Command::new(script())
            .arg("start")
            .arg(&self.dir)
            .env("PROSODY_LOG_LEVEL", "info")
            .env("PROSODY_C2S_PORT", port.to_string())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "Prosody did not come back");
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the test asks a running client to do.
enum Order {
    Send(BareJid, String),
    /// Go offline, keep serving for a moment, then say whether the client is ready (on
    /// its device lists and available).
    GoOffline(tokio::sync::oneshot::Sender<bool>),
}

/// A client running in its own local task: commands in, events out.
struct Running {
    commands: mpsc::UnboundedSender<Order>,
    events: mpsc::UnboundedReceiver<ClientEvent>,
}

impl Running {
    fn send(&self, to: &str, text: &str) {
        let to = BareJid::new(to).unwrap();
        let _ = self.commands.send(Order::Send(to, text.to_owned()));
    }

    /// The first event that `pick` takes, within [`WAIT`]; the others are dropped.
    async fn expect<T>(&mut self, what: &str, pick: impl Fn(ClientEvent) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .unwrap_or_else(|| panic!("client ended while waiting for {what}"));
            if let Some(found) = pick(event) {
                return found;
            }
        }
    }

    async fn online(&mut self) {
        self.expect("online", |e| {
            matches!(e, ClientEvent::Online { .. }).then_some(())
        })
        .await;
    }

    /// The body and version of the next message from `sender` that came `via`.
    async fn message(&mut self, sender: &str, via: Via) -> (String, Version) {
        self.expect("a message", |e| match e {
            ClientEvent::Message { message, via: v } if message.sender == sender && v == via => {
                Some((message.body?, message.version))
            }
            _ => None,
        })
        .await
    }
}

/// A client of `jid` with its store in `dir`, logging in to the server on `port`.
fn client(
    dir: &Path,
    jid: &str,
    versions: Versions,
    port: u16,
    password: &str,
    unreachable: Unreachable,
) -> Client<SqliteStore> {
    let jid = BareJid::new(jid).unwrap();
    let store = SqliteStore::open(dir.join(format!("{jid}-{versions:?}.sqlite"))).unwrap();
    let config = ManagerConfig {
        versions,
        ..ManagerConfig::default()
    };
    let manager = Manager::open(store, &jid, config, &mut omemo::os_rng(), unix_now()).unwrap();
    let login = Login {
        jid,
        password: password.to_owned(),
        server: Some(ServerAddr {
            host: "127.0.0.1".to_owned(),
            port,
        }),
        plaintext: true,
    };
    let config = ClientConfig {
        unreachable,
        ..ClientConfig::default()
    };
    Client::start(login, manager, config).unwrap()
}

fn start(server: &Prosody, dir: &Path, jid: &str, versions: Versions) -> Running {
    let client = client(
        dir,
        jid,
        versions,
        server.port,
        PASSWORD,
        Unreachable::Retry,
    );
    let (commands, mut command_rx) = mpsc::unbounded_channel();
    let (event_tx, events) = mpsc::unbounded_channel();
    tokio::task::spawn_local(async move {
        let mut client: Client<SqliteStore> = client;
        loop {
            tokio::select! {
                command = command_rx.recv() => match command {
                    Some(Order::Send(to, text)) => {
                        client.send_encrypted(&[to], &text).unwrap();
                        client.flush().await.unwrap();
                    }
                    Some(Order::GoOffline(answer)) => {
                        client.go_offline().await.unwrap();
                        let until = tokio::time::Instant::now() + Duration::from_millis(500);
                        while let Some(event) = client.next_until(until).await.unwrap() {
                            let _ = event_tx.send(event);
                        }
                        let _ = answer.send(client.is_ready());
                    }
                    None => break,
                },
                event = client.next() => match event {
                    Ok(event) => {
                        if event_tx.send(event).is_err() {
                            break;
                        }
                    }
                    Err(error) => panic!("client failed: {error}"),
                },
            }
        }
        client.close().await;
    });
    Running { commands, events }
}

/// The tests run one at a time: a port the door test keeps closed must not be taken by
/// a server another test starts meanwhile.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn clients_of_both_versions_talk_through_prosody_and_survive_a_restart() {
    let _turn = one_at_a_time();
    let server = Prosody::start("talk");
    for user in ["alice@localhost", "bob@localhost"] {
        server.add_user(user);
    }
    let dir = server.dir.clone();
    LocalSet::new().block_on(&runtime(), async {
        let mut bob = start(&server, &dir, "bob@localhost", Versions::BOTH);
        bob.online().await;
        let mut alice_old = start(
            &server,
            &dir,
            "alice@localhost",
            Versions::only(Version::Legacy),
        );
        alice_old.online().await;
        let mut alice = start(&server, &dir, "alice@localhost", Versions::BOTH);
        alice.online().await;

        // Alice's dual device writes: Bob gets OMEMO 2, her legacy device a carbon.
        alice.send("bob@localhost", "hello Bob");
        let sent = alice
            .expect("Sent", |e| match e {
                ClientEvent::Omemo(Event::Sent { recipients, .. }) => Some(recipients),
                _ => None,
            })
            .await;
        assert!(
            sent.iter()
                .any(|r| r.jid == "bob@localhost" && r.version == Version::Omemo2)
        );
        assert!(
            sent.iter()
                .any(|r| r.jid == "alice@localhost" && r.version == Version::Legacy)
        );
        assert_eq!(
            bob.message("alice@localhost", Via::Direct).await,
            ("hello Bob".to_owned(), Version::Omemo2)
        );
        assert_eq!(
            alice_old.message("alice@localhost", Via::CarbonSent).await,
            ("hello Bob".to_owned(), Version::Legacy)
        );
        // Bob answers the account: each of Alice's devices reads it in its version.
        bob.send("alice@localhost", "hello Alice");
        assert_eq!(
            alice.message("bob@localhost", Via::Direct).await,
            ("hello Alice".to_owned(), Version::Omemo2)
        );
        assert_eq!(
            alice_old.message("bob@localhost", Via::Direct).await,
            ("hello Alice".to_owned(), Version::Legacy)
        );

        // The server restarts: every client logs in again, republishes, and goes on.
        server.restart();
        bob.online().await;
        alice.online().await;
        alice_old.online().await;
        alice_old.send("bob@localhost", "after the restart");
        assert_eq!(
            bob.message("alice@localhost", Via::Direct).await,
            ("after the restart".to_owned(), Version::Legacy)
        );
        // A legacy-only device writes legacy to everyone, its own other devices too.
        assert_eq!(
            alice.message("alice@localhost", Via::CarbonSent).await,
            ("after the restart".to_owned(), Version::Legacy)
        );

        // Going offline is final: the client does not announce itself again while it
        // finishes what is under way.
        let (answer, ready) = tokio::sync::oneshot::channel();
        let _ = bob.commands.send(Order::GoOffline(answer));
        assert!(!ready.await.unwrap(), "available again after go_offline");
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A port nothing listens on (just released by the kernel).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn a_refused_login_fails_at_once_and_an_absent_server_fails_or_is_waited_for() {
    let _turn = one_at_a_time();
    let server = Prosody::start("door");
    server.add_user("alice@localhost");
    let dir = server.dir.clone();
    LocalSet::new().block_on(&runtime(), async {
        // A wrong password is final, even for a client that waits for its server.
        let started = std::time::Instant::now();
        let mut wrong = client(
            &dir,
            "alice@localhost",
            Versions::BOTH,
            server.port,
            "not-the-password",
            Unreachable::Retry,
        );
        match wrong.next().await {
            Err(DriverError::AuthFailed { jid, reason }) => {
                assert_eq!(jid.as_str(), "alice@localhost");
                assert_eq!(reason, "not-authorized");
            }
            other => panic!("expected AuthFailed, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(wrong.next().await, Err(DriverError::Closed)));
        drop(wrong);

        // Nothing listens: a one-shot client says so at once.
        let port = closed_port();
        let started = std::time::Instant::now();
        let mut absent = client(
            &dir,
            "alice@localhost",
            Versions::BOTH,
            port,
            PASSWORD,
            Unreachable::Fail,
        );
        match absent.next().await {
            Err(DriverError::Unreachable { server, reason }) => {
                assert_eq!(server, format!("127.0.0.1:{port}"));
                assert!(reason.to_lowercase().contains("refused"), "{reason}");
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        drop(absent);

        // A service waits for its server, and comes online once it is there (its account
        // exists before: a login between the start and the account would be refused,
        // which is final).
        let late = Prosody::start("door-late");
        late.add_user("alice@localhost");
        late.stop();
        let port = closed_port();
        let mut waiting = client(
            &dir,
            "alice@localhost",
            Versions::BOTH,
            port,
            PASSWORD,
            Unreachable::Retry,
        );
        let soon = tokio::time::Instant::now() + Duration::from_millis(1500);
        assert!(matches!(waiting.next_until(soon).await, Ok(None)));
        late.start_again_on(port);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match waiting.next_until(deadline).await {
                Ok(Some(ClientEvent::Online { .. })) => break,
                Ok(Some(_)) => {}
                other => panic!("not online once the server came: {other:?}"),
            }
        }
        waiting.close().await;
    });
}
