-- The UTS #39 skeleton of each user id (chattrio/validation.py): no two users may look alike.
-- Computed in Python, so rows from before this column stay NULL until their user enters again
-- (docs/security.md); NULLs do not collide in a unique index.
ALTER TABLE users ADD COLUMN skeleton text;
CREATE UNIQUE INDEX users_skeleton ON users (skeleton);
