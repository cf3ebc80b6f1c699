-- The embedded mode's whole state: task records, the job queues, the result
-- cache and request statistics. Times are integers: unix milliseconds for the
-- queue and the cache, unix nanoseconds for `stats.created_at` (so the stats
-- route's inclusive bounds compare exactly).

CREATE TABLE tasks (
    id              TEXT PRIMARY KEY NOT NULL,
    tenant          TEXT NOT NULL,
    idempotency_key TEXT,
    status          TEXT NOT NULL,
    version         INTEGER NOT NULL,
    -- The whole `Task` as JSON: the domain owns its shape, this table only
    -- indexes the fields that queries and constraints need.
    document        TEXT NOT NULL,
    updated_at      INTEGER NOT NULL
);

-- NULL keys are distinct in SQLite, so tasks without a key never collide.
CREATE UNIQUE INDEX tasks_tenant_idempotency_key ON tasks (tenant, idempotency_key);

CREATE TABLE queue_messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue         TEXT NOT NULL,
    message_id    TEXT NOT NULL UNIQUE,
    body          TEXT NOT NULL,
    sent_at       INTEGER NOT NULL,
    -- Not deliverable before this time (send delay, or visibility timeout
    -- after a receive).
    visible_at    INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    -- Regenerated on every receive, so a stale receipt matches nothing.
    receipt       TEXT UNIQUE
);

CREATE INDEX queue_messages_ready ON queue_messages (queue, visible_at);

CREATE TABLE queue_dead_letters (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue         TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    body          TEXT NOT NULL,
    sent_at       INTEGER NOT NULL,
    receive_count INTEGER NOT NULL,
    dead_at       INTEGER NOT NULL
);

CREATE INDEX queue_dead_letters_queue ON queue_dead_letters (queue, seq);

CREATE TABLE result_cache (
    key        TEXT PRIMARY KEY NOT NULL,
    value      TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE INDEX result_cache_expiry ON result_cache (expires_at);

CREATE TABLE stats (
    task_id       TEXT PRIMARY KEY NOT NULL,
    tenant        TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    family        TEXT NOT NULL,
    status        TEXT NOT NULL,
    duration      REAL NOT NULL,
    samples       INTEGER NOT NULL,
    audio_seconds REAL NOT NULL,
    created_at    INTEGER NOT NULL,
    -- RFC 3339; only ever read back, never compared.
    completed_at  TEXT,
    queue_ms      INTEGER,
    inference_ms  INTEGER,
    total_ms      INTEGER
);

CREATE INDEX stats_tenant_created ON stats (tenant, created_at);
CREATE INDEX stats_tenant_user_created ON stats (tenant, user_id, created_at);
