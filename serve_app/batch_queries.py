"""SQL of batches (serve_app/batches.py)."""

INSERT_BATCH = """
INSERT INTO transcription_batches (id, user_id, files, webhook_url, request_id)
VALUES ($1, $2, $3, $4, $5) RETURNING *"""
# The batch's jobs, longest first: workers claim by created_at, so the long files start first
# and the short ones fill the Transcribers' batches beside them (the seed's BatchTranscriber
# sorts by duration the same way). $9: each job's place, in microseconds after now().
INSERT_JOBS = """
INSERT INTO transcription_jobs (
    id, user_id, original_filename, status, model, language, task, options, is_sync,
    audio_key, audio_bytes, max_attempts, batch_id, request_id, created_at)
SELECT j.id, $2, j.filename, 'PENDING', $3, $4, $5, $6::jsonb, false, j.audio_key, j.audio_bytes, $7, $1, $8,
       now() + make_interval(secs => j.place / 1e6)
FROM unnest($9::uuid[], $10::text[], $11::text[], $12::bigint[], $13::int[])
    AS j (id, filename, audio_key, audio_bytes, place)"""
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
