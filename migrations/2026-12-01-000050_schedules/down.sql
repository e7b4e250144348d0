DROP TABLE IF EXISTS jobq.schedules;
