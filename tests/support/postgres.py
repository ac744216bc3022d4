"""A real PostgreSQL (Debian's ``postgresql`` package) for the tests: one cluster per test session and worker.

:func:`start_postgres` runs ``initdb`` into a fresh temp dir and starts
``postgres`` on a free loopback port with its unix socket in that dir
(durability off: a test cluster needs none; ``durable=True`` keeps PostgreSQL's
own defaults, for benchmarks whose CPU and WAL figures must be a production's),
stopped by its own pid.
:meth:`Postgres.create_database` makes a new empty database (``CREATE
DATABASE`` from ``template0``: milliseconds) and returns its URL. As root
(PostgreSQL refuses to run as root) the cluster runs as the ``postgres``
user. Not here: the pytest fixtures (``tests/conftest.py``).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from .processes import stop_process
from .net import free_port

SUPERUSER = "postgres"
# A module's store-touching tests on both engines: `pytestmark = BOTH_ENGINES`; tests/conftest.py parametrises
# `engine` for each test of it that uses the server fixtures (the others run once).
BOTH_ENGINES = pytest.mark.both_engines
ENGINES = ("sqlite", "postgresql")


def binaries() -> Path | None:
    """Debian's PostgreSQL server binaries (the newest installed), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


@dataclass
class Postgres:
    root: Path
    port: int
    process: subprocess.Popen
    _names: itertools.count = field(default_factory=lambda: itertools.count(1))
    _migrated_template: str = ""

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    def url(self, dbname: str) -> str:
        """``postgresql://`` URL of database ``dbname`` (over the unix socket)."""
        return f"postgresql://{SUPERUSER}@/{dbname}?host={self.socket_dir}&port={self.port}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host=str(self.socket_dir), port=self.port, user=SUPERUSER, dbname=dbname,
                               autocommit=True)

    def create_database(self, *, migrated: bool = False) -> str:
        """A new database, empty or (``migrated``) a copy of one the store already migrated to the newest schema
        (copying a template is faster than migrating each time); its URL."""
        if migrated and not self._migrated_template:
            self._migrated_template = self._new_database("template0")
            from fleet_server.store import Database
            Database(self.url(self._migrated_template)).close()
        return self.url(self._new_database(self._migrated_template if migrated else "template0"))

    def _new_database(self, template: str) -> str:
        name = f"test_{os.getpid()}_{next(self._names)}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def stop(self) -> None:
        stop_process(self.process, timeout=20)  # SIGTERM: PostgreSQL's "smart" shutdown; clients are gone by now
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(*, durable: bool = False) -> Postgres:
    """initdb + postgres on a free port; raises RuntimeError when PostgreSQL is missing or does not start.

    ``durable``: fsync, synchronous commit and full-page writes on (PostgreSQL's defaults) and 128 MB of shared
    buffers; off (the default) for tests, which need no durability."""
    bin_dir = binaries()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed: run `make system-deps` (Debian's postgresql package)")
    root = Path(tempfile.mkdtemp(prefix="edgefleet-pg-"))  # not pytest's tmp: as root, postgres must reach it
    (root / "socket").mkdir()
    as_user = _drop_to_postgres_user(root) if os.geteuid() == 0 else None
    log = root / "postgres.log"
    subprocess.run([str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", SUPERUSER, "--auth=trust",
                    "--no-sync", "-E", "UTF8", "--locale=C"], check=True, capture_output=True, preexec_fn=as_user)
    port = free_port()
    settings = (["shared_buffers=128MB"] if durable else
                ["fsync=off", "synchronous_commit=off", "full_page_writes=off", "shared_buffers=32MB"])
    process = subprocess.Popen(
        [str(bin_dir / "postgres"), "-D", str(root / "data"), "-p", str(port), "-k", str(root / "socket"),
         "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300",
         *(arg for setting in settings for arg in ("-c", setting))],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, preexec_fn=as_user)
    cluster = Postgres(root, port, process)
    deadline = time.monotonic() + 30
    while True:
        try:
            cluster.connect().close()
            return cluster
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                cluster.stop()
                raise RuntimeError(f"PostgreSQL did not start: {log.read_text(errors='replace')[-2000:]}") from None
            time.sleep(0.05)


def _drop_to_postgres_user(root: Path):
    user = pwd.getpwnam("postgres")
    for path in (root, root / "socket"):
        os.chown(path, user.pw_uid, user.pw_gid)

    def demote() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    return demote
