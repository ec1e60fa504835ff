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
    /// The connection ended for good.
    #[error("the XMPP connection ended")]
    Closed,
    /// Something did not happen in time.
    #[error("timed out {0}")]
    Timeout(&'static str),
}
