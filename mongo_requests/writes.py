"""A collection's writes, today's spelling and PyMongo 2's, all through :mod:`mongo_requests.bulk`.

``insert_one``, ``update_*``, ``replace_one``, ``delete_*``, ``insert_many``,
``bulk_write`` and PyMongo 2's ``insert``/``update``/``remove``/``save`` and
bulk builders build statements with the same functions and send them with
the same code.  Options are sent only when given, as PyMongo 4 sends them;
an unknown keyword is a TypeError.  Every write also takes ``w=``,
``safe=`` (PyMongo 2's ``safe=False`` is ``w=0``), ``j=``, ``wtimeout=`` or
``write_concern=``.

PyMongo 2's ``insert``/``update``/``remove``/``save`` are in
:mod:`mongo_requests.writes_legacy`, and the sending of pipelined writes in
:mod:`mongo_requests.writes_pipelined`; :class:`WriteMethods` inherits both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bson.raw_bson import RawBSONDocument
from pymongo.errors import ConfigurationError
from pymongo.results import BulkWriteResult, DeleteResult, InsertManyResult, InsertOneResult, UpdateResult
from pymongo.write_concern import WriteConcern

from . import bulk as _bulk
from . import objectids as _objectids
from . import precoded as _precoded
from .bulk import DELETE, INSERT, UPDATE, Bulk, check_mapping, run_one
from .bulk_builder import BulkOperationBuilder
from .client_session import in_session, with_session
from .errors import check_write
from .hot_results import new_update_result
from .pipeline import OPEN as _OPEN_PIPELINES
from .writes_legacy import LegacyWrites
from .writes_pipelined import PipelinedWrites

if TYPE_CHECKING:
    from bson.codec_options import CodecOptions

    from .client import MongoClient

__all__ = ["WriteMethods"]

_UNACK = WriteConcern(w=0)
_WC_KEYS = frozenset(["j", "wtimeout", "fsync", "wtimeoutMS"])


class _Concern:
    """A write concern's command document and acknowledged flag, computed once.

    ``WriteConcern.document`` is a property that copies a dict on every
    access; a write reads it up to three times, on the hot path.
    """

    __slots__ = ("document", "acknowledged")

    def __init__(self, wc: WriteConcern) -> None:
        self.document = wc.document
        self.acknowledged = wc.acknowledged


_UNACK_CONCERN = _Concern(_UNACK)


def _update_result(reply: dict[str, Any] | None, legacy: bool = False) -> dict[str, Any] | None:
    """Shape an update reply as PyMongo 4's ``UpdateResult.raw_result`` (and PyMongo 2) give it."""
    if reply is None:
        return None
    upserted = reply.get("upserted")
    if upserted:
        reply["upserted"] = upserted[0]["_id"]
        reply["updatedExisting"] = False
    else:
        reply["updatedExisting"] = bool(reply.get("n"))
    if legacy:
        reply.setdefault("err", None)
    return reply


def _check_bool(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise TypeError("%s must be True or False" % (name,))


class WriteMethods(PipelinedWrites, LegacyWrites):
    """The write half of :class:`~mongo_requests.collection.Collection`."""

    _client: MongoClient
    _db_name: str
    _name: str
    codec_options: CodecOptions[Any]
    write_concern: WriteConcern
    _concern: _Concern
    # Encoded command bodies of single-statement writes with the collection's
    # write concern (_concern), by kind (bulk.run_one, update_one, insert_one).
    _writers: dict[int, Any]

    @property
    def name(self) -> str:  # pragma: no cover - Collection's
        raise NotImplementedError

    def _set_write_concern(self, wc: WriteConcern) -> None:
        self.write_concern = wc
        self._writers = {}
        # Precomputed for the hot path: most writes use the default.
        self._concern = _Concern(wc)

    # -- write concern ------------------------------------------------------
    def _resolve_wc(
        self,
        w: Any = None,
        safe: bool | None = None,
        write_concern: WriteConcern | None = None,
        session: Any = None,
        _legacy: bool = False,
        **kw: Any,
    ) -> _Concern:
        """The write concern for one call, from ``write_concern``, ``w``, ``safe``, ``j``...

        PyMongo 2 rules: ``safe=False`` means ``w=0``; ``safe=True``, or any of
        ``j``, ``wtimeout``, ``fsync``, means acknowledged.  An unknown
        keyword is a TypeError (as a PyMongo 4 method's), or for PyMongo 2's
        methods, which took ``**kwargs``, a ConfigurationError.
        """
        if session is not None:
            # Only PyMongo 2's methods get here (insert, update, remove, save,
            # find_and_modify): the others take session= in with_session.
            raise ConfigurationError(
                "PyMongo 2's insert/update/remove/save/find_and_modify take no session; "
                "use insert_one, update_one, find_one_and_update... with session="
            )
        unknown = set(kw) - _WC_KEYS
        if unknown:
            if _legacy:
                raise ConfigurationError("unknown write option(s): %s" % ", ".join(sorted(unknown)))
            raise TypeError("unexpected keyword argument(s): %s" % ", ".join(sorted(unknown)))
        if write_concern is not None:
            if not isinstance(write_concern, WriteConcern):
                raise TypeError("write_concern must be a pymongo.write_concern.WriteConcern")
            return _Concern(write_concern)
        extra = {k: v for k, v in kw.items() if v is not None}
        if "wtimeoutMS" in extra:
            extra["wtimeout"] = extra.pop("wtimeoutMS")
        if w is None and safe is None and not extra:
            return self._concern
        if w is None:
            if safe is False and not extra:
                return _UNACK_CONCERN
            w = self.write_concern.document.get("w", 1)
            if w == 0:
                w = 1
        elif safe is False and w != 0:
            raise ConfigurationError("safe=False contradicts w=%r" % (w,))
        try:
            return _Concern(WriteConcern(w=w, **extra))
        except Exception as exc:
            raise ConfigurationError("invalid write concern: %s" % (exc,)) from exc

    # -- inserts ------------------------------------------------------------
    def insert_one(
        self, document: Any, bypass_document_validation: bool | None = None, comment: Any = None, **wc: Any
    ) -> InsertOneResult:
        """Insert one document; returns :class:`~pymongo.results.InsertOneResult`.

        :param document: the document; it gets an ``_id`` if it has none.
        :param bypass_document_validation: sent when given (True or False).
        :param comment: attached to the command (server logs, profiler).
        :param session: a :class:`~mongo_requests.client_session.ClientSession` (in ``wc``).
        """
        if wc and "session" in wc:  # with_session, inlined: no wrapper on the hot path
            return in_session(  # type: ignore[no-any-return]
                wc.pop("session"),
                self,
                self.insert_one,
                document,
                bypass_document_validation,
                comment,
                **wc,
            )
        if (
            not wc
            and not _OPEN_PIPELINES
            and document.__class__ is dict
            and bypass_document_validation is None
            and comment is None
            and self._concern.acknowledged
        ):
            # The hot path: a dict, no option, the collection's write concern
            # if acknowledged (pre-encoded in the writer's body).  The same
            # _id, command, sequence, checks and result as the general path.
            writer = self._writers.get(INSERT)
            if writer.__class__ is not _precoded.InsertOne:
                writer = self._writers[INSERT] = _precoded.InsertOne(
                    self._client, self._db_name, self._name, self.codec_options, self._concern.document
                )
            if "_id" not in document:
                document["_id"] = _objectids.new()
            reply = writer.run(document)
            if reply.get("ok") != 1 or "writeErrors" in reply or "writeConcernError" in reply:
                check_write(reply)
            return InsertOneResult(document["_id"], True)
        concern = self._resolve_wc(**wc) if wc else self._concern
        data = _bulk.encode_insert(self.codec_options, document, self._client._max_bson_size())
        _id = document["_id"] if not isinstance(document, RawBSONDocument) else document.get("_id")
        if _OPEN_PIPELINES and concern.acknowledged and self._client._pipelining():
            return self._pipelined(  # type: ignore[no-any-return]
                INSERT,
                data,
                concern,
                bypass_document_validation,
                comment,
                None,
                lambda reply: InsertOneResult(_id, True),
                InsertOneResult,
            )
        general = run_one(self, INSERT, data, concern, bypass_document_validation, comment)  # type: ignore[arg-type]
        if general is not None:
            check_write(general)
        return InsertOneResult(_id, concern.acknowledged)

    @with_session
    def insert_many(
        self,
        documents: Iterable[Any],
        ordered: bool = True,
        bypass_document_validation: bool | None = None,
        comment: Any = None,
        **wc: Any,
    ) -> InsertManyResult:
        """Insert documents in as few messages as the server's limits allow.

        Batches are cut at ``maxWriteBatchSize`` documents or
        ``maxMessageSizeBytes`` bytes.  An error raises
        :class:`~pymongo.errors.BulkWriteError` whose ``details`` say what was
        inserted; with ``ordered=True`` the batches after the failing one are
        not sent.
        """
        if isinstance(documents, (Mapping, RawBSONDocument)) or not isinstance(documents, Iterable):
            raise TypeError("documents must be a non-empty list")
        concern = self._resolve_wc(**wc) if wc else self._concern
        batch = Bulk(self, ordered, bypass_document_validation, comment)  # type: ignore[arg-type]
        ids = batch.add_inserts(documents)
        if not ids:
            raise TypeError("documents must be a non-empty list")
        if _OPEN_PIPELINES and concern.acknowledged and self._client._pipelining():
            return self._pipelined_bulk(  # type: ignore[no-any-return]
                batch, concern, lambda total: InsertManyResult(ids, True), InsertManyResult
            )
        result = batch.execute(concern)
        if concern.acknowledged:
            _bulk.raise_bulk_errors(result)
        return InsertManyResult(ids, concern.acknowledged)

    # -- updates ------------------------------------------------------------
    def _update_one_statement(
        self,
        stmt: dict[str, Any],
        concern: _Concern,
        bypass: bool | None,
        comment: Any,
        let: Any,
        legacy: bool = False,
    ) -> dict[str, Any] | None:
        if let is not None:
            check_mapping(let, "let")
        reply = run_one(self, UPDATE, stmt, concern, bypass, comment, let)  # type: ignore[arg-type]
        if reply is None:
            return None
        check_write(reply)
        return _update_result(reply, legacy)

    def update_one(
        self,
        filter: Mapping[str, Any],
        update: Any,
        upsert: bool = False,
        bypass_document_validation: bool | None = None,
        collation: Any = None,
        array_filters: list[Mapping[str, Any]] | None = None,
        hint: Any = None,
        let: Mapping[str, Any] | None = None,
        sort: Mapping[str, Any] | None = None,
        comment: Any = None,
        **wc: Any,
    ) -> UpdateResult:
        """Update the first matching document with ``$`` operators (or a pipeline).

        The options are PyMongo 4's, sent only when given.
        """
        if wc and "session" in wc:  # with_session, inlined: no wrapper on the hot path
            return in_session(  # type: ignore[no-any-return]
                wc.pop("session"),
                self,
                self.update_one,
                filter,
                update,
                upsert,
                bypass_document_validation,
                collation,
                array_filters,
                hint,
                let,
                sort,
                comment,
                **wc,
            )
        if update.__class__ is dict and update:
            # check_update(), its common case inline: a dict of $ operators.
            first = next(iter(update))
            if first.__class__ is not str or first[:1] != "$":
                _bulk.check_update(update)  # raises, as for any other update
        else:
            _bulk.check_update(update)
        if upsert.__class__ is not bool:
            _check_bool("upsert", upsert)
        if (
            not wc
            and not _OPEN_PIPELINES
            and self._concern.acknowledged
            and filter.__class__ is dict
            and bypass_document_validation is None
            and collation is None
            and array_filters is None
            and hint is None
            and let is None
            and sort is None
            and comment is None
        ):
            # The hot path: no option, the collection's write concern if
            # acknowledged (pre-encoded in the writer), a dict filter.  The same
            # statement, command, checks and result as the general path below,
            # without its calls.
            writer = self._writers.get(UPDATE)
            if writer.__class__ is not _precoded.UpdateOne:
                writer = self._writers[UPDATE] = _precoded.UpdateOne(
                    self._client, self._db_name, self._name, self.codec_options, self._concern.document
                )
            reply = writer.run({"q": filter, "u": update, "multi": False, "upsert": upsert})
            if reply.get("ok") != 1 or "writeErrors" in reply or "writeConcernError" in reply:
                check_write(reply)
            # _update_result(), inline.
            upserted = reply.get("upserted")
            if upserted:
                reply["upserted"] = upserted[0]["_id"]
                reply["updatedExisting"] = False
            else:
                reply["updatedExisting"] = bool(reply.get("n"))
            return new_update_result(reply)
        concern = self._resolve_wc(**wc) if wc else self._concern
        if collation is not None:
            collation = _bulk._collation(collation)
        stmt = _bulk.update_statement(filter, update, False, upsert, collation, array_filters, hint, sort)
        if _OPEN_PIPELINES and concern.acknowledged and self._client._pipelining():
            return self._pipelined_update(stmt, concern, bypass_document_validation, comment, let)
        general = self._update_one_statement(stmt, concern, bypass_document_validation, comment, let)
        return UpdateResult(general, concern.acknowledged)

    @with_session
    def update_many(
        self,
        filter: Mapping[str, Any],
        update: Any,
        upsert: bool = False,
        bypass_document_validation: bool | None = None,
        collation: Any = None,
        array_filters: list[Mapping[str, Any]] | None = None,
        hint: Any = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
        **wc: Any,
    ) -> UpdateResult:
        """Update every matching document."""
        _bulk.check_update(update)
        if upsert.__class__ is not bool:
            _check_bool("upsert", upsert)
        concern = self._resolve_wc(**wc) if wc else self._concern
        if collation is not None:
            collation = _bulk._collation(collation)
        stmt = _bulk.update_statement(filter, update, True, upsert, collation, array_filters, hint)
        if _OPEN_PIPELINES and concern.acknowledged and self._client._pipelining():
            return self._pipelined_update(stmt, concern, bypass_document_validation, comment, let)
        reply = self._update_one_statement(stmt, concern, bypass_document_validation, comment, let)
        return UpdateResult(reply, concern.acknowledged)

    def replace_one(
        self,
        filter: Mapping[str, Any],
        replacement: Mapping[str, Any],
        upsert: bool = False,
        bypass_document_validation: bool | None = None,
        collation: Any = None,
        hint: Any = None,
        let: Mapping[str, Any] | None = None,
        sort: Mapping[str, Any] | None = None,
        comment: Any = None,
        **wc: Any,
    ) -> UpdateResult:
        """Replace the first matching document."""
        if wc and "session" in wc:  # with_session, inlined: no wrapper on the hot path
            return in_session(  # type: ignore[no-any-return]
                wc.pop("session"),
                self,
                self.replace_one,
                filter,
                replacement,
                upsert,
                bypass_document_validation,
                collation,
                hint,
                let,
                sort,
                comment,
                **wc,
            )
        _bulk.check_replacement(replacement)
        if upsert.__class__ is not bool:
            _check_bool("upsert", upsert)
        concern = self._resolve_wc(**wc) if wc else self._concern
        if collation is not None:
            collation = _bulk._collation(collation)
        stmt = _bulk.update_statement(filter, replacement, False, upsert, collation, None, hint, sort)
        if _OPEN_PIPELINES and concern.acknowledged and self._client._pipelining():
            return self._pipelined_update(stmt, concern, bypass_document_validation, comment, let)
        reply = self._update_one_statement(stmt, concern, bypass_document_validation, comment, let)
        return UpdateResult(reply, concern.acknowledged)

    # -- deletes ------------------------------------------------------------
    def _delete(
        self, stmt: dict[str, Any], concern: _Concern, comment: Any = None, let: Any = None, legacy: bool = False
    ) -> dict[str, Any] | None:
        if let is not None:
            check_mapping(let, "let")
        reply = run_one(self, DELETE, stmt, concern, None, comment, let)  # type: ignore[arg-type]
        if reply is not None:
            check_write(reply)
            if legacy:
                reply.setdefault("err", None)
        return reply

    def delete_one(
        self,
        filter: Mapping[str, Any],
        collation: Any = None,
        hint: Any = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
        **wc: Any,
    ) -> DeleteResult:
        """Delete the first matching document."""
        if wc and "session" in wc:  # with_session, inlined: no wrapper on the hot path
            return in_session(  # type: ignore[no-any-return]
                wc.pop("session"),
                self,
                self.delete_one,
                filter,
                collation,
                hint,
                let,
                comment,
                **wc,
            )
        concern = self._resolve_wc(**wc) if wc else self._concern
        if collation is not None:
            collation = _bulk._collation(collation)
        stmt = _bulk.delete_statement(filter, 1, collation, hint)
        if _OPEN_PIPELINES and concern.acknowledged and self._client._pipelining():
            return self._pipelined_delete(stmt, concern, comment, let)
        reply = self._delete(stmt, concern, comment, let)
        # For w=0, whose reply nobody reads, the raw_result PyMongo 4 gives.
        return DeleteResult(reply if reply is not None else {"ok": 1}, concern.acknowledged)

    @with_session
    def delete_many(
        self,
        filter: Mapping[str, Any],
        collation: Any = None,
        hint: Any = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
        **wc: Any,
    ) -> DeleteResult:
        """Delete every matching document."""
        concern = self._resolve_wc(**wc) if wc else self._concern
        if collation is not None:
            collation = _bulk._collation(collation)
        stmt = _bulk.delete_statement(filter, 0, collation, hint)
        if _OPEN_PIPELINES and concern.acknowledged and self._client._pipelining():
            return self._pipelined_delete(stmt, concern, comment, let)
        reply = self._delete(stmt, concern, comment, let)
        return DeleteResult(reply if reply is not None else {"ok": 1}, concern.acknowledged)

    # -- bulk ---------------------------------------------------------------
    @with_session
    def bulk_write(
        self,
        requests: Iterable[Any],
        ordered: bool = True,
        bypass_document_validation: bool | None = None,
        comment: Any = None,
        let: Mapping[str, Any] | None = None,
        **wc: Any,
    ) -> BulkWriteResult:
        """Send a list of :mod:`pymongo.operations` models (``InsertOne``, ``UpdateOne``...).

        Returns :class:`~pymongo.results.BulkWriteResult`; write errors raise
        :class:`~pymongo.errors.BulkWriteError` whose ``details`` hold the
        partial result.  ``w=0`` works, and inside a request the writes are
        applied before the caller's next read.
        """
        concern = self._resolve_wc(**wc) if wc else self._concern
        if _OPEN_PIPELINES and concern.acknowledged and self._client._pipelining():
            batch = _bulk.bulk_of(self, requests, ordered, bypass_document_validation, comment, let)  # type: ignore[arg-type]
            return self._pipelined_bulk(  # type: ignore[no-any-return]
                batch, concern, lambda total: BulkWriteResult(total, True), BulkWriteResult
            )
        return _bulk.bulk_write(
            self,  # type: ignore[arg-type]
            requests,
            ordered,
            bypass_document_validation,
            comment,
            let,
            concern,
        )

    def initialize_ordered_bulk_op(self, bypass_document_validation: bool = False) -> BulkOperationBuilder:
        """PyMongo 2's ordered bulk builder (on top of :meth:`bulk_write`'s code)."""
        return BulkOperationBuilder(self, True, bypass_document_validation)  # type: ignore[arg-type]

    def initialize_unordered_bulk_op(self, bypass_document_validation: bool = False) -> BulkOperationBuilder:
        """PyMongo 2's unordered bulk builder."""
        return BulkOperationBuilder(self, False, bypass_document_validation)  # type: ignore[arg-type]

    # -- pipelines (start_request(pipeline=True); sent by writes_pipelined; see mongo_requests.pipeline) --
    def _pipelined_update(
        self, stmt: dict[str, Any], concern: _Concern, bypass: bool | None, comment: Any, let: Any
    ) -> UpdateResult:
        if let is not None:
            check_mapping(let, "let")
        return self._pipelined(  # type: ignore[no-any-return]
            UPDATE,
            stmt,
            concern,
            bypass,
            comment,
            let,
            lambda reply: UpdateResult(_update_result(reply), True),
            UpdateResult,
        )

    def _pipelined_delete(self, stmt: dict[str, Any], concern: _Concern, comment: Any, let: Any) -> DeleteResult:
        if let is not None:
            check_mapping(let, "let")
        return self._pipelined(  # type: ignore[no-any-return]
            DELETE, stmt, concern, None, comment, let, lambda reply: DeleteResult(reply, True), DeleteResult
        )
