//! The XMPP stream (tokio-xmpp): login, reconnection, stanzas in and out as `minidom`
//! elements.

use std::time::Duration;

use futures::StreamExt;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Event, Stanza};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::message::Message;
use xmpp_parsers::presence::Presence;

use crate::error::DriverError;

/// How long one stanza may wait to be written before the driver gives up on it.
const SEND_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the closing handshake may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// A server address, instead of the DNS SRV lookup of the JID's domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddr {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl ServerAddr {
    /// Whether the host is a loopback address or `localhost`.
    pub fn is_loopback(&self) -> bool {
        let host = self.host.trim_end_matches('.');
        if host.eq_ignore_ascii_case("localhost")
            || host.to_ascii_lowercase().ends_with(".localhost")
        {
            return true;
        }
        host.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    }
}

/// Where and how to log in. Its Debug output hides the password.
#[derive(Clone)]
pub struct Login {
    /// The account.
    pub jid: BareJid,
    /// The password.
    pub password: String,
    /// A fixed server address instead of DNS.
    pub server: Option<ServerAddr>,
    /// Plain TCP without TLS: only for throwaway servers on a loopback `server`.
    pub plaintext: bool,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("jid", &self.jid)
            .field("server", &self.server)
            .field("plaintext", &self.plaintext)
            .finish_non_exhaustive()
    }
}

/// Something that came from the stream.
#[derive(Debug)]
pub(crate) enum NetEvent {
    /// A (new) session is bound: the stream was (re)established and any earlier state on
    /// the server side (presence, carbons, pending IQs) is gone.
    Online(FullJid),
    /// The stream broke; tokio-xmpp reconnects (and then reports [`NetEvent::Online`]).
    Offline,
    /// A stanza.
    Stanza(Element),
}

/// One client stream; tokio-xmpp reconnects it by itself (with backoff) and reports each
/// new session as [`NetEvent::Online`].
pub(crate) struct Connection {
    client: tokio_xmpp::Client,
    bound: Option<FullJid>,
}

impl Connection {
    /// Starts connecting (in the background).
    pub(crate) fn start(login: Login) -> Result<Self, DriverError> {
        // The TLS backend of tokio-xmpp (rustls on ring), unless the application
        // installed one already.
        let _ = tokio_xmpp::rustls::crypto::ring::default_provider().install_default();
        let jid = Jid::from(login.jid.clone());
        let timeouts = Timeouts::default();
        let client = match (&login.server, login.plaintext) {
            (Some(server), true) => {
                if !server.is_loopback() {
                    return Err(DriverError::InsecureRemote(server.host.clone()));
                }
                tokio_xmpp::Client::new_plaintext(
                    jid,
                    login.password,
                    DnsConfig::no_srv(&server.host, server.port),
                    timeouts,
                )
            }
            (Some(server), false) => tokio_xmpp::Client::new_starttls(
                jid,
                login.password,
                DnsConfig::no_srv(&server.host, server.port),
                timeouts,
            ),
            (None, false) => tokio_xmpp::Client::new(jid, login.password),
            (None, true) => {
                return Err(DriverError::InsecureRemote(login.jid.domain().to_string()));
            }
        };
        Ok(Self {
            client,
            bound: None,
        })
    }

    /// The bound full JID of the current session.
    pub(crate) fn bound(&self) -> Option<&FullJid> {
        self.bound.as_ref()
    }

    /// The next event. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Result<NetEvent, DriverError> {
        loop {
            match self.client.next().await {
                None => return Err(DriverError::Closed),
                Some(Event::Online {
                    bound_jid,
                    resumed: true,
                    ..
                }) => {
                    tracing::info!(jid = %bound_jid, "stream resumed");
                }
                Some(Event::Online { bound_jid, .. }) => {
                    let full = bound_jid.try_into_full().map_err(|jid| {
                        DriverError::Protocol(format!("bound JID {jid} is not full"))
                    })?;
                    self.bound = Some(full.clone());
                    return Ok(NetEvent::Online(full));
                }
                Some(Event::Disconnected(error)) => {
                    tracing::warn!(%error, "disconnected; reconnecting");
                    return Ok(NetEvent::Offline);
                }
                Some(Event::Stanza(stanza)) => {
                    return Ok(NetEvent::Stanza(stanza_to_element(stanza)));
                }
            }
        }
    }

    /// Sends one stanza (`<message>`, `<presence>` or `<iq>`), waiting until it is
    /// written.
    pub(crate) async fn send(&mut self, element: Element) -> Result<(), DriverError> {
        let stanza = element_to_stanza(element)?;
        match tokio::time::timeout(SEND_TIMEOUT, self.client.send_stanza(stanza)).await {
            Ok(Ok(_token)) => Ok(()),
            Ok(Err(error)) => Err(DriverError::Io(error)),
            Err(_) => Err(DriverError::Timeout("writing a stanza")),
        }
    }

    /// Closes the stream cleanly (bounded in time).
    pub(crate) async fn close(self) {
        if tokio::time::timeout(CLOSE_TIMEOUT, self.client.send_end())
            .await
            .is_err()
        {
            tracing::debug!("stream close timed out");
        }
    }
}

fn stanza_to_element(stanza: Stanza) -> Element {
    match stanza {
        Stanza::Iq(iq) => iq.into(),
        Stanza::Message(message) => message.into(),
        Stanza::Presence(presence) => presence.into(),
    }
}

pub(crate) fn element_to_stanza(element: Element) -> Result<Stanza, DriverError> {
    let name = element.name().to_owned();
    let bad = |e: xmpp_parsers::Error| DriverError::Protocol(format!("cannot send <{name}>: {e}"));
    Ok(match element.name() {
        "iq" => Stanza::Iq(Iq::try_from(element).map_err(|e| bad(e.into()))?),
        "message" => Stanza::Message(Message::try_from(element).map_err(|e| bad(e.into()))?),
        "presence" => Stanza::Presence(Presence::try_from(element).map_err(|e| bad(e.into()))?),
        other => return Err(DriverError::Protocol(format!("<{other}> is not a stanza"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        let addr = |h: &str| ServerAddr {
            host: h.into(),
            port: 1,
        };
        assert!(addr("127.0.0.1").is_loopback());
        assert!(addr("127.1.2.3").is_loopback());
        assert!(addr("::1").is_loopback());
        assert!(addr("localhost").is_loopback());
        assert!(addr("LOCALHOST.").is_loopback());
        assert!(!addr("10.0.0.1").is_loopback());
        assert!(!addr("example.org").is_loopback());
        assert!(!addr("localhost.example.org").is_loopback());
    }

    #[test]
    fn plaintext_is_refused_for_remote_servers_and_login_debug_hides_the_password() {
        let login = Login {
            jid: BareJid::new("a@example.org").unwrap(),
            password: "hunter2-secret".into(),
            server: Some(ServerAddr {
                host: "example.org".into(),
                port: 5222,
            }),
            plaintext: true,
        };
        assert!(!format!("{login:?}").contains("hunter2"));
        assert!(matches!(
            Connection::start(login.clone()),
            Err(DriverError::InsecureRemote(_))
        ));
        let without_server = Login {
            server: None,
            ..login
        };
        assert!(matches!(
            Connection::start(without_server),
            Err(DriverError::InsecureRemote(_))
        ));
    }

    #[test]
    fn only_stanzas_convert() {
        let message: Element = "<message xmlns='jabber:client' to='a@example.org'/>"
            .parse()
            .unwrap();
        assert!(matches!(element_to_stanza(message), Ok(Stanza::Message(_))));
        assert!(element_to_stanza(Element::bare("foo", "jabber:client")).is_err());
    }
}
