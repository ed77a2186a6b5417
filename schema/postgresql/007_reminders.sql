-- Version 7 (mirrors schema/007_reminders.sql): reminders, recurring plans, timezones.

ALTER TABLE people ADD COLUMN timezone text;

ALTER TABLE intentions ADD COLUMN kind text NOT NULL DEFAULT 'promise';

ALTER TABLE intentions ADD COLUMN recurrence text;
