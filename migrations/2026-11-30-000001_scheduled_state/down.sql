-- PostgreSQL cannot drop a value from an enum type; after the next
-- migration's down.sql no row holds 'scheduled', and the value stays
-- unused.
SELECT 1;
