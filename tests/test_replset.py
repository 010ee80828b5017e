"""The driver against a real 3-member replica set: discovery, monitoring, errors, requests.

Every fact is checked on the servers themselves (``hello``, ``$currentOp``,
``serverStatus``) with the launcher's raw client, never with the driver's own
bookkeeping alone.  The set is the session's (tests/conftest.py); tests that
step down or kill a primary leave it healthy for the next (the fixture
restarts what they killed).
"""

from __future__ import annotations

import threading
import time

import pytest
from pymongo.errors import NotPrimaryError, ServerSelectionTimeoutError
from pymongo.read_preferences import Secondary
from pymongo.write_concern import WriteConcern

from helpers import in_forked_child, report, run_child, short, unique_app, wait_until
from mongo_requests.testing import raw_command


def _address(member) -> tuple[str, int]:
    return (member.host, member.port)


def _connections(member, app: str) -> list[dict]:
    """This app's connections to ``member``, idle ones included, as ``currentOp`` reports them.

    The ``currentOp`` command (not the ``$currentOp`` stage) answers on every
    member, even one a reconfig removed from the set.
    """
    reply = raw_command(member.address, {"currentOp": 1, "$all": True, "appName": app})
    assert reply["ok"] == 1, reply
    return reply["inprog"]


def test_discovery_from_one_seed(replica_set, make_rs_client):
    rs = replica_set
    seed = rs.secondaries()[0]
    client = make_rs_client(rs.seed_uri(seed))
    primary = rs.primary()
    name = "d_" + unique_app()
    client[name].c.insert_one({"_id": 1})
    try:
        # The write reached the real primary, though only a secondary was named.
        found = raw_command(primary.address, {"find": "c", "filter": {}}, db=name)
        assert found["cursor"]["firstBatch"] == [{"_id": 1}]
        assert client.primary == _address(primary)
        assert client.secondaries == {_address(m) for m in rs.members if m is not primary}
        assert client.nodes == {_address(m) for m in rs.members}
        assert client.arbiters == set()
        assert client.address == _address(primary)
    finally:
        client.drop_database(name)


def test_heartbeats_use_their_own_connection_not_a_pool_slot(replica_set, make_rs_client):
    rs = replica_set
    app = unique_app("hb")
    client = make_rs_client(appname=app, maxPoolSize=1)
    primary = rs.primary()
    with client.start_request():
        client.admin.command("ping")  # the request now holds the pool's only socket
        # A scan while the pool is exhausted: it cannot need a slot.
        client._topology._next_scan = 0.0
        client._topology._last_scan = -1e9
        assert client.primary == _address(primary)
        client.admin.command("ping")
    conns = {m.port: _connections(m, app) for m in rs.members}
    # One pool socket and one heartbeat connection to the primary; only
    # heartbeat connections to the secondaries (no operation went there).
    assert len(conns[primary.port]) == 2, conns[primary.port]
    for m in rs.members:
        if m is not primary:
            assert len(conns[m.port]) == 1, conns[m.port]
    assert client.pool.get_stats()["created"] == 1


def test_scans_leave_no_thread_behind(replica_set, make_rs_client):
    import threading

    # The threads alive before, not their count: an earlier test's thread may end meanwhile.
    before = set(threading.enumerate())
    client = make_rs_client(heartbeatFrequencyMS=500)
    for _ in range(3):
        client.admin.command("ping")
        client._topology._next_scan = 0.0
        client._topology._last_scan = -1e9
    assert client.primary is not None
    left = [t for t in threading.enumerate() if t not in before]
    assert not left, left


def test_not_primary_error_marks_the_server_unknown_and_the_next_operation_finds_the_new_primary(
    replica_set, make_rs_client
):
    rs = replica_set
    client = make_rs_client(retryWrites=False)
    name = "np_" + unique_app()
    coll = client[name].c
    coll.insert_one({"_id": 0})
    old = rs.stepdown()
    new = rs.primary()
    try:
        # Without retryable writes, the first write after the stepdown meets
        # the old primary and fails; the server is then Unknown, the next
        # selection re-checks, and the write after that reaches the new one.
        errors = 0
        try:
            coll.insert_one({"_id": 1})
        except NotPrimaryError:
            errors += 1
        assert errors == 1
        td = client._topology.description
        assert td.servers[_address(old)].type.name in ("Unknown", "RSSecondary")
        coll.insert_one({"_id": 2})
        assert client.primary == _address(new)
        docs = raw_command(new.address, {"find": "c", "filter": {}, "sort": {"_id": 1}}, db=name)
        assert [d["_id"] for d in docs["cursor"]["firstBatch"]] == [0, 2]
    finally:
        client.drop_database(name)


def test_all_members_down_fails_clearly_within_the_timeout(make_rs_client):
    # Nothing listens on these ports: the set is unreachable from the start.
    client = make_rs_client("mongodb://127.0.0.1:1,127.0.0.1:2/?replicaSet=nowhere", serverSelectionTimeoutMS=1500)
    start = time.monotonic()
    with pytest.raises(ServerSelectionTimeoutError) as info:
        client.admin.command("ping")
    elapsed = time.monotonic() - start
    assert 1.4 < elapsed < 4.0
    message = str(info.value)
    assert "127.0.0.1:1: Unknown" in message and "127.0.0.1:2: Unknown" in message
    assert "refused" in message and "ReplicaSetNoPrimary 'nowhere'" in message


_EXIT_SCRIPT = """
import sys, time
if sys.argv[2] == "gevent-patched":
    from gevent import monkey
    monkey.patch_all()
import mongo_requests
options = {"use_greenlets": True} if sys.argv[2] == "gevent-unpatched" else {}
client = mongo_requests.MongoClient(sys.argv[1], heartbeatFrequencyMS=500, **options)
for i in range(int(sys.argv[3])):
    client.exit_test.c.find_one()
    time.sleep(0.05)  # heartbeat intervals pass between operations: scans happen
print(time.time(), flush=True)
"""


def _exit_delay(replica_set, mode, operations: int) -> float:
    """Seconds from the child's last print to the end of the process, seen from here."""
    proc = run_child(["-c", _EXIT_SCRIPT, replica_set.uri, mode.name, str(operations)], timeout=60)
    ended = time.time()
    return ended - float(proc.stdout.strip().splitlines()[-1])


def test_process_exits_within_a_second_of_its_last_operation(replica_set, mode, request):
    # The same process without a single operation (no scan, no socket, no monitor) measures what
    # the interpreter's own teardown costs on this machine right now; the driver may add < 1 s.
    baseline = _exit_delay(replica_set, mode, 0)
    delay = _exit_delay(replica_set, mode, 20)
    report(request, exit_s=round(delay, 3), baseline_exit_s=round(baseline, 3))
    assert delay - baseline < 1.0, "exit took %.2fs after the last operation (%.2fs without any)" % (delay, baseline)


def test_reconfig_removing_a_member_is_followed(replica_set, make_rs_client):
    rs = replica_set
    app = unique_app("rc")
    client = make_rs_client(appname=app, heartbeatFrequencyMS=500)
    client.admin.command("ping")
    victim = rs.secondaries()[0]
    assert _address(victim) in client.nodes
    assert len(_connections(victim, app)) == 1  # its heartbeat connection
    rs.remove_member(victim)
    deadline = time.monotonic() + 20
    while _address(victim) in client.nodes:
        assert time.monotonic() < deadline, client._topology.description
        time.sleep(0.1)
        client.admin.command("ping")
    assert client.nodes == {_address(m) for m in rs.members}
    # The client let go of the removed member: no connection of ours is left there.
    assert wait_until(lambda: not _connections(victim, app), timeout=5), _connections(victim, app)


def test_w0_writes_then_own_reads_in_requests_are_never_stale(replica_set, make_rs_client, mode, request):
    n_workers = 200 if mode.green else 50
    client = make_rs_client()
    name = "w0_" + unique_app()
    fast = client[name].get_collection("c", write_concern=WriteConcern(w=0))
    stale, done, errors = [], [], []

    def worker(i, stop):
        try:
            for round_ in range(5):
                with client.start_request():
                    key = "%d-%d" % (i, round_)
                    fast.insert_one({"_id": key, "n": round_})
                    fast.update_one({"_id": key}, {"$inc": {"n": 100}})
                    doc = fast.find_one({"_id": key})
                    if doc is None or doc["n"] != round_ + 100:
                        stale.append((key, doc))
            done.append(i)
        except Exception as exc:  # counted, reported below
            errors.append(short(exc))

    handles = [mode.spawn(worker, i, None) for i in range(n_workers)]
    alive = mode.join(handles, 60)
    try:
        report(request, workers=n_workers, stale=len(stale), errors=len(errors))
        assert alive == 0 and not errors, errors[:3]
        assert len(done) == n_workers and stale == [], stale[:5]
        # Every w=0 write reached the primary, proven by asking it.
        primary = replica_set.primary()
        count = raw_command(primary.address, {"count": "c"}, db=name)["n"]
        assert count == n_workers * 5, count
    finally:
        client.drop_database(name)


def _failover_under_load(replica_set, make_rs_client, mode, request, fault):
    """50 writers of acknowledged inserts while ``fault()`` happens; every acknowledged write must survive."""
    client = make_rs_client(serverSelectionTimeoutMS=30000)
    name = "fo_" + unique_app()
    coll = client[name].c
    coll.insert_one({"_id": "warm-up"})
    acked, errors, stalls = [], [], [0.0]
    state = {"stop": False}

    def writer(i, _):
        n = 0
        deadline = time.monotonic() + 40
        while not state["stop"] and time.monotonic() < deadline and n < 400:
            key = "%d-%d" % (i, n)
            t0 = time.monotonic()
            try:
                coll.insert_one({"_id": key})
                acked.append(key)
            except Exception as exc:  # surfaced to the application: counted
                errors.append(short(exc))
            stalls[0] = max(stalls[0], time.monotonic() - t0)
            n += 1
            mode.sleep(0.01)

    handles = [mode.spawn(writer, i, None) for i in range(50)]
    try:
        mode.sleep(1.0)
        t0 = time.monotonic()
        fault()
        fault_s = time.monotonic() - t0
        before = len(acked)
        # Writes go on after the failover: wait until 200 more were acknowledged.
        # (Waits with the mode's sleep: a blocking sleep would stall the hub, and every writer with it.)
        end = time.monotonic() + 30
        while len(acked) < before + 200 and time.monotonic() < end:
            mode.sleep(0.05)
        after = len(acked) - before
    finally:
        state["stop"] = True
        alive = mode.join(handles, 60)
    new = replica_set.wait_for_primary()
    found = set()
    reply = raw_command(
        new.address, {"find": "c", "filter": {}, "projection": {"_id": 1}, "batchSize": 100000}, db=name
    )
    found.update(d["_id"] for d in reply["cursor"]["firstBatch"])
    lost = [k for k in acked if k not in found]
    report(
        request,
        acknowledged=len(acked),
        lost=len(lost),
        errors_surfaced=len(errors),
        longest_stall_s=round(stalls[0], 3),
        fault_s=round(fault_s, 3),
        errors=errors[:3],
    )
    try:
        assert alive == 0
        assert lost == [], lost[:5]
        assert after >= 200
        assert stalls[0] < 30
        # Retryable writes: the application sees no error from a failover.
        assert errors == [], errors[:3]
    finally:
        client.drop_database(name)


def test_stepdown_under_load_from_50_writers(replica_set, make_rs_client, mode, request):
    _failover_under_load(replica_set, make_rs_client, mode, request, lambda: replica_set.stepdown(wait=False))


def test_sigkill_of_the_primary_under_load_from_50_writers(replica_set, make_rs_client, mode, request):
    _failover_under_load(replica_set, make_rs_client, mode, request, lambda: replica_set.kill_primary(wait=False))


# -- requests across members, read preferences --------------------------------------------------------------


def _hello(client, read_preference=None) -> dict:
    return client.admin.command("hello", read_preference=read_preference)


def test_request_pins_one_socket_per_member_proven_by_connection_id(replica_set, make_rs_client):
    rs = replica_set
    client = make_rs_client()
    name = "pin_" + unique_app()
    coll = client[name].c
    secondary = Secondary()
    try:
        with client.start_request():
            first_primary = _hello(client)
            coll.insert_one({"_id": 1})  # a write in the request: same socket as the primary read
            again_primary = _hello(client)
            assert first_primary["connectionId"] == again_primary["connectionId"]
            assert again_primary["isWritablePrimary"] is True
            first_secondary = _hello(client, secondary)
            assert first_secondary["secondary"] is True
            for _ in range(10):
                # Every secondary read of the request: one member, one socket.
                hello = _hello(client, secondary)
                assert (hello["me"], hello["connectionId"]) == (first_secondary["me"], first_secondary["connectionId"])
            assert _hello(client)["connectionId"] == first_primary["connectionId"]
        # Outside the request, secondary reads spread over both secondaries.  (A window wide enough for
        # both: on a loaded machine one secondary's measured round trip can leave the default 15 ms one.)
        wide = make_rs_client(localThresholdMS=5000)
        members = {_hello(wide, secondary)["me"] for _ in range(60)}
        assert members == {"%s:%d" % m.address for m in rs.secondaries()}
    finally:
        client.drop_database(name)


def _opcounters(member) -> int:
    return raw_command(member.address, {"serverStatus": 1})["opcounters"]["query"]


def test_secondary_reads_are_served_by_secondaries_proven_by_opcounters(replica_set, make_rs_client):
    rs = replica_set
    client = make_rs_client(readPreference="secondary")
    name = "sec_" + unique_app()
    client[name].c.insert_one({"_id": 1})  # writes still go to the primary
    primary = rs.primary()
    secondaries = rs.secondaries()
    before = {m.port: _opcounters(m) for m in rs.members}
    coll = client[name].c
    for _ in range(40):
        coll.find_one({"_id": 1})
    after = {m.port: _opcounters(m) for m in rs.members}
    try:
        served = {port: after[port] - before[port] for port in after}
        assert sum(served[m.port] for m in secondaries) >= 40, served
        assert served[primary.port] < 5, served
        assert all(served[m.port] > 0 for m in secondaries), served  # both secondaries in the latency window
    finally:
        client.drop_database(name)


def test_read_preference_tags_and_with_options(replica_set, make_rs_client):
    rs = replica_set
    client = make_rs_client()
    target = rs.secondaries()[0]
    tag = raw_command(target.address, {"hello": 1})["tags"]["name"]
    # URI form: readPreferenceTags, and a maxStalenessSeconds that every fresh secondary meets.
    tagged = make_rs_client(
        "%s&readPreference=secondary&readPreferenceTags=name:%s&maxStalenessSeconds=90" % (rs.uri, tag)
    )
    assert {_hello(tagged, tagged.read_preference)["me"] for _ in range(10)} == {"%s:%d" % target.address}
    # Keyword and with_options forms, on a database and on a collection.
    pref = Secondary([{"name": tag}])
    db = client.get_database("admin").with_options(read_preference=pref)
    assert db.read_preference is pref and client.admin.read_preference.mode == 0
    assert db.command("hello", read_preference=db.read_preference)["me"] == "%s:%d" % target.address
    name = "tags_" + unique_app()
    try:
        client[name].c.insert_one({"_id": 1})
        coll = client[name].c.with_options(read_preference=pref)
        assert coll.read_preference is pref and client[name].c.read_preference.mode == 0
        deadline = time.monotonic() + 10
        while coll.find_one({"_id": 1}) is None:  # replication lag: the secondary catches up
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # No member has this tag: nothing is suitable, and the error says what was wanted.
        lost = client[name].c.with_options(read_preference=Secondary([{"name": "nowhere"}]))
        quick = make_rs_client(serverSelectionTimeoutMS=500)
        with pytest.raises(ServerSelectionTimeoutError) as info:
            quick[name].c.with_options(read_preference=lost.read_preference).find_one()
        assert "'nowhere'" in str(info.value) and "RSSecondary" in str(info.value)
    finally:
        client.drop_database(name)


def test_cursor_get_more_and_kill_go_to_the_member_that_holds_the_cursor(replica_set, make_rs_client):
    client = make_rs_client()
    name = "cur_" + unique_app()
    try:
        client[name].get_collection("c", write_concern=WriteConcern(w=3)).insert_many([{"_id": i} for i in range(50)])
        coll = client[name].get_collection("c", read_preference=Secondary())
        cursor = coll.find({}, batch_size=5).sort("_id")
        assert [d["_id"] for d in cursor] == list(range(50))  # 10 getMores, all on the cursor's member
        assert "%s:%d" % cursor.address in {"%s:%d" % m.address for m in replica_set.secondaries()}
        open_cursor = coll.find({}, batch_size=5)
        next(open_cursor)
        holder, cursor_id = open_cursor.address, open_cursor.cursor_id
        open_cursor.close()  # killCursors to the holder, which would otherwise keep it
        reply = raw_command(
            holder, {"getMore": cursor_id, "collection": "c", "$readPreference": {"mode": "secondary"}}, db=name
        )
        assert reply["ok"] == 0 and reply["codeName"] == "CursorNotFound", reply
    finally:
        client.drop_database(name)


def test_direct_connection_to_a_secondary(replica_set, make_rs_client):
    member = replica_set.secondaries()[0]
    client = make_rs_client("mongodb://%s:%d/?directConnection=true" % member.address)
    # Reads carry primaryPreferred, so the secondary answers; the topology stays Single.
    assert _hello(client)["me"] == "%s:%d" % member.address
    assert client.admin.command("ping")["ok"] == 1
    assert client.nodes == {member.address}
    with pytest.raises(NotPrimaryError):
        client.test_direct.c.insert_one({"x": 1})


def test_pymongo_2_names_are_aliases_with_pymongo_2_defaults(replica_set):
    import mongo_requests

    with mongo_requests.MongoReplicaSetClient(replica_set.uri) as client:
        assert isinstance(client, mongo_requests.MongoClient)
        assert client.auto_start_request is False and client.write_concern.acknowledged
        assert client.primary == _address(replica_set.primary())
    with mongo_requests.ReplicaSetConnection(replica_set.uri) as conn:
        assert isinstance(conn, mongo_requests.Connection)
        assert conn.auto_start_request is True and not conn.write_concern.acknowledged
        conn.admin.command("ping")
        assert conn.in_request()  # auto_start_request: the first operation started one


@pytest.mark.modes("threads")
def test_a_child_forked_while_another_thread_holds_the_topologys_locks_selects_and_scans(make_rs_client):
    """Only the forking thread lives on in a child: locks another thread held at the fork are replaced there.

    The other thread holds the topology's lock and its scan's lock across the
    fork.  Without the fix the child deadlocks on the first (in_forked_child
    reports nothing within 20 s), or, with only the first replaced, never
    scans: it waits out its 3 s selection timeout and runs no scan.
    """
    c = make_rs_client(serverSelectionTimeoutMS=3000)
    c.admin.command("ping")
    topology = c._topology
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with topology._lock:
            assert topology._scan_lock.acquire(False)
            held.set()
            done.wait(30)
            topology._scan_lock.release()

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)

    def child() -> dict:
        topology._next_scan, topology._last_scan = 0.0, -1e9  # a scan is due
        before, start = topology._scans, time.monotonic()
        c.admin.command("ping")
        return {"scans": topology._scans - before, "seconds": time.monotonic() - start}

    try:
        result = in_forked_child(child)
    finally:
        done.set()
        holder.join(10)
    assert result.get("scans", 0) >= 1, result
    assert result["seconds"] < 2.5, result
