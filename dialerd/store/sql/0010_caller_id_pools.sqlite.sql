-- dialerd schema version 10: caller-id pools and local presence (issue 12 item 3).
-- campaign.caller_id now holds a pool separated by ',' (SQLite does not bound VARCHAR: nothing to widen);
-- how each call takes its caller id from it; the caller id each attempt went out with.
ALTER TABLE campaign ADD COLUMN caller_id_strategy VARCHAR(20) NOT NULL DEFAULT 'round_robin';
ALTER TABLE attempt ADD COLUMN caller_id VARCHAR(80);
