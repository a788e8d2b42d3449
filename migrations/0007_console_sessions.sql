-- Console sessions (issue 20): a browser holds only the session id; the database keeps its SHA-256, the
-- broker token it was opened with (by public id, never the secret), the CSRF token of its forms and when
-- it ends. Signing out deletes the row; an expired row is refused and removed on the next sign-in.
CREATE TABLE console_sessions (
    id_hash    TEXT PRIMARY KEY,
    token_id   TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);
