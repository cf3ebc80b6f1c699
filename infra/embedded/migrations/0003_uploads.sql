-- The records of `POST /v1/uploads`: written once, never changed. The
-- `Upload` is kept as JSON (the domain owns its shape); the columns are what
-- a clean-up of expired records would need.
CREATE TABLE uploads (
    id           TEXT PRIMARY KEY NOT NULL,
    tenant       TEXT NOT NULL,
    document     TEXT NOT NULL,
    retain_until INTEGER NOT NULL
);
