//! The XMPP stream (tokio-xmpp): login, reconnection, stanzas in and out as `minidom`
//! elements.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use sasl::common::Credentials;
use tokio_xmpp::connect::{
    DnsConfig, ServerConnector, StartTlsServerConnector, TcpServerConnector,
};
use tokio_xmpp::error::AuthError;
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Event, Stanza};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::message::Message;
use xmpp_parsers::presence::Presence;
use xmpp_parsers::sasl::DefinedCondition;

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

/// One client stream. Before tokio-xmpp takes over, one login is checked: a server that
/// cannot be reached or refuses the credentials is reported at once (tokio-xmpp would
/// retry either for ever). Then tokio-xmpp reconnects by itself (with backoff) and
/// reports each new session as [`NetEvent::Online`].
pub(crate) struct Connection {
    state: State,
    bound: Option<FullJid>,
}

enum State {
    /// The first login is being checked; stanzas sent meanwhile wait for the stream.
    Checking {
        check: Pin<Box<dyn Future<Output = Result<(), DriverError>> + Send>>,
        login: Login,
        early: VecDeque<Element>,
    },
    /// tokio-xmpp has the stream; `early` holds what was sent before, in order, until it
    /// is written (taken off only once written, so a cancelled write is tried again).
    Running {
        client: Box<tokio_xmpp::Client>,
        early: VecDeque<Element>,
    },
    /// The first login was refused (or the server could not be reached, with
    /// [`Unreachable::Fail`]): final.
    Failed,
}

/// What to do when the server cannot be reached at the first login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreachable {
    /// Fail with [`DriverError::Unreachable`] (one-shot tools).
    Fail,
    /// Log what is waited for and try again with backoff, up to a minute apart (services).
    Retry,
}

impl Connection {
    /// Starts connecting (in the background, driven by [`Connection::next`]).
    pub(crate) fn start(login: Login, unreachable: Unreachable) -> Result<Self, DriverError> {
        // The TLS backend of tokio-xmpp (rustls on ring), unless the application
        // installed one already.
        let _ = tokio_xmpp::rustls::crypto::ring::default_provider().install_default();
        if login.plaintext {
            let host = match &login.server {
                Some(server) if server.is_loopback() => None,
                Some(server) => Some(server.host.clone()),
                None => Some(login.jid.domain().to_string()),
            };
            if let Some(host) = host {
                return Err(DriverError::InsecureRemote(host));
            }
        }
        let check = Box::pin(check_login(login.clone(), unreachable));
        Ok(Self {
            state: State::Checking {
                check,
                login,
                early: VecDeque::new(),
            },
            bound: None,
        })
    }

    /// The bound full JID of the current session.
    pub(crate) fn bound(&self) -> Option<&FullJid> {
        self.bound.as_ref()
    }

    /// The next event. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Result<NetEvent, DriverError> {
        if let State::Checking { check, .. } = &mut self.state {
            let checked = check.as_mut().await;
            let State::Checking { login, early, .. } =
                std::mem::replace(&mut self.state, State::Failed)
            else {
                unreachable!("the state was Checking above");
            };
            checked?;
            self.state = State::Running {
                client: Box::new(tokio_xmpp_client(login)),
                early,
            };
        }
        let State::Running { client, early } = &mut self.state else {
            return Err(DriverError::Closed);
        };
        while let Some(element) = early.front() {
            send_stanza(client, element_to_stanza(element.clone())?).await?;
            early.pop_front();
        }
        loop {
            match client.next().await {
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
    /// written (before the first login, until it is queued).
    pub(crate) async fn send(&mut self, element: Element) -> Result<(), DriverError> {
        match &mut self.state {
            State::Running { client, early } if early.is_empty() => {
                send_stanza(client, element_to_stanza(element)?).await
            }
            // After what waits already, in order (checked now, converted when written).
            State::Checking { early, .. } | State::Running { early, .. } => {
                element_to_stanza(element.clone())?;
                early.push_back(element);
                Ok(())
            }
            State::Failed => Err(DriverError::Closed),
        }
    }

    /// Closes the stream cleanly (bounded in time).
    pub(crate) async fn close(self) {
        let (client, unsent) = match self.state {
            State::Running { client, early } => (Some(client), early.len()),
            State::Checking { early, .. } => (None, early.len()),
            State::Failed => (None, 0),
        };
        if unsent > 0 {
            tracing::warn!(
                unsent,
                "closing before stanzas sent ahead of the login went out"
            );
        }
        let Some(client) = client else {
            return;
        };
        if tokio::time::timeout(CLOSE_TIMEOUT, client.send_end())
            .await
            .is_err()
        {
            tracing::debug!("stream close timed out");
        }
    }
}

/// The tokio-xmpp client for `login` (which [`Connection::start`] checked).
fn tokio_xmpp_client(login: Login) -> tokio_xmpp::Client {
    let jid = Jid::from(login.jid);
    let timeouts = Timeouts::default();
    match login.server {
        Some(server) if login.plaintext => tokio_xmpp::Client::new_plaintext(
            jid,
            login.password,
            DnsConfig::no_srv(&server.host, server.port),
            timeouts,
        ),
        Some(server) => tokio_xmpp::Client::new_starttls(
            jid,
            login.password,
            DnsConfig::no_srv(&server.host, server.port),
            timeouts,
        ),
        None => tokio_xmpp::Client::new(jid, login.password),
    }
}

async fn send_stanza(client: &mut tokio_xmpp::Client, stanza: Stanza) -> Result<(), DriverError> {
    match tokio::time::timeout(SEND_TIMEOUT, client.send_stanza(stanza)).await {
        Ok(Ok(_token)) => Ok(()),
        Ok(Err(error)) => Err(DriverError::Io(error)),
        Err(_) => Err(DriverError::Timeout("writing a stanza")),
    }
}

/// Logs in once with `login` and closes again: fails at once with
/// [`DriverError::AuthFailed`] when the server refuses the credentials, and with
/// [`DriverError::Unreachable`] (or, with [`Unreachable::Retry`], tries again with
/// backoff) when it cannot be reached.
async fn check_login(login: Login, unreachable: Unreachable) -> Result<(), DriverError> {
    let mut delay = FIRST_RETRY;
    loop {
        let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, async {
            match &login.server {
                Some(server) if login.plaintext => {
                    authenticate(TcpServerConnector::from(dns(server)), &login).await
                }
                Some(server) => {
                    authenticate(StartTlsServerConnector::from(dns(server)), &login).await
                }
                None => {
                    let dns = DnsConfig::srv_default_client(login.jid.domain().as_str());
                    authenticate(StartTlsServerConnector::from(dns), &login).await
                }
            }
        })
        .await;
        let reason = match attempt {
            Ok(Ok(())) => return Ok(()),
            // The server's account backend is down: try again like an absent server.
            Ok(Err(tokio_xmpp::Error::Auth(AuthError::Fail(
                DefinedCondition::TemporaryAuthFailure,
            )))) => "the server cannot check logins just now (temporary-auth-failure)".to_owned(),
            Ok(Err(tokio_xmpp::Error::Auth(error))) => {
                return Err(DriverError::AuthFailed {
                    jid: login.jid.clone(),
                    reason: auth_failure(&error),
                });
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()),
        };
        let server = login.server.as_ref().map_or_else(
            || login.jid.domain().to_string(),
            |s| format!("{}:{}", s.host, s.port),
        );
        if unreachable == Unreachable::Fail {
            return Err(DriverError::Unreachable { server, reason });
        }
        tracing::warn!(
            %server,
            %reason,
            retry_in_secs = delay.as_secs(),
            "cannot reach the XMPP server; waiting for it"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(LAST_RETRY);
    }
}

/// How long one attempt to reach the server and log in may take (a host that drops
/// packets never refuses).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first and the longest wait between attempts to reach the server at start.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);

fn dns(server: &ServerAddr) -> DnsConfig {
    DnsConfig::no_srv(&server.host, server.port)
}

/// Connects and authenticates (without binding a resource), then drops the stream.
async fn authenticate<C: ServerConnector>(
    connector: C,
    login: &Login,
) -> Result<(), tokio_xmpp::Error> {
    let jid = Jid::from(login.jid.clone());
    let Some(node) = login.jid.node() else {
        // No account name to log in with: the server would say not-authorized.
        return Err(AuthError::Fail(DefinedCondition::NotAuthorized).into());
    };
    let (pending, binding) = connector
        .connect(&jid, xmpp_parsers::ns::JABBER_CLIENT, Timeouts::default())
        .await?;
    let (features, stream) = pending.recv_features().await?;
    let credentials = Credentials::default()
        .with_username(node.as_str())
        .with_password(login.password.clone())
        .with_channel_binding(binding);
    tokio_xmpp::client_login(stream, features.sasl_mechanisms, credentials).await?;
    Ok(())
}

/// The SASL condition (`not-authorized`, …) or what else went wrong in authentication.
fn auth_failure(error: &AuthError) -> String {
    match error {
        AuthError::Fail(condition) => kebab_case(&format!("{condition:?}")),
        AuthError::NoMechanism => "no SASL mechanism in common with the server".to_owned(),
        other => other.to_string(),
    }
}

/// `NotAuthorized` → `not-authorized` (the XML names of the SASL conditions).
fn kebab_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
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
            Connection::start(login.clone(), Unreachable::Fail),
            Err(DriverError::InsecureRemote(_))
        ));
        let without_server = Login {
            server: None,
            ..login
        };
        assert!(matches!(
            Connection::start(without_server, Unreachable::Fail),
            Err(DriverError::InsecureRemote(_))
        ));
    }

    #[test]
    fn sasl_conditions_read_as_their_xml_names() {
        let failure = AuthError::Fail(xmpp_parsers::sasl::DefinedCondition::NotAuthorized);
        assert_eq!(auth_failure(&failure), "not-authorized");
        let failure = AuthError::Fail(xmpp_parsers::sasl::DefinedCondition::AccountDisabled);
        assert_eq!(auth_failure(&failure), "account-disabled");
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
