"""The SQL of the job store, with $n parameters: every statement the service sends to PostgreSQL.

Values are never formatted into these strings; the only formatting is of parameter numbers
(``$3``) when ``JobStore.list_query`` strings a listing's optional filters together.
"""

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(7301947)"
APPLIED = "SELECT version FROM schema_migrations"
RECORD_MIGRATION = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"

INSERT = """
INSERT INTO transcription_jobs (
    id, user_id, original_filename, status, model, language, task, options, is_sync,
    audio_key, audio_bytes, max_attempts, webhook_url, lease_owner, lease_expires_at,
    started_at, attempts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13, $14,
        CASE WHEN $14::text IS NULL THEN NULL ELSE now() + make_interval(secs => $15) END,
        CASE WHEN $4 = 'PROCESSING' THEN now() END,
        CASE WHEN $4 = 'PROCESSING' THEN 1 ELSE 0 END)
RETURNING *"""
NOTIFY = "SELECT pg_notify($1, $2)"
GET = "SELECT * FROM transcription_jobs WHERE id = $1 AND user_id = $2"
GET_ANY = "SELECT * FROM transcription_jobs WHERE id = $1"
DELETE = "DELETE FROM transcription_jobs WHERE id = $1 AND user_id = $2 RETURNING *"

# A PROCESSING job whose lease ran out either goes back to the queue or, out of attempts, fails.
EXPIRE_LEASES = """
UPDATE transcription_jobs
SET status = CASE WHEN attempts >= max_attempts OR is_sync THEN 'FAILED' ELSE 'PENDING' END,
    error = CASE WHEN attempts >= max_attempts OR is_sync
                 THEN 'abandoned: the worker stopped renewing its lease ' || attempts || ' time(s)'
                 ELSE error END,
    completed_at = CASE WHEN attempts >= max_attempts OR is_sync THEN now() END,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
WHERE status = 'PROCESSING' AND lease_expires_at < now()
RETURNING id, status"""
CLAIM = """
UPDATE transcription_jobs AS j
SET status = 'PROCESSING', lease_owner = $1,
    lease_expires_at = now() + make_interval(secs => $2),
    attempts = j.attempts + 1, started_at = COALESCE(j.started_at, now()), updated_at = now()
WHERE j.id = (
    SELECT id FROM transcription_jobs
    WHERE status = 'PENDING'
    ORDER BY created_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED)
RETURNING j.*"""
RENEW = """
UPDATE transcription_jobs
SET lease_expires_at = now() + make_interval(secs => $3), progress = COALESCE($4, progress),
    updated_at = now()
WHERE id = $1 AND lease_owner = $2 AND status = 'PROCESSING'"""
COMPLETE = """
UPDATE transcription_jobs
SET status = 'COMPLETED', result_key = $3, duration_seconds = $4, text_preview = $5,
    language = COALESCE($6, language), processing_seconds = $7, progress = 1, error = NULL,
    lease_owner = NULL, lease_expires_at = NULL, completed_at = now(), updated_at = now()
WHERE id = $1 AND lease_owner = $2 AND status = 'PROCESSING'
RETURNING *"""
FAIL = """
UPDATE transcription_jobs
SET status = CASE WHEN $4 AND attempts < max_attempts THEN 'PENDING' ELSE 'FAILED' END,
    error = $3,
    completed_at = CASE WHEN $4 AND attempts < max_attempts THEN NULL ELSE now() END,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
WHERE id = $1 AND lease_owner = $2 AND status = 'PROCESSING'
RETURNING *"""
STATS = """
SELECT
    count(*) FILTER (WHERE status = 'COMPLETED') AS completed,
    count(*) FILTER (WHERE status = 'FAILED') AS failed,
    avg(processing_seconds) FILTER (WHERE status = 'COMPLETED') AS avg_processing_seconds,
    sum(duration_seconds) FILTER (WHERE status = 'COMPLETED') AS audio_seconds
FROM transcription_jobs
WHERE created_at > now() - interval '24 hours'"""
ACTIVE = """
SELECT status, count(*) AS n FROM transcription_jobs
WHERE status IN ('PENDING', 'PROCESSING')
GROUP BY status"""
RECORD_DELIVERY = """
INSERT INTO webhook_deliveries (job_id, url, event, attempt, status_code, error, delivered)
VALUES ($1, $2, $3, $4, $5, $6, $7)"""
DELIVERIES = "SELECT * FROM webhook_deliveries WHERE job_id = $1 ORDER BY id"

# List: fixed fragments joined in a fixed order; every value is a parameter.
LIST_HEAD = "SELECT * FROM transcription_jobs WHERE user_id = $1"
LIST_STATUS = " AND status = ${}"
LIST_SEARCH = (
    " AND to_tsvector('simple', translate(original_filename, '._-/', '    '))"
    " @@ plainto_tsquery('simple', translate(${}, '._-/', '    '))"
)
LIST_CURSOR = " AND (created_at, id) < (${}::timestamptz, ${}::uuid)"
LIST_TAIL = " ORDER BY created_at DESC, id DESC LIMIT ${}"
