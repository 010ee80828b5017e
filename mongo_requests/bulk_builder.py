"""PyMongo 2's bulk builders (``initialize_ordered_bulk_op()``...), on top of :class:`~mongo_requests.bulk.Bulk`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .bulk import Bulk, check_mapping, raise_bulk_errors

if TYPE_CHECKING:
    from pymongo.write_concern import WriteConcern

    from .collection import Collection

__all__ = ["BulkOperationBuilder"]


class _Selection:
    """One ``find(...)`` of a PyMongo 2 bulk builder: ``.update()``, ``.remove_one()``..."""

    __slots__ = ("_bulk", "_selector", "_upsert", "_collation", "_hint")

    def __init__(self, bulk: Bulk, selector: Mapping[str, Any], collation: Any = None) -> None:
        self._bulk = bulk
        self._selector = selector
        self._upsert = False
        self._collation = collation
        self._hint: Any = None

    def upsert(self) -> _Selection:
        """Insert a document when nothing matches."""
        self._upsert = True
        return self

    def hint(self, index: Any) -> _Selection:
        """Use this index."""
        self._hint = index
        return self

    def update_one(self, update: Any) -> None:
        """Update the first match."""
        self._bulk.add_update(self._selector, update, False, self._upsert, self._collation, hint=self._hint)

    def update(self, update: Any) -> None:
        """Update every match."""
        self._bulk.add_update(self._selector, update, True, self._upsert, self._collation, hint=self._hint)

    def replace_one(self, replacement: Any) -> None:
        """Replace the first match."""
        self._bulk.add_replace(self._selector, replacement, self._upsert, self._collation, self._hint)

    def delete_one(self) -> None:
        """Delete the first match."""
        self._bulk.add_delete(self._selector, 1, self._collation, self._hint)

    def delete(self) -> None:
        """Delete every match."""
        self._bulk.add_delete(self._selector, 0, self._collation, self._hint)

    remove_one = delete_one  # PyMongo 2
    remove = delete


class BulkOperationBuilder:
    """PyMongo 2's ``initialize_ordered_bulk_op()`` / ``initialize_unordered_bulk_op()``.

    ``bulk.insert(doc)``, ``bulk.find(spec).upsert().update_one(...)``,
    ``bulk.find(spec).remove()``..., then ``bulk.execute()``, which returns
    the bulk API result dict (``nInserted``, ``nMatched``, ``upserted``...)
    and raises :class:`~pymongo.errors.BulkWriteError` for write errors.
    """

    def __init__(self, collection: Collection, ordered: bool = True, bypass_document_validation: bool = False) -> None:
        self._bulk = Bulk(collection, ordered, bypass_document_validation or None)

    def find(self, selector: Mapping[str, Any], collation: Any = None) -> _Selection:
        """Select documents for the update or remove that follows."""
        check_mapping(selector, "selector")
        return _Selection(self._bulk, selector, collation)

    def insert(self, document: Any) -> None:
        """Queue an insert."""
        self._bulk.add_insert(document)

    def execute(self, write_concern: WriteConcern | None = None) -> dict[str, Any] | None:
        """Run the queued operations; None when unacknowledged."""
        coll = self._bulk.collection
        concern = coll._resolve_wc(write_concern=write_concern) if write_concern is not None else coll._concern
        result = self._bulk.execute(concern)
        if not concern.acknowledged:
            return None
        raise_bulk_errors(result)
        return result
