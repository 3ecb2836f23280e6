-- dialerd schema version 13: several daemons on one database (issue 13). SQLite serves one daemon; the
-- tables are the same on both backends so that the schema is one.
CREATE TABLE dialer_node (
	id VARCHAR(120) NOT NULL, 
	epoch BIGINT NOT NULL, 
	pbx VARCHAR(300) NOT NULL, 
	state VARCHAR(20) NOT NULL, 
	held_reason VARCHAR(40), 
	calls_in_flight INTEGER DEFAULT '0' NOT NULL, 
	started_at DATETIME NOT NULL, 
	heartbeat_at DATETIME NOT NULL, 
	PRIMARY KEY (id)
);
ALTER TABLE attempt ADD COLUMN node_id VARCHAR(120);
ALTER TABLE attempt ADD COLUMN node_epoch BIGINT;
ALTER TABLE tenant ADD COLUMN pace_at DATETIME;
