//! The command line: one subcommand per task, options shared through flattened groups.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use jid::BareJid;
use omemo::{ManagerConfig, VerificationUri};
use omemo_tokio::ServerAddr;

/// An OMEMO (XEP-0384: legacy `eu.siacs.conversations.axolotl` and OMEMO 2
/// `urn:xmpp:omemo:2`) echo bot and command-line tool for XMPP.
///
/// Exit status: 0 on success, 1 on failure, 2 on a usage error, 3 when `send
/// --wait-reply` timed out, 4 when the server refused the login, 5 when the server
/// could not be reached (`run` waits for it instead).
#[derive(Debug, Parser)]
#[command(name = "omemo-bot", version, propagate_version = true)]
pub(crate) struct Cli {
    /// Log as JSON lines instead of human-readable text (the level comes from RUST_LOG,
    /// default `info`).
    #[arg(long, global = true)]
    pub(crate) log_json: bool,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the echo bot: answer every OMEMO message with the same text, encrypted for
    /// every device of the sender (and the own other devices), until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Send one OMEMO message; with --wait-reply, wait for an OMEMO answer and print its
    /// text. (`--version` picks the OMEMO version here; `omemo-bot --version` prints the
    /// program's.)
    #[command(disable_version_flag = true)]
    Send(SendArgs),
    /// Print the own device id, fingerprint and verification URI (no network needed;
    /// creates the identity when the store is new).
    Fingerprint(FingerprintArgs),
    /// Fetch and print the devices of a JID (or, with --own, the own ones) with their
    /// fingerprints, trust and when last heard from; `devices prune` and `devices reset`
    /// tidy the own device lists.
    Devices(DevicesArgs),
    /// Mark a device of a JID as verified (in the store; a running bot sees it at its next
    /// message).
    Trust(TrustArgs),
    /// Mark a device of a JID as distrusted (in the store; a running bot sees it at its next
    /// message).
    Distrust(TrustArgs),
    /// (Re)publish the own device list entry and bundle, then exit.
    Publish(PublishArgs),
    /// Back up the identity (device id and identity key; no sessions) to a
    /// passphrase-protected file, or bring it back into a new store.
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Encrypt the store at rest, change its passphrase, or decrypt it (stop the bot
    /// first). An encrypted store is opened with --store-passphrase (or its variable or
    /// file) by every command.
    #[command(subcommand)]
    Store(StoreCommand),
}

/// `store encrypt|change-passphrase|decrypt`.
#[derive(Debug, Subcommand)]
pub(crate) enum StoreCommand {
    /// Encrypt a plain store under the new passphrase, or else under the one given as
    /// the store's passphrase (SQLCipher; the key comes from Argon2id of the passphrase).
    Encrypt(NewPassphraseArgs),
    /// Re-encrypt an encrypted store (--store-passphrase) under the new passphrase.
    ChangePassphrase(NewPassphraseArgs),
    /// Turn an encrypted store (--store-passphrase) back into a plain one.
    Decrypt(StoreArgs),
}

/// The store and the passphrase it gets. Its Debug output hides the passphrases.
#[derive(Args)]
pub(crate) struct NewPassphraseArgs {
    #[command(flatten)]
    pub(crate) store: StoreArgs,

    /// The store's new passphrase.
    #[arg(
        long,
        env = "OMEMO_BOT_NEW_STORE_PASSPHRASE",
        hide_env_values = true,
        conflicts_with = "new_passphrase_file"
    )]
    pub(crate) new_passphrase: Option<String>,

    /// A file whose first line is the store's new passphrase.
    #[arg(long)]
    pub(crate) new_passphrase_file: Option<PathBuf>,
}

/// `identity export|import`.
#[derive(Debug, Subcommand)]
pub(crate) enum IdentityCommand {
    /// Write the identity of the store to a new file, sealed under the passphrase
    /// (Argon2id, AES-256-GCM). No network needed; a running bot may keep running.
    Export(IdentityArgs),
    /// Make a new store with the identity of a backup file: the same device id and
    /// fingerprint, so contacts' trust holds; sessions are rebuilt on first contact.
    Import(IdentityArgs),
}

/// The store, the backup file and its passphrase. Its Debug output hides the passphrase.
#[derive(Args)]
pub(crate) struct IdentityArgs {
    #[command(flatten)]
    pub(crate) account: Account,

    /// The backup file (export: created, never overwritten; import: read).
    #[arg(long)]
    pub(crate) file: PathBuf,

    /// The backup passphrase.
    #[arg(
        long,
        env = "OMEMO_BOT_BACKUP_PASSPHRASE",
        hide_env_values = true,
        conflicts_with = "passphrase_file"
    )]
    pub(crate) passphrase: Option<String>,

    /// A file whose first line is the backup passphrase.
    #[arg(long)]
    pub(crate) passphrase_file: Option<PathBuf>,
}

/// The account and its OMEMO state.
#[derive(Debug, Args)]
pub(crate) struct Account {
    /// The account's bare JID (user@example.org).
    #[arg(long, env = "OMEMO_BOT_JID", value_parser = parse_bare_jid)]
    pub(crate) jid: BareJid,

    #[command(flatten)]
    pub(crate) state: StoreArgs,
}

/// The store file and its passphrase. Its Debug output hides the passphrase.
#[derive(Args)]
pub(crate) struct StoreArgs {
    /// The SQLite file holding the OMEMO identity, sessions and trust; created on first
    /// use. Keep it: a new file is a new device.
    #[arg(long, env = "OMEMO_BOT_STORE")]
    pub(crate) store: PathBuf,

    /// The passphrase of the encrypted store; a new store is created encrypted under it.
    /// Without one, the store is a plain file (readable by its owner only).
    #[arg(
        long,
        env = "OMEMO_BOT_STORE_PASSPHRASE",
        hide_env_values = true,
        conflicts_with = "store_passphrase_file"
    )]
    pub(crate) store_passphrase: Option<String>,

    /// A file whose first line is the store's passphrase.
    #[arg(long)]
    pub(crate) store_passphrase_file: Option<PathBuf>,
}

/// How to reach and log in to the server. Its Debug output hides the password.
#[derive(Args)]
pub(crate) struct Connection {
    /// The account password.
    #[arg(
        long,
        env = "OMEMO_BOT_PASSWORD",
        hide_env_values = true,
        conflicts_with = "password_file"
    )]
    pub(crate) password: Option<String>,

    /// Read the password from this file (first line).
    #[arg(long)]
    pub(crate) password_file: Option<PathBuf>,

    /// Connect to HOST:PORT instead of looking up the server in DNS (SRV records of the
    /// JID's domain).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_server)]
    pub(crate) server: Option<ServerAddr>,

    /// Plain TCP without TLS, for throwaway test servers on loopback only: needs
    /// --server with a loopback address. STARTTLS is the default.
    #[arg(long, requires = "server")]
    pub(crate) insecure_plaintext: bool,

    /// This device's label in the OMEMO 2 device list, signed with its identity key;
    /// other clients show it next to the fingerprint. Give it to every command that goes
    /// online (or set the variable): one without it publishes the device unlabelled.
    #[arg(long, env = "OMEMO_BOT_LABEL")]
    pub(crate) label: Option<String>,

    /// Seconds to wait for the login and the publication of the own device.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub(crate) connect_timeout: u64,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("password_file", &self.password_file)
            .field("server", &self.server)
            .field("insecure_plaintext", &self.insecure_plaintext)
            .field("label", &self.label)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for StoreArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreArgs")
            .field("store", &self.store)
            .field("store_passphrase_file", &self.store_passphrase_file)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for NewPassphraseArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewPassphraseArgs")
            .field("store", &self.store)
            .field("new_passphrase_file", &self.new_passphrase_file)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for IdentityArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityArgs")
            .field("account", &self.account)
            .field("file", &self.file)
            .field("passphrase_file", &self.passphrase_file)
            .finish_non_exhaustive()
    }
}

/// `run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) account: Account,
    #[command(flatten)]
    pub(crate) connection: Connection,

    /// One-time prekeys kept published in the bundle of each OMEMO version (XEP-0384
    /// asks for about 100). A new store gets this many; a used prekey is replaced so
    /// that the bundle holds this many again, so a store made with another number moves
    /// to this one as its prekeys are used.
    #[arg(
        long,
        value_name = "N",
        default_value_t = ManagerConfig::default().pre_key_count,
        value_parser = clap::value_parser!(u32).range(1..=MAX_PRE_KEYS)
    )]
    pub(crate) pre_keys: u32,

    /// Join this room (a bare JID; repeatable) and echo its OMEMO messages to it,
    /// encrypted for every member. Only rooms that are non-anonymous and members-only
    /// carry OMEMO (the bot must be a member); the bot never answers in plaintext there.
    /// The rooms of the account's bookmarks (XEP-0402) with autojoin are joined too, at
    /// every login: those it joined on an invitation, and those added from any client of
    /// the account (with the bookmark's nickname, else --nick).
    #[arg(long = "join", value_name = "ROOM", value_parser = parse_bare_jid)]
    pub(crate) rooms: Vec<BareJid>,

    /// Join the rooms this contact invites the bot to (a bare JID; repeatable); contacts
    /// with a verified device are followed too. Direct invitations (XEP-0249) count from
    /// anywhere; those relayed by a room (XEP-0045) name an inviter in the room's words,
    /// and count only from a room on a component of the inviter's own server.
    #[arg(long = "follow-invites-from", value_name = "JID", value_parser = parse_bare_jid)]
    pub(crate) follow_invites_from: Vec<BareJid>,

    /// The nickname in rooms (default: the JID's local part).
    #[arg(long, value_name = "NICK")]
    pub(crate) nick: Option<String>,

    /// Answer an unencrypted message with its own text, unencrypted, instead of the
    /// OMEMO-only hint: the plaintext baseline of the load tool's latency figures
    /// (`scripts/load`). Never on an account people use.
    #[arg(long, hide = true)]
    pub(crate) echo_plaintext: bool,
}

/// The most one-time prekeys `run --pre-keys` publishes (a bundle of 1000 is about
/// 50 kB, already more than clients expect).
const MAX_PRE_KEYS: i64 = 1000;

/// `send`.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    pub(crate) account: Account,
    #[command(flatten)]
    pub(crate) connection: Connection,

    /// The recipient's bare JID.
    #[arg(long, value_parser = parse_bare_jid)]
    pub(crate) to: BareJid,

    /// Wait this many seconds for an OMEMO reply from the recipient and print its text;
    /// exit 3 when none arrives in time.
    #[arg(long, value_name = "SECS")]
    pub(crate) wait_reply: Option<u64>,

    /// The OMEMO version to send in: `auto` uses OMEMO 2 for devices on the recipient's
    /// OMEMO 2 device list and legacy OMEMO for the others.
    #[arg(long, value_enum, default_value_t = VersionChoice::Auto)]
    pub(crate) version: VersionChoice,

    /// The message text.
    pub(crate) text: String,
}

/// `fingerprint`.
#[derive(Debug, Args)]
pub(crate) struct FingerprintArgs {
    #[command(flatten)]
    pub(crate) account: Account,

    /// Also print the verification URI as a QR code (the form Conversations scans).
    #[arg(long)]
    pub(crate) qr: bool,
}

/// `devices`: a JID's devices, or the own ones, or tidying the own lists. The account
/// options come before `prune` or `reset` (or from their environment variables).
#[derive(Debug, Args)]
pub(crate) struct DevicesArgs {
    #[command(flatten)]
    pub(crate) online: OnlineArgs,

    /// Whose devices (the own JID lists the own devices, as --own does).
    #[arg(value_parser = parse_bare_jid, conflicts_with = "own")]
    pub(crate) of: Option<BareJid>,

    /// The own devices: this one first, then the others with their labels and when each
    /// was first seen and last heard from here.
    #[arg(long)]
    pub(crate) own: bool,

    /// Tidy the own device lists instead.
    #[command(subcommand)]
    pub(crate) action: Option<DevicesAction>,
}

/// `devices prune|reset`.
#[derive(Debug, Subcommand)]
pub(crate) enum DevicesAction {
    /// Remove the own other devices silent for longer than --older-than (no message
    /// from them read here in that time, or, never heard from, first seen before it) from
    /// the device lists of both versions, and retract their bundles.
    Prune {
        /// How long a device may have been silent: days, or a number with a unit (`90d`,
        /// `12h`, `30m`, `45s`).
        #[arg(long, value_name = "DAYS", value_parser = parse_age)]
        older_than: u64,
    },
    /// Clear the own device lists of both versions down to this device, retracting the
    /// bundles of all the others (a device still running puts itself back).
    Reset,
}

/// An account going online.
#[derive(Debug, Args)]
pub(crate) struct OnlineArgs {
    #[command(flatten)]
    pub(crate) account: Account,
    #[command(flatten)]
    pub(crate) connection: Connection,
}

/// A duration in seconds from days (`30`) or a number with a unit (`30d`, `12h`, `5m`,
/// `45s`).
fn parse_age(value: &str) -> Result<u64, String> {
    let (number, unit) = match value.char_indices().last() {
        Some((at, unit)) if unit.is_ascii_alphabetic() => (&value[..at], unit),
        _ => (value, 'd'),
    };
    let seconds_per_unit = match unit {
        'd' => 24 * 3600,
        'h' => 3600,
        'm' => 60,
        's' => 1,
        other => return Err(format!("unknown unit '{other}': use d, h, m or s")),
    };
    let number: u64 = number.parse().map_err(|_| {
        format!("expected a number of days, or a number with d, h, m or s: {value:?}")
    })?;
    if number == 0 {
        return Err("must be more than 0".to_owned());
    }
    number
        .checked_mul(seconds_per_unit)
        .ok_or_else(|| format!("{value} is too long"))
}

/// `trust` and `distrust`.
#[derive(Debug, Args)]
pub(crate) struct TrustArgs {
    #[command(flatten)]
    pub(crate) account: Account,

    /// The contact's bare JID.
    #[arg(value_parser = parse_bare_jid, required_unless_present = "uri")]
    pub(crate) of: Option<BareJid>,

    /// The device id (see `devices`).
    #[arg(required_unless_present = "uri")]
    pub(crate) device_id: Option<u32>,

    /// A verification URI (`xmpp:JID?message;omemo-sid-ID=FINGERPRINT…`, what
    /// Conversations' QR codes hold, and `fingerprint` prints): every device it names is
    /// marked verified once its fingerprint matches the one known (`devices JID` fetches
    /// them); any mismatch changes nothing. Only with `trust`.
    #[arg(long, value_parser = parse_uri, conflicts_with_all = ["of", "device_id"])]
    pub(crate) uri: Option<VerificationUri>,
}

fn parse_uri(text: &str) -> Result<VerificationUri, String> {
    VerificationUri::parse(text).map_err(|e| e.to_string())
}

/// `publish`.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    #[command(flatten)]
    pub(crate) account: Account,
    #[command(flatten)]
    pub(crate) connection: Connection,
}

/// `send --version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum VersionChoice {
    /// Legacy OMEMO only (`eu.siacs.conversations.axolotl`).
    Legacy,
    /// OMEMO 2 only (`urn:xmpp:omemo:2`).
    Omemo2,
    /// Each device in the version it publishes (OMEMO 2 where it can).
    Auto,
}

fn parse_bare_jid(value: &str) -> Result<BareJid, String> {
    let jid = jid::Jid::new(value).map_err(|e| format!("not a JID: {e}"))?;
    if jid.resource().is_some() {
        return Err("a bare JID is expected (no /resource)".to_owned());
    }
    if jid.node().is_none() {
        return Err("an account JID (user@domain) is expected".to_owned());
    }
    Ok(jid.to_bare())
}

fn parse_server(value: &str) -> Result<ServerAddr, String> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| "expected HOST:PORT".to_owned())?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err("empty host".to_owned());
    }
    if host.contains(':') && !value.starts_with('[') {
        return Err("write IPv6 addresses in brackets: [::1]:5222".to_owned());
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("invalid port {port:?}"))?;
    Ok(ServerAddr {
        host: host.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("omemo-bot").chain(args.iter().copied()))
    }

    #[test]
    fn debug_output_hides_the_password() {
        let cli = parse(&[
            "run",
            "--jid",
            "bot@example.org",
            "--store",
            "/tmp/s.db",
            "--password",
            "hunter2-secret",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains("hunter2-secret"), "{shown}");
        assert!(shown.contains("bot@example.org"), "{shown}");
    }

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn send_takes_recipient_text_and_wait_reply() {
        let cli = parse(&[
            "send",
            "--jid",
            "bot@example.org",
            "--store",
            "/tmp/s.db",
            "--password",
            "pw",
            "--to",
            "alice@example.org",
            "--wait-reply",
            "20",
            "hello world",
        ])
        .unwrap();
        let Command::Send(send) = cli.command else {
            panic!("not send")
        };
        assert_eq!(send.to.as_str(), "alice@example.org");
        assert_eq!(send.wait_reply, Some(20));
        assert_eq!(send.version, VersionChoice::Auto);
        assert_eq!(send.text, "hello world");
        assert_eq!(send.connection.password.as_deref(), Some("pw"));
        assert!(!send.connection.insecure_plaintext);
    }

    #[test]
    fn send_takes_a_version() {
        let send_with = |version: &str| {
            parse(&[
                "send",
                "--jid",
                "a@example.org",
                "--store",
                "s.db",
                "--to",
                "b@example.org",
                "--version",
                version,
                "hi",
            ])
        };
        for (given, expected) in [
            ("legacy", VersionChoice::Legacy),
            ("omemo2", VersionChoice::Omemo2),
            ("auto", VersionChoice::Auto),
        ] {
            let Command::Send(send) = send_with(given).unwrap().command else {
                panic!("not send")
            };
            assert_eq!(send.version, expected);
        }
        assert!(send_with("3").is_err());
    }

    #[test]
    fn insecure_plaintext_requires_a_server() {
        let err = parse(&[
            "run",
            "--jid",
            "bot@example.org",
            "--store",
            "s.db",
            "--insecure-plaintext",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let ok = parse(&[
            "run",
            "--jid",
            "bot@example.org",
            "--store",
            "s.db",
            "--insecure-plaintext",
            "--server",
            "127.0.0.1:5222",
        ])
        .unwrap();
        let Command::Run(run) = ok.command else {
            panic!("not run")
        };
        assert_eq!(
            run.connection.server,
            Some(ServerAddr {
                host: "127.0.0.1".into(),
                port: 5222
            })
        );
    }

    #[test]
    fn run_takes_the_number_of_pre_keys() {
        let run_with = |extra: &[&str]| {
            let mut args = vec!["run", "--jid", "bot@example.org", "--store", "s.db"];
            args.extend_from_slice(extra);
            parse(&args)
        };
        let Command::Run(run) = run_with(&[]).unwrap().command else {
            panic!("not run")
        };
        assert_eq!(run.pre_keys, ManagerConfig::default().pre_key_count);
        let Command::Run(run) = run_with(&["--pre-keys", "1"]).unwrap().command else {
            panic!("not run")
        };
        assert_eq!(run.pre_keys, 1);
        for bad in ["0", "1001", "-1", "many"] {
            assert!(run_with(&["--pre-keys", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn password_and_password_file_exclude_each_other() {
        let err = parse(&[
            "publish",
            "--jid",
            "bot@example.org",
            "--store",
            "s.db",
            "--password",
            "x",
            "--password-file",
            "/dev/null",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn jids_must_be_bare_account_jids() {
        for bad in ["bot@example.org/res", "example.org", "@@"] {
            assert!(
                parse(&["fingerprint", "--jid", bad, "--store", "s.db"]).is_err(),
                "{bad}"
            );
        }
        let cli = parse(&[
            "trust",
            "--jid",
            "bot@example.org",
            "--store",
            "s.db",
            "alice@example.org",
            "1234",
        ])
        .unwrap();
        let Command::Trust(trust) = cli.command else {
            panic!("not trust")
        };
        assert_eq!(trust.of.unwrap().as_str(), "alice@example.org");
        assert_eq!(trust.device_id, Some(1234));
        let account = ["--jid", "bot@example.org", "--store", "s.db"];
        let uri = format!(
            "xmpp:alice@example.org?message;omemo-sid-7={}",
            "ab".repeat(32)
        );
        let cli = parse(&[&["trust"][..], &account, &["--uri", &uri]].concat()).unwrap();
        let Command::Trust(trust) = cli.command else {
            panic!("not trust")
        };
        assert_eq!(trust.uri.unwrap().devices[0].0, 7);
        // A URI or a device, not both; a broken URI says why.
        assert!(
            parse(
                &[
                    &["trust"][..],
                    &account,
                    &["--uri", &uri, "alice@example.org", "7"]
                ]
                .concat()
            )
            .is_err()
        );
        assert!(parse(&[&["trust"][..], &account].concat()).is_err());
        let bad = parse(
            &[
                &["trust"][..],
                &account,
                &["--uri", "xmpp:alice@example.org?message"],
            ]
            .concat(),
        );
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("holds no OMEMO fingerprint")
        );
    }

    #[test]
    fn identity_arguments_hide_the_passphrase_in_debug_output() {
        let cli = parse(&[
            "identity",
            "export",
            "--jid",
            "bot@example.org",
            "--store",
            "s.db",
            "--file",
            "b.backup",
            "--passphrase",
            "hunter2-backup",
        ])
        .unwrap();
        let Command::Identity(IdentityCommand::Export(args)) = cli.command else {
            panic!("not identity export")
        };
        assert_eq!(args.passphrase.as_deref(), Some("hunter2-backup"));
        assert!(!format!("{args:?}").contains("hunter2"));
    }

    #[test]
    fn store_passphrases_are_taken_like_the_password_and_hidden_in_debug_output() {
        let cli = parse(&[
            "store",
            "change-passphrase",
            "--store",
            "s.db",
            "--store-passphrase",
            "hunter2-old",
            "--new-passphrase",
            "hunter2-new",
        ])
        .unwrap();
        let Command::Store(StoreCommand::ChangePassphrase(args)) = cli.command else {
            panic!("not store change-passphrase")
        };
        assert_eq!(args.store.store_passphrase.as_deref(), Some("hunter2-old"));
        assert_eq!(args.new_passphrase.as_deref(), Some("hunter2-new"));
        assert!(!format!("{args:?}").contains("hunter2"));

        let cli = parse(&[
            "trust",
            "--jid",
            "bot@example.org",
            "--store",
            "s.db",
            "--store-passphrase",
            "hunter2-store",
            "alice@example.org",
            "7",
        ])
        .unwrap();
        assert!(!format!("{cli:?}").contains("hunter2"));
        let both = parse(&[
            "store",
            "decrypt",
            "--store",
            "s.db",
            "--store-passphrase",
            "x",
            "--store-passphrase-file",
            "/dev/null",
        ]);
        assert_eq!(
            both.unwrap_err().kind(),
            clap::error::ErrorKind::ArgumentConflict
        );
    }

    #[test]
    fn devices_lists_a_jid_or_the_own_devices_or_tidies_the_own_lists() {
        let account = [
            "--jid",
            "bot@example.org",
            "--store",
            "s.db",
            "--password",
            "pw",
        ];
        let devices = |extra: &[&str]| {
            let cli = parse(&[&["devices"][..], &account, extra].concat())?;
            let Command::Devices(args) = cli.command else {
                panic!("not devices")
            };
            Ok::<_, clap::Error>(args)
        };
        let of = devices(&["alice@example.org"]).unwrap();
        assert_eq!(of.of.unwrap().as_str(), "alice@example.org");
        assert!(of.action.is_none());
        assert!(devices(&["--own"]).unwrap().own);
        assert!(devices(&["--own", "alice@example.org"]).is_err());
        assert!(devices(&["not-a-jid"]).is_err());

        let prune = devices(&["prune", "--older-than", "30"]).unwrap();
        assert!(matches!(
            prune.action,
            Some(DevicesAction::Prune { older_than }) if older_than == 30 * 24 * 3600
        ));
        assert_eq!(prune.online.account.jid.as_str(), "bot@example.org");
        assert!(matches!(
            devices(&["reset"]).unwrap().action,
            Some(DevicesAction::Reset)
        ));
        assert!(devices(&["prune"]).is_err(), "prune needs --older-than");
    }

    #[test]
    fn ages_are_days_or_numbers_with_a_unit() {
        assert_eq!(parse_age("30"), Ok(30 * 86_400));
        assert_eq!(parse_age("90d"), Ok(90 * 86_400));
        assert_eq!(parse_age("12h"), Ok(12 * 3600));
        assert_eq!(parse_age("5m"), Ok(300));
        assert_eq!(parse_age("45s"), Ok(45));
        assert!(parse_age("3w").unwrap_err().contains("unknown unit"));
        assert!(parse_age("0").unwrap_err().contains("more than 0"));
        assert!(parse_age("0s").is_err());
        assert!(parse_age("0").unwrap_err().contains("more than 0"));
        assert!(parse_age("0s").is_err());
        for bad in ["", "d", "-1", "1.5", "99999999999999999999"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
        assert!(
            parse_age("999999999999999d")
                .unwrap_err()
                .contains("too long")
        );
    }

    #[test]
    fn log_json_is_accepted_after_the_subcommand() {
        let cli = parse(&[
            "fingerprint",
            "--jid",
            "bot@example.org",
            "--store",
            "s.db",
            "--qr",
            "--log-json",
        ])
        .unwrap();
        assert!(cli.log_json);
    }

    #[test]
    fn server_addresses_parse_with_ipv6_brackets() {
        assert_eq!(
            parse_server("[::1]:5222").unwrap(),
            ServerAddr {
                host: "::1".into(),
                port: 5222
            }
        );
        assert_eq!(parse_server("xmpp.example.org:5223").unwrap().port, 5223);
        assert!(parse_server("example.org").is_err());
        assert!(parse_server("::1:5222").is_err());
        assert!(parse_server("host:0").is_err());
        assert!(parse_server("host:99999").is_err());
    }
}
