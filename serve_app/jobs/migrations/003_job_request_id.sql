-- The X-Request-ID of the request that made a job (given by the client or generated), so that a
-- job row, its webhook and the access log line of its request can be joined.
ALTER TABLE transcription_jobs ADD COLUMN request_id text;
