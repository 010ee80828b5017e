"""The parts of PyMongo 4's and PyMongo 2's client API that are about the server, not about requests.

:class:`~mongo_requests.MongoClient` inherits them.  They exist so that a
name PyMongo has never falls through to ``MongoClient.__getattr__``, which
would hand back a database of that name (``client.is_primary`` quietly being
``Database(client, 'is_primary')``).  What mongo_requests does not support
raises :class:`NotImplementedError` saying so and what to use instead; it
cannot be an AttributeError, which Python would answer by calling
``__getattr__`` and so returning a database again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference

from .errors import PyMongoError

if TYPE_CHECKING:
    from .topology import Topology

__all__ = ["ClientCompat", "unsupported"]

_MODES = {
    "primary": ReadPreference.PRIMARY,
    "primarypreferred": ReadPreference.PRIMARY_PREFERRED,
    "secondary": ReadPreference.SECONDARY,
    "secondarypreferred": ReadPreference.SECONDARY_PREFERRED,
    "nearest": ReadPreference.NEAREST,
}


def unsupported(name: str, why: str) -> Any:
    """A property that raises NotImplementedError: ``name`` is PyMongo's, and ``why`` says what to do instead."""

    def fail(self: Any) -> NoReturn:
        raise NotImplementedError("%s.%s is not supported by mongo_requests: %s" % (type(self).__name__, name, why))

    return property(fail, doc="Not supported: %s" % (why,))


class ClientCompat:
    """Server facts and PyMongo spellings for :class:`~mongo_requests.MongoClient`."""

    HOST = "localhost"  # PyMongo's class attributes: the defaults
    PORT = 27017

    _topology: Topology
    _options: Any

    def _command(self, dbname: str, cmd: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise NotImplementedError  # pragma: no cover - MongoClient's

    @property
    def address(self) -> tuple[str, int]:  # pragma: no cover - MongoClient's
        raise NotImplementedError

    # -- PyMongo 4 --------------------------------------------------------------
    @property
    def read_preference(self) -> Any:
        """The client's read preference (:mod:`pymongo.read_preferences`); always honoured as given."""
        mode = self._options.raw.get("readPreference", "primary")
        return _MODES.get(str(mode).lower(), ReadPreference.PRIMARY) if isinstance(mode, str) else mode

    @property
    def read_concern(self) -> ReadConcern:
        """The server's default read concern (read concerns are not configurable yet)."""
        return ReadConcern()

    @property
    def nodes(self) -> frozenset[tuple[str, int]]:
        """The addresses of the servers this client talks to."""
        return frozenset(server.address for server in self._topology.servers)

    def _hello(self) -> dict[str, Any]:
        return self._command("admin", {"hello": 1})

    @property
    def is_primary(self) -> bool:
        """True when the server accepts writes (asks it: ``hello``'s ``isWritablePrimary``)."""
        return bool(self._hello().get("isWritablePrimary"))

    @property
    def is_mongos(self) -> bool:
        """True when the server is a mongos (asks it)."""
        return self._hello().get("msg") == "isdbgrid"

    @property
    def primary(self) -> tuple[str, int] | None:
        """The primary's address when the server is writable, else None (asks it)."""
        return self.address if self.is_primary else None

    @property
    def secondaries(self) -> set[tuple[str, int]]:
        """Secondaries known to the client: none, it talks to one server."""
        return set()

    @property
    def arbiters(self) -> set[tuple[str, int]]:
        """Arbiters known to the client: none, it talks to one server."""
        return set()

    def list_databases(self, filter: Any = None, **kwargs: Any) -> Any:
        """A cursor over the ``listDatabases`` documents (``name``, ``sizeOnDisk``, ``empty``)."""
        from .cursor import CommandCursor

        cmd: dict[str, Any] = {"listDatabases": 1}
        if filter is not None:
            cmd["filter"] = filter
        cmd.update(kwargs)
        reply = self._command("admin", cmd)
        cursor = {"id": 0, "firstBatch": reply["databases"], "ns": "admin.$cmd"}
        return CommandCursor(self["admin"]["$cmd"], {"cursor": cursor})  # type: ignore[index]

    bulk_write = unsupported("bulk_write", "client-level bulk writes are not implemented; "
                             "use Collection.bulk_write")
    topology_description = unsupported("topology_description", "there is no SDAM topology description; "
                                       "see client.address and client.nodes")
    options = unsupported("options", "PyMongo's ClientOptions object is not provided")
    append_metadata = unsupported("append_metadata", "driver metadata cannot be changed after creation")

    def __iter__(self) -> Any:
        raise TypeError("'MongoClient' object is not iterable")

    def next(self) -> NoReturn:
        """Not an iterator (as in PyMongo)."""
        raise TypeError("'MongoClient' object is not iterable")

    # -- PyMongo 2 --------------------------------------------------------------
    @property
    def host(self) -> str:
        """PyMongo 2: the server's host name."""
        return self.address[0]

    @property
    def port(self) -> int:
        """PyMongo 2: the server's port."""
        return self.address[1]

    def alive(self) -> bool:
        """PyMongo 2: True when the server answers a ``ping``."""
        try:
            self._command("admin", {"ping": 1})
        except PyMongoError:
            return False
        return True

    @property
    def is_locked(self) -> bool:
        """PyMongo 2: True when the server is ``fsyncLock``-ed (asks ``currentOp``)."""
        return bool(self._command("admin", {"currentOp": 1, "$all": False}).get("fsyncLock"))
