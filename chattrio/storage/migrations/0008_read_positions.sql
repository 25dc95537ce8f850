-- How far each user has read each room: the last seq read, which only moves forward (the upsert
-- keeps the GREATEST). The primary key serves both the READ upsert and the room list's lookup of a
-- page of rooms for one user.
CREATE TABLE IF NOT EXISTS read_positions (
    user_id        text NOT NULL,
    room_id        bigint NOT NULL,
    last_read_seq  bigint NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, room_id)
);
