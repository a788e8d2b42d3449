-- A console session opened through OIDC keeps the values of the id_token's roles claim (a JSON array of
-- strings), so each request maps them with the role map in force then, as the API maps a bearer JWT's
-- claim on every request: an operator who removes a mapping (or the whole OIDC sign-in) ends the role
-- in open sessions too, not only in sessions opened afterwards. NULL for token sessions, and for OIDC
-- sessions opened before this column existed (those end: their users sign in again).
ALTER TABLE console_sessions ADD COLUMN oidc_role_values TEXT;
