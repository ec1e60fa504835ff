//! Catching up with message archives (XEP-0313) after time offline: the own account's
//! and joined rooms'.
//!
//! [`Manager::catch_up`] (and [`Manager::catch_up_room`]) pages through an archive after
//! the last message read from it: the archive id (XEP-0359 stanza id) of the last result
//! of the last catch-up, or of the last message read online, kept in the store; the time
//! it was read when the server no longer knows that id (a new store starts at its
//! creation, a room never read when the oldest signed prekey kept was made). A catch-up that ends early keeps what
//! it read: the next one goes on after its last result. While any runs, XEP-0384's
//! history rules hold: a one-time prekey a key exchange used is hidden from the bundle at
//! once but deleted only when the last catch-up is over (the archive and the live copy of
//! one key exchange, or two contacts that picked the same prekey while this device was
//! away, all read); the empty message that completes a new session goes out once per
//! session after them; no heartbeat goes out during them. A message read twice (archive
//! and live copy, in either order) is a duplicate the second time: the ratchet has used
//! its key.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use jid::BareJid;
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

/// A catch-up with one archive, under way.
pub(super) struct CatchUp {
    /// The `queryid` the results of the page asked for carry (its IQ's id).
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
    /// Since when it waits to be asked again after a lost connection.
    stalled_since: Option<u64>,
    /// Archived messages read, and the archive id of the last one.
    read: usize,
    last_read: Option<String>,
    /// The archive ids of the messages read.
    ids_read: HashSet<String>,
}

/// The catch-ups under way, and what waits for them.
#[derive(Default)]
pub(super) struct History {
    /// By archive JID (the own bare JID, or a room's).
    catch_ups: BTreeMap<String, CatchUp>,
    /// The sessions key exchanges built, or whose received chains crossed the heartbeat
    /// limit, during them: each gets one empty message after the last.
    completions: BTreeSet<(String, u32, Version)>,
    /// Archives whose position messages read online do not move: from a catch-up's
    /// start until one completes (older messages may be unread until then).
    pub(super) held: BTreeSet<String>,
    /// The positions of the last messages read online, written with the next sync (one
    /// write per group commit, not one per message).
    pub(super) unsaved: BTreeMap<String, ArchivePosition>,
    /// The archive ids the last catch-up of each archive read: the live copy of one of
    /// them, arriving after it, is older than its position and does not move it. Kept
    /// until a message read online is not among them (a newer one).
    read_by_catch_up: BTreeMap<String, HashSet<String>>,
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
    pub fn catch_up(&mut self, now: u64) -> Result<(), ManagerError> {
        self.clock = self.clock.max(now);
        let own = self.own.jid.clone();
        self.start_catch_up(&own, now, now)
    }

    /// Reads what was said in `room` while this device was not in it, from the room's
    /// archive, as [`Manager::catch_up`] does the own one: its messages come as
    /// [`Handled::Message`] with [`Via::RoomArchive`], attributed to the real JID the
    /// room's archive names (else through the nicknames known), and checked against the
    /// members, as live ones. Call it after [`Manager::join_room`], on every join: it
    /// starts once the room is ready (not when it cannot carry OMEMO or keeps no
    /// archive); until it completes, messages read live do not move the room's
    /// position. A room read for the first time is read from when this device's oldest
    /// signed prekey was made: a member added while away reads what was encrypted to it
    /// since (archived messages with no key for this device are skipped).
    ///
    /// # Errors
    ///
    /// [`ManagerError::RoomNotJoined`] for a room not joined, [`ManagerError::Store`]
    /// when the store cannot be read.
    pub fn catch_up_room(&mut self, room: &BareJid, now: u64) -> Result<(), ManagerError> {
        self.clock = self.clock.max(now);
        let joined =
            self.rooms
                .get_mut(room.as_str())
                .ok_or_else(|| ManagerError::RoomNotJoined {
                    room: room.to_string(),
                })?;
        // Live messages before it starts (the room not ready yet) leave the position be.
        self.history.held.insert(room.to_string());
        if !joined.ready() {
            joined.catch_up_wanted = true;
            // One stalled with a lost connection waits for the room, asked again.
            if let Some(catch_up) = self.history.catch_ups.get_mut(room.as_str()) {
                catch_up.stalled_since = None;
            }
            return Ok(());
        }
        self.start_room_catch_up(room.as_str(), now)
    }

    /// Whether a catch-up is under way.
    pub fn is_catching_up(&self) -> bool {
        !self.history.catch_ups.is_empty()
    }

    /// Starts (or, after a lost connection, goes on with) the catch-up with `archive`;
    /// an archive never read is read from `first_read_from`.
    pub(super) fn start_catch_up(
        &mut self,
        archive: &str,
        first_read_from: u64,
        now: u64,
    ) -> Result<(), ManagerError> {
        self.history.held.insert(archive.to_owned());
        let after = match self.history.catch_ups.get_mut(archive) {
            Some(catch_up) if catch_up.querying => {
                catch_up.stalled_since = None;
                return Ok(());
            }
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
                let from = match self.history.unsaved.remove(archive) {
                    Some(position) => self.put_position(archive, position)?,
                    None => match self.store.load_archive_position(archive)? {
                        Some(position) => position,
                        None => ArchivePosition {
                            at: first_read_from,
                            last_id: None,
                        },
                    },
                };
                let after = from.last_id.clone();
                self.history.catch_ups.insert(
                    archive.to_owned(),
                    CatchUp {
                        query_id: String::new(),
                        by_id: after.is_some(),
                        from,
                        started_at: now,
                        pages: 0,
                        querying: false,
                        page_after: None,
                        stalled_since: None,
                        read: 0,
                        last_read: None,
                        ids_read: HashSet::new(),
                    },
                );
                after
            }
        };
        self.query_archive(archive, after);
        Ok(())
    }

    /// Writes `archive`'s position now; returns it.
    fn put_position(
        &mut self,
        archive: &str,
        position: ArchivePosition,
    ) -> Result<ArchivePosition, ManagerError> {
        self.commit(Batch {
            ops: vec![Op::PutArchivePosition {
                archive: archive.to_owned(),
                position: position.clone(),
            }],
        })?;
        Ok(position)
    }

    /// Asks for the next page of `archive`, after the archive id `after` (by time alone
    /// when `None` and the catch-up does not go by id).
    fn query_archive(&mut self, archive: &str, after: Option<String>) {
        let Some(catch_up) = self.history.catch_ups.get_mut(archive) else {
            return;
        };
        catch_up.pages += 1;
        catch_up.querying = true;
        catch_up.page_after.clone_from(&after);
        // By id, the time is not needed (and a clock that differs from the server's
        // would only hide messages).
        let start = (!catch_up.by_id).then_some(catch_up.from.at);
        let to = (archive != self.own.jid).then_some(archive);
        let mut query_id = String::new();
        self.requests.push(
            Pending::ArchivePage {
                archive: archive.to_owned(),
            },
            |id| {
                // Each page's results carry its IQ's id: a late result of an earlier
                // page is not taken for one of this page.
                query_id = id.to_owned();
                mam::query_iq(id, to, id, start, after.as_deref())
            },
        );
        if let Some(catch_up) = self.history.catch_ups.get_mut(archive) {
            catch_up.query_id = query_id;
        }
    }

    /// The answer to a page's query: the next page, or the end.
    pub(super) fn archive_page_answered(
        &mut self,
        archive: &str,
        iq: &Element,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<(), ManagerError> {
        let Some(catch_up) = self.history.catch_ups.get_mut(archive) else {
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
            tracing::info!(%archive, "the archive does not know the last id read; reading by time");
            catch_up.by_id = false;
            self.query_archive(archive, None);
            return Ok(());
        }
        // A page that ends where it started would repeat forever.
        let moved = |last: &str| catch_up.page_after.as_deref() != Some(last);
        match fin {
            Some(fin) if fin.complete => self.finish_catch_up(archive, true, rng, now),
            Some(mam::Fin {
                last: Some(last), ..
            }) if pages < MAX_PAGES && moved(&last) => {
                self.query_archive(archive, Some(last));
                Ok(())
            }
            _ => {
                tracing::warn!(%archive, pages, "catch-up with the archive ended early");
                self.finish_catch_up(archive, false, rng, now)
            }
        }
    }

    /// Catch-ups whose page got no answer in time, or that waited too long to be asked
    /// again after a lost connection, end.
    pub(super) fn archive_pages_lost(
        &mut self,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<(), ManagerError> {
        let lost: Vec<String> = self
            .history
            .catch_ups
            .iter()
            .filter(|(archive, catch_up)| {
                let pending = Pending::ArchivePage {
                    archive: (*archive).clone(),
                };
                let unanswered = catch_up.querying && !self.requests.is_pending(&pending);
                let abandoned = catch_up
                    .stalled_since
                    .is_some_and(|at| now.saturating_sub(at) >= REQUEST_TIMEOUT_SECS);
                unanswered || abandoned
            })
            .map(|(archive, _)| archive.clone())
            .collect();
        for archive in lost {
            tracing::warn!(%archive, "the archive did not answer; catch-up ended early");
            self.finish_catch_up(&archive, false, rng, now)?;
        }
        Ok(())
    }

    /// The connection is gone, and with it the pages asked for: [`Manager::catch_up`]
    /// (or [`Manager::catch_up_room`]) asks again.
    pub(super) fn archive_connection_lost(&mut self) {
        let clock = self.clock;
        for catch_up in self.history.catch_ups.values_mut() {
            catch_up.querying = false;
            catch_up.stalled_since = Some(clock);
        }
    }

    /// The catch-up with `archive` (if one runs) ends within a minute unless asked again.
    pub(super) fn stall_catch_up(&mut self, archive: &str) {
        let clock = self.clock;
        if let Some(catch_up) = self.history.catch_ups.get_mut(archive) {
            catch_up.stalled_since.get_or_insert(clock);
        }
    }

    /// Ends the catch-up with `archive`: its position moves past the last result read
    /// (and, when `complete`, to its start time). After the last catch-up, the prekeys
    /// hidden during them are deleted and each new session gets its empty message.
    fn finish_catch_up(
        &mut self,
        archive: &str,
        complete: bool,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<(), ManagerError> {
        let Some(catch_up) = self.history.catch_ups.get(archive) else {
            return Ok(());
        };
        let last = self.history.catch_ups.len() == 1;
        let mut batch = Batch::default();
        if last {
            self.own.delete_hidden_ops(&mut batch);
        }
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
                archive: archive.to_owned(),
                position,
            });
        }
        // Committed first: a failed write keeps the catch-up (and what it holds), to end
        // a minute later.
        if let Err(error) = self.commit(batch) {
            self.stall_catch_up(archive);
            return Err(error.into());
        }
        let Some(catch_up) = self.history.catch_ups.remove(archive) else {
            return Ok(());
        };
        if complete {
            self.history.held.remove(archive);
        }
        self.history
            .read_by_catch_up
            .insert(archive.to_owned(), catch_up.ids_read);
        let mut sessions = 0;
        if last {
            self.own.forget_hidden();
            let completions = std::mem::take(&mut self.history.completions);
            sessions = completions.len();
            for (jid, device_id, version) in completions {
                if let Err(error) = self.empty_message_to(&jid, device_id, version, rng) {
                    tracing::warn!(%jid, device_id, %error, "could not queue the empty reply");
                }
            }
        }
        tracing::debug!(
            %archive,
            read = catch_up.read,
            new_sessions = sessions,
            complete,
            now,
            "caught up with the archive"
        );
        self.events.push_back(Event::CaughtUp {
            archive: archive.to_owned(),
            messages: catch_up.read,
            complete,
        });
        Ok(())
    }

    /// A MAM result message: its archived message when it answers a catch-up's query and
    /// comes from the archive queried; the application's when it answers another query.
    pub(super) fn archived(
        &mut self,
        result: &Element,
        archived: Archived,
        rng: &mut impl CryptoRng,
        now: u64,
    ) -> Result<Handled, ManagerError> {
        let Some(archive) = self
            .history
            .catch_ups
            .iter()
            .find(|(_, catch_up)| catch_up.query_id == archived.query_id)
            .map(|(archive, _)| archive.clone())
        else {
            return Ok(Handled::Unhandled);
        };
        let own = archive == self.own.jid;
        let from_archive = match result.attr("from") {
            None => own,
            Some(from) => jid::Jid::new(from)
                .is_ok_and(|from| from.resource().is_none() && from.to_bare().as_str() == archive),
        };
        if !from_archive {
            tracing::warn!(
                from = result.attr("from").unwrap_or_default(),
                %archive,
                "archive result not from the archive queried; dropped"
            );
            return Ok(Handled::Dropped(
                "archive result not from the archive queried",
            ));
        }
        let handled = if own {
            self.receive(&archived.message, Via::Archive, rng, now)?
        } else {
            self.room_archived(&archive, &archived.message, rng, now)?
        };
        let handled = match handled {
            // Not OMEMO: the application's, unwrapped (the server hands a client that
            // reads its archive no offline copies).
            Handled::Unhandled => Handled::Archived(archived.message),
            handled => handled,
        };
        if let Some(catch_up) = self.history.catch_ups.get_mut(&archive) {
            catch_up.read += 1;
            catch_up.ids_read.insert(archived.archive_id.clone());
            catch_up.last_read = Some(archived.archive_id);
        }
        Ok(handled)
    }

    /// An empty message to send to a session (a new one's completion, or a heartbeat):
    /// after the catch-ups (once per session) when any is under way. Returns whether it
    /// was put off.
    pub(super) fn defer_completion(&mut self, jid: &str, device_id: u32, version: Version) -> bool {
        if !self.is_catching_up() {
            return false;
        }
        self.history
            .completions
            .insert((jid.to_owned(), device_id, version));
        true
    }

    /// A message handled online from a joined `room`, or else the own account, not
    /// during a catch-up of it, nor after one that ended early: the next catch-up starts
    /// after it, by the id the archive gave it.
    pub(super) fn note_read_online(&mut self, room: Option<&str>, message: &Element, now: u64) {
        let archive = room.unwrap_or(&self.own.jid);
        if self.history.held.contains(archive) {
            return;
        }
        let Some(id) = mam::stanza_id(message, archive) else {
            return;
        };
        if let Some(read) = self.history.read_by_catch_up.get(archive) {
            if read.contains(id) {
                return;
            }
            self.history.read_by_catch_up.remove(archive);
        }
        // Written with the next sync, with the state of the messages before it.
        let position = ArchivePosition {
            at: now,
            last_id: Some(id.to_owned()),
        };
        match self.history.unsaved.get_mut(archive) {
            Some(unsaved) => *unsaved = position,
            None => {
                self.history.unsaved.insert(archive.to_owned(), position);
            }
        }
        self.unsynced = true;
    }
}
