"""mongo_requests.gridfs: files written here read by PyMongo's gridfs, and the other way round."""

from __future__ import annotations

import io

import gridfs as pm_gridfs
import pymongo
import pytest
from pymongo.write_concern import WriteConcern

from mongo_requests.gridfs import GridFS, GridFSBucket, NoFile


@pytest.fixture
def pm_db(mongodb_uri, db):
    c = pymongo.MongoClient(mongodb_uri, directConnection=True)
    yield c[db.name]
    c.close()


def test_pymongos_gridfs_refuses_our_database(db):
    # Why mongo_requests ships its own: PyMongo's gridfs checks for its own Database class.
    with pytest.raises(TypeError):
        pm_gridfs.GridFSBucket(db)


def test_bucket_round_trip_with_pymongo(db, pm_db):
    data = bytes(range(256)) * 3000  # 768000 bytes: three chunks of 255 KiB, the last one short
    ours = GridFSBucket(db)
    file_id = ours.upload_from_stream("blob.bin", io.BytesIO(data), metadata={"k": 1})
    theirs = pm_gridfs.GridFSBucket(pm_db)
    out = theirs.open_download_stream(file_id)
    assert out.read() == data and out.filename == "blob.bin" and out.metadata == {"k": 1}
    assert db["fs.chunks"].count_documents({"files_id": file_id}) == 3
    their_id = theirs.upload_from_stream("theirs.txt", b"hello from pymongo")
    mine = ours.open_download_stream(their_id)
    assert mine.read() == b"hello from pymongo" and mine.length == 18
    sink = io.BytesIO()
    ours.download_to_stream(file_id, sink)
    assert sink.getvalue() == data
    assert {f["filename"] for f in ours.find()} == {"blob.bin", "theirs.txt"}
    ours.delete(file_id)
    with pytest.raises(pm_gridfs.errors.NoFile):
        theirs.open_download_stream(file_id)
    assert db["fs.chunks"].count_documents({"files_id": file_id}) == 0
    with pytest.raises(NoFile):
        ours.delete(file_id)


def test_legacy_gridfs_versions_and_w0_in_a_request(make_client, db, pm_db):
    client = make_client(w=0)
    fs = GridFS(client[db.name].with_options(write_concern=WriteConcern(w=0)))
    with client.start_request():
        first = fs.put(b"v1", filename="doc.txt")
        fs.put(b"version two", filename="doc.txt", contentType="text/plain")
        # Unacknowledged writes on the pinned socket: visible to the next read.
        assert fs.get(first).read() == b"v1"
        assert fs.get_last_version("doc.txt").read() == b"version two"
        assert fs.exists(first) and fs.exists(filename="doc.txt")
        assert fs.list() == ["doc.txt"]
    assert pm_gridfs.GridFS(pm_db).get_last_version("doc.txt").read() == b"version two"
    assert fs.get_version("doc.txt", 0).read() == b"v1"
    with pytest.raises(NoFile):
        fs.get_version("doc.txt", 5)
