-- Contacts pages in id order without a status filter (GET /campaigns/{id}/contacts): the index seeks
-- straight to the page instead of sorting all of the campaign's contacts for every page
-- (docs/benchmarks.md, section 6: ~0.2 s per page at 1M contacts before).
CREATE INDEX ix_contact_campaign_id ON contact (campaign_id, id);
