-- The bound on pending shares per requester (max_pending_per_requester) counts a requester's pending
-- shares inside the writing transaction of every new request. Without these indexes that count walks
-- every pending share (shares_by_status): 22 ms at 50,000 pending shares, inside the single writer.
-- Two partial indexes, one per way a name is matched (exactly, and ASCII-lowercased), keep it to the
-- requester's own rows.
CREATE INDEX shares_pending_by_requester ON shares (requested_by) WHERE status = 'pending';
CREATE INDEX shares_pending_by_requester_lower ON shares (lower(requested_by)) WHERE status = 'pending';
