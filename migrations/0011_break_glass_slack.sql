-- Issue 21: break-glass shares, and approving from Slack.
--
-- A break-glass share is an ordinary share approved without its quorum: the flag on the share says so
-- wherever it is shown; its reason, its review and the worker's re-announcements are in break_glass.
-- The flag is an integer (0 or 1) rather than a boolean so the same SQL reads it in SQLite and PostgreSQL.
ALTER TABLE shares ADD COLUMN break_glass INTEGER NOT NULL DEFAULT 0;

CREATE TABLE break_glass (
    share_id       TEXT PRIMARY KEY REFERENCES shares (id),
    requested_by   TEXT NOT NULL,           -- canonical name (identity::canonical)
    reason         TEXT NOT NULL,
    at             TEXT NOT NULL,           -- RFC 3339 UTC
    announced_at   TEXT NOT NULL,           -- last announcement (share.break_glass or a re-announcement)
    reviewed_at    TEXT,                    -- NULL until reviewed
    reviewed_by    TEXT,
    outcome        TEXT CHECK (outcome IN ('justified', 'unjustified')),
    review_comment TEXT
);
-- The per-person daily limit counts a requester's recent break-glass shares.
CREATE INDEX break_glass_by_requester ON break_glass (requested_by, at);
-- The worker's re-announcement and the /metrics gauge read the unreviewed ones.
CREATE INDEX break_glass_unreviewed ON break_glass (announced_at) WHERE reviewed_at IS NULL;

-- Slack user -> broker identity, set by an admin (never matched by display name).
CREATE TABLE slack_links (
    team_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    name       TEXT NOT NULL,               -- canonical broker name the Slack user acts as
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (team_id, user_id)
);

-- Signatures of accepted Slack callbacks, kept while their timestamp is within the five-minute window,
-- so a replayed callback is refused.
CREATE TABLE slack_replays (
    signature TEXT PRIMARY KEY,
    ts        BIGINT NOT NULL
);
CREATE INDEX slack_replays_by_ts ON slack_replays (ts);
