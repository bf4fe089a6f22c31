"""Who is calling: API keys in PostgreSQL, the principal a request acts as, and the key cache.

A key is ``stt_<id>_<secret>``: a 12-hex-digit id (the primary key, safe to show and log) and a
256-bit secret of which only the SHA-256 is stored. The whole key is returned once, by
``KeyStore.create``.

``Authenticator`` answers "which tenant, which role" for a request without a database round
trip on the hot path: a key it looked up is trusted for ``STT_AUTH_CACHE_SECONDS`` (2 s), so a
revocation reaches every Ingress replica within that time. Modes: with ``STT_AUTH=auto`` (the
default) the service is open for one local user (``STT_DEFAULT_USER``) until a key exists, ever;
``STT_AUTH=required`` always wants a key. ``STT_API_KEY`` is a bootstrap admin key of the
default tenant, checked without the database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from serve_app.core.errors import Forbidden, InvalidParameter, Unauthorized
from serve_app.core.settings import Settings, is_loopback
from serve_app.jobs.store import JobStore
from serve_app.tenancy import queries
from serve_app.tenancy.limits import Limits

KEY = re.compile(r"stt_([0-9a-f]{12})_([0-9a-f]{64})")
TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ROLES = ("user", "admin")
CACHE_ENTRIES = 10_000


def check_tenant(name: str, param: str = "tenant") -> str:
    if not isinstance(name, str) or not TENANT.fullmatch(name):
        raise InvalidParameter(
            "A tenant is 1-64 characters of letters, digits, '.', '_' and '-', starting with a letter or digit.",
            param=param,
        )
    return name


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def host_name(host: str) -> str:
    """A Host header without its port: ``a:80`` -> ``a``, ``[::1]:80`` -> ``[::1]``."""
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@dataclass(frozen=True)
class Principal:
    """What a request acts as: a tenant, a role, the key it came with (None when open)."""

    tenant: str
    role: str = "user"
    key_id: str | None = None
    limits: Limits | None = None  # None: not limited (the open local user, the Python handle)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def tenant_for(self, asked: str | None) -> str:
        """The tenant a listing or stats call reads: its own; an admin may name another."""
        if asked is None or asked == self.tenant:
            return self.tenant
        if not self.is_admin:
            raise Forbidden("Only an admin key may read another tenant's jobs.", param="tenant")
        return check_tenant(asked)


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant: str
    role: str
    name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def from_row(cls, row) -> ApiKey:
        return cls(**{f: row[f] for f in cls.__dataclass_fields__})

    def public(self) -> dict:
        """What listings show: everything but the secret (which is not kept)."""
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()}


class KeyStore:
    """API keys and tenant limits, in the job database."""

    def __init__(self, store: JobStore):
        self.store = store

    async def create(
        self, tenant: str, *, role: str = "user", name: str = "", expires_at: datetime | None = None
    ) -> tuple[ApiKey, str]:
        """A new key; returns it and the full ``stt_<id>_<secret>`` (shown only this once)."""
        check_tenant(tenant)
        if role not in ROLES:
            raise InvalidParameter(f"role must be one of {', '.join(ROLES)}.", param="role")
        if not name.isprintable() or len(name) > 200:
            raise InvalidParameter("name must be printable and at most 200 characters.", param="name")
        if expires_at is not None and expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=timezone.utc)
        key_id, secret = secrets.token_hex(6), secrets.token_hex(32)
        async with self.store.connection() as conn, conn.transaction():
            await conn.execute(queries.ENSURE_TENANT, tenant)
            row = await conn.fetchrow(queries.INSERT_KEY, key_id, tenant, role, name, _digest(secret), expires_at)
        return ApiKey.from_row(row), f"stt_{key_id}_{secret}"

    async def list(self, tenant: str | None = None) -> list[ApiKey]:
        async with self.store.connection() as conn:
            return [ApiKey.from_row(r) for r in await conn.fetch(queries.LIST_KEYS, tenant)]

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke (idempotent); None when there is no such key."""
        async with self.store.connection() as conn:
            row = await conn.fetchrow(queries.REVOKE_KEY, key_id)
        return ApiKey.from_row(row) if row else None

    async def lookup(self, key_id: str):
        """The key's row with its tenant's limits, marking it used; None if there is none."""
        async with self.store.connection() as conn:
            return await conn.fetchrow(queries.LOOKUP_KEY, key_id)

    async def any_keys(self) -> bool:
        async with self.store.connection() as conn:
            return await conn.fetchval(queries.ANY_KEYS)

    async def set_limits(self, tenant: str, limits: Limits) -> Limits:
        check_tenant(tenant)
        async with self.store.connection() as conn:
            row = await conn.fetchrow(
                queries.SET_LIMITS,
                tenant,
                limits.requests_per_minute,
                limits.max_concurrent,
                limits.audio_hours_per_day,
                limits.max_queued,
                limits.storage_gb,
            )
        return Limits.from_row(row)

    async def limits(self, tenant: str) -> Limits:
        async with self.store.connection() as conn:
            row = await conn.fetchrow(queries.GET_LIMITS, tenant)
        return Limits.from_row(row) if row else Limits()


class Authenticator:
    """Turns a request's key into a Principal; keeps what it looked up for ``ttl`` seconds."""

    def __init__(self, settings: Settings, keys: KeyStore | None):
        self.settings = settings
        self.keys = keys
        self.ttl = settings.auth_cache_seconds
        self.defaults = Limits(
            requests_per_minute=settings.limit_requests_per_minute,
            max_concurrent=settings.limit_max_concurrent,
            audio_hours_per_day=settings.limit_audio_hours_per_day,
            max_queued=settings.limit_max_queued,
            storage_gb=settings.limit_storage_gb,
        )
        self._cache: dict[str, tuple[float, object]] = {}
        self._keys_exist: tuple[float, bool] = (0.0, False)

    def _open_host(self, host: str) -> bool:
        name = host_name(host)
        return is_loopback(name) or name.lower() in {h.lower() for h in self.settings.open_hosts}

    def forget(self, key_id: str) -> None:
        self._cache.pop(key_id, None)

    async def required(self) -> bool:
        if self.settings.auth == "required" or self.settings.api_key:
            return True
        if self.keys is None:
            return False
        checked_at, exist = self._keys_exist
        if not exist and time.monotonic() - checked_at > self.ttl:  # once a key exists, always
            exist = await self.keys.any_keys()
            self._keys_exist = (time.monotonic(), exist)
        return exist

    async def authenticate(self, given: str | None, host: str | None = None) -> Principal:
        """The caller of a request with key ``given`` and Host header ``host``. An open service
        (no key yet) answers loopback host names only: a DNS-rebinding web page, whose requests
        carry its own host name, cannot read or delete transcripts through a local browser."""
        if not await self.required():
            if host is not None and not self._open_host(host):
                raise Forbidden(
                    f"This service has no API keys and answers only requests to localhost; Host '{host[:100]}' "
                    "is refused (create a key, or list the name in STT_OPEN_HOSTS).",
                    code="host_not_allowed",
                )
            return Principal(self.settings.default_user)
        if not given:
            raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'.")
        bootstrap = self.settings.secret("api_key")
        if bootstrap and hmac.compare_digest(given.encode(), bootstrap.encode()):
            return Principal(self.settings.default_user, "admin", "bootstrap", self.defaults)
        match = KEY.fullmatch(given)
        if match is None or self.keys is None:
            raise Unauthorized("Incorrect API key provided.")
        key_id, secret = match.groups()
        row = await self._row(key_id)
        if row is None or not hmac.compare_digest(bytes(row["secret_sha256"]), _digest(secret)):
            raise Unauthorized("Incorrect API key provided.")
        if row["revoked_at"] is not None:
            raise Unauthorized(f"API key {key_id} has been revoked.")
        if row["expires_at"] is not None and row["expires_at"] <= datetime.now(timezone.utc):
            raise Unauthorized(f"API key {key_id} has expired.")
        return Principal(row["tenant"], row["role"], key_id, Limits.from_row(row).over(self.defaults))

    async def _row(self, key_id: str):
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        row = await self.keys.lookup(key_id)  # unknown ids are cached too: no DB trip per guess
        if len(self._cache) >= CACHE_ENTRIES:
            self._cache = {k: v for k, v in self._cache.items() if now - v[0] < self.ttl}
            if len(self._cache) >= CACHE_ENTRIES:
                self._cache.clear()
        self._cache[key_id] = (now, row)
        return row
