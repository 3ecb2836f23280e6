-- dialerd schema version 12: webhooks (issue 12).
-- Where a campaign's events are POSTed and the key that signs them (write-only); NULL: no webhook.
ALTER TABLE campaign ADD COLUMN webhook_url VARCHAR(2000);
ALTER TABLE campaign ADD COLUMN webhook_secret VARCHAR(200);

-- The outbox is the event table (each state change appends its event in the same transaction); this is
-- each campaign's delivery cursor and the state of the event at its head.
CREATE TABLE webhook_delivery (
	campaign_id VARCHAR(40) NOT NULL, 
	delivered_through BIGINT DEFAULT '0' NOT NULL, 
	dead INTEGER DEFAULT '0' NOT NULL, 
	head_failures INTEGER DEFAULT '0' NOT NULL, 
	head_failed_since DATETIME, 
	last_error TEXT, 
	last_attempt_at DATETIME, 
	next_attempt_at DATETIME, 
	PRIMARY KEY (campaign_id), 
	FOREIGN KEY(campaign_id) REFERENCES campaign (id) ON DELETE CASCADE
);

-- The events a campaign's webhook gave up on after the retry period (24 h by default).
CREATE TABLE webhook_dead_event (
	campaign_id VARCHAR(40) NOT NULL, 
	event_id BIGINT NOT NULL, 
	failures INTEGER NOT NULL, 
	last_error TEXT NOT NULL, 
	died_at DATETIME NOT NULL, 
	PRIMARY KEY (campaign_id, event_id), 
	FOREIGN KEY(campaign_id) REFERENCES campaign (id) ON DELETE CASCADE
);
