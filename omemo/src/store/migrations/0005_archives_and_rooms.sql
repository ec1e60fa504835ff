-- Schema version 5: catching up with message archives (XEP-0313), and rooms. A one-time prekey a
-- key exchange used during a catch-up is hidden (no longer published) but kept until
-- the catch-up is over; and how far each archive (the own account's, a room's) has been
-- read (the archive id of the last message, and the time), where the next catch-up starts.
-- Runs inside the migration transaction of `SqliteStore::open`.

ALTER TABLE pre_keys ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0
    CHECK (hidden IN (0, 1));

CREATE TABLE archives (
    archive TEXT PRIMARY KEY NOT NULL,
    read_at INTEGER NOT NULL CHECK (read_at >= 0),
    last_id TEXT
) STRICT;

-- The real JID behind each nickname seen in a room (XEP-0045), kept across nickname
-- changes and restarts so that the room's archived messages can be attributed.
CREATE TABLE room_occupants (
    room TEXT NOT NULL,
    nick TEXT NOT NULL,
    jid TEXT NOT NULL,
    PRIMARY KEY (room, nick)
) STRICT;
