-- Schema version 2: every signed prekey, one-time prekey and session belongs to one
-- protocol version (1 legacy OMEMO, 2 OMEMO 2; `Version::to_code`). A device may hold a
-- session of each version with another device, and a prekey or signed prekey id is unique
-- within its version only (the manager draws one-time prekey ids from one counter for both
-- versions, `AccountRecord::next_pre_key_id`), so the version joins each primary key. Everything a version-1
-- store holds is legacy OMEMO.
--
-- SQLite cannot change a primary key in place: each table is rebuilt and its rows copied.
-- Runs inside the migration transaction of `SqliteStore::open`.

CREATE TABLE signed_pre_keys_v2 (
    version    INTEGER NOT NULL CHECK (version IN (1, 2)),
    id         INTEGER NOT NULL CHECK (id BETWEEN 0 AND 4294967295),
    secret     BLOB    NOT NULL CHECK (length(secret) = 32),
    signature  BLOB    NOT NULL CHECK (length(signature) = 64),
    created_at INTEGER NOT NULL CHECK (created_at >= 0),
    PRIMARY KEY (version, id)
) STRICT;
INSERT INTO signed_pre_keys_v2 (version, id, secret, signature, created_at)
    SELECT 1, id, secret, signature, created_at FROM signed_pre_keys;
DROP TABLE signed_pre_keys;
ALTER TABLE signed_pre_keys_v2 RENAME TO signed_pre_keys;

CREATE TABLE pre_keys_v2 (
    version INTEGER NOT NULL CHECK (version IN (1, 2)),
    id      INTEGER NOT NULL CHECK (id BETWEEN 0 AND 4294967295),
    secret  BLOB    NOT NULL CHECK (length(secret) = 32),
    PRIMARY KEY (version, id)
) STRICT;
INSERT INTO pre_keys_v2 (version, id, secret) SELECT 1, id, secret FROM pre_keys;
DROP TABLE pre_keys;
ALTER TABLE pre_keys_v2 RENAME TO pre_keys;

CREATE TABLE sessions_v2 (
    jid       TEXT    NOT NULL,
    device_id INTEGER NOT NULL CHECK (device_id BETWEEN 1 AND 4294967295),
    version   INTEGER NOT NULL CHECK (version IN (1, 2)),
    state     BLOB    NOT NULL,
    PRIMARY KEY (jid, device_id, version)
) STRICT;
INSERT INTO sessions_v2 (jid, device_id, version, state)
    SELECT jid, device_id, 1, state FROM sessions;
DROP TABLE sessions;
ALTER TABLE sessions_v2 RENAME TO sessions;
