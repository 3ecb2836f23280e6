-- dialerd schema version 13: several daemons on one database (issue 13).
-- Each daemon's row: its epoch (raised at each start; a daemon whose epoch moved on is fenced), the PBX it
-- drives, and its heartbeat.
CREATE TABLE dialer_node (
	id VARCHAR(120) NOT NULL, 
	epoch BIGINT NOT NULL, 
	pbx VARCHAR(300) NOT NULL, 
	state VARCHAR(20) NOT NULL, 
	held_reason VARCHAR(40), 
	calls_in_flight INTEGER DEFAULT '0' NOT NULL, 
	started_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	heartbeat_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id)
);
-- The daemon that placed an attempt and its epoch then (NULL: placed before this version, by the only one).
ALTER TABLE attempt ADD COLUMN node_id VARCHAR(120);
ALTER TABLE attempt ADD COLUMN node_epoch BIGINT;
-- The tenant's global pacing (the theoretical start time of its next call, GCRA), kept under its row lock.
ALTER TABLE tenant ADD COLUMN pace_at TIMESTAMP WITH TIME ZONE;
