//! Catching up with the own account's message archive (XEP-0313) after time offline.
//!
//! [`Manager::catch_up`] pages through the archive after the last message read: the
//! archive id (XEP-0359 stanza id) of the last result of the last catch-up, or of the last
//! message read online, kept in the store; the time it was read when the server no longer
//! knows that id (a new store starts at its creation). A catch-up that ends early keeps
//! what it read: the next one goes on after its last result. While it runs, XEP-0384's
//! history rules hold:
//! a one-time prekey a key exchange used is hidden from the bundle at once but deleted
//! only when the catch-up is over (the archive and the live copy of one key exchange,
//! or two contacts that picked the same prekey while this device was away, all read);
//! the empty message that completes a new session goes out once per session after it;
//! no heartbeat goes out during it. A message read twice (archive and live copy, in
//! either order) is a duplicate the second time: the ratchet has used its key.

use std::collections::BTreeSet;

use minidom::Element;
use rand_core::CryptoRng;

use super::Manager;
use super::events::{Event, Handled, Via};
use super::request::Pending;
use crate::consts::REQUEST_TIMEOUT_SECS;
use crate::error::ManagerError;
use crate::stanza::mam::{self, Archived};
use crate::store::{ArchivePosition, Batch, Op, Store};
use crate::version::Version;

/// Pages one catch-up reads at most (of [`mam::PAGE_SIZE`] messages): 10 000 messages.
const MAX_PAGES: u32 = 200;

/// A catch-up under way.
pub(super) struct CatchUp {
    /// The `queryid` its results carry.
    query_id: String,
    /// Where it started reading.
    from: ArchivePosition,
    /// Whether the query names `from.last_id` (the server may have forgotten it; then
    /// the time is used).
    by_id: bool,
    /// When it started: once it completes, everything archived before is read.
    started_at: u64,
    /// Pages asked for.
    pages: u32,
    /// Whether a page is asked for and not answered (a lost connection forgets it).
    querying: bool,
    /// The archive id the page asked for comes after.
    page_after: Option<String>,
    /// Since when it waits for [`Manager::catch_up`] to ask again after a lost
    /// connection.
    stalled_since: Option<u64>,
    /// Archived messages read, and the archive id of the last one.
    read: usize,
    last_read: Option<String>,
    /// The sessions key exchanges built, or whose received chains crossed the heartbeat
    /// limit, during it: each gets one empty message after it.
    completions: BTreeSet<(String, u32, Version)>,
}

impl<S: Store> Manager<S> {
    /// Reads what arrived while this device was offline from the own account's archive
    /// (XEP-0313): queues the query of its first page (send it from
    /// [`Manager::poll_transmit`]; the results come back through
    /// [`Manager::handle_stanza`], their messages as [`Handled::Message`] with
    /// [`Via::Archive`]). Call it when a stream is up, after [`Manager::connected`].
    /// [`Event::CaughtUp`] says when it is over.
    ///
    /// It reads after the last message read (the last result of the last catch-up, or
    /// the last message read online, by archive id); a new store reads from its
    /// creation. A catch-up that runs already (its page lost with a connection) asks
    /// again where it stopped; one not asked again within a minute of losing its
    /// connection ends.
    ///
    /// # Errors
    ///
    /// [`ManagerError::Store`] when the store cannot be read.
    pub fn catch_up(&mut self, rng: &mut impl CryptoRng, now: u64) -> Result<(), ManagerError> {
        self.clock = self.clock.max(now);
        // Messages read online during it do not move the position: older ones may be
        // unread until it completes.
        self.positions_online = false;
        let after = match &mut self.catch_up {
            Some(catch_up) if catch_up.querying => return Ok(()),
            Some(catch_up) => {
                catch_up.stalled_since = None;
                catch_up.last_read.clone().or_else(|| {
                    catch_up
                        .by_id
                        .then(|| catch_up.from.last_id.clone())
                        .flatten()
                })
            }
            None => {
                // A position read online and not written yet is where this one starts.
                let from = match self.unsaved_position.take() {
                    Some(position) => {
                        self.commit(Batch {
                            ops: vec![Op::PutArchivePosition {
                                archive: self.own.jid.clone(),
                                position: position.clone(),
                            }],
                        })?;
                        position
                    }
                    None => self.store.load_archive_position(&self.own.jid)?.unwrap_or(
                        ArchivePosition {
                            at: 0,
                            last_id: None,
                        },
                    ),
                };
                let after = from.last_id.clone();
                self.catch_up = Some(CatchUp {
                    query_id: format!("omemo-catch-up-{:08x}", rng.next_u32()),
                    by_id: after.is_some(),
                    from,
                    started_at: now,
                    pages: 0,
                    querying: false,
                    page_after: None,
                    stalled_since: None,
                    read: 0,
                    last_read: None,
                    completions: BTreeSet::new(),
                });
                after
            }
        };
        self.query_archive(after);
        Ok(())
    }

    /// Whether a catch-up is under way.
    pub fn is_catching_up(&self) -> bool {
        self.catch_up.is_some()
    }

    /// Asks for the next page, after the archive id `after` (by time alone when `None`
    /// and the catch-up does not go by id).
    fn query_archive(&mut self, after: Option<String>) {
        let Some(catch_up) = &mut self.catch_up else {
            return;
        };
        catch_up.pages += 1;
        catch_up.querying = true;
        catch_up.page_after.clone_from(&after);
        let query_id = catch_up.query_id.clone();
        // By id, the time is not needed (and a clock that differs from the server's
        // would only hide messages).
        let start = (!catch_up.by_id).then_some(catch_up.from.at);
        self.queue(Pending::ArchivePage, |id| {
            mam::query_iq(id, None, &query_id, start, after.as_deref())
        });
    }

    /// The answer to a page's query: the next page, or the end.
    pub(super) fn archive_page_answered(
        &mut self,
        iq: &Element,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<(), ManagerError> {
        let Some(catch_up) = &mut self.catch_up else {
            return Ok(());
        };
        catch_up.querying = false;
        let pages = catch_up.pages;
        let fin = (iq.attr("type") == Some("result"))
            .then(|| mam::parse_fin(iq))
            .flatten();
        // The server forgot the id the first page went after (its archive expired):
        // read from the time instead.
        if fin.is_none() && catch_up.by_id && catch_up.last_read.is_none() {
            tracing::info!("the archive does not know the last id read; reading by time");
            catch_up.by_id = false;
            self.query_archive(None);
            return Ok(());
        }
        // A page that ends where it started would repeat forever.
        let moved = |last: &str| catch_up.page_after.as_deref() != Some(last);
        match fin {
            Some(fin) if fin.complete => self.finish_catch_up(true, rng, now),
            Some(mam::Fin {
                last: Some(last), ..
            }) if pages < MAX_PAGES && moved(&last) => {
                self.query_archive(Some(last));
                Ok(())
            }
            _ => {
                tracing::warn!(pages, "catch-up with the archive ended early");
                self.finish_catch_up(false, rng, now)
            }
        }
    }

    /// The page's query got no answer in time, or the catch-up waited too long to be
    /// asked again after a lost connection: it ends.
    pub(super) fn archive_page_lost(
        &mut self,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<(), ManagerError> {
        let Some(catch_up) = &self.catch_up else {
            return Ok(());
        };
        let unanswered = catch_up.querying && !self.requests.is_pending(&Pending::ArchivePage);
        let abandoned = catch_up
            .stalled_since
            .is_some_and(|at| now.saturating_sub(at) >= REQUEST_TIMEOUT_SECS);
        if unanswered || abandoned {
            tracing::warn!("the archive did not answer; catch-up ended early");
            self.finish_catch_up(false, rng, now)?;
        }
        Ok(())
    }

    /// The connection is gone, and with it the page asked for: [`Manager::catch_up`]
    /// asks again.
    pub(super) fn archive_connection_lost(&mut self) {
        let clock = self.clock;
        if let Some(catch_up) = &mut self.catch_up {
            catch_up.querying = false;
            catch_up.stalled_since = Some(clock);
        }
    }

    /// Ends the catch-up: the prekeys hidden during it are deleted, each new session gets
    /// its empty message, and the position moves past the last result read (and, when
    /// `complete`, to its start time).
    fn finish_catch_up(
        &mut self,
        complete: bool,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<(), ManagerError> {
        let Some(catch_up) = &self.catch_up else {
            return Ok(());
        };
        let mut batch = Batch::default();
        self.own.delete_hidden_ops(&mut batch);
        let position = ArchivePosition {
            at: if complete {
                catch_up.started_at
            } else {
                catch_up.from.at
            },
            last_id: catch_up
                .last_read
                .clone()
                .or_else(|| catch_up.from.last_id.clone()),
        };
        if position != catch_up.from {
            batch.ops.push(Op::PutArchivePosition {
                archive: self.own.jid.clone(),
                position,
            });
        }
        // Committed first: a failed write keeps the catch-up (and what it holds).
        self.commit(batch)?;
        let Some(catch_up) = self.catch_up.take() else {
            return Ok(());
        };
        self.own.forget_hidden();
        self.positions_online = complete;
        let sessions = catch_up.completions.len();
        for (jid, device_id, version) in catch_up.completions {
            if let Err(error) = self.empty_message_to(&jid, device_id, version, rng) {
                tracing::warn!(%jid, device_id, %error, "could not queue the empty reply");
            }
        }
        tracing::debug!(
            read = catch_up.read,
            new_sessions = sessions,
            complete,
            now,
            "caught up with the archive"
        );
        self.events.push_back(Event::CaughtUp {
            messages: catch_up.read,
            complete,
        });
        Ok(())
    }

    /// A MAM result message: its archived message when it answers the catch-up's query
    /// and comes from the own account; the application's when it answers another query.
    pub(super) fn archived(
        &mut self,
        result: &Element,
        archived: Archived,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<Handled, ManagerError> {
        let ours = self
            .catch_up
            .as_ref()
            .is_some_and(|c| c.query_id == archived.query_id);
        if !ours {
            return Ok(Handled::Unhandled);
        }
        let from_own_account = match result.attr("from") {
            None => true,
            Some(from) => jid::Jid::new(from).is_ok_and(|from| {
                from.resource().is_none() && from.to_bare().as_str() == self.own.jid
            }),
        };
        if !from_own_account {
            tracing::warn!(
                from = result.attr("from").unwrap_or_default(),
                "archive result not from the own account; dropped"
            );
            return Ok(Handled::Dropped("archive result not from the own account"));
        }
        let handled = match self.receive(&archived.message, Via::Archive, rng, now)? {
            // Not OMEMO: the application's, unwrapped (the server hands a client that
            // reads its archive no offline copies).
            Handled::Unhandled => Handled::Archived(archived.message),
            handled => handled,
        };
        if let Some(catch_up) = &mut self.catch_up {
            catch_up.read += 1;
            catch_up.last_read = Some(archived.archive_id);
        }
        Ok(handled)
    }

    /// An empty message to send to a session (a new one's completion, or a heartbeat):
    /// after the catch-up (once per session) when one is under way. Returns whether it
    /// was put off.
    pub(super) fn defer_completion(&mut self, jid: &str, device_id: u32, version: Version) -> bool {
        match &mut self.catch_up {
            Some(catch_up) => {
                catch_up
                    .completions
                    .insert((jid.to_owned(), device_id, version));
                true
            }
            None => false,
        }
    }

    /// A message handled online (not during a catch-up, nor after one that ended early:
    /// `positions_online` is off from a catch-up's start until one completes): the next
    /// catch-up starts after it, by the id the own archive gave it.
    pub(super) fn note_read_online(&mut self, message: &Element, now: u64) {
        if !self.positions_online {
            return;
        }
        let Some(id) = mam::stanza_id(message, &self.own.jid) else {
            return;
        };
        // Written with the next sync, with the state of the messages before it.
        self.unsaved_position = Some(ArchivePosition {
            at: now,
            last_id: Some(id.to_owned()),
        });
        self.unsynced = true;
    }
}
