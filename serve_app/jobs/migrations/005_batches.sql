-- Batches: many files submitted as one unit; each file is a job of the batch.
CREATE TABLE transcription_batches (
    id           uuid PRIMARY KEY,
    user_id      text NOT NULL,
    files        integer NOT NULL,
    webhook_url  text,
    request_id   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Set once, by whoever finishes its last job: the one batch webhook goes out then.
    ended_at     timestamptz
);
CREATE INDEX idx_batches_user ON transcription_batches (user_id, created_at DESC);

ALTER TABLE transcription_jobs
    ADD COLUMN batch_id uuid REFERENCES transcription_batches (id) ON DELETE CASCADE;
CREATE INDEX idx_jobs_batch ON transcription_jobs (batch_id) WHERE batch_id IS NOT NULL;

-- A batch's webhook deliveries are recorded like a job's.
ALTER TABLE webhook_deliveries ALTER COLUMN job_id DROP NOT NULL;
ALTER TABLE webhook_deliveries
    ADD COLUMN batch_id uuid REFERENCES transcription_batches (id) ON DELETE CASCADE;
