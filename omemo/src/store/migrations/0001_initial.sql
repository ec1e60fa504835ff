-- Schema version 1: the first layout.
--
-- Runs inside the migration transaction of `SqliteStore::open`, which then sets
-- `PRAGMA user_version = 1`. Numbers that hold a u32 are checked to its range; times are
-- seconds since the Unix epoch; keys and signatures have their fixed lengths. Loading
-- checks all of this again and reports a corrupt row rather than trusting the file.

-- The own device. One row at most (id is always 1).
CREATE TABLE account (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    jid             TEXT    NOT NULL,
    device_id       INTEGER NOT NULL CHECK (device_id BETWEEN 1 AND 2147483647),
    identity_secret BLOB    NOT NULL CHECK (length(identity_secret) = 32),
    next_pre_key_id INTEGER NOT NULL CHECK (next_pre_key_id BETWEEN 0 AND 4294967295)
) STRICT;

CREATE TABLE signed_pre_keys (
    id         INTEGER PRIMARY KEY CHECK (id BETWEEN 0 AND 4294967295),
    secret     BLOB    NOT NULL CHECK (length(secret) = 32),
    signature  BLOB    NOT NULL CHECK (length(signature) = 64),
    created_at INTEGER NOT NULL CHECK (created_at >= 0)
) STRICT;

CREATE TABLE pre_keys (
    id     INTEGER PRIMARY KEY CHECK (id BETWEEN 0 AND 4294967295),
    secret BLOB    NOT NULL CHECK (length(secret) = 32)
) STRICT;

-- One Double Ratchet session per remote device; `state` is `Session::to_bytes`, which
-- carries its own format version.
CREATE TABLE sessions (
    jid       TEXT    NOT NULL,
    device_id INTEGER NOT NULL CHECK (device_id BETWEEN 1 AND 4294967295),
    state     BLOB    NOT NULL,
    PRIMARY KEY (jid, device_id)
) STRICT;

-- trust: 0 undecided, 1 blind, 2 verified, 3 distrusted (`Trust::to_code`).
CREATE TABLE devices (
    jid              TEXT    NOT NULL,
    device_id        INTEGER NOT NULL CHECK (device_id BETWEEN 1 AND 4294967295),
    listed           INTEGER NOT NULL CHECK (listed IN (0, 1)),
    identity_key     BLOB    CHECK (identity_key IS NULL OR length(identity_key) = 32),
    trust            INTEGER NOT NULL CHECK (trust BETWEEN 0 AND 3),
    last_message_at  INTEGER CHECK (last_message_at IS NULL OR last_message_at >= 0),
    bundle_failed_at INTEGER CHECK (bundle_failed_at IS NULL OR bundle_failed_at >= 0),
    PRIMARY KEY (jid, device_id)
) STRICT;
