"""Server session pool and retryability rules: pure, no server needed."""

from __future__ import annotations

import time

import pytest
from pymongo.errors import (
    AutoReconnect,
    DuplicateKeyError,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    WaitQueueTimeoutError,
    WriteConcernError,
    WriteError,
)

from mongo_requests.retry import (
    is_retryable_read_error,
    is_retryable_write,
    is_retryable_write_error,
    is_retryable_write_reply,
)
from mongo_requests.sessions import ServerSession, SessionPool

# Pure state: the same code in every mode, so it runs once (threads).
pytestmark = pytest.mark.modes("threads")


def test_sessions_are_reused_most_recent_first():
    pool = SessionPool()
    a, b = pool.checkout(30), pool.checkout(30)
    assert a.lsid != b.lsid and a.lsid["id"].subtype == 4 and len(a.lsid["id"]) == 16
    pool.checkin(a, 30)
    pool.checkin(b, 30)
    assert pool.checkout(30) is b and pool.checkout(30) is a
    assert pool.created == 2


def test_txn_numbers_increase_per_session():
    session = ServerSession()
    assert [session.next_txn_number() for _ in range(3)] == [1, 2, 3]


def test_dirty_sessions_are_dropped():
    pool = SessionPool()
    s = pool.checkout(30)
    s.dirty = True  # a network error: the server may still run something on it
    pool.checkin(s, 30)
    assert len(pool) == 0 and pool.checkout(30) is not s


def test_sessions_near_expiry_are_not_reused():
    pool = SessionPool()
    old, fresh = pool.checkout(30), pool.checkout(30)
    pool.checkin(old, 30)
    pool.checkin(fresh, 30)
    # 29 minutes and a bit: less than a minute left on the server.
    old.last_use = time.monotonic() - 29 * 60 - 1
    assert old.timed_out(30) and not fresh.timed_out(30)
    assert not old.timed_out(None)  # no timeout known: never expires
    assert pool.checkout(30) is fresh
    assert pool.checkout(30) is not old  # skipped at checkout, a new one made
    assert len(pool) == 0


def test_checkin_trims_expired_sessions_from_the_old_end():
    pool = SessionPool()
    sessions = [pool.checkout(30) for _ in range(3)]
    for s in sessions:
        pool.checkin(s, 30)
    for s in sessions[:2]:  # the two least recently given back
        s.last_use -= 30 * 60
    extra = pool.checkout(30)
    assert extra is sessions[2]
    pool.checkin(extra, 30)
    assert len(pool) == 1
    assert [d for d in pool.drain()] == [extra.lsid] and len(pool) == 0


def test_retryable_write_shapes():
    assert is_retryable_write({"insert": "c", "ordered": True})
    assert is_retryable_write({"findAndModify": "c", "query": {}})
    assert is_retryable_write({"update": "c", "updates": [{"q": {}, "u": {}, "multi": False}]})
    assert not is_retryable_write({"update": "c", "updates": [{"q": {}, "u": {}, "multi": True}]})
    assert is_retryable_write({"delete": "c", "deletes": [{"q": {}, "limit": 1}]})
    assert not is_retryable_write({"delete": "c", "deletes": [{"q": {}, "limit": 0}]})
    assert is_retryable_write({"delete": "c"}, {"deletes": [{"q": {}, "limit": 1}]})
    assert not is_retryable_write({"find": "c"}) and not is_retryable_write({"aggregate": "c"})
    # Unacknowledged writes never; statements encoded in a document sequence cannot be looked at: not retried.
    assert not is_retryable_write({"insert": "c", "writeConcern": {"w": 0}})
    assert not is_retryable_write({"update": "c"}) and not is_retryable_write({"delete": "c"})


def test_retryable_errors():
    assert is_retryable_write_error(AutoReconnect("reset")) and is_retryable_read_error(AutoReconnect("reset"))
    assert is_retryable_write_error(NetworkTimeout("slow")) and is_retryable_write_error(NotPrimaryError("x", {}))
    # A full pool is the caller's own backlog, not a server failure.
    assert not is_retryable_write_error(WaitQueueTimeoutError("full"))
    assert not is_retryable_read_error(WaitQueueTimeoutError("full"))
    assert is_retryable_write_error(OperationFailure("x", 91, {"code": 91}))
    assert is_retryable_write_error(OperationFailure("x", 1, {"errorLabels": ["RetryableWriteError"]}))
    assert is_retryable_write_error(WriteConcernError("x", 11602, {"code": 11602}))
    assert not is_retryable_write_error(OperationFailure("x", 2, {"code": 2}))
    assert not is_retryable_write_error(DuplicateKeyError("dup", 11000, {}))
    assert not is_retryable_write_error(WriteError("x", 91, {}))
    assert not is_retryable_write_error(ValueError("x"))
    assert is_retryable_read_error(OperationFailure("x", 134, {"code": 134}))
    assert not is_retryable_read_error(OperationFailure("x", 2, {"code": 2}))


def test_retryable_write_replies():
    assert is_retryable_write_reply({"ok": 0, "code": 10107})
    assert is_retryable_write_reply({"ok": 0, "code": 1, "errorLabels": ["RetryableWriteError"]})
    assert is_retryable_write_reply({"ok": 1, "n": 1, "writeConcernError": {"code": 91, "errmsg": "shutdown"}})
    assert not is_retryable_write_reply({"ok": 1, "n": 1, "writeConcernError": {"code": 64, "errmsg": "wtimeout"}})
    assert not is_retryable_write_reply({"ok": 1, "n": 1})
    assert not is_retryable_write_reply({"ok": 0, "code": 2})
