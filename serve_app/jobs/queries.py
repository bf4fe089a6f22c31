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
    started_at, attempts, request_id, reserved_seconds, audio_type)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13, $14,
        CASE WHEN $14::text IS NULL THEN NULL ELSE now() + make_interval(secs => $15) END,
        CASE WHEN $4 = 'PROCESSING' THEN now() END,
        CASE WHEN $4 = 'PROCESSING' THEN 1 ELSE 0 END, $16, $17, $18)
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
# A PENDING job to run: of the tenant whose turn it is (the one whose last claim is oldest:
# tenants take turns, so one tenant's thousand queued jobs delay another's by about one job),
# its oldest; of a tenant that runs fewer than its limit of jobs ($3: the default limit; 0
# none) and whose day's audio, with what its running jobs reserve, leaves room for this job
# ($4: the default hours a day; 0 none). Two workers claiming at once may each take one more.
CLAIM = """
WITH claimed AS (
    UPDATE transcription_jobs AS j
    SET status = 'PROCESSING', lease_owner = $1,
        lease_expires_at = now() + make_interval(secs => $2),
        attempts = j.attempts + 1, started_at = COALESCE(j.started_at, now()), updated_at = now()
    WHERE j.id = (
        SELECT c.id FROM transcription_jobs c
        LEFT JOIN tenants t ON t.tenant = c.user_id
        LEFT JOIN tenant_turns turn ON turn.tenant = c.user_id
        WHERE c.status = 'PENDING'
          AND (COALESCE(t.max_concurrent, $3) = 0
               OR (SELECT count(*) FROM transcription_jobs p
                   WHERE p.user_id = c.user_id AND p.status = 'PROCESSING') < COALESCE(t.max_concurrent, $3))
          AND (COALESCE(t.audio_hours_per_day, $4) = 0
               OR COALESCE((SELECT u.audio_seconds FROM tenant_usage u
                            WHERE u.tenant = c.user_id AND u.day = (now() AT TIME ZONE 'UTC')::date), 0)
                  + (SELECT COALESCE(sum(p.reserved_seconds), 0) FROM transcription_jobs p
                     WHERE p.user_id = c.user_id AND p.status = 'PROCESSING')
                  + c.reserved_seconds <= COALESCE(t.audio_hours_per_day, $4) * 3600)
        ORDER BY turn.last_claim_at ASC NULLS FIRST, c.created_at
        LIMIT 1
        FOR UPDATE OF c SKIP LOCKED)
    RETURNING j.*),
turn AS (
    INSERT INTO tenant_turns AS t (tenant, last_claim_at)
    SELECT user_id, clock_timestamp() FROM claimed
    ON CONFLICT (tenant) DO UPDATE SET last_claim_at = EXCLUDED.last_claim_at)
SELECT * FROM claimed"""
RENEW = """
UPDATE transcription_jobs
SET lease_expires_at = now() + make_interval(secs => $3), progress = COALESCE($4, progress),
    updated_at = now()
WHERE id = $1 AND lease_owner = $2 AND status = 'PROCESSING'"""
# Completing a job adds its audio to the tenant's usage of the day (the daily quota), at once.
COMPLETE = """
WITH done AS (
    UPDATE transcription_jobs
    SET status = 'COMPLETED', result_key = $3, duration_seconds = $4, text_preview = $5,
        language = COALESCE($6, language), processing_seconds = $7, progress = 1, error = NULL,
        model = COALESCE($8, model), result_bytes = $9,
        lease_owner = NULL, lease_expires_at = NULL, completed_at = now(), updated_at = now()
    WHERE id = $1 AND lease_owner = $2 AND status = 'PROCESSING'
    RETURNING *),
used AS (
    INSERT INTO tenant_usage AS u (tenant, day, audio_seconds)
    SELECT user_id, (now() AT TIME ZONE 'UTC')::date, COALESCE(duration_seconds, 0) FROM done
    ON CONFLICT (tenant, day) DO UPDATE SET audio_seconds = u.audio_seconds + EXCLUDED.audio_seconds)
SELECT * FROM done"""
# A worker that stops gracefully hands its job back: queued again at once, the attempt not
# counted (it was not the job's fault), and the workers woken in the same statement.
RELEASE = """
WITH released AS (
    UPDATE transcription_jobs
    SET status = 'PENDING', attempts = greatest(attempts - 1, 0), lease_owner = NULL,
        lease_expires_at = NULL, updated_at = now()
    WHERE id = $1 AND lease_owner = $2 AND status = 'PROCESSING' AND NOT is_sync
    RETURNING id)
SELECT pg_notify($3, id::text) FROM released"""
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
WHERE created_at > now() - interval '24 hours' AND user_id = $1"""
ACTIVE = """
SELECT status, count(*) AS n FROM transcription_jobs
WHERE status IN ('PENDING', 'PROCESSING') AND ($1::text IS NULL OR user_id = $1)
GROUP BY status"""
# A synchronous transcription's admission: the tenant's running jobs, counted under a lock of
# the tenant so that two requests at once cannot both take the last place.
TENANT_LOCK = "SELECT pg_advisory_xact_lock(7301948, hashtext($1))"
RUNNING = "SELECT count(*) FROM transcription_jobs WHERE user_id = $1 AND status = 'PROCESSING'"
RECORD_DELIVERY = """
INSERT INTO webhook_deliveries (job_id, url, event, attempt, status_code, error, delivered)
VALUES ($1, $2, $3, $4, $5, $6, $7)"""
# Finished jobs past the retention age ($1 days): those that still keep audio, or ($2) all.
EXPIRED = """
SELECT * FROM transcription_jobs
WHERE status IN ('COMPLETED', 'FAILED') AND completed_at < now() - make_interval(secs => $1 * 86400)
  AND ($2 OR audio_key IS NOT NULL)
ORDER BY completed_at
LIMIT $3"""
FORGET_AUDIO = "UPDATE transcription_jobs SET audio_key = NULL, updated_at = now() WHERE id = $1 AND audio_key = $2"
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

# A running job's progress (never backwards) and the texts of its pieces finished since the
# last report; fenced by the lease like every write of a running job.
PROGRESS = """
WITH job AS (
    UPDATE transcription_jobs SET progress = GREATEST(progress, COALESCE($3, progress)), updated_at = now()
    WHERE id = $1 AND lease_owner = $2 AND status = 'PROCESSING'
    RETURNING id)
INSERT INTO transcription_job_parts AS p (job_id, seq, start_seconds, end_seconds, text)
SELECT job.id, part.seq, part.start_seconds, part.end_seconds, part.text
FROM job, unnest($4::int[], $5::float8[], $6::float8[], $7::text[])
    AS part (seq, start_seconds, end_seconds, text)
ON CONFLICT (job_id, seq) DO UPDATE
SET start_seconds = EXCLUDED.start_seconds, end_seconds = EXCLUDED.end_seconds, text = EXCLUDED.text"""
PARTS = """
SELECT seq, start_seconds, end_seconds, text FROM transcription_job_parts
WHERE job_id = $1 AND seq > $2 ORDER BY seq"""

# -- batches (serve_app/jobs/batches.py) ------------------------------------------------------
INSERT_BATCH = """
INSERT INTO transcription_batches (id, user_id, files, webhook_url, request_id)
VALUES ($1, $2, $3, $4, $5) RETURNING *"""
# The batch's jobs, longest first: workers claim by created_at, so the long files start first
# and the short ones fill the Transcribers' batches beside them (the seed's BatchTranscriber
# sorts by duration the same way). $9: each job's place, in microseconds after now().
INSERT_JOBS = """
INSERT INTO transcription_jobs (
    id, user_id, original_filename, status, model, language, task, options, is_sync,
    audio_key, audio_bytes, max_attempts, batch_id, request_id, created_at,
    reserved_seconds, audio_type, error, completed_at)
SELECT j.id, $2, j.filename, CASE WHEN j.error IS NULL THEN 'PENDING' ELSE 'FAILED' END,
       $3, $4, $5, $6::jsonb, false, j.audio_key, j.audio_bytes, $7, $1, $8,
       now() + make_interval(secs => j.place / 1e6), j.reserved, j.audio_type, j.error,
       CASE WHEN j.error IS NULL THEN NULL ELSE now() END
FROM unnest($9::uuid[], $10::text[], $11::text[], $12::bigint[], $13::int[], $14::float8[], $15::text[],
            $16::text[])
    AS j (id, filename, audio_key, audio_bytes, place, reserved, audio_type, error)"""
GET_BATCH = "SELECT * FROM transcription_batches WHERE id = $1 AND ($2::text IS NULL OR user_id = $2)"
BATCH_JOBS = "SELECT * FROM transcription_jobs WHERE batch_id = $1 ORDER BY created_at, id"
# The batch ends once no job of it is waiting or running; only the caller that sets ended_at
# gets the row back (and sends the webhook).
END_BATCH = """
UPDATE transcription_batches b SET ended_at = now()
WHERE b.id = $1 AND b.ended_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM transcription_jobs j
                  WHERE j.batch_id = b.id AND j.status IN ('PENDING', 'PROCESSING'))
RETURNING *"""
DELETE_BATCH = "DELETE FROM transcription_batches WHERE id = $1 AND user_id = $2 RETURNING *"
RECORD_BATCH_DELIVERY = """
INSERT INTO webhook_deliveries (batch_id, url, event, attempt, status_code, error, delivered)
VALUES ($1, $2, $3, $4, $5, $6, $7)"""
