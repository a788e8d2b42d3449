-- Leases on work (issue 16): a replica (or the one process on SQLite) that applies or revokes a secret's
-- shares, repairs them or recovers a job holds the secret's lease in the database, renewing it while it
-- works. Another replica takes the work over only after the lease has run out (its holder died), never
-- while it is held: one secret's policies are never written by two brokers at once.
CREATE TABLE leases (
    name   TEXT PRIMARY KEY,   -- what is leased, e.g. secret:<secret ARN>
    holder TEXT NOT NULL,      -- the broker process holding it (a random id per start)
    until  TEXT NOT NULL       -- RFC 3339 UTC: held until then unless renewed
);
