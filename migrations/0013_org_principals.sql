-- migrate: foreign_keys=off
-- Organization and OU consumers (issue 18): a principal may be a whole AWS Organizations organization
-- (`arn` holds its id, `o-...`) or an organizational unit (`arn` holds its path, `o-.../r-.../ou-.../`).
-- Such a consumer has no one account, so `account_id` becomes nullable, and `kind` takes two more values.
--
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt by SQLite's documented procedure
-- (ALTER TABLE, "Making Other Kinds Of Table Schema Changes"): with foreign keys off (the first line above
-- tells the runner), create the new table, copy every row as it is (same ids, same seq), drop the old one,
-- rename the new one; the runner runs PRAGMA foreign_key_check before it commits.
-- `shares.principal_id REFERENCES principals (id)` names the table, so it refers to the new one.
CREATE TABLE principals_0013 (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    arn         TEXT NOT NULL UNIQUE,        -- IAM ARN, organization id or OU path
    account_id  TEXT,                        -- NULL for an organization or OU
    kind        TEXT NOT NULL CHECK (kind IN ('user', 'role', 'account_root', 'organization', 'org_unit')),
    description TEXT,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    CHECK ((account_id IS NULL) = (kind IN ('organization', 'org_unit')))
);
INSERT INTO principals_0013 (seq, id, arn, account_id, kind, description, created_by, created_at)
    SELECT seq, id, arn, account_id, kind, description, created_by, created_at FROM principals;
DROP TABLE principals;
ALTER TABLE principals_0013 RENAME TO principals;
