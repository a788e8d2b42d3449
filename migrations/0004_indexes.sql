-- Finding pending shares to time out without scanning every pending share.
CREATE INDEX shares_by_status_created ON shares (status, created_at);
