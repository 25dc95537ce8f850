-- Records the persistence group read but could not store (undecodable, or refused by PostgreSQL,
-- e.g. text with U+0000). One row per record; a redelivered record is not added twice. `value` is
-- the record as read from Kafka, or for a refused message its ChatRecord re-encoded as JSON
-- (PostgreSQL-unsafe characters appear there as JSON escapes such as \u0000).
CREATE TABLE dead_letters (
    id              bigserial PRIMARY KEY,
    topic           text NOT NULL,
    partition       integer NOT NULL,
    record_offset   bigint NOT NULL,
    record_time     bigint NOT NULL,
    value           bytea,
    reason          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, partition, record_offset)
);
