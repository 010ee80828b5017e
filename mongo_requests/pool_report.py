"""What a pool reports: counters and gauges, its repr, and the message of a wait-queue timeout.

Read-only views of :class:`~mongo_requests.pool.Pool`'s state, taken under its guard; the rules
for changing that state stay in :mod:`mongo_requests.pool`.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

from .errors import PoolTimeoutError

if TYPE_CHECKING:
    from .pool_state import PoolOptions
    from .socket_info import SocketInfo

__all__ = ["PoolReport"]

# Counters kept as int attributes (``_<name>``) rather than ``_counters`` items, for
# the hot paths: ``+= 1`` on an attribute costs ~550 instructions, on a Counter item
# ~1,900.  get_stats() reports them under these names, like the Counter's (only once nonzero).
_INT_COUNTERS = ("checkouts", "requests_started", "requests_ended", "pins", "waits")


class PoolReport:
    """Base of :class:`~mongo_requests.pool.Pool`: stats, repr and the timeout message."""

    # Set by Pool.__init__; declared here for the type checker only.
    address: tuple[str, int]
    opts: PoolOptions
    generation: int
    _guard: Any
    _counters: collections.Counter[str]
    _checkouts: int
    _idle: collections.deque[SocketInfo]
    _in_use: int
    _pinned: set[SocketInfo]
    _waiters: collections.deque[Any]

    def get_stats(self) -> dict[str, int]:
        """Counters since the last :meth:`pop_stats`, plus the current gauges."""
        with self._guard:
            stats = dict(self._counters)
            for name in _INT_COUNTERS:
                value = getattr(self, "_" + name)
                if value:
                    stats[name] = value
            stats.update(
                idle=len(self._idle),
                in_use=self._in_use,
                pinned=len(self._pinned),
                waiting=len(self._waiters),
                open=len(self._idle) + self._in_use + len(self._pinned),
                max_size=self.opts.max_size,
                generation=self.generation,
            )
        return stats

    def pop_stats(self) -> dict[str, int]:
        """Return :meth:`get_stats` and reset the counters (gauges stay)."""
        stats = self.get_stats()
        with self._guard:
            self._counters.clear()
            self._clear_int_counters()
        return stats

    def _clear_int_counters(self) -> None:
        """Zero the int-attribute counters (``_INT_COUNTERS``); the caller holds the guard, or is alone (a fork)."""
        for name in _INT_COUNTERS:
            setattr(self, "_" + name, 0)

    def _timeout_error(self, timeout: float | None) -> PoolTimeoutError:
        """The error for a caller that waited ``timeout`` for a slot, saying who holds them."""
        with self._guard:
            pinned, in_use, waiting = len(self._pinned), self._in_use, len(self._waiters)
        max_size = self.opts.max_size
        msg = (
            "Timed out after %.3fs waiting for a socket to %s:%d: all %d sockets are busy "
            "(%d checked out, %d pinned by requests, %d other callers waiting)."
            % (timeout or 0.0, self.address[0], self.address[1], max_size, in_use, pinned, waiting)
        )
        if pinned:
            msg += (
                " Each thread or greenlet in a request keeps its socket until end_request() or its "
                "death; use auto_start_request=False, end requests sooner, or raise max_pool_size."
            )
        return PoolTimeoutError(msg, pinned=pinned, in_use=in_use, max_size=max_size)

    def __repr__(self) -> str:
        return "<Pool %s:%d idle=%d in_use=%d pinned=%d waiting=%d>" % (
            self.address[0],
            self.address[1],
            len(self._idle),
            self._in_use,
            len(self._pinned),
            len(self._waiters),
        )
