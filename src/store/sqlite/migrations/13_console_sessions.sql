-- Web console sessions, by the blake3 hash of their secret (the cookie holds the secret),
-- with the hash of the token signed in with. Expired rows go when a session starts; a
-- revoked token's sessions go with it.
CREATE TABLE sessions (
    hash        TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_token ON sessions (token_hash);
