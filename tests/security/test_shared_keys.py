"""Keys, CA and admin token in a database several replicas share: made once, rotated for all, sealed at rest.

Each "replica" here is its own :class:`Database` (its own connection pool) on
one database, as separate server processes are; both engines run the same code.
"""

from __future__ import annotations

import base64
import os
import threading

import pytest
from sqlalchemy import update

from fleet_server.ca import CertificateAuthority
from fleet_server.config import ServerConfig
from fleet_server.keys import KeyMaterial, KeyRing, RotationConflict, ensure_admin_token, new_signing_key
from fleet_server.secret_box import SECRET_KEY_ENV, SecretBox, SecretKeyError, TamperedSecretError, WrongSecretKeyError
from fleet_server.shared_secrets import SealedDocuments, SharedCaStorage, SharedKeyStorage
from fleet_server.storage import open_storage
from fleet_server.store import Database
from fleet_server.store import tokens as token_store
from fleet_server.store.schema import server_secrets

KEY = os.urandom(32)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return request.getfixturevalue("database_url")


def at_once(count: int, start) -> list:
    """Run ``start(i)`` on ``count`` threads released together; their results (exceptions re-raised)."""
    barrier, results = threading.Barrier(count), [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = start(i)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def replica(url: str, key: bytes = KEY) -> tuple[Database, SealedDocuments]:
    db = Database(url)
    return db, SealedDocuments(db, SecretBox(key))


def test_three_replicas_starting_at_once_make_one_key_ring_one_ca_and_one_admin_token(url):
    replicas = [replica(url) for _ in range(3)]
    rings = at_once(3, lambda i: KeyRing(SharedKeyStorage(replicas[i][1])))
    cas = at_once(3, lambda i: CertificateAuthority.open(SharedCaStorage(replicas[i][1])))
    tokens = at_once(3, lambda i: ensure_admin_token(replicas[i][0]))
    assert len({ring.signing_key.public_key.to_hex() for ring in rings}) == 1
    assert all(ring.roots == rings[0].roots for ring in rings) and rings[0].version == 1
    assert sum(ring.signing_key_created for ring in rings) == 1  # the replica whose insert won says it made it
    assert len({ca.certificate_pem() for ca in cas}) == 1
    assert sum(token is not None for token in tokens) == 1
    assert token_store.count_tokens(db=replicas[0][0], role="admin") == 1
    winner = next(token for token in tokens if token is not None)
    assert token_store.token_role(db=replicas[2][0], token=winner) == "admin"
    for db, _ in replicas:
        db.close()


def test_a_rotation_on_one_replica_is_used_by_the_next_signature_on_another(url):
    (db_a, docs_a), (db_b, docs_b) = replica(url), replica(url)
    ring_a, ring_b = KeyRing(SharedKeyStorage(docs_a)), KeyRing(SharedKeyStorage(docs_b))
    old = ring_b.signing_key.public_key
    root = ring_a.rotate()
    assert ring_b.signing_key.public_key == ring_a.signing_key.public_key != old
    assert ring_b.version == 2 and ring_b.root == root and ring_b.roots == ring_a.roots
    assert root["signed"]["signing_keys"] == [ring_b.signing_key.public_key.to_hex()]
    ring_b.rotate()  # B rotates next, from the root A made
    assert ring_a.version == 3 and ring_a.signing_key.public_key == ring_b.signing_key.public_key
    db_a.close(), db_b.close()


def test_a_rotation_from_a_key_ring_another_replica_rotated_meanwhile_is_refused_not_lost(url):
    (db_a, docs_a), (db_b, docs_b) = replica(url), replica(url)
    ring_a, stale = KeyRing(SharedKeyStorage(docs_a)), SharedKeyStorage(docs_b)
    held, _ = stale.load_or_create(lambda *args: pytest.fail("the key ring exists: nothing is made"))
    root = ring_a.rotate()  # A rotates while B holds version 1
    late = KeyMaterial(held.root_keys, new_signing_key(), held.roots + (root,))
    with pytest.raises(RotationConflict, match="another server rotated the signing key"):
        stale.save_rotation(held, late)
    assert KeyRing(SharedKeyStorage(docs_b)).signing_key.public_key == ring_a.signing_key.public_key
    db_a.close(), db_b.close()


def test_a_revocation_made_on_another_replica_while_this_one_issues_its_crl_is_kept(url, monkeypatch):
    from cryptography import x509

    replicas = [replica(url) for _ in range(2)]
    a, b = (CertificateAuthority.open(SharedCaStorage(docs)) for _, docs in replicas)
    issue, interleaved = a._issue_crl, []

    def issue_while_b_revokes(state, now):  # A has read the revocations; B revokes and stores before A does
        if not interleaved:
            interleaved.append(b.revoke(1001, reason="key_compromise"))
        return issue(state, now)

    b.crl_pem()  # the first CRL is stored: from here on every change replaces it
    monkeypatch.setattr(a, "_issue_crl", issue_while_b_revokes)
    a.revoke(1000, reason="superseded")
    crl = x509.load_pem_x509_crl(b.crl_pem())
    assert interleaved and sorted(entry.serial_number for entry in crl) == [1000, 1001]
    assert a.crl_pem() == b.crl_pem()
    for db, _ in replicas:
        db.close()


def test_a_replica_with_another_secret_key_is_refused_with_a_clear_error(url):
    db, docs = replica(url)
    KeyRing(SharedKeyStorage(docs))
    CertificateAuthority.open(SharedCaStorage(docs))
    other_db, other = replica(url, os.urandom(32))
    with pytest.raises(WrongSecretKeyError, match="sealed with another secret key"):
        KeyRing(SharedKeyStorage(other))
    with pytest.raises(WrongSecretKeyError):
        CertificateAuthority.open(SharedCaStorage(other))
    db.close(), other_db.close()


def test_keys_in_the_database_are_sealed_and_an_altered_row_is_refused(url):
    db, docs = replica(url)
    ring = KeyRing(SharedKeyStorage(docs))
    stored = b"".join(bytes(row["sealed"]) for row in db.rows(server_secrets.select()))
    assert ring.signing_key.to_pem() not in stored and b"PRIVATE KEY" not in stored
    with db.transaction() as conn:
        row = db.row(server_secrets.select().where(server_secrets.c.name == "keyring"))
        altered = bytearray(row["sealed"])
        altered[40] ^= 0x01
        conn.execute(update(server_secrets).where(server_secrets.c.name == "keyring").values(sealed=bytes(altered)))
    with pytest.raises(TamperedSecretError, match="were altered"):
        KeyRing(SharedKeyStorage(docs))
    db.close()


def test_a_database_url_without_a_secret_key_is_refused_and_the_default_needs_none(url, tmp_path):
    shared = ServerConfig(data_dir=tmp_path / "data", database_url=url)
    db = Database(url)
    with pytest.raises(SecretKeyError, match=f"set {SECRET_KEY_ENV} or --secret-key-file") as refused:
        open_storage(shared, db, environ={})
    assert refused.value.code == "secret_key_missing"
    environ = {SECRET_KEY_ENV: base64.b64encode(KEY).decode()}
    assert isinstance(open_storage(shared, db, environ=environ).keys, SharedKeyStorage)
    assert type(open_storage(shared, db, environ=environ).blobs).__name__ == "DatabaseBlobs"
    mounted = ServerConfig(data_dir=tmp_path / "data", database_url=url, blob_dir=tmp_path / "mount")
    assert open_storage(mounted, db, environ=environ).chunks.root == tmp_path / "mount" / "chunks"  # --blob-dir
    default = open_storage(ServerConfig(data_dir=tmp_path / "data"), db, environ={})  # SQLite in the data dir
    assert type(default.keys).__name__ == "KeyFiles" and default.blobs.root == tmp_path / "data" / "blobs"
    db.close()


def test_server_run_without_the_secret_key_or_with_another_one_stops_with_one_clear_error(url, tmp_path,
                                                                                        monkeypatch):
    from typer.testing import CliRunner

    from edgefleet_cli.errors import CliError
    from edgefleet_cli.main import app

    def run_server(name: str) -> str:
        result = CliRunner().invoke(app, ["server", "run", "--data-dir", str(tmp_path / name), "--database-url", url,
                                          "--port", "0"])
        assert isinstance(result.exception, CliError), result.output
        return str(result.exception)

    monkeypatch.delenv(SECRET_KEY_ENV, raising=False)
    assert run_server("no-key").startswith("the server stopped: --database-url keeps the signing keys and the CA in "
                                           "the database, sealed: set EDGEFLEET_SECRET_KEY or --secret-key-file")
    db, docs = replica(url)  # a fleet made under one key ...
    KeyRing(SharedKeyStorage(docs))
    db.close()
    monkeypatch.setenv(SECRET_KEY_ENV, base64.b64encode(os.urandom(32)).decode())  # ... started with another
    assert run_server("other-key").startswith("the server stopped: the database's 'keyring' was sealed with another "
                                              "secret key")


def test_broker_config_on_the_database_writes_the_ca_every_replica_signs_with(url, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from edgefleet_cli.main import app

    db, docs = replica(url)
    ca = CertificateAuthority.open(SharedCaStorage(docs))
    db.close()
    monkeypatch.setenv(SECRET_KEY_ENV, base64.b64encode(KEY).decode())
    result = CliRunner().invoke(app, ["server", "broker-config", "--out", str(tmp_path / "broker"), "--database-url",
                                      url, "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "broker" / "ca.crt").read_bytes() == ca.certificate_pem()
    assert not (tmp_path / "data" / "ca").exists()


def test_bundle_content_keys_in_a_shared_database_are_sealed_and_read_alike_by_every_replica(url):
    from fleet_server.content_keys import ContentKeys
    from fleet_server.store.schema import bundle_keys

    (db_a, _), (db_b, _) = replica(url), replica(url)
    digest = "ab" * 32
    made = ContentKeys(db_a, SecretBox(KEY)).bundle_key(digest)
    assert ContentKeys(db_b, SecretBox(KEY)).bundle_key(digest) == made
    stored = db_a.row(bundle_keys.select())["key"]
    assert made.hex() not in stored and len(bytes.fromhex(stored)) > len(made)
    with pytest.raises(SecretKeyError, match="is sealed: start the server with the database's secret key"):
        ContentKeys(db_b).bundle_key(digest)
    with pytest.raises(SecretKeyError, match="does not open"):  # a wrong key stops the server earlier, at the key ring
        ContentKeys(db_b, SecretBox(os.urandom(32))).bundle_key(digest)
    db_a.close(), db_b.close()
