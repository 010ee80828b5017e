"""README's table of the PyMongo 4 API is true: supported names exist, refused ones raise the error it names."""

from __future__ import annotations

import inspect
import pathlib
import re
from collections.abc import Callable
from typing import Any

import pymongo.errors
import pytest
from pymongo import monitoring

import mongo_requests
from mongo_requests import gridfs

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
_NAMES = re.compile(r"`([\w.]+)`")
_REFUSED = re.compile(r"((?:`[\w.]+`(?:, )?)+) \((\w+): (.*?)\)(?:; |$)")
_ERRORS = {"AttributeError": AttributeError, "NotImplementedError": NotImplementedError, "TypeError": TypeError}


def table() -> list[tuple[str, list[str], list[tuple[str, type[BaseException], str]]]]:
    """(object, supported names, [(refused name, error class, why)]) for each row of the README's table."""
    text = README.read_text()
    body = text.split("<!-- api-table -->", 1)[1].split("<!-- /api-table -->", 1)[0]
    rows = []
    for line in body.strip().splitlines()[2:]:
        obj, supported, refused = (cell.strip() for cell in line.strip().strip("|").split("|"))
        pairs = []
        for match in _REFUSED.finditer(refused):
            error = _ERRORS.get(match.group(2)) or getattr(pymongo.errors, match.group(2))
            pairs += [(name, error, match.group(3)) for name in _NAMES.findall(match.group(1))]
        assert refused.replace(" ", "") == "" or pairs, "unparsed refused cell: %r" % (refused,)
        rows.append((obj, _NAMES.findall(supported), pairs))
    return rows


ROWS = table()


def test_the_table_covers_every_object():
    objects = [obj for obj, _, _ in ROWS]
    for expected in ("`MongoClient`", "`Database`", "`Collection`", "`Cursor`", "`CommandCursor`"):
        assert expected in objects
    assert any("monitoring" in o for o in objects) and sum("gridfs" in o for o in objects) == 2


def _objects(client: mongo_requests.MongoClient, db: Any) -> dict[str, Callable[[], Any]]:
    coll = db.things
    coll.insert_one({"_id": 1})
    return {
        "MongoClient": lambda: client,
        "Database": lambda: db,
        "Collection": lambda: coll,
        "Cursor": lambda: coll.find(),
        "CommandCursor": lambda: coll.aggregate([]),
        "mongo_requests.gridfs.GridFS": lambda: gridfs.GridFS(db),
        "mongo_requests.gridfs.GridFSBucket": lambda: gridfs.GridFSBucket(db),
    }


def _no_sub_database(obj: Any, name: str) -> None:
    """The name resolves without __getattr__ (which would hand back a database or collection of that name)."""
    try:
        inspect.getattr_static(obj, name)
    except AttributeError:
        pytest.fail(
            "%s.%s is in the table as supported, but %r has no such attribute" % (type(obj).__name__, name, obj)
        )


def _placeholders(method: Callable[..., Any]) -> list[str]:
    """One dummy argument per required positional parameter."""
    params = inspect.signature(method).parameters.values()
    return ["x" for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


@pytest.mark.parametrize("row", ROWS, ids=[r[0].replace("`", "") for r in ROWS])
def test_the_rows_are_true(row, client, db):
    obj_label, supported, refused = row
    key = _NAMES.findall(obj_label)[0]
    if key.startswith("pymongo.monitoring"):
        for name in supported:
            listener = getattr(monitoring, name)()
            c = mongo_requests.MongoClient("127.0.0.1:1", event_listeners=[listener])
            try:
                published = (c._listeners, c._topology._sdam, c._topology.servers[0].pool._events)
                assert any(p is not None for p in published), name
            finally:
                c.close()
        for _, error, _ in refused:
            with pytest.raises(error):
                mongo_requests.MongoClient("127.0.0.1:1", event_listeners=[object()])
        return
    make = _objects(client, db)[key]
    for name in supported:
        _no_sub_database(make(), name)
    for name, error, _why in refused:
        obj = make()
        with pytest.raises(error) as info:
            attr = getattr(obj, name)
            attr(*_placeholders(attr))  # a method refuses when called
        assert not isinstance(info.value, TypeError) or error is TypeError, (name, info.value)
        message = str(info.value)
        assert name in message or error is AttributeError, (name, message)


def test_every_public_name_of_pymongo_4_is_in_the_table():
    import gridfs as pm_gridfs
    import pymongo.collection
    import pymongo.command_cursor
    import pymongo.cursor
    import pymongo.database

    theirs = {
        "MongoClient": pymongo.MongoClient,
        "Database": pymongo.database.Database,
        "Collection": pymongo.collection.Collection,
        "Cursor": pymongo.cursor.Cursor,
        "CommandCursor": pymongo.command_cursor.CommandCursor,
        "mongo_requests.gridfs.GridFS": pm_gridfs.GridFS,
        "mongo_requests.gridfs.GridFSBucket": pm_gridfs.GridFSBucket,
    }
    listed: dict[str, set[str]] = {}
    for obj, supported, refused in ROWS:
        key = _NAMES.findall(obj)[0]
        listed.setdefault(key, set()).update(supported, (name for name, _, _ in refused))
    for key, cls in theirs.items():
        # ``next`` raises TypeError on a client, database or collection, in PyMongo as here (they are not iterators).
        public = {n for n in dir(cls) if not n.startswith("_")} - {"next"}
        assert public - listed[key] == set(), "%s: PyMongo 4 names missing from the README's table" % key
