-- Applying shares to AWS: the key a share was applied with, its last error, and the saga journal.

ALTER TABLE shares ADD COLUMN key_arn TEXT;
ALTER TABLE shares ADD COLUMN last_error TEXT;

-- One row per apply or revoke run. Each step is recorded before it runs, so a restart knows what may
-- have been written: key_sids / resource_sids are the broker statements this job added (and only those
-- are removed when it is compensated), *_write_started says a write was sent (its outcome unknown until
-- the step is marked done).
CREATE TABLE jobs (
    id                     TEXT PRIMARY KEY,
    kind                   TEXT NOT NULL CHECK (kind IN ('apply', 'revoke')),
    secret_arn             TEXT NOT NULL,
    key_arn                TEXT,
    share_ids              TEXT NOT NULL,           -- JSON array
    state                  TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed', 'compensated')),
    step                   TEXT NOT NULL,
    key_sids               TEXT NOT NULL DEFAULT '[]',
    resource_sids          TEXT NOT NULL DEFAULT '[]',
    key_write_started      INTEGER NOT NULL DEFAULT 0,
    resource_write_started INTEGER NOT NULL DEFAULT 0,
    error                  TEXT,
    started_at             TEXT NOT NULL,
    updated_at             TEXT NOT NULL
);
CREATE INDEX jobs_running ON jobs (state) WHERE state = 'running';
