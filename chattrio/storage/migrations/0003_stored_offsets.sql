-- How far the persistence group has stored each partition of the messages topic: every record of
-- the partition before next_offset is in messages. Written in the transaction that stores the
-- records. A node whose fan-out started reading a partition at offset S trusts storage for the
-- messages before S only once next_offset >= S (chat.py, resume).
CREATE TABLE stored_offsets (
    topic text NOT NULL,
    partition integer NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);
