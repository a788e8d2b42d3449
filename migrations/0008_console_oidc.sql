-- Console sign-in through OIDC (issue 20): the authorization-code flow with PKCE.
--
-- A sign-in in progress: keyed by the SHA-256 of its `state` (the value itself travels through the
-- browser and the identity provider), bound to the browser that started it by the SHA-256 of a random
-- value in a short-lived cookie, with the nonce the id_token must carry and the PKCE code_verifier the
-- token request sends. Taken (deleted) by its callback whatever the outcome, so each is used at most once;
-- rows end after 10 minutes and expired ones are removed when a new sign-in starts.
CREATE TABLE console_oidc_logins (
    state_hash   TEXT PRIMARY KEY,
    browser_hash TEXT NOT NULL,
    nonce        TEXT NOT NULL,
    verifier     TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);
CREATE INDEX console_oidc_logins_by_expiry ON console_oidc_logins (expires_at);

-- A console session opened through OIDC has no broker token: it carries the identity the id_token
-- mapped to (the caller's canonical name `oidc:<name claim>`, role and credential `oidc:<sub>`), as the
-- API's OIDC bearer path maps a JWT. NULL for sessions opened with a broker token.
ALTER TABLE console_sessions ADD COLUMN oidc_name TEXT;
ALTER TABLE console_sessions ADD COLUMN oidc_role TEXT;
ALTER TABLE console_sessions ADD COLUMN oidc_credential TEXT;
