//! The bot's errors and their exit codes.

use thiserror::Error;

/// Why a command failed.
#[derive(Debug, Error)]
pub(crate) enum BotError {
    /// Wrong or inconsistent arguments.
    #[error("{0}")]
    Usage(String),
    /// The OMEMO library failed.
    #[error(transparent)]
    Omemo(#[from] omemo::ManagerError),
    /// The XMPP client failed.
    #[error(transparent)]
    Driver(#[from] omemo_tokio::DriverError),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] omemo::StoreError),
    /// Reading a file or writing a stanza failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// `send --wait-reply` got no reply in time.
    #[error("no reply within {0} s")]
    NoReply(u64),
    /// A command could not do what was asked.
    #[error("{0}")]
    Failed(String),
}

impl BotError {
    /// The process exit status for this error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::NoReply(_) => 3,
            Self::Driver(omemo_tokio::DriverError::AuthFailed { .. }) => 4,
            Self::Driver(omemo_tokio::DriverError::Unreachable { .. }) => 5,
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_distinguish_usage_timeouts_and_failures() {
        assert_eq!(BotError::Usage("x".into()).exit_code(), 2);
        assert_eq!(BotError::NoReply(5).exit_code(), 3);
        assert_eq!(
            BotError::Driver(omemo_tokio::DriverError::Closed).exit_code(),
            1
        );
        assert_eq!(BotError::Failed("no".into()).exit_code(), 1);
        let refused = omemo_tokio::DriverError::AuthFailed {
            jid: jid::BareJid::new("a@example.org").unwrap(),
            reason: "not-authorized".into(),
        };
        assert_eq!(BotError::Driver(refused).exit_code(), 4);
        let unreachable = omemo_tokio::DriverError::Unreachable {
            server: "127.0.0.1:1".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(BotError::Driver(unreachable).exit_code(), 5);
    }
}
