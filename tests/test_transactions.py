"""Transactions on the 3-member replica set: money transfers, aborts, kills, causal reads.

Every outcome is read back from the server: balances and transfer logs with
a client outside the transaction, open transactions with ``$currentOp``
(``idleSessions``), replication with fail points on the secondaries.
"""

from __future__ import annotations

import gc
import random
import time
from typing import Any

import greenlet
import pytest
from pymongo import monitoring
from pymongo.errors import ConfigurationError, InvalidOperation
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import WriteConcern

from helpers import GEVENT_MODES, Gate, assert_quiet, pool_stats, report, short, unique_app
from mongo_requests.testing import raw_command

pytestmark = pytest.mark.usefixtures("watchdog")


def _open_transactions(client, lsid: Any) -> list[dict]:
    """The server's idle sessions and operations of ``lsid`` that hold a transaction."""
    ops = client.admin.aggregate(
        [
            {"$currentOp": {"idleSessions": True, "allUsers": True}},
            {"$match": {"lsid.id": lsid["id"], "transaction": {"$exists": True}}},
        ]
    )
    return list(ops)


def _seed_accounts(client, name: str, n: int, balance: int) -> None:
    client[name].accounts.insert_many([{"_id": i, "balance": balance} for i in range(n)])
    client[name].log.insert_one({"_id": "init"})  # collections exist before the transactions


def test_twenty_workers_move_money_with_write_conflicts(replica_set, make_rs_client, mode, request):
    client = make_rs_client(maxPoolSize=30)
    name = unique_app("bank")
    accounts_n, balance, workers, transfers = 3, 1000, 20, 5
    _seed_accounts(client, name, accounts_n, balance)
    accounts, log = client[name].accounts, client[name].log
    gate = Gate(mode, workers)
    committed: list[tuple[int, int]] = []
    attempts = [0]
    errors: list[str] = []

    def transfer(w: int, i: int, src: int, dst: int, amount: int) -> Any:
        def move(session: Any) -> None:
            attempts[0] += 1
            assert accounts.find_one({"_id": src}, session=session) is not None
            if i == 0 and gate.count < workers:
                # Every worker inside a transaction at once: with 3
                # accounts, their writes must conflict.
                gate.arrive()
                gate.wait(15)
            accounts.update_one({"_id": src}, {"$inc": {"balance": -amount}}, session=session)
            accounts.update_one({"_id": dst}, {"$inc": {"balance": amount}}, session=session)
            log.insert_one({"_id": "%d-%d" % (w, i), "src": src, "dst": dst, "amount": amount}, session=session)

        return move

    def worker(w: int) -> None:
        rnd = random.Random(w)
        try:
            with client.start_session() as s:
                for i in range(transfers):
                    src, dst = rnd.sample(range(accounts_n), 2)
                    s.with_transaction(transfer(w, i, src, dst, rnd.randint(1, 50)))
                    committed.append((w, i))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(short(exc))

    started = time.monotonic()
    handles = [mode.spawn(worker, w) for w in range(workers)]
    assert mode.join(handles, 90) == 0
    elapsed = time.monotonic() - started
    assert errors == []
    # The server's account of it, read outside any transaction.
    total = sum(d["balance"] for d in accounts.find())
    entries = [d for d in log.find({"_id": {"$ne": "init"}})]
    assert total == accounts_n * balance
    assert len(committed) == workers * transfers
    assert sorted(d["_id"] for d in entries) == sorted("%d-%d" % c for c in committed)
    expected = {i: balance for i in range(accounts_n)}
    for d in entries:
        expected[d["src"]] -= d["amount"]
        expected[d["dst"]] += d["amount"]
    assert {d["_id"]: d["balance"] for d in accounts.find()} == expected
    retries = attempts[0] - len(committed)
    assert retries > 0  # the write conflicts happened, and were retried
    stats = pool_stats(client)
    assert_quiet(stats, 30)
    report(
        request,
        transfers=len(committed),
        attempts=attempts[0],
        retries=retries,
        seconds=round(elapsed, 2),
        transfers_per_s=round(len(committed) / elapsed, 1),
        sockets=stats["open"],
    )
    client.drop_database(name)


def test_transaction_aborted_by_an_exception_leaves_nothing(replica_set, make_rs_client):
    client = make_rs_client()
    name = unique_app("abort")
    coll = client[name].c
    coll.insert_one({"_id": "seed"})

    def callback(session: Any) -> None:
        coll.insert_one({"_id": 1}, session=session)
        coll.update_one({"_id": "seed"}, {"$set": {"touched": True}}, session=session)
        # Inside the transaction the session sees its own writes.
        assert coll.find_one({"_id": 1}, session=session) == {"_id": 1}
        # Outside it nobody does.
        assert coll.find_one({"_id": 1}) is None
        raise ValueError("boom")

    with client.start_session() as s:
        with pytest.raises(ValueError, match="boom"):
            s.with_transaction(callback)
        assert not s.in_transaction
        assert _open_transactions(client, s.session_id) == []
        # The context manager form: an exception aborts too.
        with pytest.raises(KeyError):
            with s.start_transaction():
                coll.insert_one({"_id": 2}, session=s)
                raise KeyError("x")
    assert list(coll.find()) == [{"_id": "seed"}]
    assert_quiet(pool_stats(client), 100)
    client.drop_database(name)


def _raw_greenlet_transaction(client, coll, mode, holder: dict) -> Any:
    """A raw greenlet that writes in with_transaction, then parks (switches back to its parent) mid-way."""
    parent = greenlet.getcurrent()

    def run() -> None:
        with client.start_session() as s:
            holder["lsid"] = s.session_id

            def callback(session: Any) -> None:
                coll.insert_one({"_id": "partial"}, session=session)
                parent.switch("parked")
                coll.insert_one({"_id": "never"}, session=session)

            try:
                s.with_transaction(callback)
            finally:
                holder["aborted"] = not s.in_transaction

    g = greenlet.greenlet(run)
    assert g.switch() == "parked"
    return g


@pytest.mark.parametrize("how", ["throw", "drop"])
def test_raw_greenlet_killed_or_dropped_inside_with_transaction(replica_set, make_rs_client, mode, how):
    client = make_rs_client()
    name = unique_app("rawkill")
    coll = client[name].c
    coll.insert_one({"_id": "seed"})
    holder: dict = {}
    g = _raw_greenlet_transaction(client, coll, mode, holder)
    # Parked inside the transaction: the server holds it open.
    assert len(_open_transactions(client, holder["lsid"])) == 1
    if how == "throw":
        g.throw(greenlet.GreenletExit)
    else:
        del g
        gc.collect()
    assert holder["aborted"] is True
    assert _open_transactions(client, holder["lsid"]) == []
    assert list(coll.find()) == [{"_id": "seed"}]
    assert_quiet(pool_stats(client), 100)
    client.drop_database(name)


@pytest.mark.modes(*GEVENT_MODES)
def test_greenlet_killed_inside_with_transaction(replica_set, make_rs_client, mode):
    gevent = mode.gevent
    client = make_rs_client()
    name = unique_app("kill")
    coll = client[name].c
    coll.insert_one({"_id": "seed"})
    parked = gevent.event.Event()
    holder: dict = {}

    def run() -> None:
        with client.start_session() as s:
            holder["lsid"] = s.session_id

            def callback(session: Any) -> None:
                coll.insert_one({"_id": "partial"}, session=session)
                parked.set()
                gevent.sleep(30)

            s.with_transaction(callback)

    g = gevent.spawn(run)
    assert parked.wait(10)
    assert len(_open_transactions(client, holder["lsid"])) == 1
    assert pool_stats(client)["pinned"] == 1  # the transaction's socket
    g.kill(block=True, timeout=10)
    assert g.dead and isinstance(g.value, gevent.GreenletExit)
    assert _open_transactions(client, holder["lsid"]) == []
    assert list(coll.find()) == [{"_id": "seed"}]
    assert_quiet(pool_stats(client), 100)
    client.drop_database(name)


def test_transaction_options_and_unacknowledged_writes_refused(replica_set, make_rs_client):
    client = make_rs_client()
    name = unique_app("opts")
    coll = client[name].c
    coll.insert_one({"_id": 0})
    with client.start_session() as s:
        with pytest.raises(ConfigurationError, match="unacknowledged"):
            s.start_transaction(write_concern=WriteConcern(w=0))
        assert not s.in_transaction
        # An explicit session cannot send a w=0 write, in a transaction or not.
        with pytest.raises(ConfigurationError, match="unacknowledged"):
            coll.insert_one({"_id": 1}, session=s, w=0)
        with s.start_transaction(
            read_concern=ReadConcern("snapshot"), write_concern=WriteConcern(w="majority"), max_commit_time_ms=5000
        ):
            with pytest.raises(InvalidOperation, match="unacknowledged"):
                coll.insert_one({"_id": 2}, session=s, w=0)
            coll.insert_one({"_id": 3}, session=s)
            with pytest.raises(InvalidOperation, match="already in progress"):
                s.start_transaction()
        assert coll.find_one({"_id": 3}) == {"_id": 3}
        # A transaction's reads must go to the primary.
        s.start_transaction(read_preference=ReadPreference.SECONDARY)
        with pytest.raises(InvalidOperation, match="primary"):
            coll.find_one({"_id": 3}, session=s)
        s.abort_transaction()
        with pytest.raises(InvalidOperation, match="twice"):
            s.abort_transaction()
        # An empty transaction commits without a round trip.
        s.start_transaction()
        s.commit_transaction()
        with pytest.raises(InvalidOperation, match="after calling commit"):
            s.abort_transaction()
    with pytest.raises(InvalidOperation, match="ended session"):
        coll.find_one({}, session=s)
    assert coll.find_one({"_id": 1}) is None and coll.find_one({"_id": 2}) is None
    client.drop_database(name)


def test_commit_retried_after_a_network_error(replica_set, make_rs_client, request):
    client = make_rs_client(appname=unique_app("cm"))
    app = client._options.appname
    name = unique_app("commit")
    coll = client[name].c
    coll.insert_one({"_id": 0})
    primary = replica_set.primary()
    fp = {
        "configureFailPoint": "failCommand",
        "mode": {"times": 1},
        "data": {"failCommands": ["commitTransaction"], "closeConnection": True, "appName": app},
    }
    assert raw_command(primary.address, fp)["ok"] == 1
    try:
        with client.start_session() as s:
            calls = [0]

            def callback(session: Any) -> None:
                calls[0] += 1
                coll.insert_one({"_id": 1}, session=session)

            s.with_transaction(callback)
    finally:
        raw_command(primary.address, {"configureFailPoint": "failCommand", "mode": "off"})
    # The commit's outcome was unknown after the dropped connection: the
    # commit ran again (w: majority); the callback ran once.
    assert calls[0] == 1
    assert coll.find_one({"_id": 1}) == {"_id": 1}
    assert_quiet(pool_stats(client), 100)
    client.drop_database(name)


def _set_replication(members: list, on: bool) -> None:
    for m in members:
        reply = raw_command(m.address, {"configureFailPoint": "stopReplProducer", "mode": "off" if on else "alwaysOn"})
        assert reply["ok"] == 1, reply


def test_causally_consistent_read_on_a_secondary_sees_the_sessions_write(replica_set, make_rs_client, mode, request):
    rs = replica_set
    client = make_rs_client()
    name = unique_app("causal")
    coll = client[name].c
    coll.insert_one({"_id": "seed"}, w=3)  # the collection exists everywhere
    on_secondary = coll.with_options(read_preference=ReadPreference.SECONDARY)
    secondaries = rs.secondaries()
    _set_replication(secondaries, on=False)
    try:
        with client.start_session(causal_consistency=True) as s:
            # w=1: the default w: majority would wait for the stopped secondaries.
            coll.insert_one({"_id": "mine"}, session=s, w=1)
            # Replication is stopped: a read outside the session is stale...
            assert on_secondary.find_one({"_id": "mine"}) is None
            # ...and the session's read waits until the secondary has the write.
            resumed = mode.event()

            def resume() -> None:
                mode.sleep(0.5)
                _set_replication(secondaries, on=True)
                resumed.set()

            handle = mode.spawn(resume)
            started = time.monotonic()
            doc = on_secondary.find_one({"_id": "mine"}, session=s)
            waited = time.monotonic() - started
            assert doc == {"_id": "mine"}
            assert resumed.wait(5)
            assert waited >= 0.3
            mode.join([handle], 5)
            report(request, causal_wait_s=round(waited, 3))
    finally:
        _set_replication(secondaries, on=True)
    client.drop_database(name)


@pytest.mark.modes(*GEVENT_MODES)
def test_greenlet_killed_holding_a_bare_transaction(replica_set, make_rs_client, mode, request):
    """No with block to abort it: the socket comes back through the death watch, the session to the pool,
    and the server ends the transaction after its lifetime."""
    gevent = mode.gevent
    client = make_rs_client()
    name = unique_app("bare")
    coll = client[name].c
    coll.insert_one({"_id": "seed"})
    primary = replica_set.primary()
    parked = gevent.event.Event()
    holder: dict = {}

    def run() -> None:
        s = client.start_session()
        holder["lsid"] = s.session_id
        s.start_transaction()
        coll.insert_one({"_id": "partial"}, session=s)
        parked.set()
        gevent.sleep(30)

    assert raw_command(primary.address, {"setParameter": 1, "transactionLifetimeLimitSeconds": 2})["ok"] == 1
    try:
        g = gevent.spawn(run)
        assert parked.wait(10)
        assert len(_open_transactions(client, holder["lsid"])) == 1
        g.kill(block=True, timeout=10)
        del g
        gc.collect()
        started = time.monotonic()
        while _open_transactions(client, holder["lsid"]) and time.monotonic() - started < 10:
            mode.sleep(0.2)
        ended_after = time.monotonic() - started
        assert _open_transactions(client, holder["lsid"]) == []
    finally:
        raw_command(primary.address, {"setParameter": 1, "transactionLifetimeLimitSeconds": 60})
    assert list(coll.find()) == [{"_id": "seed"}]
    # The dead greenlet's pinned socket was reclaimed, and its server session is pooled again.
    assert_quiet(pool_stats(client), 100)
    assert holder["lsid"] in [s.lsid for s in client._sessions._sessions]
    report(request, aborted_by_server_after_s=round(ended_after, 2))
    client.drop_database(name)


class _Connections(monitoring.CommandListener):
    """The server's connection id of each command (``serverConnectionId`` of the started events)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.seen.append((event.command_name, event.server_connection_id, event.command.get("lsid")))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_a_transaction_pins_one_connection_and_uses_the_requests(replica_set, make_rs_client, mode):
    listener = _Connections()
    client = make_rs_client(event_listeners=[listener])
    name = unique_app("pin")
    coll = client[name].c
    coll.insert_one({"_id": 0})
    # Other workers keep the pool's sockets busy, so an unpinned command would wander.
    stop = mode.event()

    def busy() -> None:
        while not stop.is_set():
            coll.find_one({"_id": 0})

    handles = [mode.spawn(busy) for _ in range(4)]
    try:
        with client.start_session() as s:
            for in_request in (False, True):
                request = client.start_request() if in_request else None
                request_conn = client.admin.command("hello")["connectionId"] if request else None
                listener.seen.clear()
                with s.start_transaction():
                    for i in range(5):
                        coll.insert_one({"_id": "%s-%d" % (in_request, i)}, session=s)
                        coll.find_one({"_id": "%s-%d" % (in_request, i)}, session=s)
                        mode.sleep(0.001)
                mine = [(n, c) for n, c, lsid in listener.seen if lsid == s.session_id]
                assert [n for n, _ in mine] == ["insert", "find"] * 5 + ["commitTransaction"]
                conns = {c for _, c in mine}
                assert len(conns) == 1, mine
                if request is not None:
                    assert conns == {request_conn}  # the request's socket
                    assert client.in_request()  # the transaction's end left the request open
                    request.end()
                assert not client.in_request()
    finally:
        stop.set()
        assert mode.join(handles, 10) == 0
    assert coll.count_documents({}) == 11
    assert_quiet(pool_stats(client), 100)
    client.drop_database(name)


def test_writes_with_a_session_inside_a_pipelining_request_are_not_pipelined(replica_set, make_rs_client):
    """A pipelined write would leave the transaction (no lsid, no txnNumber).

    So a write bound to a session is sent and waited for as usual, through the
    request's socket, after the pipeline's earlier writes are read back.
    """
    client = make_rs_client()
    name = unique_app("txpipe")
    coll = client[name].c
    coll.insert_one({"_id": "seed"})
    with client.start_request(pipeline=True) as req:
        early = coll.insert_one({"_id": "piped"})  # pipelined, outside the session
        with client.start_session() as s:
            with pytest.raises(KeyError):
                with s.start_transaction():
                    r = coll.update_one({"_id": "seed"}, {"$set": {"in_txn": True}}, session=s)
                    # Sent at once: a real result, not a lazy one.
                    assert type(r).__module__.startswith("pymongo")
                    assert r.modified_count == 1
                    coll.insert_one({"_id": "txn"}, session=s)
                    raise KeyError("abort")
        req.sync()
    assert early.inserted_id == "piped"
    # The abort undid both session writes; the pipelined one stayed.
    assert sorted(d["_id"] for d in coll.find()) == ["piped", "seed"]
    assert coll.find_one({"_id": "seed"}) == {"_id": "seed"}
    assert_quiet(pool_stats(client), 100)
    client.drop_database(name)
