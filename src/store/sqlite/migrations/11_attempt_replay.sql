-- What replays an attempt (the limits it ran under, a digest of its output, the seed of
-- its random generator and the values its clocks returned), as JSON; NULL for attempts the
-- sandbox did not run to a report and for those recorded before.
ALTER TABLE attempts ADD COLUMN replay TEXT;
