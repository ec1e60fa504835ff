//! A driver for the sans-I/O [`omemo`] crate on tokio-xmpp: an XMPP client with OMEMO
//! (legacy and OMEMO 2) built in, for Rust clients and bots.
//!
//! [`Client`] wraps a tokio-xmpp stream and an [`omemo::Manager`]: it logs in (STARTTLS,
//! or plain TCP to a loopback test server), reconnects through the manager's
//! connection-lost path, publishes the own device, runs the manager's requests and
//! timers, enables and unwraps carbons, answers disco#info with entity caps (announcing
//! `+notify` for the device lists of both versions) and pings, and hands the application
//! decrypted messages and events ([`ClientEvent`]). Messages go out with
//! [`Client::send_encrypted`].
//!
//! The manager never needs this crate; the driver adds no OMEMO logic of its own.

mod client;
mod connection;
mod error;
mod protocol;

pub use client::{Client, ClientConfig, ClientEvent, unix_now};
pub use connection::{Login, ServerAddr, Unreachable};
pub use error::DriverError;
