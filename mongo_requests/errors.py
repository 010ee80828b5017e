"""Errors: PyMongo's own classes, plus the few we add.

Every exception the driver raises is a :mod:`pymongo.errors` class or a
subclass of one, so ``except pymongo.errors.AutoReconnect`` (and every other
``except`` clause written for PyMongo) keeps working unchanged.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    InvalidDocument,
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


def check_command(reply: Mapping[str, Any], max_wire_version: int | None = None) -> None:
    """Raise the PyMongo error that matches a command reply with ``ok: 0``."""
    ok = reply.get("ok")
    if ok == 1:
        return
    code = reply.get("code")
    msg = reply.get("errmsg") or "command failed"
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
    ``update`` ...).  Batches go through :func:`raise_bulk_error` instead.
    """
    check_command(reply, max_wire_version)
    errors = reply.get("writeErrors")
    if errors:
        err = errors[-1]
        code = err.get("code")
        msg = err.get("errmsg", "write error")
        if code in _DUPLICATE_KEY_CODES:
            raise DuplicateKeyError(msg, code, err, max_wire_version)
        raise WriteError(msg, code, err, max_wire_version)
    wce = reply.get("writeConcernError")
    if wce:
        raise_write_concern_error(wce, max_wire_version)


def raise_write_concern_error(wce: Mapping[str, Any], max_wire_version: int | None = None) -> None:
    """Raise WriteConcernError, or WTimeoutError when the wait timed out."""
    code = wce.get("code")
    msg = wce.get("errmsg", "write concern error")
    if code == 64 or (wce.get("errInfo") or {}).get("wtimeout"):
        raise WTimeoutError(msg, code, wce, max_wire_version)
    raise WriteConcernError(msg, code, wce, max_wire_version)
