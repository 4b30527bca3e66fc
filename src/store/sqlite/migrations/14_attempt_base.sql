-- A retried job keeps its attempts and their numbers: a retry makes the attempts so far the
-- job's base, and its retry policy counts only the attempts after it. (A retry used to set
-- `attempts` back to 0, and each new attempt's record replaced the old one of its number.)
ALTER TABLE jobs ADD COLUMN attempt_base INTEGER NOT NULL DEFAULT 0;
