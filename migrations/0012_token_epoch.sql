-- A counter of changes to the tokens table, for the in-memory cache of verified tokens
-- (src/auth/cache.rs): every request reads it (one row, one integer) and uses a cached token only when
-- the counter has not moved since the token's row was read. Triggers keep it, so that every way a
-- token changes advances it: a revoke through the API, an UPDATE or DELETE by hand, and (on a shared
-- database) a revoke made by another process. Creating a token changes nothing a cache holds.
CREATE TABLE token_epoch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO token_epoch (id, n) VALUES (1, 0);
CREATE TRIGGER tokens_changed_by_update AFTER UPDATE ON tokens
BEGIN
    UPDATE token_epoch SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER tokens_changed_by_delete AFTER DELETE ON tokens
BEGIN
    UPDATE token_epoch SET n = n + 1 WHERE id = 1;
END;
