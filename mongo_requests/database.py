"""A database: its collections and its commands."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from . import precoded
from .client_compat import unsupported
from .client_session import in_session, with_session
from .collection import Collection
from .cursor import CommandCursor
from .errors import CollectionInvalid, ConfigurationError, InvalidName, InvalidOperation
from .legacy_options import LegacyOptions
from .read_options import check_read_options

if TYPE_CHECKING:
    from bson.codec_options import CodecOptions

    from .change_stream import ChangeStream
    from .client import MongoClient

__all__ = ["Database"]


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError("name must be an instance of str, not %s" % (type(name).__name__,))
    if not name:
        raise InvalidName("database name cannot be the empty string")
    for char in ' ./\\"$\x00':
        if char in name:
            raise InvalidName("database names cannot contain the character %r" % (char,))
    return name


_REMOVED = {
    "eval": "the server's eval command was removed in MongoDB 4.2; run the logic in Python, or use "
    "aggregate (with $function if you need server-side JavaScript)",
    "error": "getLastError was removed in MongoDB 5.1; acknowledged writes (w=1, the MongoClient default) "
    "raise their errors",
    "last_status": "getLastError was removed in MongoDB 5.1; acknowledged writes (w=1) return their results",
    "previous_error": "getPrevError was removed in MongoDB 5.1; acknowledged writes (w=1) raise their errors",
    "reset_error_history": "resetError was removed in MongoDB 5.1",
}


_INSTEAD = {
    "add_user": "create users with db.command('createUser', name, pwd=password, roles=[...]) "
    "(PyMongo 4 removed add_user too)",
    "remove_user": "drop users with db.command('dropUser', name)",
    "current_op": "use client.admin.aggregate([{'$currentOp': {}}])",
    "system_js": "server-side JavaScript stored in system.js is deprecated by MongoDB; use $function in aggregate",
    "add_son_manipulator": "SON manipulators were removed in PyMongo 4; transform documents in your own code",
}


def _removed(name: str) -> InvalidOperation:
    if name in _INSTEAD:
        return InvalidOperation("Database.%s is not provided by mongo_requests: %s" % (name, _INSTEAD[name]))
    return InvalidOperation("Database.%s() cannot work: %s" % (name, _REMOVED[name]))


class Database(LegacyOptions):
    """A database on the client's server.

    :param client: the :class:`~mongo_requests.client.MongoClient`.
    :param name: the database name.
    :param write_concern: default for its collections (the client's if None).
    """

    def __init__(
        self,
        client: MongoClient,
        name: str,
        write_concern: WriteConcern | None = None,
        codec_options: CodecOptions[Any] | None = None,
        read_preference: Any = None,
        read_concern: ReadConcern | None = None,
    ) -> None:
        self._client = client
        self._name = _check_name(name)
        self.write_concern = write_concern or client.write_concern
        self.codec_options: CodecOptions[Any] = codec_options or client.codec_options
        check_read_options(read_preference, read_concern)
        #: The :mod:`pymongo.read_preferences` mode of its collections' reads (the client's by default).
        self.read_preference: Any = read_preference or client.read_preference
        # Encoded bodies of ``command(name)``, by name (see :meth:`command`).
        self._bodies: dict[str, bytes] = {}

    @property
    def read_concern(self) -> ReadConcern:
        """The server's default read concern (the only one supported)."""
        return ReadConcern()

    def with_options(
        self,
        codec_options: CodecOptions[Any] | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
    ) -> Database:
        """A copy of this database with other options (PyMongo's signature; ``read_preference``: a mode)."""
        return Database(
            self._client,
            self._name,
            write_concern or self.write_concern,
            codec_options or self.codec_options,
            read_preference or self.read_preference,
            read_concern,
        )

    def __bool__(self) -> bool:
        raise NotImplementedError(
            "Database objects do not implement truth value testing or bool(). "
            "Please compare with None instead: database is not None"
        )

    @property
    def client(self) -> MongoClient:
        """The client this database belongs to."""
        return self._client

    connection = client  # PyMongo 2

    @property
    def name(self) -> str:
        """The database's name."""
        return self._name

    def get_collection(
        self,
        name: str,
        codec_options: CodecOptions[Any] | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
    ) -> Collection:
        """Return a :class:`~mongo_requests.collection.Collection` (PyMongo's signature).

        A read concern other than the server's default is refused with ConfigurationError.
        """
        return Collection(
            self,
            name,
            write_concern=write_concern,
            codec_options=codec_options,
            read_preference=read_preference,
            read_concern=read_concern,
        )

    def __getattr__(self, name: str) -> Collection:
        if name.startswith("_"):
            raise AttributeError(
                "Database has no attribute %r. To access the %s collection, use database[%r]." % (name, name, name)
            )
        if name in _REMOVED or name in _INSTEAD:
            raise _removed(name)
        # Cached like MongoClient.__getattr__ caches databases (see there).
        coll = self.__dict__[name] = self.get_collection(name)
        return coll

    def __getitem__(self, name: str) -> Collection:
        return self.get_collection(name)

    def __iter__(self) -> Any:
        raise TypeError("'Database' object is not iterable")

    def next(self) -> Any:
        """Not an iterator (as in PyMongo)."""
        raise TypeError("'Database' object is not iterable")

    def watch(self, pipeline: Sequence[Mapping[str, Any]] | None = None, **kwargs: Any) -> ChangeStream:
        """A :class:`~mongo_requests.change_stream.ChangeStream` of the whole database (PyMongo's watch keywords)."""
        from .change_stream import open_change_stream

        return open_change_stream(self, self._name, 1, pipeline, kwargs)

    cursor_command = unsupported("cursor_command", "use command() and a collection's aggregate/find")

    @with_session
    def aggregate(self, pipeline: list[Any], batch_size: int | None = None, **kwargs: Any) -> CommandCursor:
        """A database-level aggregation (``$currentOp``, ``$documents``...); returns a cursor."""
        if not isinstance(pipeline, list):
            raise TypeError("pipeline must be a list")
        cursor_opts = {"batchSize": batch_size} if batch_size is not None else {}
        if "batchSize" in kwargs:
            cursor_opts = {"batchSize": kwargs.pop("batchSize")}
        cmd: dict[str, Any] = {"aggregate": 1, "pipeline": pipeline, "cursor": cursor_opts}
        for py, server in (("max_time_ms", "maxTimeMS"), ("allow_disk_use", "allowDiskUse")):
            if py in kwargs:
                kwargs[server] = kwargs.pop(py)
        cmd.update(kwargs)
        reply = self._client._command(self._name, cmd, self.codec_options)
        return CommandCursor(self.get_collection("$cmd.aggregate"), reply, batch_size or 0)

    @with_session
    def list_collections(self, filter: Mapping[str, Any] | None = None, **kwargs: Any) -> CommandCursor:
        """A cursor over the ``listCollections`` documents (``name``, ``type``, ``options``...)."""
        cmd: dict[str, Any] = {"listCollections": 1, "cursor": {}}
        if filter is not None:
            cmd["filter"] = dict(filter)
        if "batch_size" in kwargs:
            cmd["cursor"] = {"batchSize": kwargs.pop("batch_size")}
        cmd.update(kwargs)
        reply = self._client._command(self._name, cmd, self.codec_options)
        return CommandCursor(self.get_collection("$cmd"), reply)

    @with_session
    def validate_collection(
        self, name_or_collection: Any, scandata: bool = False, full: bool = False, background: bool | None = None
    ) -> dict[str, Any]:
        """Run ``validate``; raises CollectionInvalid when the server finds the collection invalid."""
        name = getattr(name_or_collection, "name", name_or_collection)
        if not isinstance(name, str):
            raise TypeError("name_or_collection must be an instance of str or Collection")
        cmd: dict[str, Any] = {"validate": name, "scandata": scandata, "full": full}
        if background is not None:
            cmd["background"] = background
        result = self._client._command(self._name, cmd, self.codec_options)
        if not result.get("valid", False):
            raise CollectionInvalid("%s invalid: %r" % (name, result))
        return result

    def dereference(self, dbref: Any, **kwargs: Any) -> Any:
        """The document a :class:`~bson.dbref.DBRef` points to, or None."""
        from bson.dbref import DBRef

        if not isinstance(dbref, DBRef):
            raise TypeError("cannot dereference a %s" % (type(dbref),))
        if dbref.database is not None and dbref.database != self._name:
            raise ValueError(
                "trying to dereference a DBRef that points to another database (%r not %r)"
                % (dbref.database, self._name)
            )
        return self[dbref.collection].find_one({"_id": dbref.id}, **kwargs)

    # -- PyMongo 2's profiling helpers ------------------------------------------
    def profiling_level(self) -> int:
        """PyMongo 2: the database's profiling level (0 off, 1 slow operations only, 2 all)."""
        return int(self.command("profile", -1)["was"])

    def set_profiling_level(self, level: int, slow_ms: int | None = None) -> None:
        """PyMongo 2: set the profiling level (0, 1 or 2), and optionally the slow threshold in milliseconds."""
        if level.__class__ is not int or level not in (0, 1, 2):
            raise ValueError("level must be 0 (off), 1 (slow operations only) or 2 (all), not %r" % (level,))
        if slow_ms is not None and slow_ms.__class__ is not int:
            raise TypeError("slow_ms must be an integer, not %s" % (type(slow_ms).__name__,))
        cmd: dict[str, Any] = {"profile": level}
        if slow_ms is not None:
            cmd["slowms"] = slow_ms
        self.command(cmd)

    def profiling_info(self) -> list[Any]:
        """PyMongo 2: the profiler's records (the ``system.profile`` collection)."""
        return list(self["system.profile"].find())

    # -- PyMongo 2 calls whose server commands are gone -----------------------
    def eval(self, code: Any, *args: Any) -> Any:
        """PyMongo 2's eval: the server's ``eval`` command was removed in MongoDB 4.2."""
        raise _removed("eval")

    def error(self) -> Any:
        """PyMongo 2's error(): ``getLastError`` was removed in MongoDB 5.1."""
        raise _removed("error")

    def last_status(self) -> Any:
        """PyMongo 2's last_status(): ``getLastError`` was removed in MongoDB 5.1."""
        raise _removed("last_status")

    def previous_error(self) -> Any:
        """PyMongo 2's previous_error(): ``getPrevError`` was removed in MongoDB 5.1."""
        raise _removed("previous_error")

    def reset_error_history(self) -> Any:
        """PyMongo 2's reset_error_history(): ``resetError`` was removed in MongoDB 5.1."""
        raise _removed("reset_error_history")

    def command(
        self,
        command: str | Mapping[str, Any],
        value: Any = 1,
        check: bool = True,
        read_preference: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Run a database command, PyMongo style.

        ``db.command('ping')``, ``db.command('collStats', 'things')``, or a
        whole document: ``db.command({'count': 'things', 'query': {}})``.
        Keyword arguments are appended to the command document.  A command
        goes to the primary unless ``read_preference`` (a
        :mod:`pymongo.read_preferences` mode) says otherwise, as in PyMongo.
        ``session=`` runs it in a :class:`~mongo_requests.client_session.ClientSession`.
        """
        if kwargs and "session" in kwargs:  # with_session, inlined: no wrapper on the hot path
            return in_session(  # type: ignore[no-any-return]
                kwargs.pop("session"),
                self,
                self.command,
                command,
                value,
                check,
                read_preference,
                **kwargs,
            )
        # Plain dicts keep insertion order, and the command name must come
        # first; they are also several times cheaper to build than SON.
        if isinstance(command, str):
            if value.__class__ is int and value == 1 and not kwargs and read_preference is None:
                # db.command('ping') and friends: the body never changes, so it is encoded once.
                body = self._bodies.get(command)
                if body is None:
                    body = precoded.ping_body(command, self._name)
                    if len(self._bodies) < 16:
                        self._bodies[command] = body
                return self._client._command(self._name, {command: 1}, self.codec_options, (), check, body=body)
            cmd: dict[str, Any] = {command: value}
        elif isinstance(command, Mapping):
            cmd = dict(command)
        else:
            raise TypeError("command must be a str or a mapping, not %s" % (type(command).__name__,))
        if kwargs:
            cmd.update(kwargs)
        if read_preference is not None and not read_preference.mode:
            read_preference = None
        return self._client._command(self._name, cmd, self.codec_options, check=check, read_preference=read_preference)

    @with_session
    def list_collection_names(self, filter: Mapping[str, Any] | None = None, **kwargs: Any) -> list[str]:
        """Names of the collections in this database.

        :param filter: which collections, e.g. ``{"name": {"$regex": "^log"}}``.
        :param kwargs: more fields of the ``listCollections`` command (as in
            PyMongo), e.g. ``cursor={"batchSize": 10}``.
        """
        cmd: dict[str, Any] = {"listCollections": 1, "nameOnly": True, "authorizedCollections": True}
        if filter:
            cmd["filter"] = dict(filter)
        cmd.update(kwargs)
        reply = self._client._command(self._name, cmd, self.codec_options)
        # The cursor's namespace (db.$cmd.listCollections) comes with the
        # reply; getMore uses it, as PyMongo's cursor on database["$cmd"] does.
        return [d["name"] for d in CommandCursor(self.get_collection("$cmd"), reply)]

    def collection_names(self, include_system_collections: bool = True) -> list[str]:
        """PyMongo 2's collection_names: with ``system.*`` collections unless told otherwise."""
        names = self.list_collection_names()
        if not include_system_collections:
            names = [n for n in names if not n.startswith("system.")]
        return names

    @with_session
    def drop_collection(self, name_or_collection: Any) -> None:
        """Drop a collection; dropping one that does not exist is not an error."""
        name = getattr(name_or_collection, "name", name_or_collection)
        self.get_collection(name).drop()

    @with_session
    def create_collection(self, name: str, **kwargs: Any) -> Collection:
        """Create a collection explicitly (with options such as ``capped``)."""
        cmd: dict[str, Any] = {"create": name}
        cmd.update(kwargs)
        self._client._command(self._name, cmd)
        return self.get_collection(name)

    def authenticate(self, *args: Any, **kwargs: Any) -> None:
        """PyMongo 2's ``db.authenticate(name, password)``: refused, with what to do instead.

        Credentials belong to the client, so that every pooled socket is
        authenticated as the same user when it connects, and a socket pinned
        to a request never changes identity halfway through it.  Pass them to
        the client: ``MongoClient('mongodb://user:password@host/?authSource=db')``
        or ``MongoClient(host, username=..., password=..., authSource=...)``.

        :raises ConfigurationError: always (the arguments are never echoed).
        """
        raise ConfigurationError(
            "db.authenticate() is not supported: give the credentials to the client instead, "
            "MongoClient('mongodb://USER:PASSWORD@HOST/?authSource=%s') or "
            "MongoClient(HOST, username=USER, password=PASSWORD, authSource=%r); every connection "
            "then authenticates when it opens" % (self._name, self._name)
        )

    def logout(self) -> None:
        """PyMongo 2's ``db.logout()``: refused (credentials belong to the client; close it instead)."""
        raise ConfigurationError("db.logout() is not supported: credentials belong to the client; close it instead")

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Database) and self._client is other._client and self._name == other._name

    def __hash__(self) -> int:
        return hash((id(self._client), self._name))

    def __repr__(self) -> str:
        return "Database(%r, %r)" % (self._client, self._name)
