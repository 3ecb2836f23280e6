-- The tenant's attempts of one calendar day (issue 11 daily caps: Store.tenant_day_usage, read at each
-- day's start, after each ended call while daily_minutes_max is set, and by GET /api/v1/call-limits):
-- a range of each campaign's attempts by start time instead of all of them.
CREATE INDEX ix_attempt_campaign_created ON attempt (campaign_id, created_at);
