-- Jobs: every transcription, async or sync, is a row here.
CREATE TABLE transcription_jobs (
    id                  uuid PRIMARY KEY,
    user_id             text NOT NULL,
    original_filename   text NOT NULL DEFAULT '',
    status              text NOT NULL
                        CHECK (status IN ('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED')),
    model               text NOT NULL,
    language            text,
    task                text NOT NULL DEFAULT 'transcribe',
    options             jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_sync             boolean NOT NULL DEFAULT false,
    duration_seconds    double precision,
    audio_key           text,
    audio_bytes         bigint,
    result_key          text,
    text_preview        text,
    error               text,
    attempts            integer NOT NULL DEFAULT 0,
    max_attempts        integer NOT NULL DEFAULT 3,
    lease_owner         text,
    lease_expires_at    timestamptz,
    progress            real NOT NULL DEFAULT 0,
    webhook_url         text,
    processing_seconds  double precision,
    started_at          timestamptz,
    completed_at        timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- The seed's indexes.
CREATE INDEX idx_jobs_active_status ON transcription_jobs (status, created_at)
    WHERE status IN ('PENDING', 'PROCESSING');
CREATE INDEX idx_jobs_created_at ON transcription_jobs (created_at DESC);
CREATE INDEX idx_jobs_user_id ON transcription_jobs (user_id);
CREATE INDEX idx_jobs_user_status_created ON transcription_jobs (user_id, status, created_at DESC);
CREATE INDEX idx_jobs_failed ON transcription_jobs (created_at DESC) WHERE status = 'FAILED';
CREATE INDEX idx_jobs_filename_fts ON transcription_jobs
    USING GIN (to_tsvector('simple', translate(original_filename, '._-/', '    ')));
-- The dashboard counts what finished in the last 24 hours.
CREATE INDEX idx_jobs_completed_at ON transcription_jobs (completed_at DESC)
    WHERE completed_at IS NOT NULL;

CREATE TABLE webhook_deliveries (
    id           bigserial PRIMARY KEY,
    job_id       uuid NOT NULL REFERENCES transcription_jobs (id) ON DELETE CASCADE,
    url          text NOT NULL,
    event        text NOT NULL,
    attempt      integer NOT NULL,
    status_code  integer,
    error        text,
    delivered    boolean NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_webhook_deliveries_job ON webhook_deliveries (job_id, id);
