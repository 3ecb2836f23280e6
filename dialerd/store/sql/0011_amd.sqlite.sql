-- dialerd schema version 11: answering-machine detection (issue 12).
-- A campaign's AMD mode ('off' or 'on') and what a machine's answer gets (hangup, voicemail:SOUND, connect).
ALTER TABLE campaign ADD COLUMN amd VARCHAR(8) NOT NULL DEFAULT 'off';
ALTER TABLE campaign ADD COLUMN on_machine VARCHAR(140) NOT NULL DEFAULT 'hangup';
-- Who answered an attempt (human, machine, unknown; NULL: not answered) and Asterisk's raw AMDCAUSE; the
-- contact keeps its last attempt's.
ALTER TABLE attempt ADD COLUMN answered_by VARCHAR(10);
ALTER TABLE attempt ADD COLUMN amd_cause VARCHAR(80);
ALTER TABLE contact ADD COLUMN answered_by VARCHAR(10);
ALTER TABLE contact ADD COLUMN amd_cause VARCHAR(80);
