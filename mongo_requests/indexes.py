"""A collection's indexes: create (PyMongo 2's ``ensure_index`` too), drop, list.

:class:`IndexMethods` is a mixin of :class:`~mongo_requests.collection.Collection`:
each method builds one ``createIndexes``, ``dropIndexes`` or ``listIndexes``
command and runs it with ``client._command``.  Key specs are normalised by
:func:`~mongo_requests.cursor_options.index_spec`, as sort and hint are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .client_session import with_session
from .cursor import CommandCursor
from .cursor_options import index_spec
from .errors import ConfigurationError, OperationFailure, check_command

if TYPE_CHECKING:
    from bson.codec_options import CodecOptions

    from .client import MongoClient

__all__ = ["IndexMethods"]


class IndexMethods:
    """The index half of :class:`~mongo_requests.collection.Collection`."""

    _client: MongoClient
    _db_name: str
    _name: str
    codec_options: CodecOptions[Any]

    @property
    def full_name(self) -> str:  # pragma: no cover - Collection's
        raise NotImplementedError

    @with_session
    def create_index(self, keys: Any, **kwargs: Any) -> str:
        """Create an index; returns its name.

        Index options (``unique``, ``expireAfterSeconds``, ``partialFilterExpression``...)
        go into the index document; ``comment``, ``maxTimeMS`` and ``commitQuorum``
        into the command, as in PyMongo.
        """
        command_level = ("comment", "maxTimeMS", "commitQuorum")
        cmd_options: dict[str, Any] = {k: kwargs.pop(k) for k in command_level if k in kwargs}
        if "max_time_ms" in kwargs:
            cmd_options["maxTimeMS"] = kwargs.pop("max_time_ms")
        spec = index_spec(keys)
        name = kwargs.pop("name", None) or "_".join("%s_%s" % (k, v) for k, v in spec.items())
        index: dict[str, Any] = {"key": spec, "name": name}
        index.update(kwargs)
        self._create_indexes([index], cmd_options)
        return name

    def _create_indexes(self, indexes: list[dict[str, Any]], cmd_options: dict[str, Any]) -> None:
        cmd: dict[str, Any] = {"createIndexes": self._name, "indexes": indexes}
        cmd.update({k: v for k, v in cmd_options.items() if v is not None})
        self._client._command(self._db_name, cmd, self.codec_options)

    @with_session
    def create_indexes(self, indexes: list[Any], comment: Any = None, **kwargs: Any) -> list[str]:
        """Create several :class:`~pymongo.operations.IndexModel` indexes in one command; returns their names."""
        if not isinstance(indexes, list):
            raise TypeError("indexes must be a list")
        documents = []
        for model in indexes:
            document = getattr(model, "document", None)
            if not isinstance(document, Mapping):
                raise TypeError("%r is not an instance of pymongo.operations.IndexModel" % (model,))
            documents.append(dict(document))
        if "max_time_ms" in kwargs:
            kwargs["maxTimeMS"] = kwargs.pop("max_time_ms")
        self._create_indexes(documents, dict(kwargs, comment=comment))
        return [d["name"] for d in documents]

    def ensure_index(self, key_or_list: Any, cache_for: int = 300, **kwargs: Any) -> str:
        """PyMongo 2's ensure_index: creates the index every time (``createIndexes`` is idempotent).

        ``cache_for`` (and its old alias ``ttl``) set how long PyMongo 2 skipped
        the call client-side; there is no such cache here, so they change nothing.
        For an index that expires documents use ``expireAfterSeconds``.
        """
        kwargs.pop("ttl", None)
        if "drop_dups" in kwargs or "dropDups" in kwargs:
            raise ConfigurationError("dropDups was removed in MongoDB 3.0")
        return self.create_index(key_or_list, **kwargs)

    @with_session
    def drop_index(self, index_or_name: Any) -> None:
        """Drop one index, by name or by key spec."""
        name = index_or_name
        if not isinstance(name, str):
            name = "_".join("%s_%s" % (k, v) for k, v in index_spec(index_or_name).items())
        self._client._command(self._db_name, {"dropIndexes": self._name, "index": name})

    @with_session
    def drop_indexes(self) -> None:
        """Drop every index but ``_id``'s; a missing collection is not an error (as in PyMongo)."""
        reply = self._client._command(self._db_name, {"dropIndexes": self._name, "index": "*"}, check=False)
        if reply.get("ok") != 1 and reply.get("code") != 26:
            check_command(reply)

    @with_session
    def list_indexes(self) -> CommandCursor:
        """A cursor over the index documents."""
        try:
            reply = self._client._command(self._db_name, {"listIndexes": self._name, "cursor": {}})
        except OperationFailure as exc:
            if exc.code != 26:  # NamespaceNotFound: no collection, no indexes
                raise
            reply = {"cursor": {"id": 0, "firstBatch": [], "ns": self.full_name}}
        return CommandCursor(self, reply)  # type: ignore[arg-type]

    @with_session
    def index_information(self) -> dict[str, Any]:
        """``{name: {'key': [(field, direction), ...], ...}}`` as in PyMongo."""
        info = {}
        for index in self.list_indexes():
            index = dict(index)
            name = index.pop("name")
            index["key"] = list(index["key"].items())
            index.pop("v", None)
            info[name] = index
        return info
