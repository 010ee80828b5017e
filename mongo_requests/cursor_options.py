"""The options of reads: ``find``'s chainable modifiers, and the documents options become.

:class:`CursorOptions` holds :class:`~mongo_requests.cursor.Cursor`'s
modifiers (``sort``, ``skip``, ``limit``, ``batch_size``, ``hint``,
``max_time_ms``, ``comment``, ``where``, ``collation``, ``min``/``max``,
``allow_disk_use``...), each checked and stored before the query runs; the
cursor builds its ``find`` from them.  :func:`index_spec` (re-exported by
:mod:`mongo_requests.cursor`) normalises sort, hint and index keys for
cursors, the collection's read commands and its index methods;
``_command_options`` adds PyMongo's keywords to those read commands.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from .bulk import _collation
from .errors import InvalidOperation

__all__ = ["CursorOptions", "ASCENDING", "DESCENDING", "check_count", "index_spec"]

ASCENDING = 1
DESCENDING = -1


def check_count(value: Any, name: str) -> int:
    """``value`` if it is an int (not a bool) >= 0: TypeError or ValueError otherwise (skip, batch_size)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("%s must be an integer" % name)
    if value < 0:
        raise ValueError("%s must be >= 0" % name)
    return value


def index_spec(key_or_list: Any, direction: Any = None) -> dict[str, Any]:
    """Normalise a sort or index spec: 'a', ('a', -1), [('a', 1), ...] or a mapping."""
    if isinstance(key_or_list, str):
        return {key_or_list: ASCENDING if direction is None else direction}
    if direction is not None:
        raise TypeError("direction may only be given with a single key name")
    if isinstance(key_or_list, Mapping):
        return dict(key_or_list)
    if isinstance(key_or_list, (list, tuple)):
        spec: dict[str, Any] = {}
        for item in key_or_list:
            if isinstance(item, str):
                spec[item] = ASCENDING
            elif isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str):
                spec[item[0]] = item[1]
            else:
                raise TypeError("sort and index keys must be (key, direction) pairs, not %r" % (item,))
        return spec
    raise TypeError("sort and index specs must be a str, a list of (key, direction) pairs, or a mapping")


# A ``pymongo.collation.Collation`` or a mapping as the server's document; None stays None.
# One function for cursors and write statements (bulk's).
_collation_doc = _collation


def _command_options(cmd: dict[str, Any], kwargs: dict[str, Any]) -> None:
    """Add PyMongo's command keywords to ``cmd``: hint and collation converted, None values left out."""
    for py, server in (("max_time_ms", "maxTimeMS"), ("allow_disk_use", "allowDiskUse")):
        if py in kwargs:
            kwargs[server] = kwargs.pop(py)
    for key, value in kwargs.items():
        if value is None:
            continue
        if key == "hint" and not isinstance(value, str):
            value = index_spec(value)
        elif key == "collation":
            value = _collation(value)
        cmd[key] = value


class CursorOptions:
    """The modifiers of :class:`~mongo_requests.cursor.Cursor`: each returns the cursor, before iteration starts."""

    # Set by Cursor.__init__ (and _CursorBase's); read by Cursor._find_command.
    _started: bool
    _filter: Mapping[str, Any]
    _sort: dict[str, Any] | None
    _skip: int
    _limit: int
    _single_batch: bool
    _batch_size: int
    _hint: Any
    _max_time_ms: int | None
    _comment: Any
    _await_data: bool
    _max_await_time_ms: int | None
    _collation: Any
    _min: dict[str, Any] | None
    _max: dict[str, Any] | None
    _allow_disk_use: bool | None

    def _check_unstarted(self) -> None:
        if self._started:
            raise InvalidOperation("cannot set options after executing query")

    def sort(self, key_or_list: Any, direction: Any = None) -> Self:
        """Sort by a key (``sort('a', -1)``) or a list of (key, direction) pairs."""
        self._check_unstarted()
        self._sort = index_spec(key_or_list, direction)
        return self

    def skip(self, skip: int) -> Self:
        """Skip the first ``skip`` documents."""
        check_count(skip, "skip")
        self._check_unstarted()
        self._skip = skip
        return self

    def limit(self, limit: int) -> Self:
        """Return at most ``limit`` documents (0: no limit; negative: one batch)."""
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise TypeError("limit must be an integer")
        self._check_unstarted()
        self._single_batch = limit < 0
        self._limit = abs(limit)
        return self

    def batch_size(self, batch_size: int) -> Self:
        """Ask the server for batches of ``batch_size`` documents (0: its default)."""
        check_count(batch_size, "batch_size")
        # Like the other modifiers (and PyMongo): once the query has run, a
        # new batch size would silently apply to the getMores only.
        self._check_unstarted()
        self._batch_size = batch_size
        return self

    def hint(self, index: Any) -> Self:
        """Force the use of an index (a name or a key spec)."""
        self._check_unstarted()
        self._hint = index
        return self

    def max_time_ms(self, max_time_ms: int | None) -> Self:
        """Server-side time limit for the query."""
        self._check_unstarted()
        self._max_time_ms = max_time_ms
        return self

    def comment(self, comment: Any) -> Self:
        """Attach a comment (shown in the server's logs and profiler)."""
        self._check_unstarted()
        self._comment = comment
        return self

    def where(self, code: str) -> Self:
        """Add a ``$where`` JavaScript predicate to the filter."""
        self._check_unstarted()
        self._filter = dict(self._filter, **{"$where": code})
        return self

    def max_await_time_ms(self, max_await_time_ms: int | None) -> Self:
        """How long a TAILABLE_AWAIT getMore waits for new documents."""
        self._check_unstarted()
        if self._await_data:
            self._max_await_time_ms = max_await_time_ms
        return self

    def collation(self, collation: Any) -> Self:
        """Compare strings by these rules (a ``pymongo.collation.Collation`` or a dict)."""
        self._check_unstarted()
        self._collation = _collation_doc(collation)
        return self

    def min(self, spec: Any) -> Self:
        """The lower bound of the index range (needs a hint)."""
        self._check_unstarted()
        self._min = index_spec(spec)
        return self

    def max(self, spec: Any) -> Self:
        """The upper bound of the index range (needs a hint)."""
        self._check_unstarted()
        self._max = index_spec(spec)
        return self

    def allow_disk_use(self, allow_disk_use: bool) -> Self:
        """Let a blocking sort spill to disk."""
        self._check_unstarted()
        self._allow_disk_use = bool(allow_disk_use)
        return self
