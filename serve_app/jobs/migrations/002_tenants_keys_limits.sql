-- Tenants, their API keys and limits, and the counters rate limits and quotas keep.

-- A tenant's own limits; NULL columns take the defaults in settings (STT_LIMIT_*).
CREATE TABLE tenants (
    tenant               text PRIMARY KEY,
    requests_per_minute  integer CHECK (requests_per_minute >= 0),
    max_concurrent       integer CHECK (max_concurrent >= 0),
    audio_hours_per_day  double precision CHECK (audio_hours_per_day >= 0),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- Keys are stt_<id>_<secret>; only the SHA-256 of the secret is kept.
CREATE TABLE api_keys (
    id            text PRIMARY KEY,
    tenant        text NOT NULL REFERENCES tenants (tenant),
    role          text NOT NULL CHECK (role IN ('user', 'admin')),
    name          text NOT NULL DEFAULT '',
    secret_sha256 bytea NOT NULL,
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_api_keys_tenant ON api_keys (tenant, created_at DESC);

-- GCRA: one row per bucket (a tenant), its theoretical arrival time. Written on every limited
-- request, so UNLOGGED: no WAL and no fsync per request; after a crash it starts empty
-- (everyone's bucket full again), which is harmless.
CREATE UNLOGGED TABLE rate_limits (
    bucket  text PRIMARY KEY,
    tat     timestamptz NOT NULL
);

-- Audio seconds transcribed per tenant and UTC day (deleting jobs does not give quota back).
CREATE TABLE tenant_usage (
    tenant         text NOT NULL,
    day            date NOT NULL,
    audio_seconds  double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, day)
);

-- Counting a tenant's running jobs (concurrency limit) reads this index.
CREATE INDEX idx_jobs_user_processing ON transcription_jobs (user_id) WHERE status = 'PROCESSING';
