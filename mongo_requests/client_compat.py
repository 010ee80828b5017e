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

from .client_session import with_session
from .errors import PyMongoError
from .sdam import ServerType

if TYPE_CHECKING:
    from .sdam import TopologyDescription
    from .topology import Topology

__all__ = ["ClientCompat", "unsupported"]


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
    codec_options: Any

    def _command(self, dbname: str, cmd: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise NotImplementedError  # pragma: no cover - MongoClient's

    @property
    def address(self) -> tuple[str, int]:  # pragma: no cover - MongoClient's
        raise NotImplementedError

    # -- PyMongo 4 --------------------------------------------------------------
    @property
    def read_concern(self) -> ReadConcern:
        """The server's default read concern (read concerns are not configurable yet)."""
        return ReadConcern()

    def _known(self) -> TopologyDescription:
        """The description after one check if due; waits (as PyMongo does) only when no server answers at all."""
        td = self._topology.refreshed()
        if all(sd.type in (ServerType.Unknown, ServerType.PossiblePrimary) for sd in td.servers.values()):
            self._topology.select_server(for_write=True)  # raises ServerSelectionTimeoutError, or finds one
            td = self._topology.description
        return td

    @property
    def is_primary(self) -> bool:
        """True when the client's server accepts writes: a standalone, a mongos, or a set that has a primary now.

        Answered from what the last check found (checking first if that is
        older than ``heartbeatFrequencyMS``, as :attr:`primary` does), so a
        replica set with no primary answers False at once, where PyMongo
        waits ``serverSelectionTimeoutMS`` for one and then raises.  With no
        server answering at all it waits and raises
        :class:`~pymongo.errors.ServerSelectionTimeoutError`, as PyMongo does.
        """
        writable = (ServerType.Standalone, ServerType.RSPrimary, ServerType.Mongos)
        return any(sd.type in writable for sd in self._known().servers.values())

    @property
    def is_mongos(self) -> bool:
        """True when the client talks to mongos routers (from the topology, like :attr:`is_primary`)."""
        return any(sd.type is ServerType.Mongos for sd in self._known().servers.values())

    @property
    def primary(self) -> tuple[str, int] | None:
        """``(host, port)`` of the replica set's primary, or None if there is none (or no set).

        Reports what the last check found, checking first if that is older
        than ``heartbeatFrequencyMS``; never waits for an election.
        """
        sd = self._topology.refreshed().primary
        return sd.address if sd is not None else None

    @property
    def secondaries(self) -> set[tuple[str, int]]:
        """``(host, port)`` of each secondary of the replica set (empty without one)."""
        return {sd.address for sd in self._topology.refreshed().by_type(ServerType.RSSecondary)}

    @property
    def arbiters(self) -> set[tuple[str, int]]:
        """``(host, port)`` of each arbiter of the replica set."""
        return {sd.address for sd in self._topology.refreshed().by_type(ServerType.RSArbiter)}

    @property
    def nodes(self) -> frozenset[tuple[str, int]]:
        """``(host, port)`` of every server the client currently knows to be up."""
        td = self._topology.refreshed()
        down = (ServerType.Unknown, ServerType.PossiblePrimary)
        return frozenset(a for a, sd in td.servers.items() if sd.type not in down)

    @with_session
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

    bulk_write = unsupported("bulk_write", "client-level bulk writes are not implemented; use Collection.bulk_write")
    topology_description = unsupported(
        "topology_description",
        "PyMongo's TopologyDescription is not provided; see client.primary, client.secondaries and client.nodes",
    )
    options = unsupported("options", "PyMongo's ClientOptions object is not provided")
    append_metadata = unsupported("append_metadata", "driver metadata cannot be changed after creation")
    eq_props = unsupported("eq_props", "compare clients by their address and options yourself")

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

    def fsync(self, **kwargs: Any) -> dict[str, Any]:
        """PyMongo 2: flush pending writes to disk (``fsync``); ``lock=True`` also locks the server against writes."""
        return self._command("admin", {"fsync": 1, **kwargs})

    def unlock(self) -> dict[str, Any]:
        """PyMongo 2: undo ``fsync(lock=True)`` (``fsyncUnlock``)."""
        return self._command("admin", {"fsyncUnlock": 1})

    def _writable_hello(self) -> dict[str, Any]:
        """The latest ``hello`` of the server writes go to (selected, as PyMongo 2's properties connected first)."""
        return self._topology.select_server(None, None, True).description or {}

    @property
    def max_bson_size(self) -> int:
        """PyMongo 2: the primary's largest document (``maxBsonObjectSize``)."""
        return int(self._writable_hello().get("maxBsonObjectSize", 16 * 1024 * 1024))

    @property
    def max_message_size(self) -> int:
        """PyMongo 2: the primary's largest message (``maxMessageSizeBytes``)."""
        return int(self._writable_hello().get("maxMessageSizeBytes", 48000000))

    @property
    def max_write_batch_size(self) -> int:
        """PyMongo 2 and 3: the primary's largest write batch (``maxWriteBatchSize``)."""
        return int(self._writable_hello().get("maxWriteBatchSize", 100000))

    @property
    def max_wire_version(self) -> int:
        """PyMongo 2: the primary's ``maxWireVersion``."""
        return int(self._writable_hello().get("maxWireVersion", 0))

    @property
    def min_wire_version(self) -> int:
        """PyMongo 2: the primary's ``minWireVersion``."""
        return int(self._writable_hello().get("minWireVersion", 0))

    @property
    def document_class(self) -> type:
        """PyMongo 2: the class documents are decoded to (``codec_options.document_class``)."""
        return self.codec_options.document_class  # type: ignore[no-any-return]

    @property
    def tz_aware(self) -> bool:
        """PyMongo 2: whether decoded datetimes carry a timezone (``codec_options.tz_aware``)."""
        return bool(self.codec_options.tz_aware)

    copy_database = unsupported("copy_database", "the server's copydb command was removed in MongoDB 4.2")
    close_cursor = unsupported("close_cursor", "close the cursor itself (cursor.close())")
    kill_cursors = unsupported("kill_cursors", "close the cursor itself (cursor.close())")
    set_cursor_manager = unsupported("set_cursor_manager", "cursors are killed when closed or collected")

    @property
    def is_locked(self) -> bool:
        """PyMongo 2: True when the server is ``fsyncLock``-ed (asks ``currentOp``)."""
        return bool(self._command("admin", {"currentOp": 1, "$all": False}).get("fsyncLock"))
