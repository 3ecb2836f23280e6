-- dialerd schema version 15: the PBX fence of each daemon (issue 13 item 4, docs/fencing.md).
-- fence_key: the name of the Asterisk global its PBX compares each originate's epoch with; NULL when the
-- daemon dials without the fence (a taker then never gives its unsent attempts back).
ALTER TABLE dialer_node ADD COLUMN fence_key VARCHAR(64);
