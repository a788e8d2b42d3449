-- Who is who (issue 14): who issued each broker token, and which credential cast each vote.
--
-- Token names are ASCII (letters, digits, ._@-), so their canonical form (NFKC + case folding) is their
-- lower case: existing names are brought to it here, and new ones are stored in it.
UPDATE tokens SET name = lower(name);

-- The canonical name of whoever created the token (`cli` for the command line). Tokens created before
-- this column existed take it from their `token.created` audit row.
ALTER TABLE tokens ADD COLUMN created_by TEXT;
UPDATE tokens SET created_by = (
    SELECT lower(a.actor) FROM audit a
    WHERE a.action = 'token.created' AND json_extract(a.details, '$.token_id') = tokens.id
    ORDER BY a.seq LIMIT 1
);
CREATE INDEX tokens_by_name ON tokens (name);

-- The credential that cast a vote: a broker token's id, or `oidc:<sub>` for a JWT; and, for a broker
-- token, who issued it. NULL for votes cast before this migration.
ALTER TABLE approvals ADD COLUMN credential TEXT;
ALTER TABLE approvals ADD COLUMN issued_by TEXT;
