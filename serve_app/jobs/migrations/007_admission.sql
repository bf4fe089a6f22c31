-- Admission of async jobs (serve_app/jobs/admission.py): each job reserves the audio seconds
-- its container states until it ends; the tenant's stored bytes are the audio and results it
-- keeps; a queued job is one PENDING. Tenants may override the defaults of two new limits.
ALTER TABLE transcription_jobs
    ADD COLUMN reserved_seconds double precision NOT NULL DEFAULT 0,
    ADD COLUMN audio_type text,
    ADD COLUMN result_bytes bigint;
CREATE INDEX idx_jobs_user_active ON transcription_jobs (user_id)
    WHERE status IN ('PENDING', 'PROCESSING');

ALTER TABLE tenants
    ADD COLUMN max_queued integer CHECK (max_queued >= 0),
    ADD COLUMN storage_gb double precision CHECK (storage_gb >= 0);

-- Fair turns: when each tenant last had a job claimed; the claim serves the tenant waiting
-- longest. Rewritten on every claim, so UNLOGGED (after a crash every tenant starts level).
CREATE UNLOGGED TABLE tenant_turns (
    tenant         text PRIMARY KEY,
    last_claim_at  timestamptz NOT NULL
);
