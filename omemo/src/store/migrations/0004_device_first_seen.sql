-- Schema version 4: when the manager first saw each device (on a device list or in a
-- message), so that a device never heard from ages too (the own devices `devices prune`
-- removes), and when a device left the last of its owner's lists, from which other
-- people's devices are forgotten. Devices known before the upgrade have no first-seen
-- time until the manager next reads their owner's list.
-- Runs inside the migration transaction of `SqliteStore::open`.

ALTER TABLE devices ADD COLUMN first_seen_at INTEGER
    CHECK (first_seen_at IS NULL OR first_seen_at >= 0);
ALTER TABLE devices ADD COLUMN left_lists_at INTEGER
    CHECK (left_lists_at IS NULL OR left_lists_at >= 0);
