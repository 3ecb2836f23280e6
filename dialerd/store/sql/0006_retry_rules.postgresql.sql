-- Outcome rules for retries (issue 11 item 3): the campaign's `retry_rules` in their canonical text,
-- e.g. 'busy=3@120; no_answer=0@3600' (dialerd/domain/retry_rules.py); '' = every reason uses
-- retries_per_contact / retry_delay_seconds.
ALTER TABLE campaign ADD COLUMN retry_rules TEXT NOT NULL DEFAULT '';
