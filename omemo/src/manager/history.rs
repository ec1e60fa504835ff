//! Catching up with the own account's message archive (XEP-0313) after time offline.
//!
//! [`Manager::catch_up`] pages through the archive from where the last catch-up (or the
//! last message read online) left off. While it runs, XEP-0384's history rules hold:
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
use crate::error::ManagerError;
use crate::stanza::mam::{self, Archived};
use crate::store::{Batch, Op, Store};
use crate::version::Version;

/// Pages one catch-up reads at most (of [`mam::PAGE_SIZE`] messages): 10 000 messages.
const MAX_PAGES: u32 = 200;

/// A catch-up starts this long before the last one ended: clocks of the server and this
/// device may differ, and a message read twice is only a duplicate.
const OVERLAP_SECS: u64 = 120;

/// While online, how far the time of reading may lag before it is written again.
const READ_STEP_SECS: u64 = 60;

/// A catch-up under way.
pub(super) struct CatchUp {
    /// The `queryid` its results carry.
    query_id: String,
    /// The archive is read from here (`None`: all of it).
    since: Option<u64>,
    /// When it started: once it completes, everything before is read.
    started_at: u64,
    /// Pages asked for.
    pages: u32,
    /// Whether a page is asked for and not answered (a lost connection forgets it).
    querying: bool,
    /// Archived messages read.
    read: usize,
    /// The sessions key exchanges built during it: each gets one empty message after it.
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
    /// The first catch-up of a new store reads from its creation; later ones from where
    /// the last one ended, or from the last message read online. A catch-up that runs
    /// already (its page lost with a connection) asks again from its start.
    ///
    /// # Errors
    ///
    /// [`ManagerError::Store`] when the store cannot be read.
    pub fn catch_up(&mut self, rng: &mut impl CryptoRng, now: u64) -> Result<(), ManagerError> {
        self.clock = self.clock.max(now);
        match &mut self.catch_up {
            Some(catch_up) if catch_up.querying => return Ok(()),
            Some(catch_up) => catch_up.pages = 0,
            None => {
                let since = self
                    .store
                    .load_archive_caught_up(&self.own.jid)?
                    .map(|at| at.saturating_sub(OVERLAP_SECS));
                self.catch_up = Some(CatchUp {
                    query_id: format!("omemo-catch-up-{:08x}", rng.next_u32()),
                    since,
                    started_at: now,
                    pages: 0,
                    querying: false,
                    read: 0,
                    completions: BTreeSet::new(),
                });
            }
        }
        self.query_archive(None);
        Ok(())
    }

    /// Whether a catch-up is under way.
    pub fn is_catching_up(&self) -> bool {
        self.catch_up.is_some()
    }

    /// Asks for the next page, after the archive id `after`.
    fn query_archive(&mut self, after: Option<String>) {
        let Some(catch_up) = &mut self.catch_up else {
            return;
        };
        catch_up.pages += 1;
        catch_up.querying = true;
        let (query_id, since) = (catch_up.query_id.clone(), catch_up.since);
        self.queue(Pending::ArchivePage, |id| {
            mam::query_iq(id, None, &query_id, since, after.as_deref())
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
        match fin {
            Some(fin) if fin.complete => self.finish_catch_up(true, rng, now),
            Some(mam::Fin {
                last: Some(last), ..
            }) if pages < MAX_PAGES => {
                self.query_archive(Some(last));
                Ok(())
            }
            _ => {
                tracing::warn!(pages, "catch-up with the archive ended early");
                self.finish_catch_up(false, rng, now)
            }
        }
    }

    /// The page's query got no answer in time.
    pub(super) fn archive_page_lost(
        &mut self,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<(), ManagerError> {
        let waiting = self.catch_up.as_ref().is_some_and(|c| c.querying);
        if waiting && !self.requests.is_pending(&Pending::ArchivePage) {
            tracing::warn!("the archive did not answer; catch-up ended early");
            self.finish_catch_up(false, rng, now)?;
        }
        Ok(())
    }

    /// The connection is gone, and with it the page asked for: [`Manager::catch_up`]
    /// asks again.
    pub(super) fn archive_connection_lost(&mut self) {
        if let Some(catch_up) = &mut self.catch_up {
            catch_up.querying = false;
        }
    }

    /// Ends the catch-up: the prekeys hidden during it are deleted, each new session gets
    /// its empty message, and when `complete`, the archive counts as read up to its
    /// start.
    fn finish_catch_up(
        &mut self,
        complete: bool,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<(), ManagerError> {
        let Some(catch_up) = self.catch_up.take() else {
            return Ok(());
        };
        let mut batch = Batch::default();
        self.own.delete_hidden_ops(&mut batch);
        if complete {
            batch.ops.push(Op::PutArchiveCaughtUp {
                archive: self.own.jid.clone(),
                at: catch_up.started_at,
            });
            self.archive_read_at = Some(catch_up.started_at.max(now));
        }
        self.commit(batch)?;
        self.own.forget_hidden();
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
        if let Some(catch_up) = &mut self.catch_up {
            catch_up.read += 1;
        }
        self.receive(&archived.message, Via::Archive, rng, now)
    }

    /// During a catch-up, the one-time prekeys key exchanges use are hidden, not deleted.
    pub(super) fn hides_used_pre_keys(&self) -> bool {
        self.catch_up.is_some()
    }

    /// A new session to complete with an empty message: after the catch-up (once per
    /// session) when one is under way. Returns whether it was put off.
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

    /// A message read online: the archive counts as read up to `now` (written when it
    /// moved by a minute, and only once a catch-up completed in this session, so that
    /// the gap a failed one left is read next time).
    pub(super) fn note_read_online(&mut self, now: u64) {
        if self.catch_up.is_some() {
            return;
        }
        let Some(read_at) = self.archive_read_at else {
            return;
        };
        if now.saturating_sub(read_at) < READ_STEP_SECS {
            return;
        }
        self.archive_read_at = Some(now);
        let batch = Batch {
            ops: vec![Op::PutArchiveCaughtUp {
                archive: self.own.jid.clone(),
                at: now,
            }],
        };
        if let Err(error) = self.commit(batch) {
            tracing::warn!(%error, "could not note the time the archive was read up to");
        }
    }
}
