"""Change streams, per the MongoDB *Change Streams* specification: ``watch()`` and resuming.

``Collection.watch()``, ``Database.watch()`` and ``MongoClient.watch()``
open an ``aggregate`` whose first stage is ``$changeStream`` and return a
:class:`ChangeStream`.  Iterating it runs ``getMore`` on the server that
opened the cursor; the server holds each ``getMore`` up to
``max_await_time_ms`` when nothing has changed, and under gevent the wait is
a cooperative socket read, so other greenlets run meanwhile.
:meth:`ChangeStream.try_next` runs at most one ``getMore`` and returns None
when nothing came.

The stream remembers a resume token: the ``_id`` of the last change it
returned, or the ``postBatchResumeToken`` of a batch it has exhausted.
After a resumable error (a network error, a primary that stepped down, a
killed cursor, or anything the server labels ``ResumableChangeStreamError``)
it opens a new cursor that resumes right after that token (``resumeAfter``,
or ``startAfter`` until the first change of a ``start_after`` stream), on a
newly selected server, once per error.  Before any token exists it resumes
at the operation time the first ``aggregate`` reported.  So a change is
neither missed nor returned twice across a stepdown or a dropped socket.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bson.timestamp import Timestamp

from .client_session import ClientSession, bound, check_session
from .errors import ConnectionFailure, CursorNotFound, InvalidOperation, OperationFailure, PyMongoError

if TYPE_CHECKING:
    from bson.codec_options import CodecOptions

    from .client import MongoClient

__all__ = ["ChangeStream", "open_change_stream"]

# Codes after which a change stream resumes even without the server's label
# (servers before 4.4 and errors that never reach the label).
_RESUMABLE_CODES = frozenset(
    (6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 63, 150, 13388, 234, 133, 43)
)
_FULL_DOCUMENT = (None, "default", "updateLookup", "whenAvailable", "required")


def _resumable(exc: PyMongoError) -> bool:
    """Whether a ``getMore`` error lets the stream resume on a new cursor."""
    if isinstance(exc, ConnectionFailure):
        return True
    if isinstance(exc, CursorNotFound):
        return True
    if isinstance(exc, OperationFailure):
        if exc.has_error_label("ResumableChangeStreamError"):
            return True
        labels = (exc.details or {}).get("errorLabels")
        if labels is not None:
            # A 4.4+ server says what may be resumed; trust it.
            return "ResumableChangeStreamError" in labels
        return exc.code in _RESUMABLE_CODES
    return False


class ChangeStream:
    """An iterator over change events; see :meth:`Collection.watch`.

    Use it in a ``with`` block, or call :meth:`close`.
    """

    def __init__(
        self,
        client: MongoClient,
        dbname: str,
        target: str | int,
        pipeline: Sequence[Mapping[str, Any]] | None,
        codec_options: CodecOptions[Any],
        read_preference: Any,
        full_document: str | None = None,
        full_document_before_change: str | None = None,
        resume_after: Mapping[str, Any] | None = None,
        start_after: Mapping[str, Any] | None = None,
        start_at_operation_time: Timestamp | None = None,
        max_await_time_ms: int | None = None,
        batch_size: int | None = None,
        collation: Any = None,
        comment: Any = None,
        session: ClientSession | None = None,
        show_expanded_events: bool | None = None,
        all_changes_for_cluster: bool = False,
    ) -> None:
        if pipeline is None:
            pipeline = []
        if not isinstance(pipeline, (list, tuple)):
            raise TypeError("pipeline must be a list")
        if full_document not in _FULL_DOCUMENT:
            raise ValueError("full_document must be one of %r" % (_FULL_DOCUMENT[1:],))
        if start_at_operation_time is not None and not isinstance(start_at_operation_time, Timestamp):
            raise TypeError("start_at_operation_time must be an instance of bson.timestamp.Timestamp")
        for name, value in (("max_await_time_ms", max_await_time_ms), ("batch_size", batch_size)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise TypeError("%s must be a non-negative integer" % (name,))
        if session is not None:
            check_session(session, client)
        self._client = client
        self._dbname = dbname
        self._target = target
        self._pipeline = list(pipeline)
        self._codec = codec_options
        self._read_pref = read_preference
        self._session = session
        self._max_await = max_await_time_ms
        self._batch_size = batch_size
        self._comment = comment
        self._collation = collation
        stage: dict[str, Any] = {}
        if full_document is not None:
            stage["fullDocument"] = full_document
        if full_document_before_change is not None:
            stage["fullDocumentBeforeChange"] = full_document_before_change
        if all_changes_for_cluster:
            stage["allChangesForCluster"] = True
        if show_expanded_events is not None:
            stage["showExpandedEvents"] = show_expanded_events
        self._stage = stage
        self._resume_token: Mapping[str, Any] | None = copy.deepcopy(start_after or resume_after)
        self._uses_start_after = start_after is not None
        self._start_at = start_at_operation_time
        self._returned_any = False
        self._batch: deque[Any] = deque()
        self._cursor_id = 0
        self._address: tuple[str, int] | None = None
        self._ns = ""
        self._post_batch_token: Mapping[str, Any] | None = None
        self._closed = False
        self._open()

    # -- the cursor ---------------------------------------------------------
    def _aggregate_command(self) -> dict[str, Any]:
        stage = dict(self._stage)
        if self._resume_token is not None:
            if self._uses_start_after and not self._returned_any:
                stage["startAfter"] = self._resume_token
            else:
                stage["resumeAfter"] = self._resume_token
        elif self._start_at is not None:
            stage["startAtOperationTime"] = self._start_at
        cmd: dict[str, Any] = {"aggregate": self._target, "pipeline": [{"$changeStream": stage}, *self._pipeline]}
        cmd["cursor"] = {"batchSize": self._batch_size} if self._batch_size is not None else {}
        if self._collation is not None:
            cmd["collation"] = getattr(self._collation, "document", self._collation)
        if self._comment is not None:
            cmd["comment"] = self._comment
        return cmd

    def _at(self, address: tuple[str, int]) -> None:
        self._address = address

    def _open(self) -> None:
        """Run the ``aggregate`` (first open or resume) and take its first batch."""
        with bound(self._session):
            reply = self._client._command(
                self._dbname,
                self._aggregate_command(),
                self._codec,
                read_preference=self._read_pref,
                on_server=self._at,
            )
        cursor = reply["cursor"]
        self._ns = cursor.get("ns", "")
        self._cursor_id = cursor.get("id", 0)
        if self._resume_token is None and self._start_at is None and not self._returned_any:
            # Nothing to resume from yet: the specification resumes at the
            # operation time of the first aggregate.
            self._start_at = reply.get("operationTime")
        self._take_batch(cursor.get("firstBatch", ()), cursor.get("postBatchResumeToken"))

    def _take_batch(self, batch: Sequence[Any], post_batch_token: Mapping[str, Any] | None) -> None:
        self._batch.extend(batch)
        self._post_batch_token = post_batch_token
        if not self._batch and post_batch_token is not None:
            self._resume_token = post_batch_token

    def _get_more(self) -> None:
        db, _, coll = self._ns.partition(".")
        cmd: dict[str, Any] = {"getMore": self._cursor_id, "collection": coll}
        if self._batch_size:
            cmd["batchSize"] = self._batch_size
        if self._max_await is not None:
            cmd["maxTimeMS"] = self._max_await
        with bound(self._session):
            reply = self._client._command(db, cmd, self._codec, address=self._address)
        cursor = reply["cursor"]
        self._cursor_id = cursor.get("id", 0)
        self._take_batch(cursor.get("nextBatch", ()), cursor.get("postBatchResumeToken"))

    def _resume(self) -> None:
        """Close the broken cursor (best effort) and open a new one after the resume token."""
        self._kill_cursor()
        self._batch.clear()
        self._open()

    def _kill_cursor(self) -> None:
        cursor_id, self._cursor_id = self._cursor_id, 0
        if cursor_id and self._address is not None:
            self._client._queue_kill(self._ns, cursor_id, self._address)

    # -- iteration ----------------------------------------------------------
    def try_next(self) -> Any:
        """The next change, or None if none arrived within one ``getMore`` (at most ``max_await_time_ms``)."""
        if self._closed:
            raise StopIteration
        if not self._batch:
            if self._cursor_id == 0:
                # The server closed the stream (the collection was dropped...).
                self.close()
                raise StopIteration
            try:
                self._get_more()
            except PyMongoError as exc:
                if not _resumable(exc):
                    self.close()
                    raise
                self._resume()
        if not self._batch:
            return None
        change = self._batch.popleft()
        token = change.get("_id") if isinstance(change, Mapping) else None
        if token is None:
            self.close()
            raise InvalidOperation("Cannot provide resume functionality when the resume token is missing.")
        self._returned_any = True
        if not self._batch and self._post_batch_token is not None:
            self._resume_token = self._post_batch_token
        else:
            self._resume_token = token
        return change

    def next(self) -> Any:
        """The next change, waiting for one as long as it takes."""
        while True:
            change = self.try_next()
            if change is not None:
                return change

    __next__ = next

    def __iter__(self) -> ChangeStream:
        return self

    @property
    def alive(self) -> bool:
        """False once the stream is closed."""
        return not self._closed

    @property
    def resume_token(self) -> Mapping[str, Any] | None:
        """The token to resume after the last change returned (``resume_after=`` of a new stream)."""
        return copy.deepcopy(self._resume_token)

    def close(self) -> None:
        """Close the stream and kill its server cursor."""
        if self._closed:
            return
        self._closed = True
        self._batch.clear()
        self._kill_cursor()

    def __enter__(self) -> ChangeStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        # Queued, never sent from a finalizer: the client's next operation sends it.
        if self.__dict__.get("_cursor_id"):
            self._kill_cursor()


def open_change_stream(
    owner: Any,
    dbname: str,
    target: str | int,
    pipeline: Any,
    kwargs: dict[str, Any],
    all_changes_for_cluster: bool = False,
) -> ChangeStream:
    """``watch()`` of a collection, database or client.

    ``kwargs`` are PyMongo's ``watch`` keywords: ``full_document``,
    ``resume_after``, ``start_after``, ``start_at_operation_time``,
    ``max_await_time_ms``, ``batch_size``, ``collation``, ``comment``,
    ``session``, ``full_document_before_change``, ``show_expanded_events``.
    """
    known = {
        "full_document",
        "full_document_before_change",
        "resume_after",
        "start_after",
        "start_at_operation_time",
        "max_await_time_ms",
        "batch_size",
        "collation",
        "comment",
        "session",
        "show_expanded_events",
    }
    unknown = set(kwargs) - known
    if unknown:
        raise TypeError("watch() got unexpected keyword argument(s): %s" % ", ".join(sorted(unknown)))
    client = getattr(owner, "_client", None)
    if client is None:
        client = owner  # the client's own watch()
    read_preference = getattr(owner, "read_preference", None)
    if read_preference is not None and not read_preference.mode:
        read_preference = None  # primary: the client's hot path
    return ChangeStream(
        client,
        dbname,
        target,
        pipeline,
        owner.codec_options,
        read_preference,
        all_changes_for_cluster=all_changes_for_cluster,
        **kwargs,
    )
