"""Caller identity: auto-detection of gevent, and death watching.

Patching is process-wide, so every gevent case runs in a fresh interpreter
(helpers.run_child); the script prints JSON and the assertions live here.
Those cases choose their own patching, so they run in the threads mode only.
"""

from __future__ import annotations

import json
import textwrap
import threading

import pytest

import mongo_requests
from helpers import PATCHED, THREADS, child_env, run_child
from mongo_requests.identity import ThreadIdentity, choose_identity

# Shared by the scripts: 200 greenlets, each in a request, doing a w=0 write
# then a read of its own key; reports violations and connectionIds per greenlet.
_WORKLOAD = """
import gevent
coll = client.ident_test.c
coll.drop()
results = []
def visit(i):
    with client.start_request():
        ids = set()
        for k in range(3):
            ids.add(client.admin.command("hello")["connectionId"])
            coll.insert_one({"k": i, "n": k}, w=0)
            if coll.count_documents({"k": i}) != k + 1:
                results.append(("violation", i))
        if len(ids) != 1:
            results.append(("ids", i, sorted(ids)))
gs = [gevent.spawn(visit, i) for i in range(200)]
gevent.joinall(gs, timeout=60)
done = sum(1 for g in gs if g.successful())
errors = [repr(g.exception) for g in gs if g.exception is not None][:3]
"""


def run_script(body: str, uri: str, timeout: float = 120) -> dict:
    """Run ``body`` in a fresh interpreter; return the JSON of its last line."""
    proc = run_child(["-c", textwrap.dedent(body)], timeout=timeout, env=child_env(MONGODB_URI=uri))
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.modes(THREADS)
@pytest.mark.parametrize("used_before_patch", [False, True])
def test_auto_switches_to_greenlets_when_gevent_patches_later(mongodb_uri, used_before_patch):
    """A client made before patch_all (gunicorn --preload) still gives each greenlet its own request."""
    out = run_script(
        """
        import json, os, mongo_requests
        client = mongo_requests.MongoClient(os.environ["MONGODB_URI"], max_pool_size=20)
        before = client.use_greenlets
        if %r:
            client.admin.command("ping")   # a blocking stdlib socket now sits idle in the pool
        from gevent import monkey; monkey.patch_all()
        after = client.use_greenlets
        %s
        print(json.dumps(dict(before=before, after=after, done=done, results=results, errors=errors,
                              stats=client.pool.get_stats())))
        """
        % (used_before_patch, textwrap.indent(_WORKLOAD, "        ").strip()),
        mongodb_uri,
    )
    assert out["before"] is False and out["after"] is True
    assert out["errors"] == [] and out["done"] == 200
    assert out["results"] == []
    if used_before_patch:
        # The pre-patch (blocking) socket was discarded, not handed to a greenlet.
        assert out["stats"]["resets"] >= 1


@pytest.mark.modes(THREADS)
def test_auto_after_fork_then_patch(mongodb_uri):
    """Client used in a parent, fork, child patches (gunicorn's order): child uses greenlets and new sockets."""
    out = run_script(
        """
        import json, os, mongo_requests
        client = mongo_requests.MongoClient(os.environ["MONGODB_URI"], max_pool_size=20)
        parent_conn = client.admin.command("hello")["connectionId"]
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            from gevent import monkey; monkey.patch_all()
            %s
            conns = set()
            def probe():
                with client.start_request():
                    conns.add(client.admin.command("hello")["connectionId"])
            gevent.joinall([gevent.spawn(probe) for _ in range(20)])
            os.write(w, json.dumps(dict(greenlets=client.use_greenlets, done=done, results=results,
                                        errors=errors, conns=sorted(conns))).encode())
            os._exit(0)
        os.close(w)
        data = b""
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
        os.waitpid(pid, 0)
        child = json.loads(data)
        child["parent_conn"] = parent_conn
        child["parent_still_works"] = client.admin.command("ping")["ok"] == 1
        print(json.dumps(child))
        """
        % textwrap.indent(_WORKLOAD, "            ").strip(),
        mongodb_uri,
    )
    assert out["greenlets"] is True
    assert out["errors"] == [] and out["done"] == 200 and out["results"] == []
    assert out["parent_conn"] not in out["conns"]
    assert out["parent_still_works"]


@pytest.mark.modes(THREADS)
def test_use_greenlets_true_without_gevent_is_a_configuration_error(mongodb_uri):
    """Forcing greenlets needs gevent; say so clearly rather than fail later."""
    out = run_script(
        """
        import json, os, sys
        sys.modules["gevent"] = None          # as if gevent were not installed
        import mongo_requests
        from pymongo.errors import ConfigurationError
        try:
            mongo_requests.MongoClient(os.environ["MONGODB_URI"], use_greenlets=True)
        except ConfigurationError as exc:
            print(json.dumps(dict(error=str(exc))))
        else:
            print(json.dumps(dict(error=None)))
        """,
        mongodb_uri,
    )
    assert out["error"] and "gevent" in out["error"]


@pytest.mark.modes(THREADS)
@pytest.mark.parametrize("imported_before_patch", [True, False])
def test_real_lock_stays_unpatched_under_patch_all(imported_before_patch):
    """real_lock() (looked up once, at import) is the OS lock under patch_all, whichever came first.

    The pool's critical sections and each waiter's settle lock rely on it: a
    real lock never yields to the hub, so a blocked acquire stalls every
    greenlet of the thread, where gevent's lock would let them run.
    """
    out = run_script(
        """
        import json, time
        if %r:
            from mongo_requests import identity
        from gevent import monkey; monkey.patch_all()
        import _thread, gevent
        from mongo_requests import identity
        original = type(monkey.get_original("_thread", "allocate_lock")())
        lock = identity.real_lock()
        settle = identity.GreenletIdentity().waiter()._settle
        lock.acquire()
        ran = []
        gevent.spawn(ran.append, 1)
        t0 = time.perf_counter()
        got = lock.acquire(True, 0.2)
        blocked = time.perf_counter() - t0
        ran_while_blocked = list(ran)
        gevent.sleep(0)
        print(json.dumps(dict(
            patched=monkey.is_module_patched("_thread") and type(_thread.allocate_lock()) is not original,
            lock_is_original=type(lock) is original, settle_is_original=type(settle) is original,
            got=got, blocked=blocked, ran_while_blocked=ran_while_blocked, ran_after=ran)))
        """
        % imported_before_patch,
        "",
    )
    assert out["patched"]  # gevent's lock is what _thread now gives: the check below means something
    assert out["lock_is_original"] and out["settle_is_original"]
    # Behaviour, not just type: the timed acquire blocked the thread without a switch to the hub.
    assert out["got"] is False and out["blocked"] >= 0.15
    assert out["ran_while_blocked"] == [] and out["ran_after"] == [1]


def test_auto_without_gevent_uses_threads(mode):
    if mode.name == PATCHED:
        assert choose_identity(None).kind == "greenlet"  # under tests/run_mode.py gevent-patched
    else:
        assert isinstance(choose_identity(None), ThreadIdentity)
    assert choose_identity(False).kind == "thread"


def test_thread_identity_watch_fires_once_when_the_thread_ends():
    """The vigil's callback runs after the thread ends, exactly once, and not before."""
    ident = ThreadIdentity()
    refs_before = set(ident._vigils.refs)  # process-wide: other live threads' watches are there too
    fired = []
    registered = threading.Event()
    finish = threading.Event()

    def body():
        ident.watch(lambda: fired.append(threading.current_thread().name))
        registered.set()
        finish.wait(5)

    t = threading.Thread(target=body, name="watched")
    t.start()
    assert registered.wait(5)
    assert fired == []  # alive: nothing yet
    finish.set()
    t.join(5)
    assert len(fired) == 1
    assert ident._vigils.refs == refs_before  # the weakref bookkeeping is gone too


def test_client_reports_its_identity(make_client):
    c = make_client(use_greenlets=False)
    assert c.use_greenlets is False and c.identity.kind == "thread"
    assert isinstance(c, mongo_requests.MongoClient)
