"""Errors: PyMongo's own classes, plus the few we add.

Every exception the driver raises is a :mod:`pymongo.errors` class or a
subclass of one, so ``except pymongo.errors.AutoReconnect`` (and every other
``except`` clause written for PyMongo) keeps working unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bson.errors import InvalidDocument  # noqa: F401  (re-exported; pymongo.errors re-exports it too)
from pymongo.errors import (  # noqa: F401  (re-exported)
    AutoReconnect,
    BulkWriteError,
    CollectionInvalid,
    ConfigurationError,
    ConnectionFailure,
    CursorNotFound,
    DocumentTooLarge,
    DuplicateKeyError,
    ExecutionTimeout,
    InvalidName,
    InvalidOperation,
    InvalidURI,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    ProtocolError,
    PyMongoError,
    ServerSelectionTimeoutError,
    WaitQueueTimeoutError,
    WriteConcernError,
    WriteError,
    WTimeoutError,
)

__all__ = [
    "AutoReconnect",
    "BulkWriteError",
    "CollectionInvalid",
    "ConfigurationError",
    "ConnectionFailure",
    "CursorNotFound",
    "DocumentTooLarge",
    "DuplicateKeyError",
    "ExecutionTimeout",
    "InvalidDocument",
    "InvalidName",
    "InvalidOperation",
    "InvalidURI",
    "NetworkTimeout",
    "NotPrimaryError",
    "OperationFailure",
    "PoolTimeoutError",
    "ProtocolError",
    "PyMongoError",
    "ServerSelectionTimeoutError",
    "WaitQueueTimeoutError",
    "WriteConcernError",
    "WriteError",
    "WTimeoutError",
    "check_command",
    "check_write",
]


class PoolTimeoutError(WaitQueueTimeoutError):
    """No socket became free within ``waitQueueTimeoutMS``.

    A :class:`~pymongo.errors.ConnectionFailure` (via
    :class:`~pymongo.errors.WaitQueueTimeoutError`).  Its message, and the
    :attr:`pinned` attribute, say how many of the pool's sockets are held by
    requests: with ``auto_start_request=True`` every live thread or greenlet
    that has touched the database keeps one, which is the usual cause.
    """

    def __init__(self, message: str, pinned: int = 0, in_use: int = 0, max_size: int = 0) -> None:
        super().__init__(message)
        self.pinned = pinned
        self.in_use = in_use
        self.max_size = max_size


# Codes after which the server is no longer (or not) a primary; PyMongo raises
# NotPrimaryError (an AutoReconnect) for these, so retry loops written for
# PyMongo keep working.
_NOT_PRIMARY_CODES = frozenset([10107, 13435, 10058, 11602, 13436, 189, 91, 11600])
_DUPLICATE_KEY_CODES = frozenset([11000, 11001, 12582])


def _code(value: Any) -> int | None:
    """A server error code, or None when the server sent something that is not one."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _message(value: Any, default: str) -> str:
    """A server error message as a string, whatever type the server sent."""
    if isinstance(value, str):
        return value or default
    return default if value is None else "%s (errmsg was %r)" % (default, value)


def check_command(reply: Mapping[str, Any], max_wire_version: int | None = None) -> None:
    """Raise the PyMongo error that matches a command reply with ``ok: 0``."""
    ok = reply.get("ok")
    if ok == 1:
        return
    code = _code(reply.get("code"))
    msg = _message(reply.get("errmsg"), "command failed")
    if code in _NOT_PRIMARY_CODES or msg.startswith(("not master", "node is recovering")):
        raise NotPrimaryError(msg, reply)
    if code in _DUPLICATE_KEY_CODES:
        raise DuplicateKeyError(msg, code, reply, max_wire_version)
    if code == 50:
        raise ExecutionTimeout(msg, code, reply, max_wire_version)
    if code == 43:
        raise CursorNotFound(msg, code, reply, max_wire_version)
    raise OperationFailure(msg, code, reply, max_wire_version)


def check_write(reply: Mapping[str, Any], max_wire_version: int | None = None) -> None:
    """Raise for the first write error, or a write-concern error, of one write.

    Used for single-document writes (``insert_one``, ``update_one``, legacy
    ``update`` ...); batches are checked in :mod:`mongo_requests.collection`.
    """
    check_command(reply, max_wire_version)
    errors = reply.get("writeErrors")
    if errors:
        if not isinstance(errors, list) or not all(isinstance(e, Mapping) for e in errors):
            raise ProtocolError("the server sent malformed writeErrors: %r" % (errors,))
        err = errors[-1]
        code = _code(err.get("code"))
        msg = _message(err.get("errmsg"), "write error")
        if code in _DUPLICATE_KEY_CODES:
            raise DuplicateKeyError(msg, code, err, max_wire_version)
        raise WriteError(msg, code, err, max_wire_version)
    wce = reply.get("writeConcernError")
    if wce:
        raise_write_concern_error(wce, max_wire_version)


def raise_write_concern_error(wce: Mapping[str, Any], max_wire_version: int | None = None) -> None:
    """Raise WriteConcernError, or WTimeoutError when the wait timed out."""
    if not isinstance(wce, Mapping):
        raise ProtocolError("the server sent a malformed writeConcernError: %r" % (wce,))
    code = _code(wce.get("code"))
    msg = _message(wce.get("errmsg"), "write concern error")
    info = wce.get("errInfo")
    if code == 64 or (isinstance(info, Mapping) and info.get("wtimeout")):
        raise WTimeoutError(msg, code, wce, max_wire_version)
    raise WriteConcernError(msg, code, wce, max_wire_version)
