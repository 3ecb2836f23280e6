-- dialerd schema version 1: tenants, API keys, campaigns, contacts, attempts, events.

CREATE TABLE tenant (
	id VARCHAR(40) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	concurrent_max INTEGER NOT NULL, 
	calls_per_minute INTEGER NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (name)
);

CREATE TABLE api_key (
	id VARCHAR(40) NOT NULL, 
	tenant_id VARCHAR(40) NOT NULL, 
	secret_hash VARCHAR(128) NOT NULL, 
	label VARCHAR(200) NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	revoked_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (id), 
	FOREIGN KEY(tenant_id) REFERENCES tenant (id) ON DELETE CASCADE
);

CREATE INDEX ix_api_key_tenant_id ON api_key (tenant_id);

CREATE TABLE campaign (
	id VARCHAR(40) NOT NULL, 
	tenant_id VARCHAR(40) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	caller_id VARCHAR(80) NOT NULL, 
	destination VARCHAR(200) NOT NULL, 
	default_region VARCHAR(2) NOT NULL, 
	max_concurrent_calls INTEGER NOT NULL, 
	retries_per_contact INTEGER NOT NULL, 
	retry_delay_seconds INTEGER NOT NULL, 
	ring_timeout_seconds INTEGER NOT NULL, 
	import_report JSON NOT NULL, 
	created_by VARCHAR(40) NOT NULL, 
	scheduled_at TIMESTAMP WITH TIME ZONE, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	started_at TIMESTAMP WITH TIME ZONE, 
	completed_at TIMESTAMP WITH TIME ZONE, 
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(tenant_id) REFERENCES tenant (id) ON DELETE CASCADE
);

CREATE INDEX ix_campaign_status ON campaign (status);

CREATE INDEX ix_campaign_tenant_id ON campaign (tenant_id);

CREATE TABLE contact (
	id BIGSERIAL NOT NULL, 
	campaign_id VARCHAR(40) NOT NULL, 
	line INTEGER NOT NULL, 
	phone_e164 VARCHAR(20) NOT NULL, 
	raw_number VARCHAR(100) NOT NULL, 
	fields JSON NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	attempts INTEGER NOT NULL, 
	last_attempt_at TIMESTAMP WITH TIME ZONE, 
	next_attempt_at TIMESTAMP WITH TIME ZONE, 
	failure_reason VARCHAR(40), 
	hangup_cause INTEGER, 
	sip_code INTEGER, 
	updated_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_contact_campaign_number UNIQUE (campaign_id, phone_e164), 
	FOREIGN KEY(campaign_id) REFERENCES campaign (id) ON DELETE CASCADE
);

CREATE INDEX ix_contact_campaign_next ON contact (campaign_id, status, next_attempt_at);

CREATE INDEX ix_contact_campaign_status ON contact (campaign_id, status, id);

CREATE TABLE event (
	id BIGSERIAL NOT NULL, 
	campaign_id VARCHAR(40) NOT NULL, 
	kind VARCHAR(40) NOT NULL, 
	payload JSON NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(campaign_id) REFERENCES campaign (id) ON DELETE CASCADE
);

CREATE INDEX ix_event_campaign_id ON event (campaign_id, id);

CREATE TABLE attempt (
	id BIGSERIAL NOT NULL, 
	contact_id BIGINT NOT NULL, 
	campaign_id VARCHAR(40) NOT NULL, 
	number INTEGER NOT NULL, 
	channel_id VARCHAR(64) NOT NULL, 
	state VARCHAR(20) NOT NULL, 
	channel_name VARCHAR(120), 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	originated_at TIMESTAMP WITH TIME ZONE, 
	answered_at TIMESTAMP WITH TIME ZONE, 
	ended_at TIMESTAMP WITH TIME ZONE, 
	talk_seconds FLOAT, 
	cause INTEGER, 
	sip_code INTEGER, 
	reason VARCHAR(40), 
	PRIMARY KEY (id), 
	FOREIGN KEY(contact_id) REFERENCES contact (id) ON DELETE CASCADE, 
	FOREIGN KEY(campaign_id) REFERENCES campaign (id) ON DELETE CASCADE, 
	UNIQUE (channel_id)
);

CREATE INDEX ix_attempt_campaign_id ON attempt (campaign_id);

CREATE INDEX ix_attempt_contact_id ON attempt (contact_id);

CREATE INDEX ix_attempt_state ON attempt (state);
