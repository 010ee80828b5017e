"""Database access on the client: ``client[name]``, ``client.name``, ``admin``, listing and dropping databases.

:class:`~mongo_requests.MongoClient` inherits :class:`ClientDatabases`.
PyMongo 4's ``list_databases`` and the other server facts are in
:mod:`mongo_requests.client_compat`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .client_session import with_session
from .database import Database
from .errors import ConfigurationError, InvalidName

__all__ = ["ClientDatabases"]


class ClientDatabases:
    """The database half of :class:`~mongo_requests.MongoClient`; needs ``_default_dbname`` and ``_command``."""

    _default_dbname: str | None

    if TYPE_CHECKING:

        def _command(self, dbname: str, cmd: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def get_database(self, name: str | None = None, **kwargs: Any) -> Database:
        """Return a :class:`~mongo_requests.database.Database` (the URI's by default)."""
        if name is None:
            name = self._default_dbname
            if name is None:
                raise ConfigurationError("No default database name defined or provided.")
        return Database(self, name, **kwargs)  # type: ignore[arg-type]

    def get_default_database(self) -> Database:
        """The database named in the URI."""
        return self.get_database(None)

    def __getattr__(self, name: str) -> Database:
        if name.startswith("_"):
            raise AttributeError(
                "MongoClient has no attribute %r. To access the %s database, use client[%r]." % (name, name, name)
            )
        # PyMongo 2 code writes client.db.coll.find_one(...) in its loops.
        # Databases are immutable, so keep this one in the instance dict:
        # the next client.db is a plain attribute hit instead of a failed
        # lookup, an AttributeError and a new Database (about 14k
        # instructions).  Only names spelled in code come here; client[name]
        # is not cached.
        db = self.__dict__[name] = self.get_database(name)
        return db

    def __getitem__(self, name: str) -> Database:
        return self.get_database(name)

    @property
    def admin(self) -> Database:
        """The ``admin`` database."""
        # Databases are immutable: one is enough (``client.admin.command('ping')`` is a common loop).
        try:
            return self.__dict__["_admin"]  # type: ignore[no-any-return]
        except KeyError:
            db = self.__dict__["_admin"] = self.get_database("admin")
            return db

    def server_info(self) -> dict[str, Any]:
        """The server's ``buildInfo``."""
        return self._command("admin", {"buildInfo": 1})

    @with_session
    def list_database_names(self) -> list[str]:
        """Names of every database on the server."""
        reply = self._command("admin", {"listDatabases": 1, "nameOnly": True})
        return [d["name"] for d in reply["databases"]]

    database_names = list_database_names  # the PyMongo 2 name

    @with_session
    def drop_database(self, name_or_database: Any) -> None:
        """Drop a database, given by name or as a Database."""
        name = getattr(name_or_database, "name", name_or_database)
        if not isinstance(name, str):
            raise TypeError("name_or_database must be a str or a Database")
        if not name or any(c in name for c in ' ./\\"$\x00'):
            raise InvalidName("invalid database name %r" % (name,))
        self._command(name, {"dropDatabase": 1})
