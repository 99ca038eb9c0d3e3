"""The shared job store: PostgreSQL, read and written by every replica (``finetune_store``).

- Claims lock rows with ``FOR UPDATE SKIP LOCKED``: replicas claiming at the same moment take
  different jobs, and none waits for another's transaction.
- Leases and their expiry are on the database's clock, so replicas' clocks may disagree.
- Every event, new job and cancel request is announced with ``NOTIFY`` in its own transaction (it is
  delivered at commit, so a woken watcher always finds the row). Each replica LISTENs on one extra
  connection in a thread; a lost connection is opened again, and the listener is told ("reconnected")
  so that it re-reads what it may have missed.
- Credentials the libpq way: in the URL, or ``PGPASSWORD`` / ``~/.pgpass`` / ``PGSSLMODE`` and the
  other ``PG*`` environment variables.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from server.finetune.store import JobStore, Listener, Run
from server.finetune.store_rows import Row, schema

log = logging.getLogger(__name__)

CHANNEL = "imageserve_finetune"
CONNECT_TIMEOUT_S = 10
#: How long the listener waits before opening a lost connection again.
RECONNECT_S = 1.0

#: Replicas starting together create the schema one at a time (an arbitrary, fixed lock key).
_SCHEMA_LOCK = 0x1_3A6E_5E7E


def redact(url: str) -> str:
    """The URL's host, port and database, for logs: never the password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable URL)"
    host = parts.get("host", "localhost")
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{host}{port}/{parts.get('dbname', '')}"


class PostgresJobStore(JobStore):
    """Datasets, jobs and events in a PostgreSQL database shared by every replica."""

    shared = True
    NOW_SQL = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"
    SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"
    FOR_UPDATE = " FOR UPDATE"

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._db = self._connect()
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None
        with self._transaction() as run:
            run("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
            ddl = schema(real="DOUBLE PRECISION", seq="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
            for statement in filter(str.strip, ddl.split(";")):
                run(statement, ())

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(
                self.url, autocommit=True, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT_S
            )
        except psycopg.OperationalError as exc:
            raise ConnectionError(
                f"cannot reach the fine-tuning job store {redact(self.url)}: {str(exc).strip()}; "
                "check finetune_store (and PGPASSWORD or ~/.pgpass) and that the database is up"
            ) from None

    def describe(self) -> str:
        return redact(self.url)

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.join(timeout=5)
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[Run]:
        with self._lock:
            # NOTE: a connection lost (database restarted, network) is opened again on the next call;
            # the call that found it broken fails, and its caller reports that.
            if self._db.closed or self._db.broken:
                self._db = self._connect()
            with self._db.transaction(), self._db.cursor() as cursor:

                def run(sql: str, params: Sequence[Any]) -> list[Row]:
                    cursor.execute(sql.replace("?", "%s"), tuple(params))
                    return cursor.fetchall() if cursor.description else []

                yield run

    def _announce(self, run: Run, kind: str, job_id: str) -> None:
        run("SELECT pg_notify(?, ?)", (CHANNEL, f"{kind} {job_id}"))

    def listen(self, listener: Listener) -> None:
        self._listener = threading.Thread(
            target=self._listen, args=(listener,), name="jobstore-listen", daemon=True
        )
        self._listener.start()

    def _listen(self, listener: Listener) -> None:
        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as db:
                    db.execute(f"LISTEN {CHANNEL}")
                    if not first:
                        listener("reconnected", "")
                    first = False
                    while not self._stop.is_set():
                        for notice in db.notifies(timeout=0.5):
                            kind, _, job_id = notice.payload.partition(" ")
                            listener(kind, job_id)
            except psycopg.Error as exc:
                log.warning("job store %s: listening failed (%s); retrying", self.describe(), exc)
                self._stop.wait(RECONNECT_S)
