DROP TABLE jobq.blocks;
DROP TABLE jobq.rate_tokens;
