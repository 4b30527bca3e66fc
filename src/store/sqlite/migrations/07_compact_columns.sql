-- Jobs written from here on keep their limits and retry policy in a compact text form
-- (see `columns`); rows written before keep their JSON, which is still read. The version
-- is raised so that an older binary, which reads JSON only, refuses the database.
SELECT 1;
