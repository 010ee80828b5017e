"""The pool's plain values: its options, and a caller's request record.

No locks and no I/O here; :mod:`mongo_requests.pool` owns the rules for
using them.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .socket_info import SocketInfo

__all__ = ["PoolOptions", "RequestState"]


class RequestState(enum.Enum):
    """Where one caller stands with one pool.

    The transitions, made by :mod:`mongo_requests.pool` (``_Request.state``
    is derived from ``depth`` and ``sock``)::

        NO_REQUEST --start_request / auto--> REQUEST_NO_SOCKET
        REQUEST_NO_SOCKET --checkout--> PINNED  (the socket keeps its slot)
        PINNED --checkout--> PINNED              (same socket; no lock, no slot;
                                                  also after a pool reset)
        PINNED --error seen by the owner--> REQUEST_NO_SOCKET (socket closed, slot freed)
        PINNED --fork--> REQUEST_NO_SOCKET       (in the child)
        any --outermost end_request / caller dies--> NO_REQUEST
                                                 (socket to idle, or closed if stale)
    """

    NO_REQUEST = 0
    REQUEST_NO_SOCKET = 1
    PINNED = 2


_NO_REQUEST = RequestState.NO_REQUEST
_NO_SOCKET = RequestState.REQUEST_NO_SOCKET
_PINNED = RequestState.PINNED


@dataclasses.dataclass(frozen=True, slots=True)
class PoolOptions:
    """Immutable settings of a pool (seconds for the timeouts; None: wait forever)."""

    max_size: int = 100
    connect_timeout: float | None = 20.0
    socket_timeout: float | None = None
    wait_queue_timeout: float | None = None
    auto_start_request: bool = False
    metadata: Mapping[str, Any] | None = dataclasses.field(default=None, repr=False, hash=False, compare=False)
    # TLS, credentials, compressors: a mongo_requests.handshake.ConnectionSetup (its repr is redacted).
    setup: Any = dataclasses.field(default=None, hash=False, compare=False)

    def __post_init__(self) -> None:
        max_size = self.max_size
        if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 1:
            raise ValueError("max_pool_size must be a positive integer, not %r" % (max_size,))
        for name, value in (
            ("connectTimeoutMS", self.connect_timeout),
            ("socketTimeoutMS", self.socket_timeout),
            ("waitQueueTimeoutMS", self.wait_queue_timeout),
        ):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ValueError("%s must be a non-negative number or None, not %r" % (name, value))
        object.__setattr__(self, "auto_start_request", bool(self.auto_start_request))


class _Request:
    """One caller's request with one pool; only its caller mutates it while alive."""

    __slots__ = ("depth", "sock", "pipeline", "__weakref__")

    def __init__(self) -> None:
        self.depth = 0
        self.sock: SocketInfo | None = None
        # A mongo_requests.pipeline.Pipeline: asked for, or made for a mongos.
        self.pipeline: Any = None

    @property
    def state(self) -> RequestState:
        """Derived, never stored: the depth and the pinned socket say it all."""
        if not self.depth:
            return _NO_REQUEST
        return _NO_SOCKET if self.sock is None else _PINNED
