"""PyMongo 2's collection writes: ``insert``, ``update``, ``remove`` and ``save``.

:class:`~mongo_requests.writes.WriteMethods` inherits :class:`LegacyWrites`.
They take PyMongo 2's arguments (``safe=``, ``multi=``, ``check_keys=``,
``**kwargs`` write concern options) and return what PyMongo 2 returned, but
build their statements and send them through the same write path as
today's methods (:mod:`mongo_requests.bulk`, ``WriteMethods._resolve_wc``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bson.raw_bson import RawBSONDocument
from pymongo.errors import DuplicateKeyError, InvalidOperation, OperationFailure

from . import bulk as _bulk
from .bulk import Bulk, check_mapping
from .errors import raise_write_concern_error

if TYPE_CHECKING:
    from .writes import _Concern

__all__ = ["LegacyWrites"]


def _raise_legacy(result: Mapping[str, Any]) -> None:
    """PyMongo 2 raised OperationFailure (not BulkWriteError) for batch inserts."""
    errors = result.get("writeErrors")
    if errors:
        err = errors[0]
        cls = DuplicateKeyError if err.get("code") in (11000, 11001, 12582) else OperationFailure
        raise cls(err.get("errmsg", "write error"), err.get("code"), err)
    if result.get("writeConcernErrors"):
        raise_write_concern_error(result["writeConcernErrors"][0])


class LegacyWrites:
    """The PyMongo 2 half of :class:`~mongo_requests.writes.WriteMethods`; uses its write path."""

    if TYPE_CHECKING:

        def _resolve_wc(
            self,
            w: Any = None,
            safe: bool | None = None,
            write_concern: Any = None,
            session: Any = None,
            _legacy: bool = False,
            **kw: Any,
        ) -> _Concern: ...

        def _update_one_statement(
            self,
            stmt: dict[str, Any],
            concern: _Concern,
            bypass: bool | None,
            comment: Any,
            let: Any,
            legacy: bool = False,
        ) -> dict[str, Any] | None: ...

        def _delete(
            self, stmt: dict[str, Any], concern: _Concern, comment: Any = None, let: Any = None, legacy: bool = False
        ) -> dict[str, Any] | None: ...

    def insert(
        self,
        doc_or_docs: Any,
        manipulate: bool = True,
        safe: bool | None = None,
        check_keys: bool = True,
        continue_on_error: bool = False,
        **kwargs: Any,
    ) -> Any:
        """PyMongo 2's insert: one document or a list; returns the ``_id`` (or the list of them)."""
        concern = self._resolve_wc(safe=safe, _legacy=True, **kwargs)
        single = isinstance(doc_or_docs, (Mapping, RawBSONDocument))
        docs = [doc_or_docs] if single else list(doc_or_docs) if isinstance(doc_or_docs, Iterable) else None
        if not docs:
            if docs is None:
                check_mapping(doc_or_docs)
            raise InvalidOperation("cannot do an empty bulk insert")
        batch = Bulk(self, not continue_on_error, legacy_check=check_keys)  # type: ignore[arg-type]
        for doc in docs:
            batch.add_insert(doc)
        result = batch.execute(concern)
        _raise_legacy(result)
        ids = [d.get("_id") for d in docs]
        return ids[0] if single else ids

    def update(
        self,
        spec: Mapping[str, Any],
        document: Mapping[str, Any],
        upsert: bool = False,
        manipulate: bool = False,
        safe: bool | None = None,
        multi: bool = False,
        check_keys: bool = True,
        **kwargs: Any,
    ) -> dict[str, Any] | None:
        """PyMongo 2's update: ``$`` operators, or a whole replacement document.

        Returns the server's answer (``n``, ``updatedExisting``, ``upserted``)
        for acknowledged writes, None for ``safe=False`` / ``w=0``.
        """
        check_mapping(spec, "spec")
        check_mapping(document, "document")
        concern = self._resolve_wc(safe=safe, _legacy=True, **kwargs)
        first = next(iter(document), None)
        if not (isinstance(first, str) and first.startswith("$")):
            if multi:
                raise InvalidOperation("multi=True only works with $ operators")
            if check_keys:
                _bulk.check_keys_legacy(document)
        stmt = _bulk.update_statement(spec, document, bool(multi), bool(upsert))
        return self._update_one_statement(stmt, concern, None, None, None, legacy=True)

    def remove(
        self, spec_or_id: Any = None, safe: bool | None = None, multi: bool = True, **kwargs: Any
    ) -> dict[str, Any] | None:
        """PyMongo 2's remove: every match (or the first, with ``multi=False``)."""
        if spec_or_id is None:
            spec_or_id = {}
        elif not isinstance(spec_or_id, Mapping):
            spec_or_id = {"_id": spec_or_id}
        concern = self._resolve_wc(safe=safe, _legacy=True, **kwargs)
        return self._delete(_bulk.delete_statement(spec_or_id, 0 if multi else 1), concern, legacy=True)

    def save(
        self, to_save: Any, manipulate: bool = True, safe: bool | None = None, check_keys: bool = True, **kwargs: Any
    ) -> Any:
        """PyMongo 2's save: insert a new document, or replace the one with its ``_id``."""
        check_mapping(to_save, "to_save")
        if "_id" not in to_save:
            return self.insert(to_save, manipulate, safe, check_keys, **kwargs)
        concern = self._resolve_wc(safe=safe, _legacy=True, **kwargs)
        if check_keys:
            _bulk.check_keys_legacy(to_save)
        stmt = _bulk.update_statement({"_id": to_save["_id"]}, to_save, False, True)
        self._update_one_statement(stmt, concern, None, None, None, legacy=True)
        return to_save["_id"]
