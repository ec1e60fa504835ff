//! The subcommands, on the [`omemo_tokio::Client`] driver.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use jid::BareJid;
use omemo::stanza::{self, legacy, omemo2};
use omemo::{
    DeviceInfo, Event, Manager, ManagerConfig, ManagerError, MessageId, SkipReason, SqliteStore,
    StoreError, Trust, VerificationUri, Version, Versions, Via,
};
use omemo_tokio::{Client, ClientConfig, ClientEvent, DriverError, Login, Unreachable, unix_now};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use crate::bookmarks;
use crate::cli::{
    Account, Command, Connection, DevicesAction, DevicesArgs, FingerprintArgs, IdentityArgs,
    IdentityCommand, NewPassphraseArgs, OnlineArgs, PublishArgs, RunArgs, SendArgs, StoreArgs,
    StoreCommand, TrustArgs, VersionChoice,
};
use crate::error::BotError;

/// How long `run` may take to finish what is under way after SIGINT/SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// When stopping with nothing under way, how long nothing may happen before leaving.
const STOP_QUIET: Duration = Duration::from_millis(300);
/// How long a one-shot command waits for its last messages and requests before leaving.
const LEAVE_GRACE: Duration = Duration::from_secs(2);
/// How long `send` waits for the device lists and bundles of the recipient.
const SEND_WAIT: Duration = Duration::from_secs(30);
/// At most one "I only talk OMEMO" hint per contact per this period, so that two bots
/// cannot keep each other busy.
const HINT_EVERY: Duration = Duration::from_secs(5);

/// The plaintext answer to unencrypted messages.
const OMEMO_ONLY_HINT: &str = "I only talk OMEMO. Please turn on OMEMO encryption (OMEMO 2 \
or legacy OMEMO) for this chat and write again.";

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
        Command::Identity(IdentityCommand::Export(args)) => export_identity(&args),
        Command::Identity(IdentityCommand::Import(args)) => import_identity(&args),
        Command::Store(command) => change_store_passphrase(&command),
    }
}

/// The first line of `file`, or `value`, whichever was given; `what` names it in errors.
fn secret_argument(
    value: Option<&String>,
    file: Option<&PathBuf>,
    what: &str,
    how: &str,
) -> Result<String, BotError> {
    optional_secret(value, file, what)?
        .ok_or_else(|| BotError::Usage(format!("no {what}: give {how}")))
}

/// As [`secret_argument`], for a secret that may be absent.
fn optional_secret(
    value: Option<&String>,
    file: Option<&PathBuf>,
    what: &str,
) -> Result<Option<String>, BotError> {
    let secret = match (value, file) {
        (Some(value), _) => value.clone(),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                BotError::Usage(format!(
                    "cannot read the {what} file {}: {e}",
                    path.display()
                ))
            })?;
            text.lines().next().unwrap_or_default().to_owned()
        }
        (None, None) => return Ok(None),
    };
    if secret.is_empty() {
        return Err(BotError::Usage(format!("the {what} is empty")));
    }
    Ok(Some(secret))
}

/// How to give the store's passphrase.
const STORE_PASSPHRASE_HOW: &str =
    "--store-passphrase, OMEMO_BOT_STORE_PASSPHRASE or --store-passphrase-file";

fn store_passphrase(args: &StoreArgs) -> Result<Option<String>, BotError> {
    optional_secret(
        args.store_passphrase.as_ref(),
        args.store_passphrase_file.as_ref(),
        "store passphrase",
    )
}

/// Opens the store as `how` says: encrypted when a passphrase was given.
fn open_store(args: &StoreArgs, how: Use) -> Result<SqliteStore, BotError> {
    let path = &args.store;
    let opened = match (store_passphrase(args)?, how) {
        (None, Use::Online) => SqliteStore::open(path),
        (None, Use::Alongside) => SqliteStore::open_alongside(path),
        (Some(passphrase), Use::Online) => SqliteStore::open_encrypted(path, &passphrase),
        (Some(passphrase), Use::Alongside) => {
            SqliteStore::open_encrypted_alongside(path, &passphrase)
        }
    };
    opened.map_err(store_error)
}

/// A store error, with what to do about it on this command line.
fn store_error(error: StoreError) -> BotError {
    let hint = match &error {
        StoreError::Encrypted { .. } => format!(" ({STORE_PASSPHRASE_HOW})"),
        StoreError::NotEncrypted { .. } => " (`omemo-bot store encrypt` encrypts it)".to_owned(),
        _ => return BotError::Store(error),
    };
    BotError::Failed(format!("store: {error}{hint}"))
}

/// `store encrypt|change-passphrase|decrypt`.
fn change_store_passphrase(command: &StoreCommand) -> Result<(), BotError> {
    let new_passphrase = |args: &NewPassphraseArgs| {
        optional_secret(
            args.new_passphrase.as_ref(),
            args.new_passphrase_file.as_ref(),
            "new store passphrase",
        )
    };
    const NEW_HOW: &str =
        "--new-passphrase, OMEMO_BOT_NEW_STORE_PASSPHRASE or --new-passphrase-file";
    let (state, old, new, done) = match command {
        // A plain store has no passphrase: the one given as the store's (as the bot will
        // be given it) is the new one, unless a new one is given.
        StoreCommand::Encrypt(args) => {
            let new = match new_passphrase(args)? {
                Some(new) => new,
                None => store_passphrase(&args.store)?.ok_or_else(|| {
                    BotError::Usage(format!(
                        "no passphrase to encrypt with: give {NEW_HOW} (or {STORE_PASSPHRASE_HOW})"
                    ))
                })?,
            };
            (&args.store, None, Some(new), "encrypted")
        }
        StoreCommand::ChangePassphrase(args) => {
            let new = new_passphrase(args)?.ok_or_else(|| {
                BotError::Usage(format!("no new store passphrase: give {NEW_HOW}"))
            })?;
            let old = store_passphrase(&args.store)?;
            (
                &args.store,
                old,
                Some(new),
                "encrypted under the new passphrase",
            )
        }
        StoreCommand::Decrypt(state) => (
            state,
            store_passphrase(state)?,
            None,
            "decrypted: it is a plain file now",
        ),
    };
    if old.is_none() && !matches!(command, StoreCommand::Encrypt(_)) {
        return Err(BotError::Usage(format!(
            "no store passphrase: give {STORE_PASSPHRASE_HOW}"
        )));
    }
    SqliteStore::change_passphrase(&state.store, old.as_deref(), new.as_deref())
        .map_err(store_error)?;
    println!("store {} {done}", state.store.display());
    Ok(())
}

fn backup_passphrase(args: &IdentityArgs) -> Result<String, BotError> {
    secret_argument(
        args.passphrase.as_ref(),
        args.passphrase_file.as_ref(),
        "backup passphrase",
        "--passphrase, OMEMO_BOT_BACKUP_PASSPHRASE or --passphrase-file",
    )
}

fn export_identity(args: &IdentityArgs) -> Result<(), BotError> {
    let passphrase = backup_passphrase(args)?;
    if !args.account.state.store.exists() {
        return Err(BotError::Usage(format!(
            "no store at {}: nothing to back up",
            args.account.state.store.display()
        )));
    }
    let manager = open_alongside(&args.account)?;
    let backup = manager.export_identity(&passphrase, &mut omemo::os_rng())?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.file)
        .map_err(|e| BotError::Failed(format!("cannot create {}: {e}", args.file.display())))?;
    // A partial file must not pass for a backup (nor block the next try).
    if let Err(error) = file.write_all(&backup).and_then(|()| file.sync_all()) {
        let _ = std::fs::remove_file(&args.file);
        return Err(BotError::Failed(format!(
            "cannot write {}: {error}",
            args.file.display()
        )));
    }
    println!(
        "identity of device {} ({}) written to {}",
        manager.device_id(),
        manager.fingerprint(),
        args.file.display()
    );
    Ok(())
}

fn import_identity(args: &IdentityArgs) -> Result<(), BotError> {
    let passphrase = backup_passphrase(args)?;
    let backup = std::fs::read(&args.file)
        .map_err(|e| BotError::Usage(format!("cannot read {}: {e}", args.file.display())))?;
    let path = &args.account.state.store;
    let new = !path.exists();
    let restored = open_store(&args.account.state, Use::Online).and_then(|store| {
        Ok(Manager::restore_identity(
            store,
            &args.account.jid,
            &backup,
            &passphrase,
            config_for(Versions::BOTH),
            &mut omemo::os_rng(),
            unix_now(),
        )?)
    });
    match restored {
        Ok(manager) => {
            println!(
                "device {} ({}) restored into {}; sessions are rebuilt as contacts write",
                manager.device_id(),
                manager.fingerprint(),
                path.display()
            );
            Ok(())
        }
        Err(error) => {
            // A store this command created holds nothing worth keeping.
            if new {
                for suffix in ["", "-wal", "-shm", "-journal", ".lock"] {
                    let mut file = path.as_os_str().to_owned();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
            Err(error)
        }
    }
}

fn login(account: &Account, connection: &Connection) -> Result<Login, BotError> {
    let password = secret_argument(
        connection.password.as_ref(),
        connection.password_file.as_ref(),
        "password",
        "--password, OMEMO_BOT_PASSWORD or --password-file",
    )?;
    if connection.insecure_plaintext && !connection.server.as_ref().is_some_and(|s| s.is_loopback())
    {
        return Err(BotError::Usage(
            "--insecure-plaintext only talks to a --server on a loopback address".to_owned(),
        ));
    }
    Ok(Login {
        jid: account.jid.clone(),
        password,
        server: connection.server.clone(),
        plaintext: connection.insecure_plaintext,
    })
}

/// How a command uses the store.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    /// It sends and receives: it takes the store's lock (one such process per store).
    Online,
    /// A short administrative change or look, possibly beside a running bot, which
    /// sees the change at its next message.
    Alongside,
}

/// The manager configuration of a command: the defaults, speaking `versions`.
fn config_for(versions: Versions) -> ManagerConfig {
    ManagerConfig {
        versions,
        ..ManagerConfig::default()
    }
}

/// Opens (or creates) the store and the OMEMO account in it, with `config`.
fn open_manager(
    jid: &BareJid,
    state: &StoreArgs,
    config: ManagerConfig,
    how: Use,
) -> Result<Manager<SqliteStore>, BotError> {
    if let Some(parent) = state.store.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let store = open_store(state, how)?;
    Ok(Manager::open(
        store,
        jid,
        config,
        &mut omemo::os_rng(),
        unix_now(),
    )?)
}

/// The account's manager (both versions) on a store a running bot may share, for the
/// offline commands.
fn open_alongside(account: &Account) -> Result<Manager<SqliteStore>, BotError> {
    open_manager(
        &account.jid,
        &account.state,
        config_for(Versions::BOTH),
        Use::Alongside,
    )
}

/// Connects and waits until the own device is published (or the timeout).
async fn go_online(
    account: &Account,
    connection: &Connection,
    versions: Versions,
    serve: bool,
) -> Result<Client<SqliteStore>, BotError> {
    let config = ManagerConfig {
        label: connection.label.clone(),
        ..config_for(versions)
    };
    let manager = open_manager(&account.jid, &account.state, config, Use::Online)?;
    let config = ClientConfig {
        accept_subscriptions: serve,
        kind: "bot".to_owned(),
        name: "omemo-bot".to_owned(),
        // A one-shot command says at once that the server is not there.
        unreachable: Unreachable::Fail,
        // What arrived while offline is for `run` to read and answer.
        catch_up: false,
    };
    let mut client = Client::start(login(account, connection)?, manager, config)?;
    client
        .wait_until(
            Duration::from_secs(connection.connect_timeout),
            "logging in and publishing the own device",
            Client::is_ready,
        )
        .await?;
    Ok(client)
}

/// Waits a little for what the library still wants sent, then leaves.
async fn leave(mut client: Client<SqliteStore>) {
    if let Err(error) = client
        .wait_until(LEAVE_GRACE, "finishing", Client::is_idle)
        .await
    {
        tracing::debug!(%error, "leaving with requests under way");
    }
    if let Err(error) = client.go_offline().await {
        tracing::debug!(%error, "could not send unavailable presence");
    }
    client.close().await;
}

/// How often `run` asks one contact for a presence subscription.
const SUBSCRIPTION_ASK_EVERY: Duration = Duration::from_secs(3600);
/// Echoes kept per contact while a presence subscription is awaited.
const MAX_AWAITING_SUBSCRIPTION: usize = 20;

/// What the echo bot does with one event.
struct Echo {
    /// Echoes handed to the manager and not yet sent, by id: to whom, and the text (to
    /// send again once a presence subscription is approved).
    under_way: HashMap<MessageId, (BareJid, String)>,
    /// Echoes waiting for a contact to approve the presence subscription.
    awaiting_subscription: HashMap<BareJid, Vec<String>>,
    /// When each contact was last asked for a presence subscription.
    last_subscription_ask: HashMap<BareJid, Instant>,
    /// When each contact last got the plaintext hint.
    last_hint: HashMap<BareJid, Instant>,
    /// Unencrypted messages are echoed unencrypted (`run --echo-plaintext`).
    echo_plaintext: bool,
    /// The nickname in rooms.
    nick: String,
    /// Whose invitations to rooms are followed (besides verified contacts).
    follow: Vec<BareJid>,
    /// The rooms of `--join`: their nickname is the command line's, whatever the
    /// bookmarks say.
    command_line_rooms: Vec<BareJid>,
    /// Rooms joined on an invitation, bookmarked once they are ready to carry OMEMO.
    to_bookmark: HashSet<BareJid>,
}

impl Echo {
    /// Joins the rooms of the account's bookmarks (XEP-0402) with autojoin: those joined
    /// on invitations, and those an operator added from any client (not those of
    /// `--join`, whose nickname is the command line's). A bookmark that cannot be joined
    /// does not keep the others from being joined.
    async fn join_bookmarked_rooms(
        &mut self,
        client: &mut Client<SqliteStore>,
    ) -> Result<(), BotError> {
        let own = client.jid().clone();
        let result = match client
            .request(|id| bookmarks::fetch_iq(id, &own), BOOKMARKS_TIMEOUT)
            .await
        {
            Ok(result) => result,
            Err(error @ DriverError::Omemo(_)) => return Err(error.into()),
            Err(error) => {
                tracing::warn!(%error, "could not read the bookmarks");
                return Ok(());
            }
        };
        if let Some(condition) = stanza::iq_error_condition(&result)
            && condition != "item-not-found"
        {
            tracing::warn!(%condition, "could not read the bookmarks");
        }
        for bookmark in bookmarks::autojoin(&result) {
            if self.command_line_rooms.contains(&bookmark.room) {
                continue;
            }
            let nick = bookmark.nick.unwrap_or_else(|| self.nick.clone());
            tracing::info!(room = %bookmark.room, %nick, "joining a bookmarked room");
            match client.join_room(&bookmark.room, &nick, None).await {
                Ok(()) => {}
                Err(error @ DriverError::Omemo(_)) => return Err(error.into()),
                Err(error) => {
                    tracing::warn!(room = %bookmark.room, %error, "could not join a bookmarked room");
                }
            }
        }
        Ok(())
    }

    /// Keeps `room` in the account's bookmarks, with autojoin.
    async fn bookmark(
        &mut self,
        client: &mut Client<SqliteStore>,
        room: &BareJid,
    ) -> Result<(), BotError> {
        let nick = self.nick.clone();
        let published = client
            .request(
                |id| bookmarks::publish_iq(id, room, &nick),
                BOOKMARKS_TIMEOUT,
            )
            .await;
        match published {
            Ok(answer) if answer.attr("type") == Some("result") => {
                tracing::info!(%room, "bookmarked");
            }
            Ok(answer) => {
                tracing::warn!(%room, error = ?stanza::iq_error_condition(&answer), "could not bookmark the room");
            }
            Err(error @ DriverError::Omemo(_)) => return Err(error.into()),
            Err(error) => tracing::warn!(%room, %error, "could not bookmark the room"),
        }
        Ok(())
    }

    async fn serve(
        &mut self,
        client: &mut Client<SqliteStore>,
        event: ClientEvent,
    ) -> Result<(), BotError> {
        match event {
            // A room's message from another member (live, or from the room's archive
            // after time away): echoed to the room, encrypted.
            ClientEvent::Message {
                message,
                via: Via::Room | Via::RoomArchive,
            } => {
                let (Some(room), Some(text)) = (&message.room, message.body.as_deref()) else {
                    return Ok(());
                };
                let Ok(room) = BareJid::new(room) else {
                    return Ok(());
                };
                if message.sender == client.jid().as_str() || message.trust == Trust::Distrusted {
                    return Ok(());
                }
                if !message.affix_violations.is_empty() {
                    tracing::warn!(%room, from = %message.sender, violations = ?message.affix_violations, "room message with bad SCE affixes not answered");
                    return Ok(());
                }
                client.send_to_room(&room, text)?;
            }
            ClientEvent::Invitation {
                room,
                inviter,
                direct,
                password,
                ..
            } => {
                if inviter_vouched_for(&room, &inviter, direct)
                    && (self.follow.contains(&inviter) || verified(client, &inviter)?)
                {
                    tracing::info!(%room, %inviter, direct, "invited by a contact it follows: joining");
                    client
                        .join_room(&room, &self.nick, password.as_deref())
                        .await?;
                    // Bookmarked once it is ready, to be joined again after a restart.
                    self.to_bookmark.insert(room);
                } else {
                    tracing::warn!(%room, %inviter, direct, "invitation not followed (only those from --follow-invites-from or a verified contact are, directly or through a room of the inviter's own server)");
                }
            }
            ClientEvent::Online { .. } => self.join_bookmarked_rooms(client).await?,
            ClientEvent::Omemo(Event::RoomReady {
                room,
                members,
                refusal,
            }) => match refusal {
                None => {
                    tracing::info!(%room, members, "room ready");
                    if let Ok(room) = BareJid::new(&room)
                        && self.to_bookmark.remove(&room)
                    {
                        self.bookmark(client, &room).await?;
                    }
                }
                Some(reason) => {
                    if let Ok(room) = BareJid::new(&room) {
                        self.to_bookmark.remove(&room);
                    }
                    tracing::warn!(%room, %reason, "room cannot carry OMEMO: not answering there")
                }
            },
            ClientEvent::Message { message, via } => {
                // Only messages addressed to this account are answered (live, or from
                // the archive after time offline): a carbon means another device of the
                // account got it (and may answer it itself).
                let Ok(sender) = BareJid::new(&message.sender) else {
                    return Ok(());
                };
                let Some(text) = message.body.as_deref() else {
                    return Ok(());
                };
                if !matches!(via, Via::Direct | Via::Archive) || sender == *client.jid() {
                    return Ok(());
                }
                if message.trust == Trust::Distrusted {
                    tracing::warn!(from = %sender, device_id = message.device_id, "message from a distrusted device not answered");
                    return Ok(());
                }
                if !message.affix_violations.is_empty() {
                    tracing::warn!(from = %sender, violations = ?message.affix_violations, "message with bad SCE affixes not answered");
                    return Ok(());
                }
                let id = client.send_encrypted(std::slice::from_ref(&sender), text)?;
                self.under_way.insert(id, (sender, text.to_owned()));
            }
            ClientEvent::SubscriptionApproved { from } => {
                // The echoes that waited for it go out now (their devices can be read).
                for text in self.awaiting_subscription.remove(&from).unwrap_or_default() {
                    let id = client.send_encrypted(std::slice::from_ref(&from), &text)?;
                    self.under_way.insert(id, (from.clone(), text));
                }
            }
            ClientEvent::Omemo(Event::NotSent { id, error })
                if self
                    .under_way
                    .get(&id)
                    .is_some_and(|(to, _)| hidden_devices(&error, to)) =>
            {
                let Some((to, text)) = self.under_way.remove(&id) else {
                    return Ok(());
                };
                self.await_subscription(client, to, text).await?;
            }
            ClientEvent::Plain { from, body } if self.echo_plaintext => {
                client.send_plain(&from, &body).await?;
            }
            ClientEvent::Plain { from, .. } => self.hint(client, &from).await?,
            ClientEvent::Omemo(Event::Sent {
                id,
                recipients,
                skipped,
            }) => {
                self.under_way.remove(&id);
                for device in &skipped {
                    tracing::debug!(jid = %device.jid, device_id = device.device_id, reason = ?device.reason, "device skipped");
                }
                // Per message: debug, not info (formatting a line for every echo is a
                // measurable part of a busy bot's time).
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let versions: Versions = recipients.iter().map(|r| r.version).collect();
                    tracing::debug!(
                        devices = recipients.len(),
                        skipped = skipped.len(),
                        ?versions,
                        "sent an OMEMO message"
                    );
                }
            }
            ClientEvent::Omemo(Event::NotSent { id, error }) => {
                self.under_way.remove(&id);
                tracing::warn!(%error, "could not send a message");
            }
            ClientEvent::Omemo(Event::CaughtUp {
                archive,
                messages,
                complete,
            }) => {
                if complete {
                    tracing::info!(%archive, messages, "caught up with the archive");
                } else {
                    tracing::warn!(%archive, messages, "catch-up with the archive ended early");
                }
            }
            ClientEvent::Undecryptable {
                from,
                error: ManagerError::NotForThisDevice,
                via,
            } => {
                tracing::warn!(%from, ?via, "OMEMO message not encrypted for this device");
            }
            ClientEvent::Undecryptable { from, error, via } => {
                tracing::warn!(%from, %error, ?via, "could not decrypt an OMEMO message");
            }
            _ => {}
        }
        // The echo goes out when the client next waits: the events that arrived
        // together are answered with one disk write.
        Ok(())
    }

    /// Keeps an echo to a contact whose devices are shown to subscribed contacts only,
    /// and asks the contact for a presence subscription (at most once per
    /// [`SUBSCRIPTION_ASK_EVERY`]); the echo goes out when it is approved.
    async fn await_subscription(
        &mut self,
        client: &mut Client<SqliteStore>,
        to: BareJid,
        text: String,
    ) -> Result<(), BotError> {
        let waiting = self.awaiting_subscription.entry(to.clone()).or_default();
        if waiting.len() < MAX_AWAITING_SUBSCRIPTION {
            waiting.push(text);
        }
        let now = Instant::now();
        if self
            .last_subscription_ask
            .get(&to)
            .is_some_and(|at| now.duration_since(*at) < SUBSCRIPTION_ASK_EVERY)
        {
            return Ok(());
        }
        self.last_subscription_ask.insert(to.clone(), now);
        tracing::info!(jid = %to, "devices visible to subscribed contacts only: asking for a presence subscription; the echo waits for it");
        client.request_subscription(&to).await?;
        Ok(())
    }

    /// Answers an unencrypted message with the OMEMO-only hint (rate-limited per
    /// contact).
    async fn hint(&mut self, client: &mut Client<SqliteStore>, to: &str) -> Result<(), BotError> {
        let Ok(jid) = jid::Jid::new(to) else {
            return Ok(());
        };
        let bare = jid.to_bare();
        let now = Instant::now();
        if self
            .last_hint
            .get(&bare)
            .is_some_and(|at| now.duration_since(*at) < HINT_EVERY)
        {
            tracing::debug!(to = %bare, "hint suppressed (rate limit)");
            return Ok(());
        }
        self.last_hint.insert(bare.clone(), now);
        client.send_plain(to, OMEMO_ONLY_HINT).await?;
        tracing::info!(to = %bare, "answered an unencrypted message with the OMEMO-only hint");
        Ok(())
    }
}

/// How long the bot waits for its bookmarks (XEP-0402) to be read or written.
const BOOKMARKS_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the invitation's inviter is who it says: a direct invitation (XEP-0249) comes
/// from the inviter's own JID, which its server vouches for; a mediated one (XEP-0045)
/// names the inviter in the room's own words, which count only when the room is on a
/// component of the inviter's server (`conference.example.org` for `alice@example.org`):
/// a server that could forge them anyway. (Not on the inviter's domain itself: any
/// account there could pose as a room.)
fn inviter_vouched_for(room: &BareJid, inviter: &BareJid, direct: bool) -> bool {
    let inviter_domain = inviter.domain().as_str();
    direct
        || room
            .domain()
            .as_str()
            .strip_suffix(inviter_domain)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
}

/// Whether a device of `jid` is verified: a contact the bot follows into rooms (blind
/// trust is given to anyone who writes, so it is not enough).
fn verified(client: &mut Client<SqliteStore>, jid: &BareJid) -> Result<bool, BotError> {
    Ok(client
        .manager()
        .devices(jid, unix_now())?
        .iter()
        .any(|d| d.trust == Trust::Verified))
}

async fn run(args: RunArgs) -> Result<(), BotError> {
    let config = ManagerConfig {
        pre_key_count: args.pre_keys,
        label: args.connection.label.clone(),
        ..config_for(Versions::BOTH)
    };
    let manager = open_manager(&args.account.jid, &args.account.state, config, Use::Online)?;
    let config = ClientConfig {
        accept_subscriptions: true,
        kind: "bot".to_owned(),
        name: "omemo-bot".to_owned(),
        // The service waits for its server (and logs what it waits for).
        unreachable: Unreachable::Retry,
        // Messages sent while the bot was down are answered once it is back.
        catch_up: true,
    };
    let mut client = Client::start(login(&args.account, &args.connection)?, manager, config)?;
    let nick = args
        .nick
        .clone()
        .or_else(|| args.account.jid.node().map(|n| n.to_string()))
        .unwrap_or_else(|| "omemo-bot".to_owned());
    for room in &args.rooms {
        client.join_room(room, &nick, None).await?;
    }
    let mut echo = Echo {
        under_way: HashMap::new(),
        awaiting_subscription: HashMap::new(),
        last_subscription_ask: HashMap::new(),
        last_hint: HashMap::new(),
        echo_plaintext: args.echo_plaintext,
        nick,
        follow: args.follow_invites_from.clone(),
        command_line_rooms: args.rooms.clone(),
        to_bookmark: HashSet::new(),
    };
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    loop {
        let event = tokio::select! {
            biased;
            _ = sigterm.recv() => None,
            _ = sigint.recv() => None,
            event = client.next() => Some(event),
        };
        let Some(event) = event else {
            tracing::info!("stopping");
            stop(client, &mut echo).await;
            return Ok(());
        };
        let result = match event {
            Ok(event) => echo.serve(&mut client, event).await,
            // Final: retrying a refused login cannot help.
            Err(
                error @ (omemo_tokio::DriverError::Closed
                | omemo_tokio::DriverError::AuthFailed { .. }),
            ) => {
                return Err(error.into());
            }
            // The store lost state it had accepted: going on would publish and encrypt
            // from memory the store no longer matches. A restart starts from the disk.
            Err(error @ omemo_tokio::DriverError::Omemo(ManagerError::Store(_))) => {
                tracing::error!(%error, "the OMEMO store failed; stopping");
                return Err(error.into());
            }
            Err(error) => Err(error.into()),
        };
        // A stanza that could not be written (the connection is being re-established)
        // or an unusable one: the bot goes on.
        if let Err(error) = result {
            tracing::warn!(%error, "error while serving");
        }
    }
}

/// Goes offline (the server keeps new messages offline), answers what is already under
/// way for up to [`STOP_GRACE`], then closes.
async fn stop(mut client: Client<SqliteStore>, echo: &mut Echo) {
    if let Err(error) = client.go_offline().await {
        tracing::debug!(%error, "could not send unavailable presence");
    }
    let deadline = Instant::now() + STOP_GRACE;
    loop {
        let now = Instant::now();
        let wake = if client.is_idle() {
            (now + STOP_QUIET).min(deadline)
        } else {
            deadline
        };
        match client.next_until(wake).await {
            Ok(Some(event)) => {
                if let Err(error) = echo.serve(&mut client, event).await {
                    tracing::warn!(%error, "error while stopping");
                    break;
                }
            }
            Ok(None) if client.is_idle() || Instant::now() >= deadline => break,
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "error while stopping");
                break;
            }
        }
    }
    client.close().await;
}

fn versions_of(choice: VersionChoice) -> Versions {
    match choice {
        VersionChoice::Legacy => Versions::only(Version::Legacy),
        VersionChoice::Omemo2 => Versions::only(Version::Omemo2),
        VersionChoice::Auto => Versions::BOTH,
    }
}

async fn send(args: SendArgs) -> Result<(), BotError> {
    let versions = versions_of(args.version);
    let mut client = go_online(&args.account, &args.connection, versions, false).await?;
    let mut id = client.send_encrypted(std::slice::from_ref(&args.to), &args.text)?;
    client.flush().await?;
    let until = Instant::now() + SEND_WAIT;
    // Set once a presence subscription was asked for (devices visible to contacts only).
    let mut asked = false;
    let outcome = loop {
        match client.next_until(until).await? {
            Some(ClientEvent::Omemo(Event::NotSent { id: sent, error }))
                if sent == id && !asked && hidden_devices(&error, &args.to) =>
            {
                eprintln!(
                    "{}'s OMEMO devices are visible to subscribed contacts only: asking for a presence subscription (waiting up to {} s)",
                    args.to,
                    until.saturating_duration_since(Instant::now()).as_secs()
                );
                client.request_subscription(&args.to).await?;
                asked = true;
                if !approved(&mut client, &args.to, until).await? {
                    leave(client).await;
                    return Err(BotError::Failed(format!(
                        "could not send to {}: {error}; no answer to the presence subscription request within {} s",
                        args.to,
                        SEND_WAIT.as_secs()
                    )));
                }
                id = client.send_encrypted(std::slice::from_ref(&args.to), &args.text)?;
                client.flush().await?;
            }
            Some(ClientEvent::Omemo(Event::Sent {
                id: sent,
                recipients,
                skipped,
            })) if sent == id => {
                client.flush().await?;
                break Ok((recipients, skipped));
            }
            Some(ClientEvent::Omemo(Event::NotSent { id: sent, error })) if sent == id => {
                break Err(error);
            }
            Some(_) => {}
            None => {
                leave(client).await;
                return Err(BotError::Failed(format!(
                    "could not send to {} within {} s",
                    args.to,
                    SEND_WAIT.as_secs()
                )));
            }
        }
    };
    match outcome {
        Ok((recipients, skipped)) => {
            let versions: Versions = recipients.iter().map(|r| r.version).collect();
            tracing::info!(to = %args.to, devices = recipients.len(), skipped = skipped.len(), ?versions, "sent");
        }
        Err(error) => {
            leave(client).await;
            return Err(BotError::Failed(format!(
                "could not send to {}: {error}",
                args.to
            )));
        }
    }
    if let Some(secs) = args.wait_reply {
        let until = Instant::now() + Duration::from_secs(secs);
        let reply = loop {
            match client.next_until(until).await? {
                Some(ClientEvent::Message { message, via })
                    if message.sender == args.to.as_str() && via != Via::CarbonSent =>
                {
                    if let Some(body) = message.body {
                        break Some(body);
                    }
                }
                Some(_) => {}
                None => break None,
            }
        };
        match reply {
            Some(text) => println!("{text}"),
            None => {
                leave(client).await;
                return Err(BotError::NoReply(secs));
            }
        }
    }
    leave(client).await;
    Ok(())
}

/// Whether `error` says that `jid`'s devices are shown to subscribed contacts only.
fn hidden_devices(error: &ManagerError, jid: &BareJid) -> bool {
    matches!(error, ManagerError::NoRecipientDevices { skipped } if skipped
        .iter()
        .any(|d| d.jid == jid.as_str() && d.reason == SkipReason::SubscriptionRequired))
}

/// Waits until `jid` approves the presence subscription; `false` at `until`.
async fn approved(
    client: &mut Client<SqliteStore>,
    jid: &BareJid,
    until: Instant,
) -> Result<bool, BotError> {
    loop {
        match client.next_until(until).await? {
            Some(ClientEvent::SubscriptionApproved { from }) if from == *jid => return Ok(true),
            Some(_) => {}
            None => return Ok(false),
        }
    }
}

fn fingerprint(args: &FingerprintArgs) -> Result<(), BotError> {
    let manager = open_alongside(&args.account)?;
    let fingerprint = manager.fingerprint();
    let link = VerificationUri::new(
        args.account.jid.clone(),
        vec![(manager.device_id(), fingerprint)],
    );
    println!("jid: {}", args.account.jid);
    println!("device id: {}", manager.device_id());
    println!("fingerprint: {fingerprint}");
    println!("versions: legacy OMEMO and OMEMO 2, one fingerprint for both");
    println!("uri: {link}");
    if args.qr {
        println!("{}", link.qr_code());
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

/// The versions a device is listed in, as shown by `devices`.
fn versions_name(versions: Versions) -> String {
    let names: Vec<&str> = versions
        .iter()
        .map(|v| match v {
            Version::Legacy => "legacy",
            Version::Omemo2 => "omemo2",
        })
        .collect();
    if names.is_empty() {
        "-".to_owned()
    } else {
        names.join("+")
    }
}

/// How long ago `at` was, roughly ("5m ago"), for the `devices` table.
fn ago(now: u64, at: u64) -> String {
    let secs = now.saturating_sub(at);
    match secs {
        0..60 => "just now".to_owned(),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// When a device was last heard from here, or when first seen if never.
fn last_seen(device: &DeviceInfo, now: u64) -> String {
    match (device.last_seen, device.first_seen) {
        (Some(at), _) => ago(now, at),
        (None, Some(first)) => format!("never (seen {})", ago(now, first)),
        (None, None) => "never".to_owned(),
    }
}

/// The header of the `devices` table.
const DEVICES_HEADER: &str =
    "    device  trust       state     versions       last heard              fingerprint";

/// One line of the `devices` table.
fn device_line(device: &DeviceInfo, now: u64) -> String {
    let fingerprint = device
        .fingerprint
        .map(|f| f.to_string())
        .unwrap_or_else(|| "(identity key unknown)".to_owned());
    table_line(
        device.device_id,
        [
            trust_name(device.trust),
            if device.active { "active" } else { "inactive" },
            &versions_name(device.versions),
            &last_seen(device, now),
            &fingerprint,
        ],
        device.label.as_deref(),
    )
}

/// A line of the `devices` table: the id, then trust, state, versions, last heard and
/// fingerprint, then the label.
fn table_line(device_id: u32, columns: [&str; 5], label: Option<&str>) -> String {
    let [trust, state, versions, seen, fingerprint] = columns;
    let mut line = format!(
        "{device_id:>10}  {trust:<10}  {state:<8}  {versions:<13}  {seen:<22}  {fingerprint}"
    );
    if let Some(label) = label {
        line.push_str(&format!("  \"{}\"", label.escape_debug()));
    }
    line
}

async fn devices(args: DevicesArgs) -> Result<(), BotError> {
    match args.action {
        Some(_) if args.of.is_some() || args.own => Err(BotError::Usage(
            "`prune` and `reset` tidy the own device lists: give no JID and no --own".to_owned(),
        )),
        Some(DevicesAction::Prune { older_than }) => {
            tidy_own_devices(&args.online, Some(older_than)).await
        }
        Some(DevicesAction::Reset) => tidy_own_devices(&args.online, None).await,
        None if args.of.is_none() && !args.own => Err(BotError::Usage(
            "give a JID, --own, or `prune` or `reset`".to_owned(),
        )),
        None => list_devices(&args).await,
    }
}

/// `devices JID` and `devices --own`.
async fn list_devices(args: &DevicesArgs) -> Result<(), BotError> {
    let OnlineArgs {
        account,
        connection,
    } = &args.online;
    let mut client = go_online(account, connection, Versions::BOTH, false).await?;
    let of = args.of.clone().unwrap_or_else(|| client.jid().clone());
    client
        .manager()
        .prepare(std::slice::from_ref(&of), unix_now())?;
    client.flush().await?;
    client
        .wait_until(
            Duration::from_secs(connection.connect_timeout),
            "fetching device lists and bundles",
            |c| c.is_idle(),
        )
        .await?;
    let now = unix_now();
    let devices = client.manager().devices(&of, now)?;
    let own = of == *client.jid();
    println!(
        "{} {of}:",
        if own { "own devices of" } else { "devices of" }
    );
    println!("{DEVICES_HEADER}");
    if own {
        let manager = client.manager();
        let fingerprint = format!("{}  (this device)", manager.fingerprint());
        let columns = ["own", "active", "legacy+omemo2", "-", &fingerprint];
        let label = connection.label.as_deref();
        println!("{}", table_line(manager.device_id(), columns, label));
    }
    for device in &devices {
        println!("{}", device_line(device, now));
    }
    if devices.is_empty() && !own {
        println!("(no OMEMO devices published)");
    }
    leave(client).await;
    Ok(())
}

/// `devices prune --older-than` (`older_than` given) and `devices reset`.
async fn tidy_own_devices(args: &OnlineArgs, older_than: Option<u64>) -> Result<(), BotError> {
    let mut client = go_online(&args.account, &args.connection, Versions::BOTH, false).await?;
    let now = unix_now();
    let removed = match older_than {
        Some(age) => client.manager().prune_own_devices(age, now)?,
        None => client.manager().reset_own_device_lists(now)?,
    };
    client.flush().await?;
    client
        .wait_until(
            Duration::from_secs(args.connection.connect_timeout),
            "publishing the own device lists",
            |c| c.is_idle(),
        )
        .await?;
    leave(client).await;
    let ids: Vec<String> = removed.iter().map(u32::to_string).collect();
    match (older_than, removed.is_empty()) {
        (Some(_), true) => println!("no own device has been silent that long; nothing changed"),
        (Some(_), false) => println!(
            "removed {} silent own device(s) from the device lists of both versions: {}",
            removed.len(),
            ids.join(" ")
        ),
        (None, _) => println!(
            "the own device lists of both versions hold only this device now (removed: {})",
            if ids.is_empty() {
                "none".to_owned()
            } else {
                ids.join(" ")
            }
        ),
    }
    Ok(())
}

fn set_trust(args: &TrustArgs, trust: Trust) -> Result<(), BotError> {
    let mut manager = open_alongside(&args.account)?;
    let (of, device_id) = match (&args.uri, &args.of, args.device_id) {
        (Some(uri), _, _) if trust == Trust::Verified => return verify_uri(&mut manager, uri),
        (Some(_), _, _) => {
            return Err(BotError::Usage(
                "distrust takes JID DEVICE_ID, not --uri".to_owned(),
            ));
        }
        (None, Some(of), Some(device_id)) => (of, device_id),
        _ => {
            return Err(BotError::Usage(
                "give JID DEVICE_ID or --uri URI".to_owned(),
            ));
        }
    };
    manager.set_trust(of, device_id, trust)?;
    println!(
        "device {device_id} of {of} is now {} (in both OMEMO versions)",
        trust_name(trust)
    );
    Ok(())
}

/// `trust --uri`: every device the URI names, or nothing.
fn verify_uri(manager: &mut Manager<SqliteStore>, uri: &VerificationUri) -> Result<(), BotError> {
    match manager.verify_uri(uri) {
        Ok(marked) => {
            for device_id in marked {
                println!(
                    "device {device_id} of {} is now verified (in both OMEMO versions)",
                    uri.jid
                );
            }
            Ok(())
        }
        Err(error @ (ManagerError::UnknownDevice { .. } | ManagerError::NoIdentityKey { .. })) => {
            Err(BotError::Failed(format!(
                "{error}; `omemo-bot devices {}` fetches its devices, then try again (nothing was changed)",
                uri.jid
            )))
        }
        Err(error) => Err(error.into()),
    }
}

/// Builds an IQ request from its id.
type BuildIq<'a> = Box<dyn Fn(&str) -> stanza::Element + 'a>;

async fn publish(args: PublishArgs) -> Result<(), BotError> {
    let mut client = go_online(&args.account, &args.connection, Versions::BOTH, false).await?;
    let own: BareJid = client.jid().clone();
    let device_id = client.manager().device_id();
    let timeout = Duration::from_secs(args.connection.connect_timeout);
    // Check on the server what the library published, in both versions.
    let mut problems = Vec::new();
    for version in Version::ALL {
        let (list_node, bundle_fetch): (&str, BuildIq<'_>) = match version {
            Version::Legacy => (
                legacy::DEVICE_LIST_NODE,
                Box::new(|id| {
                    stanza::fetch_items_iq(id, own.as_str(), &legacy::bundle_node(device_id), None)
                }),
            ),
            Version::Omemo2 => (
                omemo2::DEVICE_LIST_NODE,
                Box::new(|id| {
                    stanza::fetch_item_iq(
                        id,
                        own.as_str(),
                        omemo2::BUNDLES_NODE,
                        &omemo2::bundle_item_id(device_id),
                    )
                }),
            ),
        };
        let list = client
            .request(
                |id| stanza::fetch_items_iq(id, own.as_str(), list_node, None),
                timeout,
            )
            .await?;
        let payloads = stanza::parse_items_result(&list).unwrap_or_default();
        let listed = payloads.iter().any(|payload| match version {
            Version::Legacy => legacy::parse_device_list(payload, usize::MAX)
                .is_ok_and(|ids| ids.contains(&device_id)),
            Version::Omemo2 => omemo2::parse_device_list(payload, usize::MAX)
                .is_ok_and(|devices| devices.iter().any(|d| d.id == device_id)),
        });
        let bundle = client.request(|id| bundle_fetch(id), timeout).await?;
        let bundle_ok = stanza::parse_items_result(&bundle)
            .ok()
            .and_then(|payloads| {
                payloads.first().map(|payload| match version {
                    Version::Legacy => legacy::parse_bundle(payload),
                    Version::Omemo2 => omemo2::parse_bundle(payload),
                })
            })
            .is_some_and(|b| b.is_ok_and(|b| b.verify().is_ok()));
        if !listed {
            problems.push(format!("not in the {version} device list"));
        }
        if !bundle_ok {
            problems.push(format!("its {version} bundle is missing or invalid"));
        }
    }
    leave(client).await;
    if !problems.is_empty() {
        return Err(BotError::Failed(format!(
            "device {device_id}: {}",
            problems.join("; ")
        )));
    }
    println!("published device {device_id} of {own} (legacy OMEMO and OMEMO 2)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mediated_invitation_counts_only_from_a_room_of_the_inviters_server() {
        let jid = |s: &str| BareJid::new(s).unwrap();
        let alice = jid("alice@example.org");
        for (room, direct, vouched) in [
            ("room@elsewhere.net", true, true),
            ("room@conference.example.org", false, true),
            ("eve@example.org", false, false),
            ("room@muc.sub.example.org", false, true),
            ("room@elsewhere.net", false, false),
            ("room@badexample.org", false, false),
            ("room@example.org.evil.net", false, false),
        ] {
            assert_eq!(
                inviter_vouched_for(&jid(room), &alice, direct),
                vouched,
                "{room} direct={direct}"
            );
        }
    }

    #[test]
    fn device_lines_show_trust_state_versions_label_and_fingerprint() {
        let device = DeviceInfo {
            device_id: 42,
            fingerprint: None,
            trust: Trust::Blind,
            active: false,
            versions: Versions::BOTH,
            label: Some("Phone \"2\"".into()),
            first_seen: Some(1_000),
            last_seen: None,
        };
        let line = device_line(&device, 1_000 + 3 * 86_400 + 5);
        assert!(line.contains("never (seen 3d ago)"), "{line}");
        assert!(line.contains("42"));
        assert!(line.contains("blind"));
        assert!(line.contains("inactive"));
        assert!(line.contains("legacy+omemo2"));
        assert!(line.contains("(identity key unknown)"));
        assert!(line.contains("Phone \\\"2\\\""));
        assert_eq!(versions_name(Versions::NONE), "-");
        assert_eq!(versions_name(Versions::only(Version::Omemo2)), "omemo2");
    }

    #[test]
    fn send_versions_map_to_the_manager_configuration() {
        assert_eq!(
            versions_of(VersionChoice::Legacy),
            Versions::only(Version::Legacy)
        );
        assert_eq!(
            versions_of(VersionChoice::Omemo2),
            Versions::only(Version::Omemo2)
        );
        assert_eq!(versions_of(VersionChoice::Auto), Versions::BOTH);
    }
}
