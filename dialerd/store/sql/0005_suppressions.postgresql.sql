-- dialerd schema version 5: suppression lists (do-not-call), per tenant (issue 11).

-- One row per tenant and E.164 number: never dialled for that tenant. source: api (JSON numbers), import
-- (a CSV upload), opt_out (the callee opted out during a call: DIALERD_OPT_OUT=1 at hangup).
CREATE TABLE suppression (
	tenant_id VARCHAR(40) NOT NULL, 
	number VARCHAR(20) NOT NULL, 
	reason TEXT NOT NULL, 
	source VARCHAR(20) NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (tenant_id, number), 
	FOREIGN KEY(tenant_id) REFERENCES tenant (id) ON DELETE CASCADE
);

-- Why a contact in the new terminal status 'skipped' was not dialled ('suppressed'); NULL otherwise.
ALTER TABLE contact ADD COLUMN reason VARCHAR(40);
