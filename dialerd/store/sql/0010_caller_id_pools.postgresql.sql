-- dialerd schema version 10: caller-id pools and local presence (issue 12 item 3).
-- campaign.caller_id now holds a pool separated by ',' (at most 1000 characters); how each call takes its
-- caller id from it; the caller id each attempt went out with.
ALTER TABLE campaign ALTER COLUMN caller_id TYPE VARCHAR(1000);
ALTER TABLE campaign ADD COLUMN caller_id_strategy VARCHAR(20) NOT NULL DEFAULT 'round_robin';
ALTER TABLE attempt ADD COLUMN caller_id VARCHAR(80);
