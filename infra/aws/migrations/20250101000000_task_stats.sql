-- One row per task, written when the task is final (and again, idempotently,
-- if the completion step runs twice). Stats outlive the temporary results
-- and the task records' retention.
CREATE TABLE IF NOT EXISTS task_stats (
    task_id       TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    family        TEXT NOT NULL,
    status        TEXT NOT NULL,
    duration      DOUBLE PRECISION NOT NULL,
    samples       SMALLINT NOT NULL,
    audio_seconds DOUBLE PRECISION NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    completed_at  TIMESTAMPTZ,
    queue_ms      BIGINT,
    inference_ms  BIGINT,
    total_ms      BIGINT,
    recorded_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS task_stats_tenant_user_created ON task_stats (tenant, user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS task_stats_tenant_created ON task_stats (tenant, created_at DESC);
