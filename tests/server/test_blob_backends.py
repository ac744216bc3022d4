"""The blob interface on each backend: the local directory, and rows in SQLite and in PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest
from sqlalchemy import update

from fleet_server.store import BlobNotFound, Database, LocalBlobs
from fleet_server.store.blob_rows import DatabaseBlobs
from fleet_server.store.schema import blob_objects, blob_pieces

PIECE = 1000  # small pieces, so a few kilobytes already make a multi-piece blob


@pytest.fixture(params=["local", "sqlite", "postgresql"])
def blob_store(request, tmp_path):
    if request.param == "local":
        yield LocalBlobs(tmp_path / "blobs")
        return
    url = f"sqlite:///{tmp_path / 'fleet.db'}" if request.param == "sqlite" else request.getfixturevalue("database_url")
    db = Database(url)
    yield DatabaseBlobs(db, "blobs", cache_dir=tmp_path / "cache", piece_bytes=PIECE)
    db.close()


def test_a_blob_round_trips_whole_and_streamed_and_is_gone_after_delete(blob_store):
    data = os.urandom(3 * PIECE + 417)  # four pieces, the last one short
    digest = blob_store.put(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert blob_store.put(data, digest) == digest  # the same bytes again: a no-op
    assert blob_store.exists(digest) and blob_store.size(digest) == len(data)
    assert blob_store.get(digest) == data
    with blob_store.open(digest) as reader:
        assert reader.read(10) == data[:10]
        assert reader.read() == data[10:]
    assert b"".join(blob_store.iter_bytes(digest, 333)) == data
    assert blob_store.file(digest).read_bytes() == data
    empty = blob_store.put(b"")
    assert blob_store.get(empty) == b"" and blob_store.size(empty) == 0
    blob_store.delete(digest)
    assert not blob_store.exists(digest) and blob_store.size(digest) is None
    for read in (blob_store.get, blob_store.open, blob_store.file):
        with pytest.raises(BlobNotFound):
            read(digest)
    blob_store.delete(digest)  # deleting what is gone is no error


def test_bytes_that_do_not_match_the_digest_given_are_refused_and_nothing_is_stored(blob_store):
    wrong = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(ValueError, match="does not match"):
        blob_store.put(b"payload", wrong)
    assert not blob_store.exists(wrong)
    with pytest.raises(ValueError, match="not a SHA-256 digest"):
        blob_store.get("../../etc/passwd")


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_a_database_blob_altered_in_its_rows_is_refused_not_served(engine, request, tmp_path):
    url = f"sqlite:///{tmp_path / 'fleet.db'}" if engine == "sqlite" else request.getfixturevalue("database_url")
    db = Database(url)
    blobs = DatabaseBlobs(db, "blobs", cache_dir=tmp_path / "cache", piece_bytes=PIECE)
    digest = blobs.put(os.urandom(2 * PIECE + 1))
    with db.transaction() as conn:
        conn.execute(update(blob_pieces).where((blob_pieces.c.sha256 == digest) & (blob_pieces.c.seq == 1))
                     .values(data=b"\0" * PIECE))
    with pytest.raises(ValueError, match="altered"):
        blobs.get(digest)
    with pytest.raises(ValueError, match="hash to"):
        blobs.file(digest)
    assert not (tmp_path / "cache" / digest).exists()  # nothing unverified is left for onnxruntime to load
    db.close()


def test_model_files_and_chunks_are_separate_stores_in_one_database(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'fleet.db'}")
    models, chunks = (DatabaseBlobs(db, name, cache_dir=tmp_path / "cache") for name in ("blobs", "chunks"))
    small_model = b"a model file smaller than one chunk is also a chunk"
    digest = models.put(small_model)
    chunks.put(small_model)
    models.delete(digest)  # the model version is deleted; its bundle's chunk must stay
    assert chunks.get(digest) == small_model and not models.exists(digest)
    db.close()


def test_two_replicas_storing_the_same_blob_at_once_store_it_once(database_url, tmp_path):
    data = os.urandom(8 * PIECE)
    replicas = [Database(database_url) for _ in range(2)]
    start, results = threading.Barrier(2), []

    def put(db: Database) -> None:
        start.wait()
        results.append(DatabaseBlobs(db, "chunks", cache_dir=tmp_path / "cache", piece_bytes=PIECE).put(data))

    threads = [threading.Thread(target=put, args=(db,)) for db in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    digest = hashlib.sha256(data).hexdigest()
    assert results == [digest, digest]
    db = replicas[0]
    objects = [(r["store"], r["sha256"], r["size"], r["pieces"]) for r in db.rows(blob_objects.select())]
    assert objects == [("chunks", digest, len(data), 8)]
    assert len(db.rows(blob_pieces.select())) == 8
    for replica in replicas:
        replica.close()
