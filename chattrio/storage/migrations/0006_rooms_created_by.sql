-- The room quota counts a user's rooms (chattrio/storage/postgres.py, create_room).
CREATE INDEX IF NOT EXISTS rooms_created_by ON rooms (created_by);
