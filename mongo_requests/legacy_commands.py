"""PyMongo 2's collection commands: ``find_and_modify``, ``count``, ``map_reduce``, ``group``.

:class:`LegacyCommands` is a mixin of :class:`~mongo_requests.collection.Collection`.
``find_and_modify`` goes through the collection's findAndModify path (the one
``find_one_and_*`` use); ``count`` and ``map_reduce`` build the server's
``count`` and ``mapReduce`` commands, which MongoDB 6 still has; ``group``,
whose command the server no longer has, says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .bulk import _collation, check_mapping
from .client_session import with_session
from .cursor_options import _command_options, index_spec
from .errors import InvalidOperation

if TYPE_CHECKING:
    from bson.codec_options import CodecOptions

    from .client import MongoClient
    from .database import Database
    from .writes import _Concern

__all__ = ["LegacyCommands"]


class LegacyCommands:
    """PyMongo 2's commands of :class:`~mongo_requests.collection.Collection`."""

    _client: MongoClient
    _database: Database
    _db_name: str
    _name: str
    codec_options: CodecOptions[Any]
    _concern: _Concern
    _read_pref: Any

    def _find_and_modify(self, query: Any, full_response: bool = False, **fields: Any) -> Any:  # pragma: no cover
        raise NotImplementedError  # Collection's

    def find_and_modify(
        self,
        query: Mapping[str, Any] | None = None,
        update: Any = None,
        upsert: bool = False,
        sort: Any = None,
        full_response: bool = False,
        manipulate: bool = False,
        **kwargs: Any,
    ) -> Any:
        """PyMongo 2's find_and_modify (``remove=``, ``new=``, ``fields=`` as keywords)."""
        if update is None and not kwargs.get("remove"):
            raise ValueError("Must either update or remove")
        if update is not None and kwargs.get("remove"):
            raise ValueError("Can't do both update and remove")
        return self._find_and_modify(
            query or {}, full_response, update=update, upsert=upsert or None, sort=sort, **kwargs
        )

    @with_session
    def count(self, filter: Mapping[str, Any] | None = None, **kwargs: Any) -> int:
        """PyMongo 2/3's count, through the ``count`` command.

        ``skip``, ``limit``, ``hint``, ``maxTimeMS`` and ``collation`` are
        honoured, as in PyMongo 3; another keyword goes into the command.
        """
        cmd: dict[str, Any] = {"count": self._name, "query": {} if filter is None else filter}
        check_mapping(cmd["query"], "filter")
        if "max_time_ms" in kwargs:
            kwargs["maxTimeMS"] = kwargs.pop("max_time_ms")
        if kwargs.get("hint") is not None and not isinstance(kwargs["hint"], str):
            kwargs["hint"] = index_spec(kwargs["hint"])
        if kwargs.get("collation") is not None:
            kwargs["collation"] = _collation(kwargs["collation"])
        for key in ("skip", "limit"):
            if key in kwargs and (not isinstance(kwargs[key], int) or isinstance(kwargs[key], bool)):
                raise TypeError("%s must be an integer" % (key,))
        cmd.update({k: v for k, v in kwargs.items() if v is not None})
        return int(self._client._command(self._db_name, cmd, self.codec_options, read_preference=self._read_pref)["n"])

    def map_reduce(self, map: Any, reduce: Any, out: Any, full_response: bool = False, **kwargs: Any) -> Any:
        """Run ``mapReduce`` (which MongoDB 6 still has, deprecated) into ``out``; returns the output collection.

        ``out`` is a collection name or a document (``{"replace": ...}``,
        ``{"merge": ..., "db": ...}``); ``full_response=True`` returns the reply.
        """
        if not isinstance(out, (str, Mapping)):
            raise TypeError("'out' must be an instance of str or a mapping")
        if isinstance(out, Mapping) and out.get("inline"):
            raise ValueError("use inline_map_reduce for inline output")
        reply = self._map_reduce(map, reduce, out, kwargs)
        if full_response:
            return reply
        target = reply.get("result", out)
        if isinstance(target, Mapping):
            db = self._database.client[target.get("db", self._db_name)]
            return db[target["collection"]]
        return self._database[target]

    def inline_map_reduce(self, map: Any, reduce: Any, full_response: bool = False, **kwargs: Any) -> Any:
        """Run ``mapReduce`` with inline output; returns the result documents (or the reply)."""
        reply = self._map_reduce(map, reduce, {"inline": 1}, kwargs)
        return reply if full_response else reply.get("results")

    def _map_reduce(self, map: Any, reduce: Any, out: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        cmd: dict[str, Any] = {"mapReduce": self._name, "map": map, "reduce": reduce, "out": out}
        _command_options(cmd, kwargs)
        inline = isinstance(out, Mapping) and out.get("inline")
        if self._concern.document and self._concern.acknowledged and not inline:
            cmd["writeConcern"] = self._concern.document
        return self._client._command(self._db_name, cmd, self.codec_options)

    def group(self, *args: Any, **kwargs: Any) -> Any:
        """PyMongo 2's group: the server's ``group`` command was removed in MongoDB 4.2."""
        raise InvalidOperation(
            "Collection.group() cannot work: the server's group command was removed in "
            "MongoDB 4.2; use aggregate() with a $group stage"
        )
