-- dialerd schema version 14: a lease on each campaign's webhook delivery (issue 13).
-- With several daemons on one database, the daemon named here delivers the campaign's events until
-- lease_until (renewed while it delivers); the others take the lease over only once it is free or has lapsed.
ALTER TABLE webhook_delivery ADD COLUMN lease_owner VARCHAR(200);
ALTER TABLE webhook_delivery ADD COLUMN lease_until DATETIME;
