-- Schema version 4: when the manager first saw each device (on a device list or in a
-- message), so that a device never heard from ages too: the own devices `devices prune`
-- removes, and other people's devices that left their list. Devices known before the
-- upgrade have none until the manager next reads their owner's list.
-- Runs inside the migration transaction of `SqliteStore::open`.

ALTER TABLE devices ADD COLUMN first_seen_at INTEGER
    CHECK (first_seen_at IS NULL OR first_seen_at >= 0);
