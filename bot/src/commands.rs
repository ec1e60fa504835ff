//! The subcommands.

use std::time::Duration;

use jid::BareJid;
use omemo::{Trust, stanza};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use crate::cli::{
    Account, Command, Connection, DevicesArgs, FingerprintArgs, PublishArgs, RunArgs, SendArgs,
    TrustArgs,
};
use crate::error::BotError;
use crate::session::{Incoming, Session, Via, open_manager, unix_now};
use crate::uri;
use crate::xmpp::{NetEvent, Target};

/// How often the library's housekeeping runs (signed prekey rotation).
const TICK_EVERY: Duration = Duration::from_secs(3600);
/// How long `run` may take to finish what is under way after SIGINT/SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long a one-shot command waits for its last messages and requests before leaving.
const LEAVE_GRACE: Duration = Duration::from_secs(2);
/// How long `send` waits for the device lists and bundles of the recipient.
const SEND_WAIT: Duration = Duration::from_secs(30);

/// Runs a subcommand.
pub(crate) async fn dispatch(command: Command) -> Result<(), BotError> {
    match command {
        Command::Run(args) => run(args).await,
        Command::Send(args) => send(args).await,
        Command::Fingerprint(args) => fingerprint(&args),
        Command::Devices(args) => devices(args).await,
        Command::Trust(args) => set_trust(&args, Trust::Verified),
        Command::Distrust(args) => set_trust(&args, Trust::Distrusted),
        Command::Publish(args) => publish(args).await,
    }
}

fn target(account: &Account, connection: &Connection) -> Result<Target, BotError> {
    let password = match (&connection.password, &connection.password_file) {
        (Some(password), _) => password.clone(),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                BotError::Usage(format!(
                    "cannot read the password file {}: {e}",
                    path.display()
                ))
            })?;
            text.lines().next().unwrap_or_default().to_owned()
        }
        (None, None) => {
            return Err(BotError::Usage(
                "no password: give --password, OMEMO_BOT_PASSWORD or --password-file".to_owned(),
            ));
        }
    };
    if password.is_empty() {
        return Err(BotError::Usage("the password is empty".to_owned()));
    }
    if connection.insecure_plaintext && !connection.server.as_ref().is_some_and(|s| s.is_loopback())
    {
        return Err(BotError::Usage(
            "--insecure-plaintext only talks to a --server on a loopback address".to_owned(),
        ));
    }
    Ok(Target {
        jid: account.jid.clone(),
        password,
        server: connection.server.clone(),
        plaintext: connection.insecure_plaintext,
    })
}

/// Connects and waits until the own device is published (or the timeout).
async fn go_online(
    account: &Account,
    connection: &Connection,
    serve: bool,
) -> Result<Session, BotError> {
    let mut session = Session::start(target(account, connection)?, account.store.clone(), serve)?;
    let deadline = Instant::now() + Duration::from_secs(connection.connect_timeout);
    session
        .wait_until(
            deadline,
            "logging in and publishing the own device",
            Session::is_ready,
        )
        .await?;
    Ok(session)
}

/// Waits a little for what the library still wants sent, then leaves.
async fn leave(mut session: Session) {
    let deadline = Instant::now() + LEAVE_GRACE;
    if let Err(error) = session
        .wait_until(deadline, "finishing", Session::is_idle)
        .await
    {
        tracing::debug!(%error, "leaving with requests under way");
    }
    session.shutdown(Duration::from_millis(200)).await;
}

async fn run(args: RunArgs) -> Result<(), BotError> {
    let mut session = Session::start(
        target(&args.account, &args.connection)?,
        args.account.store.clone(),
        true,
    )?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval_at(Instant::now() + TICK_EVERY, TICK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    enum Wake {
        Event(Result<NetEvent, BotError>),
        Stop(&'static str),
        Tick,
        Timer,
    }
    loop {
        let timer = session
            .next_deadline()
            .unwrap_or_else(|| Instant::now() + TICK_EVERY);
        let wake = tokio::select! {
            biased;
            _ = sigterm.recv() => Wake::Stop("SIGTERM"),
            _ = sigint.recv() => Wake::Stop("SIGINT"),
            event = session.next_event() => Wake::Event(event),
            _ = tick.tick() => Wake::Tick,
            () = tokio::time::sleep_until(timer) => Wake::Timer,
        };
        let result = match wake {
            Wake::Stop(signal) => {
                tracing::info!(signal, "stopping");
                session.shutdown(STOP_GRACE).await;
                return Ok(());
            }
            Wake::Event(event) => match session.handle(event?).await {
                Ok(Some(incoming)) => serve(&mut session, incoming).await,
                Ok(None) => Ok(()),
                Err(error) => Err(error),
            },
            Wake::Tick => session.tick().await,
            Wake::Timer => session.flush().await,
        };
        match result {
            Ok(()) => {}
            Err(BotError::Closed) => return Err(BotError::Closed),
            // A stanza that could not be written (the connection is being re-established)
            // or an unusable one: the bot goes on.
            Err(error) => tracing::warn!(%error, "error while serving"),
        }
        session.take_outcomes();
    }
}

/// The echo bot's answer to one message.
async fn serve(session: &mut Session, incoming: Incoming) -> Result<(), BotError> {
    match incoming {
        Incoming::Text {
            sender,
            text,
            trust,
            via,
            device_id,
        } => {
            // Only messages addressed to this resource are answered: a carbon means another
            // resource of the account got it (and may answer it itself), so answering
            // carbons too would double every echo between two bots.
            if via != Via::Direct || sender == *session.jid() {
                return Ok(());
            }
            if trust == Trust::Distrusted {
                tracing::warn!(from = %sender, device_id, "message from a distrusted device not answered");
                return Ok(());
            }
            session.queue_message(sender, text);
            session.flush().await
        }
        Incoming::Plain { from, omemo2 } => session.send_hint(&from, omemo2).await,
    }
}

async fn send(args: SendArgs) -> Result<(), BotError> {
    let mut session = go_online(&args.account, &args.connection, false).await?;
    session.queue_message(args.to.clone(), args.text.clone());
    let deadline = Instant::now() + SEND_WAIT;
    session
        .wait_until(deadline, "sending the message", |s| !s.has_outgoing())
        .await?;
    for outcome in session.take_outcomes() {
        if let Err(why) = outcome.result {
            session.shutdown(Duration::ZERO).await;
            return Err(BotError::Failed(format!(
                "could not send to {}: {why}",
                outcome.to
            )));
        }
    }
    if let Some(secs) = args.wait_reply {
        let until = Instant::now() + Duration::from_secs(secs);
        let reply = loop {
            if Instant::now() >= until {
                break None;
            }
            match session.step(until).await? {
                Some(Incoming::Text {
                    sender, text, via, ..
                }) if sender == args.to && via != Via::CarbonSent => break Some(text),
                _ => {}
            }
        };
        match reply {
            Some(text) => println!("{text}"),
            None => {
                leave(session).await;
                return Err(BotError::NoReply(secs));
            }
        }
    }
    leave(session).await;
    Ok(())
}

fn fingerprint(args: &FingerprintArgs) -> Result<(), BotError> {
    let manager = open_manager(&args.account.jid, &args.account.store)?;
    let fingerprint = manager.fingerprint();
    let link = uri::fingerprint_uri(
        &args.account.jid,
        manager.device_id(),
        &fingerprint.to_hex(),
    );
    println!("jid: {}", args.account.jid);
    println!("device id: {}", manager.device_id());
    println!("fingerprint: {fingerprint}");
    println!("uri: {link}");
    if args.qr {
        let qr = uri::qr_code(&link).map_err(|e| BotError::Failed(format!("QR code: {e}")))?;
        println!("{qr}");
    }
    Ok(())
}

fn trust_name(trust: Trust) -> &'static str {
    match trust {
        Trust::Undecided => "undecided",
        Trust::Blind => "blind",
        Trust::Verified => "verified",
        Trust::Distrusted => "distrusted",
    }
}

/// One line of the `devices` table.
fn device_line(
    device_id: u32,
    trust: &str,
    active: bool,
    fingerprint: Option<omemo::Fingerprint>,
) -> String {
    format!(
        "{device_id:>10}  {trust:<10}  {:<8}  {}",
        if active { "active" } else { "inactive" },
        fingerprint
            .map(|f| f.to_string())
            .unwrap_or_else(|| "(identity key unknown)".to_owned())
    )
}

async fn devices(args: DevicesArgs) -> Result<(), BotError> {
    let mut session = go_online(&args.account, &args.connection, false).await?;
    let deadline = Instant::now() + Duration::from_secs(args.connection.connect_timeout);
    session.prepare(&args.of, deadline).await?;
    let devices = session.manager().devices(&args.of, unix_now())?;
    println!("devices of {}:", args.of);
    println!(
        "{:>10}  {:<10}  {:<8}  fingerprint",
        "device", "trust", "state"
    );
    if args.of == *session.jid() {
        let manager = session.manager();
        let own = device_line(
            manager.device_id(),
            "own",
            true,
            Some(manager.fingerprint()),
        );
        println!("{own}  (this device)");
    }
    for device in &devices {
        println!(
            "{}",
            device_line(
                device.device_id,
                trust_name(device.trust),
                device.active,
                device.fingerprint
            )
        );
    }
    if devices.is_empty() && args.of != *session.jid() {
        println!("(no OMEMO devices published)");
    }
    leave(session).await;
    Ok(())
}

fn set_trust(args: &TrustArgs, trust: Trust) -> Result<(), BotError> {
    let mut manager = open_manager(&args.account.jid, &args.account.store)?;
    manager.set_trust(&args.of, args.device_id, trust)?;
    println!(
        "device {} of {} is now {}",
        args.device_id,
        args.of,
        trust_name(trust)
    );
    Ok(())
}

async fn publish(args: PublishArgs) -> Result<(), BotError> {
    let mut session = go_online(&args.account, &args.connection, false).await?;
    let own: BareJid = session.jid().clone();
    let device_id = session.manager().device_id();
    let deadline = Instant::now() + Duration::from_secs(args.connection.connect_timeout);
    // Check on the server what the library published.
    let list = session
        .request(
            |id| stanza::fetch_items_iq(id, own.as_str(), stanza::legacy::DEVICE_LIST_NODE, None),
            deadline,
        )
        .await?;
    let listed = stanza::parse_items_result(&list)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|payload| stanza::legacy::parse_device_list(&payload, usize::MAX).ok())
        .flatten()
        .any(|id| id == device_id);
    let bundle = session
        .request(
            |id| {
                stanza::fetch_items_iq(
                    id,
                    own.as_str(),
                    &stanza::legacy::bundle_node(device_id),
                    None,
                )
            },
            deadline,
        )
        .await?;
    let bundle_ok = stanza::parse_items_result(&bundle)
        .ok()
        .and_then(|payloads| payloads.first().map(stanza::legacy::parse_bundle))
        .is_some_and(|b| b.is_ok());
    leave(session).await;
    if !listed || !bundle_ok {
        return Err(BotError::Failed(format!(
            "device {device_id} is {}in the device list and its bundle is {}",
            if listed { "" } else { "not " },
            if bundle_ok {
                "fine"
            } else {
                "missing or invalid"
            }
        )));
    }
    println!("published device {device_id} of {own}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lines_show_trust_state_and_fingerprint() {
        let line = device_line(42, trust_name(Trust::Blind), false, None);
        assert!(line.contains("42"));
        assert!(line.contains("blind"));
        assert!(line.contains("inactive"));
        assert!(line.contains("(identity key unknown)"));
    }
}
