"""Bad input: a clear error, nothing half-sent, and the socket still usable.

The driver validates before it sends, so a bad document or argument must
leave the caller's socket in a clean state.  Inside a request that is easy
to check with the server itself: the next operation succeeds and reports the
same ``connectionId`` as before the error (a socket closed because of a
half-written message would be replaced by a new connection).

Only 127.0.0.1 addresses are used for unreachable-server tests.
"""

from __future__ import annotations

import contextlib
import socket
import time

import bson
import pytest
from bson.errors import InvalidDocument
from bson.raw_bson import RawBSONDocument
from pymongo.errors import (
    ConfigurationError,
    DocumentTooLarge,
    InvalidName,
    InvalidOperation,
    InvalidURI,
    ServerSelectionTimeoutError,
)

from mongo_requests import Connection, MongoClient

BIG = 17 * 1024 * 1024  # over the 16 MB BSON document limit


def connection_id(client) -> int:
    return client.admin.command("hello")["connectionId"]


@contextlib.contextmanager
def same_socket(client, coll):
    """Run the body inside a request; afterwards the socket must be the same one
    and still work (a write, then a read of it, on the same connection)."""
    with client.start_request():
        before = connection_id(client)
        yield
        marker = coll.insert_one({"marker": True}).inserted_id
        assert coll.find_one(marker) == {"_id": marker, "marker": True}
        assert connection_id(client) == before
        coll.delete_one({"_id": marker})


@pytest.fixture
def coll(db):
    return db.things


def _stored(coll) -> int:
    return coll.count_documents({})


# -- documents that are not mappings ---------------------------------------


@pytest.mark.parametrize("bad", [5, "x", None, [("a", 1)], b"\x05\x00\x00\x00\x00"])
def test_insert_one_not_a_mapping(client, coll, bad):
    with same_socket(client, coll):
        with pytest.raises(TypeError) as info:
            coll.insert_one(bad)
        assert "document must be an instance of dict" in str(info.value)
    assert _stored(coll) == 0


@pytest.mark.parametrize("bad", [[1], [{"a": 1}, 2], [{"a": 1}, "b"], [None]])
def test_insert_many_with_a_non_mapping(client, coll, bad):
    with same_socket(client, coll):
        with pytest.raises(TypeError):
            coll.insert_many(bad)
    # Nothing at all is sent: not even the good documents before the bad one.
    assert _stored(coll) == 0


@pytest.mark.parametrize("bad", [{"a": 1}, [], 5, None])
def test_insert_many_needs_a_non_empty_list(client, coll, bad):
    with same_socket(client, coll):
        with pytest.raises(TypeError):
            coll.insert_many(bad)
    assert _stored(coll) == 0


@pytest.mark.parametrize("bad", ["x", 5, [1], [{"a": 1}, "b"]])
def test_legacy_insert_not_a_mapping(client, coll, bad):
    with same_socket(client, coll):
        with pytest.raises(TypeError):
            coll.insert(bad)
    assert _stored(coll) == 0


def test_legacy_insert_empty_list(client, coll):
    with same_socket(client, coll):
        with pytest.raises(InvalidOperation):
            coll.insert([])


def test_other_non_mapping_arguments(client, coll):
    coll.insert_one({"_id": 1})
    with same_socket(client, coll):
        with pytest.raises(TypeError):
            coll.update_one(5, {"$set": {"a": 1}})
        with pytest.raises(TypeError):
            coll.update_one({}, 5)
        with pytest.raises(TypeError):
            coll.replace_one({}, "doc")
        with pytest.raises(TypeError):
            coll.delete_one("x")
        with pytest.raises(TypeError):
            coll.count_documents(5)
        with pytest.raises(TypeError):
            coll.find({"a": 1}, 5)
        with pytest.raises(TypeError):
            coll.distinct(5)
        with pytest.raises(TypeError):
            coll.aggregate({"$match": {}})
        with pytest.raises(TypeError):
            coll.database.command(5)
        with pytest.raises(TypeError):
            coll.save("x")
        with pytest.raises(TypeError):
            coll.update("x", {"$set": {"a": 1}})
    assert coll.find_one(1) == {"_id": 1}


# -- invalid keys ------------------------------------------------------------


@pytest.mark.parametrize("bad", [{"$x": 1}, {"a": 1, "$set": {"b": 1}}])
def test_insert_one_top_level_dollar_key(client, coll, bad):
    # As PyMongo 4 does: the server has accepted top-level $-prefixed fields
    # since 5.0, so they are passed on; PyMongo 2's insert (check_keys) refuses them.
    with same_socket(client, coll):
        coll.insert_one(dict(bad))
        coll.insert_many([{"ok": 1}, dict(bad)])
        with pytest.raises(InvalidDocument):
            coll.insert(dict(bad))
    assert _stored(coll) == 3
    stored = coll.find_one({"_id": {"$exists": True}, "ok": {"$exists": False}})
    assert {k for k in stored if k.startswith("$")} == {k for k in bad if k.startswith("$")}


@pytest.mark.parametrize("bad", [{1: "a"}, {"a": {2: "b"}}, {(1, 2): "a"}])
def test_non_string_keys(client, coll, bad):
    with same_socket(client, coll):
        with pytest.raises(InvalidDocument):
            coll.insert_one(bad)
        with pytest.raises(InvalidDocument):
            coll.insert_many([{"ok": 1}, bad])
        with pytest.raises(InvalidDocument):
            coll.insert(bad)
    assert _stored(coll) == 0


@pytest.mark.parametrize("bad", [{"a.b": 1}, {"a": {"b.c": 1}}, {"a": {"$b": 1}}, {"a": [{"x.y": 1}]}])
def test_legacy_insert_check_keys(client, coll, bad):
    with same_socket(client, coll):
        with pytest.raises(InvalidDocument):
            coll.insert(bad)
        with pytest.raises(InvalidDocument):
            coll.insert([{"ok": 1}, dict(bad)])
        with pytest.raises(InvalidDocument):
            coll.save(dict(bad))
    assert _stored(coll) == 0


def test_legacy_update_check_keys(client, coll):
    coll.insert_one({"_id": 1, "a": 1})
    with same_socket(client, coll):
        with pytest.raises(InvalidDocument):
            coll.update({"_id": 1}, {"x.y": 2})
        with pytest.raises(InvalidDocument):
            coll.save({"_id": 1, "x.y": 2})
    assert coll.find_one(1) == {"_id": 1, "a": 1}


def test_legacy_insert_without_check_keys_sends_dotted_keys(coll):
    # check_keys=False is PyMongo 2's way to store dotted names; modern
    # servers accept them, so the document is stored as given.
    _id = coll.insert({"a.b": 1}, check_keys=False)
    assert coll.find_one(_id)["a.b"] == 1


@pytest.mark.parametrize("bad", [{"a\x00b": 1}, {"a": object()}, {"a": {1, 2}}])
def test_unencodable_documents(client, coll, bad):
    with same_socket(client, coll):
        with pytest.raises(InvalidDocument):
            coll.insert_one(dict(bad))
        with pytest.raises(InvalidDocument):
            coll.insert_many([{"ok": 1}, dict(bad)])
    assert _stored(coll) == 0


def test_unencodable_filters_and_updates(client, coll):
    coll.insert_one({"_id": 1, "a": 1})
    with same_socket(client, coll):
        with pytest.raises(InvalidDocument):
            coll.find_one({"a": object()})
        with pytest.raises(InvalidDocument):
            list(coll.find({"a": object()}))
        with pytest.raises(InvalidDocument):
            coll.update_one({"_id": 1}, {"$set": {"a": object()}})
        with pytest.raises(InvalidDocument):
            coll.delete_many({"a": object()})
        with pytest.raises(InvalidDocument):
            coll.count_documents({"a": object()})
    assert coll.find_one(1) == {"_id": 1, "a": 1}


# -- documents over the size limit ---------------------------------------------


def test_insert_one_too_large(client, coll):
    max_size = client.admin.command("hello")["maxBsonObjectSize"]
    doc = {"big": "x" * (max_size + 1)}
    assert len(bson.encode(doc)) > max_size
    with same_socket(client, coll):
        with pytest.raises(DocumentTooLarge):
            coll.insert_one(doc)
        with pytest.raises(DocumentTooLarge):
            coll.insert_many([{"small": 1}, {"big": "x" * (max_size + 1)}])
        with pytest.raises(DocumentTooLarge):
            coll.insert({"big": "x" * (max_size + 1)})
        with pytest.raises(DocumentTooLarge):
            coll.insert_one(RawBSONDocument(bson.encode({"big": "x" * (max_size + 1)})))
    assert _stored(coll) == 0


def test_a_document_at_the_limit_is_fine(client, coll):
    max_size = client.admin.command("hello")["maxBsonObjectSize"]
    doc = {"_id": 1, "big": ""}
    overhead = len(bson.encode(doc))
    doc["big"] = "y" * (max_size - overhead)
    assert len(bson.encode(doc)) == max_size
    coll.insert_one(doc)
    assert coll.count_documents({"_id": 1}) == 1


def test_updates_too_large(client, coll):
    coll.insert_one({"_id": 1, "a": 1})
    with same_socket(client, coll):
        with pytest.raises(DocumentTooLarge):
            coll.replace_one({"_id": 1}, {"big": "x" * BIG})
        with pytest.raises(DocumentTooLarge):
            coll.update_one({"_id": 1}, {"$set": {"big": "x" * BIG}})
        with pytest.raises(DocumentTooLarge):
            coll.find_one({"big": "x" * BIG})
    assert coll.find_one(1) == {"_id": 1, "a": 1}


def test_too_large_in_a_w0_request(make_client, db):
    # With w=0 nothing is read back, so a half-sent message would go
    # unnoticed: prove the socket still carries unacknowledged writes.
    conn = make_client(cls=Connection)
    coll = conn[db.name].things
    conn_id = connection_id(conn)
    coll.insert({"_id": 1})
    with pytest.raises(DocumentTooLarge):
        coll.insert({"_id": 2, "big": "x" * BIG})
    with pytest.raises(InvalidDocument):
        coll.insert({"_id": 3, "$bad": 1})
    with pytest.raises(TypeError):
        coll.insert(7)
    coll.insert({"_id": 4})
    assert sorted(d["_id"] for d in coll.find()) == [1, 4]
    assert connection_id(conn) == conn_id


# -- update and replacement documents ---------------------------------------------


@pytest.mark.parametrize("bad", [{"a": 1}, {"a": 1, "$set": {"b": 1}}, {}, []])
def test_update_needs_operators(client, coll, bad):
    coll.insert_one({"_id": 1, "a": 0})
    with same_socket(client, coll):
        with pytest.raises(ValueError):
            coll.update_one({"_id": 1}, bad)
        with pytest.raises(ValueError):
            coll.update_many({}, bad)
        with pytest.raises(ValueError):
            coll.find_one_and_update({"_id": 1}, bad)
    assert coll.find_one(1) == {"_id": 1, "a": 0}


@pytest.mark.parametrize("bad", [{"$set": {"a": 1}}, {"$inc": {"a": 1}}])
def test_replacement_must_not_have_operators(client, coll, bad):
    coll.insert_one({"_id": 1, "a": 0})
    with same_socket(client, coll):
        with pytest.raises(ValueError):
            coll.replace_one({"_id": 1}, bad)
        with pytest.raises(ValueError):
            coll.find_one_and_replace({"_id": 1}, bad)
    assert coll.find_one(1) == {"_id": 1, "a": 0}


def test_bad_cursor_options(client, coll):
    coll.insert_one({"_id": 1})
    with same_socket(client, coll):
        with pytest.raises(TypeError):
            coll.find().sort(5)
        with pytest.raises(ValueError):
            coll.find().skip(-1)
        with pytest.raises(TypeError):
            coll.find().limit("3")
        with pytest.raises(ValueError):
            coll.find().batch_size(-2)
        with pytest.raises(TypeError):
            coll.find(5)
    assert coll.find_one(1) == {"_id": 1}


def test_bad_names(client, db):
    for bad in ["", ".a", "a.", "a..b", "a$b", "a\x00b"]:
        with pytest.raises(InvalidName):
            db[bad]
    with pytest.raises(TypeError):
        db.get_collection(5)
    for bad in ["a b", "a.b", "a/b", 'a"b', "a$b", ""]:
        with pytest.raises(InvalidName):
            client[bad]
        with pytest.raises(InvalidName):
            client.drop_database(bad)
    with pytest.raises(TypeError):
        client.drop_database(5)
    assert db.command("ping")["ok"] == 1


# -- URIs and options --------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "mongodb://host:notaport",
        "mongodb://",
        "mongodb://127.0.0.1/?maxPoolSize=abc",
        "mongodb://127.0.0.1:0",
        "mongodb://127.0.0.1:99999",
        "mongodb://127.0.0.1:-1",
        "mongodb://127.0.0.1/?w=-1",
        "mongodb://127.0.0.1/?serverSelectionTimeoutMS=soon",
        "mongodb://127.0.0.1/?bogusOption=1",
        "mongodb://127.0.0.1/?heartbeatFrequencyMS=100",
        "mongodb://:pw@127.0.0.1/",  # a password without a user name
        "mongodb://127.0.0.1,127.0.0.1:27018/?directConnection=true",
        "mongodb+srv://",
        "mongo://127.0.0.1",
    ],
)
def test_bad_uri(uri):
    # InvalidURI is a ConfigurationError; both are what PyMongo raises.
    with pytest.raises(ConfigurationError) as info:
        MongoClient(uri)
    assert str(info.value)  # a message saying what is wrong


def test_malformed_uri_is_invalid_uri():
    for uri in ["mongodb://host:notaport", "mongodb://", "mongodb://127.0.0.1:99999"]:
        with pytest.raises(InvalidURI):
            MongoClient(uri)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bogusOption": 1},
        {"connectTimeoutMS": -5},
        {"socketTimeoutMS": "ten"},  # "10" is accepted, as by PyMongo (and in a URI)
        {"serverSelectionTimeoutMS": True},
        {"w": 0, "j": True},
    ],
)
def test_bad_keyword_options(mongodb_uri, kwargs):
    # A wrong type may be a TypeError, as PyMongo 2.8's validators raised; a bad value is a ConfigurationError.
    with pytest.raises((ConfigurationError, TypeError)):
        MongoClient(mongodb_uri, **kwargs)


@pytest.mark.parametrize("port", [0, -1, 65536, 99999, "27017", 27017.0, True])
def test_bad_port_argument(port):
    with pytest.raises((ConfigurationError, TypeError)):
        MongoClient("127.0.0.1", port)


@pytest.mark.parametrize("host", ["127.0.0.1:notaport", "127.0.0.1:99999", "127.0.0.1:0", "127.0.0.1:-5"])
def test_bad_port_in_host_string(host):
    # A port out of range must be refused up front, like the same port in a
    # mongodb:// URI, not discovered by the first operation.
    with pytest.raises(ConfigurationError):
        MongoClient(host)


def test_bad_host_type():
    with pytest.raises(TypeError):
        MongoClient(27017)
    with pytest.raises(ConfigurationError):
        MongoClient(":27017")


# -- unreachable servers ------------------------------------------------------


def _closed_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _time_failed_ping(client) -> float:
    start = time.monotonic()
    with pytest.raises(ServerSelectionTimeoutError) as info:
        client.admin.command("ping")
    elapsed = time.monotonic() - start
    assert "127.0.0.1" in str(info.value)
    return elapsed


def test_unreachable_port_1_fails_within_the_timeout():
    c = MongoClient("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500")
    try:
        assert _time_failed_ping(c) < 3.0
        # And again: a client that failed once fails the same way.
        assert _time_failed_ping(c) < 3.0
    finally:
        c.close()


def test_closed_port_fails_within_the_timeout():
    port = _closed_port()
    c = MongoClient("mongodb://127.0.0.1:%d/?serverSelectionTimeoutMS=500" % port)
    try:
        assert _time_failed_ping(c) < 3.0
    finally:
        c.close()


def test_closed_port_with_keyword_timeout():
    port = _closed_port()
    c = MongoClient("127.0.0.1", port, serverSelectionTimeoutMS=300, connectTimeoutMS=300)
    try:
        assert _time_failed_ping(c) < 3.0
        # Other operations fail the same way, not by hanging.
        start = time.monotonic()
        with pytest.raises(ServerSelectionTimeoutError):
            c.db.coll.insert_one({"a": 1})
        with pytest.raises(ServerSelectionTimeoutError):
            list(c.db.coll.find())
        assert time.monotonic() - start < 5.0
    finally:
        c.close()


def test_unreachable_inside_a_request_fails_within_the_timeout():
    c = Connection("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500")
    try:
        with c.start_request():
            assert _time_failed_ping(c) < 3.0
    finally:
        c.close()
