-- dialerd schema version 3: idempotent requests, the stored import report, deferred scheduled starts.

-- Idempotency-Key (POST /campaigns and the lifecycle actions): one row per tenant and key, for 24 h.
-- state 'in_progress' while the first request runs (owner: the daemon process running it), then 'done'
-- with the answer to replay. Only successful answers are kept (see services/idempotency.py).
CREATE TABLE idempotency_key (
	tenant_id VARCHAR(40) NOT NULL, 
	idem_key VARCHAR(255) NOT NULL, 
	request_hash VARCHAR(64) NOT NULL, 
	owner VARCHAR(40) NOT NULL, 
	state VARCHAR(20) NOT NULL, 
	response_status INTEGER, 
	response_body TEXT, 
	campaign_id VARCHAR(40), 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (tenant_id, idem_key), 
	FOREIGN KEY(tenant_id) REFERENCES tenant (id) ON DELETE CASCADE
);

CREATE INDEX ix_idempotency_key_created_at ON idempotency_key (created_at);

-- Every rejected row of a campaign's import (GET /campaigns/{id}/import pages through them).
CREATE TABLE import_problem (
	id BIGSERIAL NOT NULL, 
	campaign_id VARCHAR(40) NOT NULL, 
	line INTEGER NOT NULL, 
	value VARCHAR(100) NOT NULL, 
	reason TEXT NOT NULL, 
	code VARCHAR(40) NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(campaign_id) REFERENCES campaign (id) ON DELETE CASCADE
);

CREATE INDEX ix_import_problem_campaign_id ON import_problem (campaign_id, id);

-- A scheduled start held back by the tenant's concurrency cap: {"reason", "since", "detail"}, or NULL.
ALTER TABLE campaign ADD COLUMN start_deferred JSON;
