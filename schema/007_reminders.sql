-- Version 7: reminders people ask for, recurring plans, and each person's timezone.

-- A person's timezone (an IANA name set with /timezone); NULL: [persona] timezone.
ALTER TABLE people ADD COLUMN timezone TEXT;

-- 'promise' (the persona will do something) or 'reminder' (it will remind the person).
ALTER TABLE intentions ADD COLUMN kind TEXT NOT NULL DEFAULT 'promise';

-- A recurring plan's rule, as APScheduler CronTrigger fields in JSON (for example
-- {"day_of_week": "mon-fri", "hour": 8, "minute": 30, "timezone": "Europe/Lisbon"});
-- NULL: once. Each occurrence is its own due turn; /cancel ends the series.
ALTER TABLE intentions ADD COLUMN recurrence TEXT;
