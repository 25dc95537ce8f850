-- Each row names the topic it is published to, so deployments sharing one database (test runs,
-- staging next to production) never publish each other's events.
ALTER TABLE outbox ADD COLUMN topic text NOT NULL DEFAULT '';
DROP INDEX outbox_unpublished;
CREATE INDEX outbox_unpublished ON outbox (topic, id) WHERE published_at IS NULL;
