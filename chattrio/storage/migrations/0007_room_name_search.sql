-- The room list's name search (GET /api/room?q=): a case-insensitive substring match,
-- lower(name) LIKE '%q%', served by a trigram index. A btree on lower(name) text_pattern_ops would
-- serve prefixes only; trigrams serve prefixes and substrings alike ("chat" finds "kr-chat-2").
-- pg_trgm ships with PostgreSQL's contrib (Debian's postgresql package) and is a trusted extension,
-- so the database owner may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX IF NOT EXISTS rooms_name_trgm ON rooms USING gin (lower(name) gin_trgm_ops);
