"""A real PostgreSQL server for tests: ``initdb`` into a fresh directory, ``pg_ctl start`` listening
on a Unix socket in that directory only (no TCP port: nothing to pick, nothing another process can
take first), removed at the end. Needs ``initdb`` and ``pg_ctl``: on the PATH, or where Debian's
``postgresql`` package puts them (``/usr/lib/postgresql/<major>/bin``, which is not on the PATH)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

DEBIAN_BIN_DIRS = "/usr/lib/postgresql/*/bin"

USER = "imageserve"


class PostgresServer:
    """One throw-away cluster; :attr:`url` connects to its ``postgres`` database without a password."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="imageserve-pg-"))
        self.data = self.dir / "data"
        # NOTE: with no TCP listener the port only names the socket file (.s.PGSQL.5432) in self.dir.
        self.port = 5432
        # initdb refuses to run as root: run the server as the postgres account then.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            account = pwd.getpwnam("postgres")
            os.chown(self.dir, account.pw_uid, account.pw_gid)

    @property
    def url(self) -> str:
        return self._url("postgres")

    def _url(self, database: str) -> str:
        return f"postgresql://{USER}@/{database}?host={self.dir}&port={self.port}"

    def start(self) -> PostgresServer:
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "--no-sync", "-E", "UTF8")
        options = f"-c listen_addresses='' -p {self.port} -k {self.dir} -c fsync=off"
        self._run("pg_ctl", "start", "-D", str(self.data), "-w", "-t", "60", "-l", str(self.dir / "log"),
                  "-o", options)  # fmt: skip
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def fresh_database(self, name: str) -> str:
        """A new empty database on this server; returns its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self._url(name)

    def _run(self, program: str, *arguments: str) -> None:
        command = (binary(program), *arguments)
        done = subprocess.run([*self._as, *command], check=False, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = (self.dir / "log").read_text() if (self.dir / "log").exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}\n{log}")


def binary(program: str) -> str | None:
    """``program``'s path: on the PATH first, else the newest Debian cluster's bin directory."""
    found = shutil.which(program)
    if found:
        return found
    candidates = sorted(
        Path("/").glob(DEBIAN_BIN_DIRS.lstrip("/")), key=lambda d: int(d.parent.name), reverse=True
    )
    return next((str(d / program) for d in candidates if (d / program).is_file()), None)


def available() -> bool:
    return binary("initdb") is not None and binary("pg_ctl") is not None
