-- SQLite's migrations 0011 to 0013 for PostgreSQL (0014, the leases, is already in 0001 here).

-- 0011: break-glass shares, and approving from Slack. The flag is an integer (0 or 1), as in SQLite, so
-- that the same SQL reads it on both backends.
ALTER TABLE shares ADD COLUMN break_glass INTEGER NOT NULL DEFAULT 0;

CREATE TABLE break_glass (
    share_id       TEXT PRIMARY KEY REFERENCES shares (id),
    requested_by   TEXT NOT NULL,
    reason         TEXT NOT NULL,
    at             TEXT NOT NULL,
    announced_at   TEXT NOT NULL,
    reviewed_at    TEXT,
    reviewed_by    TEXT,
    outcome        TEXT CHECK (outcome IN ('justified', 'unjustified')),
    review_comment TEXT
);
CREATE INDEX break_glass_by_requester ON break_glass (requested_by, at);
CREATE INDEX break_glass_unreviewed ON break_glass (announced_at) WHERE reviewed_at IS NULL;

CREATE TABLE slack_links (
    team_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (team_id, user_id)
);

CREATE TABLE slack_replays (
    signature TEXT PRIMARY KEY,
    ts        BIGINT NOT NULL
);
CREATE INDEX slack_replays_by_ts ON slack_replays (ts);

-- 0012: the counter of changes to the tokens table that cached tokens are checked against
-- (src/auth/cache.rs). On a shared database it is what makes a revoke through one replica refuse the
-- token on every replica at the next request.
CREATE TABLE token_epoch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  BIGINT NOT NULL
);
INSERT INTO token_epoch (id, n) VALUES (1, 0);
CREATE FUNCTION token_epoch_advance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE token_epoch SET n = n + 1 WHERE id = 1;
    RETURN NULL;
END;
$$;
CREATE TRIGGER tokens_changed_by_update AFTER UPDATE ON tokens
    FOR EACH ROW EXECUTE FUNCTION token_epoch_advance();
CREATE TRIGGER tokens_changed_by_delete AFTER DELETE ON tokens
    FOR EACH ROW EXECUTE FUNCTION token_epoch_advance();

-- 0013: organization and OU consumers: no one account, two more kinds.
ALTER TABLE principals ALTER COLUMN account_id DROP NOT NULL;
ALTER TABLE principals DROP CONSTRAINT principals_kind_check;
ALTER TABLE principals ADD CONSTRAINT principals_kind_check
    CHECK (kind IN ('user', 'role', 'account_root', 'organization', 'org_unit'));
ALTER TABLE principals ADD CONSTRAINT principals_org_has_no_account
    CHECK ((account_id IS NULL) = (kind IN ('organization', 'org_unit')));
