"""Fixtures shared by every test suite."""

from __future__ import annotations

import shutil

import pytest

from fleet_server.config import ServerConfig
from fleet_server.runner import ServerThread
from tests.support.fleet import ADMIN_TOKEN, SECRET_KEY
from tests.support.mosquitto import Mosquitto, start_mosquitto
from tests.support.postgres import ENGINES, Postgres, start_postgres


def pytest_generate_tests(metafunc) -> None:
    """Tests marked ``both_engines`` (``tests.support.postgres.BOTH_ENGINES``) that reach the store run on each."""
    if "engine" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_engines"):
        metafunc.parametrize("engine", ENGINES)


@pytest.fixture
def mosquitto(tmp_path) -> Mosquitto:
    """A real Mosquitto broker on a free port, stopped after the test."""
    if not (shutil.which("mosquitto") or shutil.os.path.exists("/usr/sbin/mosquitto")):
        pytest.fail("mosquitto is not installed: run `make test`, which installs it")
    broker = start_mosquitto(tmp_path / "mosquitto")
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def postgres() -> Postgres:
    """A real PostgreSQL cluster for this test session (each xdist worker has its own), stopped at the end."""
    try:
        cluster = start_postgres()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield cluster
    cluster.stop()


@pytest.fixture
def database_url(postgres, monkeypatch) -> str:
    """The URL of a new, empty PostgreSQL database (and the secret key a server on it needs, in the environment)."""
    monkeypatch.setenv("EDGEFLEET_SECRET_KEY", SECRET_KEY)
    return postgres.create_database()


@pytest.fixture
def engine() -> str:
    """The store engine the server fixtures use: "sqlite", unless the module parametrises it (BOTH_ENGINES)."""
    return "sqlite"


@pytest.fixture
def store_url(engine, request) -> str | None:
    """``ServerConfig.database_url`` for ``engine``: None (SQLite in the data dir) or a new PostgreSQL database
    at the newest schema."""
    if engine == "sqlite":
        return None
    request.getfixturevalue("monkeypatch").setenv("EDGEFLEET_SECRET_KEY", SECRET_KEY)  # keys and CA are sealed there
    return request.getfixturevalue("postgres").create_database(migrated=True)


@pytest.fixture
def server_thread(tmp_path, mosquitto, monkeypatch, store_url) -> ServerThread:
    """A fleet server in this process's threads on the test's Mosquitto; admin token ``tests.support.fleet.ADMIN_TOKEN``."""
    monkeypatch.setenv("EDGEFLEET_ADMIN_TOKEN", ADMIN_TOKEN)
    config = ServerConfig(data_dir=tmp_path / "server", database_url=store_url, port=0, broker_url=mosquitto.url)
    with ServerThread(config) as running:
        yield running
