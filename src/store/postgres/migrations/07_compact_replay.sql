-- What replays an attempt, in the compact form of `AttemptReplay::encode` (about a third of
-- its JSON). Rows written before keep their JSON, as bytes; the reader takes either.
ALTER TABLE attempts ALTER COLUMN replay TYPE bytea USING convert_to(replay, 'UTF8');
