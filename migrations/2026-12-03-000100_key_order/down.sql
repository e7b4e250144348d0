DROP TABLE jobq.key_walks;
DROP INDEX jobq.jobs_key_order_idx;
