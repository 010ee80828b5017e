"""Sending a collection's writes into the caller's pipeline (``start_request(pipeline=True)``).

:class:`~mongo_requests.writes.WriteMethods` inherits :class:`PipelinedWrites`.
A write method decides whether to pipeline (only while ``pipeline.OPEN`` is
non-empty) and what its result means (the ``build`` callback); this module
sends the write command(s) on the request's pinned socket through its
:class:`~mongo_requests.pipeline.Pipeline` and returns the lazy result.  See
:mod:`mongo_requests.pipeline`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pymongo.errors import InvalidOperation

from . import bulk as _bulk
from . import pipeline as _pipeline
from . import wire
from .bulk import Bulk
from .errors import check_command

if TYPE_CHECKING:
    from bson.codec_options import CodecOptions

    from .client import MongoClient
    from .writes import _Concern

__all__ = ["PipelinedWrites"]


class PipelinedWrites:
    """The pipelined half of :class:`~mongo_requests.writes.WriteMethods`."""

    _client: MongoClient
    _db_name: str
    codec_options: CodecOptions[Any]

    def _pipelined(
        self,
        kind: int,
        statement: bytes | dict[str, Any],
        concern: _Concern,
        bypass: bool | None,
        comment: Any,
        let: Any,
        build: Any,
        result_class: type,
    ) -> Any:
        """Send one write in the caller's pipeline; its lazy result (checked as :func:`run_one` checks)."""
        client = self._client
        cmd, seq = _bulk.one_statement(self, kind, statement, concern, bypass, comment, let)  # type: ignore[arg-type]
        # The write server's socket (a replica set's primary), pinned by the request.
        with client._socket() as sock:
            pipeline = sock.pipeline
            if pipeline is None or not pipeline.user:  # pragma: no cover - the pool attaches it at pin time
                raise InvalidOperation("this request's socket has no pipeline")
            op = pipeline.new_op(None, build)
            pipeline.send(sock, self._db_name, cmd, self.codec_options, seq, op, client._listeners)
        op.seal()
        return _pipeline.lazy_result(result_class, op)

    def _pipelined_bulk(self, batch: Bulk, concern: _Concern, build: Any, result_class: type) -> Any:
        """Send a bulk's commands into the caller's pipeline; its lazy result (BulkWriteError when touched).

        The commands do not wait for each other, so an ordered bulk's later
        commands run even after a write error in an earlier one (they are
        counted in the result); within one command ``ordered`` holds.
        """
        if batch.executed:
            raise InvalidOperation("Bulk operations can only be executed once.")
        batch.executed = True
        client = self._client
        with client._socket() as sock:
            pipeline = sock.pipeline
            if pipeline is None or not pipeline.user:  # pragma: no cover - the pool attaches it at pin time
                raise InvalidOperation("this request's socket has no pipeline")
            batches = batch._batches(sock.max_message_size - _bulk._MESSAGE_OVERHEAD, sock.max_write_batch_size)

            def merged(replies: list[dict[str, Any]]) -> Any:
                total = _bulk._new_result()
                for (kind, indexes), reply in zip(batches, replies, strict=True):
                    if reply.get("ok") != 1:
                        check_command(reply)
                    batch._merge(total, kind, indexes, reply)
                if total["writeErrors"]:
                    total["writeErrors"].sort(key=lambda error: error["index"])
                _bulk.raise_bulk_errors(total)
                return build(total)

            op = pipeline.new_op(merged)
            for kind, indexes in batches:
                cmd = _bulk.write_command(
                    self,  # type: ignore[arg-type]
                    kind,
                    concern,
                    batch.ordered,
                    batch.bypass,
                    batch.comment,
                    batch.let,
                )
                seq = (wire.encode_section(_bulk.SEQUENCE_NAMES[kind], batch._sequence(indexes)),)
                pipeline.send(sock, self._db_name, cmd, self.codec_options, seq, op, client._listeners)
            op.seal()
        return _pipeline.lazy_result(result_class, op)
