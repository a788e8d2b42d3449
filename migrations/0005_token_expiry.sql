-- Token lifecycle: an optional expiry.
ALTER TABLE tokens ADD COLUMN expires_at TEXT;
