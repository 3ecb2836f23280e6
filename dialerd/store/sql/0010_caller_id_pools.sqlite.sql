-- dialerd schema version 10: caller-id pools and local presence (issue 12 item 3).
-- campaign.caller_id now holds a pool separated by ',' (at most 1000 characters). SQLite cannot change a
-- column's declared type, so the column is replaced by a VARCHAR(1000) one holding the same values
-- (RENAME/DROP COLUMN: SQLite 3.35+; the column is in no index or constraint).
ALTER TABLE campaign RENAME COLUMN caller_id TO caller_id_0009;
ALTER TABLE campaign ADD COLUMN caller_id VARCHAR(1000) NOT NULL DEFAULT '';
UPDATE campaign SET caller_id = caller_id_0009;
ALTER TABLE campaign DROP COLUMN caller_id_0009;
-- How each call takes its caller id from the pool; the caller id each attempt went out with.
ALTER TABLE campaign ADD COLUMN caller_id_strategy VARCHAR(20) NOT NULL DEFAULT 'round_robin';
ALTER TABLE attempt ADD COLUMN caller_id VARCHAR(80);
