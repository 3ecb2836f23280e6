-- dialerd schema version 8: calling hours in the recipient's local time, the frequency cap (issue 11).
-- A campaign's calling hours (canonical text, '' = any time) and its fallback zone (IANA name, or NULL).
ALTER TABLE campaign ADD COLUMN calling_hours TEXT NOT NULL DEFAULT '';
ALTER TABLE campaign ADD COLUMN timezone VARCHAR(64);
-- A contact's zones ('America/Boise,America/Los_Angeles') and their source (column, number, campaign,
-- default); while pending and held back by a rule, why (blocked_reason) and from when it may be claimed.
ALTER TABLE contact ADD COLUMN timezone TEXT;
ALTER TABLE contact ADD COLUMN timezone_source VARCHAR(10);
ALTER TABLE contact ADD COLUMN next_eligible_at DATETIME;
ALTER TABLE contact ADD COLUMN blocked_reason VARCHAR(40);
-- The frequency cap counts a number's attempts across all of a tenant's campaigns.
CREATE INDEX ix_contact_phone_e164 ON contact (phone_e164);
