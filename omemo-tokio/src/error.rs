//! The driver's errors.

use thiserror::Error;

/// Why a driver call failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The OMEMO library failed (its store, or a message that could not be sent).
    #[error(transparent)]
    Omemo(#[from] omemo::ManagerError),
    /// Writing a stanza failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent, or the caller built, something unusable.
    #[error("XMPP: {0}")]
    Protocol(String),
    /// Plain TCP was asked for a server that is not on loopback.
    #[error("plain TCP without TLS only talks to loopback servers, not {0}")]
    InsecureRemote(String),
    /// The server refused the account's credentials (final: retrying cannot help).
    #[error("authentication failed for {jid}: {reason}")]
    AuthFailed {
        /// The account.
        jid: jid::BareJid,
        /// The SASL condition (`not-authorized`, …) or what else failed.
        reason: String,
    },
    /// The server could not be reached at the first login (connection refused, DNS
    /// lookup failed, TLS failed, …), with [`Unreachable::Fail`](crate::Unreachable).
    #[error("cannot reach the XMPP server {server}: {reason}")]
    Unreachable {
        /// The server address, or the JID's domain when it was looked up in DNS.
        server: String,
        /// What went wrong.
        reason: String,
    },
    /// The connection ended for good.
    #[error("the XMPP connection ended")]
    Closed,
    /// Something did not happen in time.
    #[error("timed out {0}")]
    Timeout(&'static str),
}
