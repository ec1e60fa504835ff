-- Schema version 3: a device may be on its owner's legacy device list, the OMEMO 2 one,
-- or both. `listed` becomes `listed_legacy`; `listed_omemo2` is new (a version-2 store
-- knew no OMEMO 2 list). The OMEMO 2 list also gives a device a label and the label's
-- signature by the device's identity key, stored as published and verified when shown.
-- A bundle fails per version (`bundle_failed_versions`: bit 0 legacy, bit 1 OMEMO 2,
-- `Versions::to_bits`); every failure a version-2 store recorded was a legacy one.
-- A session row also keeps the state it replaced (`previous`), which a message that does
-- not fit the current one is tried on (two devices that start sessions with each other
-- at the same moment then converge).
-- Runs inside the migration transaction of `SqliteStore::open`.

ALTER TABLE devices RENAME COLUMN listed TO listed_legacy;
ALTER TABLE devices ADD COLUMN listed_omemo2 INTEGER NOT NULL DEFAULT 0
    CHECK (listed_omemo2 IN (0, 1));
ALTER TABLE devices ADD COLUMN label TEXT
    CHECK (label IS NULL OR length(CAST(label AS BLOB)) <= 256);
ALTER TABLE devices ADD COLUMN label_signature BLOB
    CHECK (label_signature IS NULL OR length(label_signature) <= 1024);
ALTER TABLE devices ADD COLUMN bundle_failed_versions INTEGER NOT NULL DEFAULT 0
    CHECK (bundle_failed_versions BETWEEN 0 AND 3);
UPDATE devices SET bundle_failed_versions = 1 WHERE bundle_failed_at IS NOT NULL;
ALTER TABLE sessions ADD COLUMN previous BLOB;
