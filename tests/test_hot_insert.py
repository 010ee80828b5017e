"""``insert_one``'s hot path (``precoded.InsertOne``) gives exactly what the general path gives.

tests/test_hot_path.py compares the bytes sent for each write concern; here:
the results and errors, the inputs that stay on the general path (SON,
Mapping, RawBSONDocument, options, per-call and unacknowledged concerns), a
top-level ``$`` key, and the command the listener and session paths get.
"""

from __future__ import annotations

from collections.abc import Mapping

import bson
import pytest
from bson.raw_bson import RawBSONDocument
from bson.son import SON
from pymongo.errors import DocumentTooLarge, DuplicateKeyError, OperationFailure, WriteConcernError, WTimeoutError
from pymongo.write_concern import WriteConcern

from helpers import StartedCommands, failure, spy_commands, spy_precoded_encodes, unique_app, write_concern_failure
from mongo_requests import precoded


@pytest.fixture
def sent(monkeypatch):
    """The insert commands sockets were given: (the command, the body given or None, the sequences)."""
    return spy_commands(monkeypatch, ("insert",), lambda db, cmd, opts, seqs, body: (dict(cmd), body, tuple(seqs)))


def _hot(sent):
    """Which of the inserts sent so far took the hot path (a pre-encoded body)."""
    return [body is not None for _, body, _ in sent]


class _Doc(Mapping):
    """A Mapping that is not a dict."""

    def __init__(self, **items):
        self._items = dict(items)

    def __getitem__(self, key):
        return self._items[key]

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)


def test_insert_one_keeps_the_callers_id_and_encodes_it_first(db, sent):
    """An _id given last is sent first, as the general path sends it (same sequence bytes)."""
    hot = db.ins_a.insert_one({"a": 1, "_id": 7})
    general = db.ins_b.insert_one({"a": 1, "_id": 7}, w=1)
    assert _hot(sent) == [True, False]
    assert sent[0][2] == sent[1][2]
    assert bson.decode(sent[0][2][0][15:]) == {"_id": 7, "a": 1}
    assert (hot.inserted_id, hot.acknowledged) == (general.inserted_id, general.acknowledged) == (7, True)
    assert db.ins_a.find_one() == db.ins_b.find_one() == {"_id": 7, "a": 1}


@pytest.mark.parametrize(
    "make",
    [
        lambda: SON([("a", 1), ("b", 2)]),
        lambda: _Doc(_id=5, a=1),
        lambda: RawBSONDocument(bson.encode({"_id": 5, "a": 1})),
        lambda: RawBSONDocument(bson.encode({"a": 1})),
    ],
    ids=["son", "mapping", "raw", "raw-without-id"],
)
def test_insert_one_of_other_documents_takes_the_general_path_as_before(db, sent, make):
    doc = make()
    result = db.ins.insert_one(doc)
    assert _hot(sent) == [False]
    (cmd, _, sequences) = sent[0]
    assert list(cmd) == ["insert", "ordered"]
    stored = db.ins.find_one()
    assert stored["a"] == 1
    if isinstance(doc, RawBSONDocument):
        # Sent as given: an _id-less raw document gets the server's _id, and the result says None (as before).
        assert sequences[0][15:] == doc.raw
        assert result.inserted_id == doc.get("_id")
    elif isinstance(doc, SON):
        assert result.inserted_id == doc["_id"] == stored["_id"]  # added to the caller's SON
    else:
        assert result.inserted_id == 5 == stored["_id"]


def test_insert_one_with_options_or_other_concerns_takes_the_general_path(db, sent, make_client):
    db.ins.insert_one({"_id": 1})
    db.ins.insert_one({"_id": 2}, bypass_document_validation=True)
    db.ins.insert_one({"_id": 3}, comment="c")
    db.ins.insert_one({"_id": 4}, w=1)
    with db.client.start_session() as session:
        db.ins.insert_one({"_id": 5}, session=session)
    result = db.get_collection("ins", write_concern=WriteConcern(w=0)).insert_one({"_id": 6})
    assert result.acknowledged is False and result.inserted_id == 6
    # w=0: sent with moreToCome (send_command), never to SocketInfo.command.
    assert _hot(sent) == [True, False, False, False, False]
    assert sent[1][0]["bypassDocumentValidation"] is True and sent[2][0]["comment"] == "c"
    assert sent[3][0]["writeConcern"] == {"w": 1}
    assert "lsid" in sent[4][0]
    assert db.ins.count_documents({}, maxTimeMS=5000) in (5, 6)  # the w=0 insert may not have landed yet


def test_insert_one_errors_match_the_general_path(db, sent):
    db.ins.insert_one({"_id": 1})
    hot = failure(lambda: db.ins.insert_one({"_id": 1, "a": 2}))
    general = failure(lambda: db.ins.insert_one({"_id": 1, "a": 2}, w=1))
    assert hot == general and hot[0] is DuplicateKeyError and hot[2] == 11000
    # Too large: refused before anything is sent, with the general path's message.
    big = "x" * (16 * 1024 * 1024)
    hot_big, general_big = {"big": big}, {"big": big}
    hot = failure(lambda: db.ins.insert_one(hot_big))
    general = failure(lambda: db.ins.insert_one(general_big, w=1))
    assert hot[0] is DocumentTooLarge and hot[1:] == general[1:]
    assert "_id" in hot_big and "_id" in general_big  # both added the _id before encoding, as before
    assert _hot(sent) == [True, True, False]
    assert db.ins.count_documents({}) == 1


def test_insert_one_of_a_top_level_dollar_key_does_what_the_general_path_does(db, sent):
    """No client-side key check (PyMongo 4's insert_one has none): the server judges, the same for both."""
    hot = db.ins_a.insert_one({"$x": 1})
    general = db.ins_b.insert_one({"$x": 1}, w=1)
    assert _hot(sent) == [True, False]
    assert sent[0][2][0].replace(hot.inserted_id.binary, general.inserted_id.binary) == sent[1][2][0]
    assert db.ins_a.find_one({}, {"_id": 0}) == db.ins_b.find_one({}, {"_id": 0}) == {"$x": 1}


@pytest.mark.parametrize("case", ["w2 on a standalone", "write concern error", "write concern timeout"])
def test_insert_one_write_concern_errors_match_the_general_path(make_client, admin_client, sent, case):
    app = unique_app("ins")
    client = make_client(appname=app)
    name = unique_app("t")
    concern = WriteConcern(w=2, wtimeout=100) if case == "w2 on a standalone" else WriteConcern(w=1)
    coll = client[name].get_collection("ins", write_concern=concern)
    failing, wce = write_concern_failure(admin_client, case, "insert", app)
    try:
        with failing:
            hot = failure(lambda: coll.insert_one({"_id": 1}))
            general = failure(lambda: coll.insert_one({"_id": 2}, write_concern=concern))
        assert _hot(sent) == [True, False]
        assert hot == general
        expected = {
            "w2 on a standalone": OperationFailure,
            "write concern error": WriteConcernError,
            "write concern timeout": WTimeoutError,
        }[case]
        assert hot[0] is expected
        # Applied (the server answers with the write concern error after the write), or refused: as the general path.
        assert client[name].ins.count_documents({}) == (2 if wce else 0)
    finally:
        client.drop_database(name)


@pytest.mark.parametrize("concern", [WriteConcern(), WriteConcern(w="majority", j=True)], ids=["default", "majority-j"])
def test_insert_one_shows_listeners_the_general_command(make_client, sent, concern):
    listener = StartedCommands("insert")
    client = make_client(event_listeners=[listener])
    name = unique_app("t")
    try:
        coll = client[name].get_collection("ins", write_concern=concern)
        coll.insert_one({"_id": 1, "a": [1, 2]})
        coll.insert_one({"_id": 2, "a": [1, 2]}, write_concern=concern)
        assert isinstance(coll._writers.get(0), precoded.InsertOne)  # the first took the hot path
        hot, general = listener.commands
        assert hot["documents"] == [{"_id": 1, "a": [1, 2]}] and general["documents"] == [{"_id": 2, "a": [1, 2]}]
        hot.pop("documents")
        general.pop("documents")
        assert list(hot.items()) == list(general.items())
        assert hot.get("writeConcern", {}) == concern.document
    finally:
        client.drop_database(name)


def test_insert_one_gives_the_session_path_the_general_command(make_client, sent):
    """Once the application has started a session, the insert takes the session path with the general command."""
    client = make_client()
    name = unique_app("t")
    coll = client[name].get_collection("ins", write_concern=WriteConcern(w=1))
    try:
        with client.start_session():
            coll.insert_one({"_id": 1})
            coll.insert_one({"_id": 2}, w=1)
        assert isinstance(coll._writers.get(0), precoded.InsertOne)
        assert _hot(sent) == [False, False]  # the session path encodes the command dict
        (hot, _, hot_seq), (general, _, general_seq) = sent
        assert list(hot.items()) == list(general.items())
        assert hot["writeConcern"] == {"w": 1}
        assert [bson.decode(s[15:]) for s in hot_seq + general_seq] == [{"_id": 1}, {"_id": 2}]
        assert coll.count_documents({}) == 2
    finally:
        client.drop_database(name)


@pytest.fixture
def encoded(monkeypatch):
    """The documents the hot path's finders and writers encoded (precoded.encode's calls)."""
    return spy_precoded_encodes(monkeypatch)


def test_find_one_encodes_no_body_for_a_command_listener(make_client, encoded):
    listener = StartedCommands("insert")
    client = make_client(event_listeners=[listener])
    plain = make_client()
    name = unique_app("t")
    try:
        client[name].c.insert_one({"_id": 1, "a": 2}, w=1)
        assert plain[name].c.find_one({"_id": 1}) == {"_id": 1, "a": 2}
        assert encoded == [{"_id": 1}]  # no listener: the pre-encoded body
        assert client[name].c.find_one({"_id": 1}) == {"_id": 1, "a": 2}
        assert encoded == [{"_id": 1}]  # with one: the command dict alone is encoded, by the listener's path
        with plain.start_session():
            assert plain[name].c.find_one({"_id": 1}) == {"_id": 1, "a": 2}
        assert encoded == [{"_id": 1}]
    finally:
        client.drop_database(name)
