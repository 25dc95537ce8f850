CREATE TABLE users (
    id          text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rooms (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    created_by  text NOT NULL REFERENCES users (id),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Written in the same transaction as the user or room it announces; published by the outbox poller.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    event_id      uuid NOT NULL UNIQUE,
    key           text NOT NULL,
    payload       bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- seq is the Kafka offset within the room's partition; id is derived from clientMsgId when given,
-- so both a redelivered record and a retried send hit a unique constraint instead of a second row.
CREATE TABLE messages (
    id             uuid PRIMARY KEY,
    room_id        bigint NOT NULL,
    seq            bigint NOT NULL,
    sender_id      text NOT NULL,
    kind           text NOT NULL,
    text           text NOT NULL,
    client_msg_id  text,
    sent_at        bigint NOT NULL,
    UNIQUE (room_id, seq)
);
