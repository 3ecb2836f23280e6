-- A tenant's rule limits (issue 11): daily caps per calendar day in the tenant's timezone, and the
-- frequency cap per recipient number across its campaigns. 0 is no limit; an empty timezone is UTC.
-- Set with `dialerd keys create` / `dialerd tenants set`; read by GET /api/v1/call-limits.
ALTER TABLE tenant ADD COLUMN daily_calls_max INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tenant ADD COLUMN daily_minutes_max INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tenant ADD COLUMN max_attempts_per_number INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tenant ADD COLUMN frequency_window_hours INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tenant ADD COLUMN timezone VARCHAR(64) NOT NULL DEFAULT '';
