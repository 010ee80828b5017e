"""A database: its collections and its commands."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pymongo.write_concern import WriteConcern

from .collection import Collection
from .cursor import CommandCursor
from .errors import ConfigurationError, InvalidName

if TYPE_CHECKING:
    from bson.codec_options import CodecOptions

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


class Database:
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
    ) -> None:
        self._client = client
        self._name = _check_name(name)
        self.write_concern = write_concern or client.write_concern
        self.codec_options: CodecOptions[Any] = codec_options or client.codec_options
        #: The :mod:`pymongo.read_preferences` mode of its collections' reads (the client's by default).
        self.read_preference: Any = read_preference or client.read_preference

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
        write_concern: WriteConcern | None = None,
        codec_options: CodecOptions[Any] | None = None,
        read_preference: Any = None,
    ) -> Collection:
        """Return a :class:`~mongo_requests.collection.Collection`."""
        return Collection(
            self, name, write_concern=write_concern, codec_options=codec_options, read_preference=read_preference
        )

    def with_options(
        self,
        codec_options: CodecOptions[Any] | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
    ) -> Database:
        """A copy of this database with other options (``read_preference``: a pymongo.read_preferences mode)."""
        return Database(
            self._client,
            self._name,
            write_concern or self.write_concern,
            codec_options or self.codec_options,
            read_preference or self.read_preference,
        )

    def __getattr__(self, name: str) -> Collection:
        if name.startswith("_"):
            raise AttributeError(
                "Database has no attribute %r. To access the %s collection, use database[%r]." % (name, name, name)
            )
        # Cached like MongoClient.__getattr__ caches databases (see there).
        coll = self.__dict__[name] = self.get_collection(name)
        return coll

    def __getitem__(self, name: str) -> Collection:
        return self.get_collection(name)

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
        """
        # Plain dicts keep insertion order, and the command name must come
        # first; they are also several times cheaper to build than SON.
        if isinstance(command, str):
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

    collection_names = list_collection_names  # PyMongo 2

    def drop_collection(self, name_or_collection: Any) -> None:
        """Drop a collection; dropping one that does not exist is not an error."""
        name = getattr(name_or_collection, "name", name_or_collection)
        self.get_collection(name).drop()

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
