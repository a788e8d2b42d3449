-- secret-broker schema, version 1.
-- Times are RFC 3339 UTC strings with whole seconds, so they sort as text.
-- Every table has an integer `seq` that orders rows by insertion: cursors page on it.

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,            -- public part of the bearer token (sb_<id>_<secret>)
    name        TEXT NOT NULL,               -- the actor: approvals and audit rows carry it
    role        TEXT NOT NULL CHECK (role IN ('requester', 'approver', 'auditor', 'admin')),
    secret_hash TEXT NOT NULL,               -- hex SHA-256 of the secret part; the secret itself is never stored
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);

CREATE TABLE principals (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    arn         TEXT NOT NULL UNIQUE,
    account_id  TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('user', 'role', 'account_root')),
    description TEXT,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE shares (
    seq                INTEGER PRIMARY KEY,
    id                 TEXT NOT NULL UNIQUE,
    secret_arn         TEXT NOT NULL,
    principal_id       TEXT NOT NULL REFERENCES principals (id),
    principal_arn      TEXT NOT NULL,
    actions            TEXT NOT NULL,        -- JSON array of IAM action names
    version_stage      TEXT,                 -- NULL: any stage
    justification      TEXT NOT NULL,
    expires_at         TEXT NOT NULL,
    status             TEXT NOT NULL,
    status_reason      TEXT,
    approvals_required INTEGER NOT NULL CHECK (approvals_required >= 1),
    requested_by       TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
);
CREATE INDEX shares_by_status ON shares (status, seq);
CREATE INDEX shares_by_secret ON shares (secret_arn, seq);
CREATE INDEX shares_by_principal ON shares (principal_arn, seq);

CREATE TABLE approvals (
    share_id TEXT NOT NULL REFERENCES shares (id),
    approver TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('approve', 'reject')),
    comment  TEXT,
    at       TEXT NOT NULL,
    PRIMARY KEY (share_id, approver)
);

CREATE TABLE idempotency_keys (
    actor        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,              -- SHA-256 of the canonical JSON of the request body
    status       INTEGER NOT NULL,
    body         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (actor, key)
);

-- Append-only, hash-chained: hash = SHA-256 over prev_hash and a canonical encoding of the row.
CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    share_id   TEXT,
    request_id TEXT,
    details    TEXT NOT NULL,                -- compact JSON, hashed exactly as stored
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX audit_by_share ON audit (share_id, seq);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit log is append-only');
END;

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit log is append-only');
END;
