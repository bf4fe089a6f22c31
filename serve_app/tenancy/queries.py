"""The SQL of tenants, API keys and rate limits (serve_app/tenancy), with $n parameters."""

ENSURE_TENANT = "INSERT INTO tenants (tenant) VALUES ($1) ON CONFLICT DO NOTHING"
INSERT_KEY = """
INSERT INTO api_keys (id, tenant, role, name, secret_sha256, expires_at)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *"""
LIST_KEYS = "SELECT * FROM api_keys WHERE $1::text IS NULL OR tenant = $1 ORDER BY created_at DESC, id"
REVOKE_KEY = """
UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now())
WHERE id = $1
RETURNING *"""
# A key's row and its tenant's limits, marked used, in one statement (on a key-cache miss).
LOOKUP_KEY = """
UPDATE api_keys AS k
SET last_used_at = CASE WHEN k.revoked_at IS NULL THEN now() ELSE k.last_used_at END
FROM tenants AS t
WHERE k.id = $1 AND t.tenant = k.tenant
RETURNING k.*, t.requests_per_minute, t.max_concurrent, t.audio_hours_per_day, t.max_queued, t.storage_gb"""
ANY_KEYS = "SELECT EXISTS (SELECT 1 FROM api_keys)"  # revoked keys count: never open again
SET_LIMITS = """
INSERT INTO tenants AS t (tenant, requests_per_minute, max_concurrent, audio_hours_per_day, max_queued, storage_gb)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (tenant) DO UPDATE
SET requests_per_minute = EXCLUDED.requests_per_minute, max_concurrent = EXCLUDED.max_concurrent,
    audio_hours_per_day = EXCLUDED.audio_hours_per_day, max_queued = EXCLUDED.max_queued,
    storage_gb = EXCLUDED.storage_gb, updated_at = now()
RETURNING *"""
GET_LIMITS = "SELECT * FROM tenants WHERE tenant = $1"
# GCRA in one upsert: $2 the emission interval (60 / per minute), $3 the allowance (burst x $2).
# ``ahead`` is NULL when refused; ``prior_ahead`` then says how far ahead the tenant was.
RATE_HIT = """
WITH prior AS (SELECT tat FROM rate_limits WHERE bucket = $1),
hit AS (
    INSERT INTO rate_limits AS r (bucket, tat) VALUES ($1, now() + make_interval(secs => $2))
    ON CONFLICT (bucket) DO UPDATE SET tat = GREATEST(r.tat, now()) + make_interval(secs => $2)
    WHERE GREATEST(r.tat, now()) + make_interval(secs => $2) <= now() + make_interval(secs => $3)
    RETURNING tat)
SELECT extract(epoch FROM (SELECT tat FROM hit) - now())::float8 AS ahead,
       extract(epoch FROM (SELECT tat FROM prior) - now())::float8 AS prior_ahead,
       (SELECT audio_seconds FROM tenant_usage
        WHERE tenant = $1 AND day = (now() AT TIME ZONE 'UTC')::date) AS used"""
