"""What a pipelined write call gives back: its handle, then its lazy result.

An :class:`_Op` is one write call of a :class:`~mongo_requests.pipeline.Pipeline`
(``insert_one``, ..., ``bulk_write``): it collects the replies of the messages
the call sent, then builds the call's :mod:`pymongo.results` value or keeps its
error (the pipeline reports it at the next sync point).  :func:`lazy_result`
wraps it in a subclass of the pymongo result class whose every property reads
the pipeline's replies up to that write first, at the first touch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pymongo.errors import PyMongoError

from .errors import check_write

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = ["lazy_result"]


class _Op:
    """One write call in a pipeline: its replies (one per message sent), then its result or error."""

    __slots__ = ("pipeline", "index", "remaining", "sealed", "replies", "finish", "build", "done", "value", "error")

    def __init__(
        self,
        pipeline: Pipeline,
        finish: Callable[[list[dict[str, Any]]], Any] | None,
        build: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self.pipeline = pipeline
        # Either finish(replies) for a write of several messages, or build(reply)
        # for a single one, whose reply is checked as the synchronous path checks it.
        self.build = build
        self.index = pipeline.count
        pipeline.count += 1
        self.remaining = 0
        self.sealed = False  # every message of the call is sent
        self.replies: list[dict[str, Any]] = []
        self.finish = finish
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None

    def add_reply(self, reply: dict[str, Any]) -> None:
        self.replies.append(reply)
        self.remaining -= 1
        if not self.remaining and self.sealed:
            self._complete()

    def seal(self) -> None:
        """Every message of the call is sent: it completes with its last reply."""
        self.sealed = True
        if not self.remaining and not self.done:
            self._complete()

    def _complete(self) -> None:
        self.done = True
        try:
            if self.build is not None:
                reply = self.replies[0]
                check_write(reply)
                self.value = self.build(reply)
            else:
                self.value = self.finish(self.replies)  # type: ignore[misc]
        except PyMongoError as exc:
            self.error = exc
            self.pipeline.errors.append((self.index, exc))
        self.replies = []

    def lose(self, exc: BaseException) -> None:
        self.done = True
        self.error = exc

    def result(self) -> Any:
        """The write's pymongo result, reading replies up to it first; raises the write's own error."""
        if not self.done:
            self.pipeline.resolve(self)
        if self.error is not None:
            raise self.error
        return self.value


# -- lazy results -----------------------------------------------------------------
_lazy_classes: dict[type, type] = {}


def _delegate(name: str) -> property:
    def get(self: Any) -> Any:
        return getattr(self._op.result(), name)

    return property(get, doc="Resolved at the first touch (reads the pipeline's replies up to this write).")


def _lazy_class(base: type) -> type:
    """A subclass of a :mod:`pymongo.results` class whose every property resolves the write first."""
    cls = _lazy_classes.get(base)
    if cls is None:
        names = {n for klass in base.__mro__ for n, v in vars(klass).items() if isinstance(v, property)}
        ns: dict[str, Any] = {name: _delegate(name) for name in names}
        ns["__slots__"] = ("_op",)
        ns["__init__"] = _lazy_init
        ns["__repr__"] = _lazy_repr
        ns["__eq__"] = lambda self, other: self._op.result() == other
        ns["__ne__"] = lambda self, other: self._op.result() != other
        ns["__hash__"] = None
        ns["__doc__"] = "A :class:`%s.%s` that resolves at the pipeline's next sync." % (base.__module__, base.__name__)
        cls = _lazy_classes[base] = type("Pipelined" + base.__name__, (base,), ns)
    return cls


def _lazy_init(self: Any, op: _Op) -> None:
    self._op = op


def _lazy_repr(self: Any) -> str:
    op = self._op
    if not op.done:
        return "<%s index=%d pending>" % (type(self).__name__, op.index)
    if op.error is not None:
        return "<%s index=%d failed: %s>" % (type(self).__name__, op.index, op.error)
    return repr(op.value)


def lazy_result(base: type, op: _Op) -> Any:
    """An instance of the lazy subclass of ``base`` (an UpdateResult, ...) for ``op``."""
    return _lazy_class(base)(op)
