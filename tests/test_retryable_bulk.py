"""Retryable writes through the one write path: insert_many and bulk_write batches on a 3-member set.

The ``failCommand`` fail point on the primary makes the first attempt fail,
either before the server runs it (``closeConnection``) or after it applied
it (a retryable ``writeConcernError``).  Each test then asks the primary
itself what happened: the documents and counters in the collection, and
``serverStatus``'s ``transactions.retriedStatementsCount``, which counts the
statements a retry found already applied (the ``txnNumber`` at work).
The commands as sent (``lsid``, ``txnNumber``) are seen through command
monitoring.
"""

from __future__ import annotations

import pytest
from pymongo import monitoring
from pymongo.errors import AutoReconnect, BulkWriteError
from pymongo.operations import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne
from pymongo.write_concern import WriteConcern

from helpers import fail_point, unique_app
from mongo_requests import precoded
from mongo_requests.testing import raw_command


class _Commands(monitoring.CommandListener):
    """The write commands a client started: (name, has an lsid, txnNumber or None)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool, int | None]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        cmd = event.command
        if event.command_name in ("insert", "update", "delete"):
            txn = cmd.get("txnNumber")
            self.calls.append((event.command_name, "lsid" in cmd, None if txn is None else int(txn)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
def rs_setup(replica_set, make_rs_client, request):
    """(client, its listener, the primary's address, a fresh collection name, the client's appName)."""
    app = unique_app("rb")
    listener = _Commands()
    client = make_rs_client(appname=app, event_listeners=[listener])
    name = "rb_%s" % (request.node.name.replace("[", "_").replace("]", "")[:40],)
    db = client["retry_bulk"]
    db.drop_collection(name)
    db[name].find_one()  # a first operation: the client now knows it talks to a replica set
    primary = replica_set.primary()
    assert primary is not None
    admin = make_rs_client("mongodb://%s:%d/?directConnection=true" % primary.address)
    return client, listener, primary.address, admin, db[name], app


def _without_listener(replica_set, make_rs_client, prefix: str):
    """(the primary, a direct client to it, a client with no listener, its appName): for the hot paths."""
    primary = replica_set.primary()
    assert primary is not None
    app = unique_app(prefix)
    admin = make_rs_client("mongodb://%s:%d/?directConnection=true" % primary.address)
    return primary, admin, make_rs_client(appname=app), app


def _applied_then_retryable_error(admin, command: str, app: str):
    """A fail point: the server applies ``command`` once, then answers with a retryable write concern error."""
    wce = {"code": 91, "errmsg": "fake shutdown", "errorLabels": ["RetryableWriteError"]}
    return fail_point(admin, {"times": 1}, failCommands=[command], writeConcernError=wce, appName=app)


def _retried_statements(address: tuple[str, int]) -> int:
    reply = raw_command(address, {"serverStatus": 1})
    assert reply["ok"] == 1, reply
    return int(reply["transactions"]["retriedStatementsCount"])


def _docs(address: tuple[str, int], coll) -> list[dict]:
    reply = raw_command(address, {"find": coll.name, "filter": {}, "sort": {"_id": 1}}, db=coll.database.name)
    assert reply["ok"] == 1, reply
    return reply["cursor"]["firstBatch"]


def test_insert_many_is_retried_after_a_closed_connection_and_inserted_once(rs_setup):
    client, listener, primary, admin, coll, app = rs_setup
    with fail_point(admin, {"times": 1}, failCommands=["insert"], closeConnection=True, appName=app):
        result = coll.insert_many([{"_id": i} for i in range(5)])
    assert result.inserted_ids == list(range(5))
    assert _docs(primary, coll) == [{"_id": i} for i in range(5)]
    inserts = [c for c in listener.calls if c[0] == "insert"]
    # The first attempt and its retry: one lsid, the same txnNumber.
    assert len(inserts) == 2 and inserts[0] == inserts[1] and inserts[0][1] and inserts[0][2] is not None


def test_insert_many_applied_then_retried_is_applied_once(rs_setup):
    client, listener, primary, admin, coll, app = rs_setup
    before = _retried_statements(primary)
    # The server inserts the documents, then answers with a retryable write concern error.
    with _applied_then_retryable_error(admin, "insert", app):
        result = coll.insert_many([{"x": i} for i in range(4)], ordered=False)
    assert len(result.inserted_ids) == 4
    assert sorted(d["x"] for d in _docs(primary, coll)) == [0, 1, 2, 3]
    # The retry found all four statements applied, by its lsid and txnNumber.
    assert _retried_statements(primary) - before == 4


@pytest.mark.parametrize("failing", ["insert", "update", "delete"])
def test_bulk_write_single_document_batches_are_retried_and_applied_once(rs_setup, failing):
    client, listener, primary, admin, coll, app = rs_setup
    coll.insert_many([{"_id": i, "n": 0} for i in range(3)])
    listener.calls.clear()
    before = _retried_statements(primary)
    requests = [
        InsertOne({"_id": 10, "n": 0}),
        UpdateOne({"_id": 0}, {"$inc": {"n": 1}}),
        UpdateOne({"_id": 1}, {"$inc": {"n": 1}}),
        ReplaceOne({"_id": 2}, {"n": 5}),
        DeleteOne({"_id": 10}),
    ]
    # That batch is applied, then answered with a retryable write concern error.
    wce = {"code": 189, "errmsg": "fake stepdown", "errorLabels": ["RetryableWriteError"]}
    with fail_point(admin, {"times": 1}, failCommands=[failing], writeConcernError=wce, appName=app):
        result = coll.bulk_write(requests)
    assert (result.inserted_count, result.matched_count, result.modified_count, result.deleted_count) == (1, 3, 3, 1)
    # Each $inc applied exactly once although one batch ran twice.
    assert _docs(primary, coll) == [{"_id": 0, "n": 1}, {"_id": 1, "n": 1}, {"_id": 2, "n": 5}]
    assert _retried_statements(primary) - before == {"insert": 1, "update": 3, "delete": 1}[failing]
    names = ["insert", "update", "delete"]
    names.insert(names.index(failing), failing)
    assert [c[0] for c in listener.calls] == names
    assert all(lsid and txn is not None for _, lsid, txn in listener.calls)
    # The retry repeats its batch's txnNumber; every batch has its own.
    assert len({c[2] for c in listener.calls}) == 3


def test_a_batch_with_update_many_or_delete_many_is_not_retried(rs_setup):
    client, listener, primary, admin, coll, app = rs_setup
    coll.insert_many([{"_id": i, "n": 0} for i in range(3)])
    for request, name in ((UpdateMany({}, {"$inc": {"n": 1}}), "update"), (DeleteMany({"_id": 0}), "delete")):
        listener.calls.clear()
        with fail_point(admin, {"times": 1}, failCommands=[name], closeConnection=True, appName=app):
            with pytest.raises(AutoReconnect):
                coll.bulk_write([request])
        # One attempt, without a session: the multi-document statement may not be retried.
        assert listener.calls == [(name, False, None)]
    assert _docs(primary, coll) == [{"_id": i, "n": 0} for i in range(3)]


def test_unacknowledged_insert_many_carries_no_session_and_write_errors_still_raise(rs_setup):
    client, listener, primary, admin, coll, app = rs_setup
    coll.with_options(write_concern=WriteConcern(w=0)).insert_many([{"_id": 1}, {"_id": 2}])
    assert listener.calls[-1] == ("insert", False, None)
    listener.calls.clear()
    with pytest.raises(BulkWriteError) as info:
        coll.insert_many([{"_id": 3}, {"_id": 1}, {"_id": 4}])  # acknowledged, retryable: a duplicate key
    assert info.value.details["nInserted"] == 1
    assert listener.calls == [("insert", True, listener.calls[0][2])]  # a write error is not retried
    assert [d["_id"] for d in _docs(primary, coll)] == [1, 2, 3]


@pytest.mark.parametrize("call", ["insert_one", "update_one", "replace_one", "delete_one", "find_one_and_update"])
def test_single_writes_are_retried_and_applied_once(rs_setup, call):
    client, listener, primary, admin, coll, app = rs_setup
    coll.insert_one({"_id": 1, "n": 0})
    command = {"find_one_and_update": "findAndModify"}.get(call, call.split("_")[0])
    command = {"replace": "update"}.get(command, command)
    before = _retried_statements(primary)
    with _applied_then_retryable_error(admin, command, app):
        if call == "insert_one":
            coll.insert_one({"_id": 2, "n": 0})
        elif call == "update_one":
            assert coll.update_one({"_id": 1}, {"$inc": {"n": 1}}).modified_count == 1
        elif call == "replace_one":
            assert coll.replace_one({"_id": 1}, {"n": 7}).matched_count == 1
        elif call == "delete_one":
            assert coll.delete_one({"_id": 1}).deleted_count == 1
        else:
            assert coll.find_one_and_update({"_id": 1}, {"$inc": {"n": 1}}) == {"_id": 1, "n": 0}
    expected = {
        "insert_one": [{"_id": 1, "n": 0}, {"_id": 2, "n": 0}],
        "update_one": [{"_id": 1, "n": 1}],
        "replace_one": [{"_id": 1, "n": 7}],
        "delete_one": [],
        "find_one_and_update": [{"_id": 1, "n": 1}],
    }[call]
    assert _docs(primary, coll) == expected
    assert _retried_statements(primary) - before == 1


@pytest.mark.parametrize(
    "uri_kind, operation",
    [("replicaSet", "insert_one"), ("seed list", "insert_one"), ("replicaSet", "insert_many")],
)
def test_the_first_write_of_a_fresh_client_is_retryable(replica_set, make_rs_client, uri_kind, operation):
    """Before its first hello a client does not know it talks to a set; its first write is retryable all the same."""
    primary = replica_set.primary()
    admin = make_rs_client("mongodb://%s:%d/?directConnection=true" % primary.address)
    name = "first_" + unique_app()
    app = unique_app("first")
    listener = _Commands()
    hosts = ",".join("%s:%d" % m.address for m in replica_set.members)
    uri = "mongodb://%s/" % hosts
    if uri_kind == "replicaSet":
        uri = "mongodb://%s:%d/?replicaSet=%s" % (primary.address + (replica_set.name,))
    docs = [{"_id": i} for i in range(3 if operation == "insert_many" else 1)]
    with fail_point(admin, {"times": 1}, failCommands=["insert"], closeConnection=True, appName=app):
        client = make_rs_client(uri, appname=app, event_listeners=[listener])
        coll = client.retry_bulk[name]
        # The client's very first operation: insert_one goes through _command, insert_many through a Bulk.
        if operation == "insert_one":
            coll.insert_one(docs[0])
        else:
            coll.insert_many(docs)
    assert _docs(primary.address, coll) == docs
    inserts = [c for c in listener.calls if c[0] == "insert"]
    # Sent with an lsid and a txnNumber, and retried with the same ones.
    assert len(inserts) == 2 and inserts[0] == inserts[1] and inserts[0][1] and inserts[0][2] is not None
    client.retry_bulk.drop_collection(name)


@pytest.mark.parametrize("concern", [WriteConcern(w=1), WriteConcern(w="majority", j=True)], ids=["w1", "majority-j"])
def test_update_one_with_a_collection_write_concern_and_no_listener_is_retried_and_applied_once(
    replica_set, make_rs_client, concern
):
    """The hot path's pre-encoded update (a collection's write concern, no listener) still travels as a retryable write.

    Without a listener nothing else would re-encode the command: on a replica
    set it must go out with its lsid and txnNumber, so the retry after a
    write concern error finds the statement applied.
    """
    primary, admin, client, app = _without_listener(replica_set, make_rs_client, "rbwc")
    coll = client.retry_bulk.get_collection("wc_" + unique_app(), write_concern=concern)
    coll.insert_one({"_id": 1, "n": 0})
    before = _retried_statements(primary.address)
    with _applied_then_retryable_error(admin, "update", app):
        result = coll.update_one({"_id": 1}, {"$inc": {"n": 1}})
    assert (result.matched_count, result.modified_count) == (1, 1)
    assert _docs(primary.address, coll) == [{"_id": 1, "n": 1}]
    assert _retried_statements(primary.address) - before == 1
    coll.drop()


@pytest.mark.parametrize("concern", [WriteConcern(), WriteConcern(w=1)], ids=["default", "w1"])
def test_insert_one_on_the_hot_path_with_no_listener_is_retried_and_applied_once(replica_set, make_rs_client, concern):
    """insert_one's hot path (a dict, no option, the collection's concern) still travels as a retryable write."""
    primary, admin, client, app = _without_listener(replica_set, make_rs_client, "rbins")
    coll = client.retry_bulk.get_collection("ins_" + unique_app(), write_concern=concern)
    before = _retried_statements(primary.address)
    doc = {"a": 1}
    with _applied_then_retryable_error(admin, "insert", app):
        result = coll.insert_one(doc)
    assert isinstance(coll._writers.get(0), precoded.InsertOne)  # it took the hot path
    assert (result.inserted_id, result.acknowledged) == (doc["_id"], True)
    assert _docs(primary.address, coll) == [{"_id": doc["_id"], "a": 1}]
    assert _retried_statements(primary.address) - before == 1
    coll.drop()
