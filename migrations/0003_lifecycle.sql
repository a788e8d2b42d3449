-- Notifications: an outbox written in the same transaction as the change it announces, delivered to the
-- webhook by the worker with retries.
CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    seq             INTEGER NOT NULL UNIQUE,
    event           TEXT NOT NULL,
    share_id        TEXT,
    payload         TEXT NOT NULL,             -- the JSON body, exactly as it is sent
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    delivered_at    TEXT
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at) WHERE state = 'pending';
-- "expiring soon" is announced once per share.
CREATE UNIQUE INDEX outbox_expiring_once ON outbox (share_id) WHERE event = 'share.expiring';
CREATE INDEX shares_by_expiry ON shares (status, expires_at);
