"""Cursors against the real server: options, getMore, and server-side cleanup.

Whether a server cursor is open is asked of the server itself
(``serverStatus().metrics.cursor.open.total``, or a ``getMore`` on the old
id), never inferred from the driver's own state.
"""

from __future__ import annotations

import gc

import pytest
from pymongo.errors import CursorNotFound, InvalidOperation, OperationFailure

from mongo_requests import ASCENDING, DESCENDING, CommandCursor, Cursor

N = 10_000


def open_cursors(admin_client) -> int:
    """The server's count of open cursors."""
    return admin_client.admin.command("serverStatus")["metrics"]["cursor"]["open"]["total"]


def get_more_total(admin_client) -> int:
    """How many getMore commands the server has run."""
    return admin_client.admin.command("serverStatus")["metrics"]["commands"]["getMore"]["total"]


def assert_cursor_gone(db, coll_name: str, cursor_id: int) -> None:
    """A getMore on a killed cursor id fails on the server."""
    assert cursor_id
    with pytest.raises(OperationFailure) as info:
        db.command({"getMore": cursor_id, "collection": coll_name})
    assert isinstance(info.value, CursorNotFound)
    assert info.value.code == 43


@pytest.fixture
def coll(db):
    """A collection of ten small documents: i, g (i mod 3), s (a string)."""
    c = db.small
    c.insert_many([{"_id": i, "i": i, "g": i % 3, "s": "s%02d" % (9 - i)} for i in range(10)])
    return c


@pytest.fixture
def big(db):
    """N documents, inserted in a shuffled order so sorting means something."""
    c = db.big
    order = [(i * 7919) % N for i in range(N)]  # a permutation: 7919 is prime, N is not a multiple
    assert len(set(order)) == N
    c.insert_many([{"i": i, "pad": "p" * 20} for i in order])
    return c


# -- options ------------------------------------------------------------------


def test_filter(coll):
    assert sorted(d["i"] for d in coll.find({"g": 1})) == [1, 4, 7]
    assert sorted(d["i"] for d in coll.find(filter={"i": {"$gte": 8}})) == [8, 9]
    assert list(coll.find({"g": 5})) == []
    assert len(list(coll.find())) == 10
    assert len(list(coll.find(None))) == 10


def test_filter_must_be_a_mapping(coll):
    with pytest.raises(TypeError):
        coll.find(5)
    with pytest.raises(TypeError):
        coll.find("i")


def test_projection_dict_and_list(coll):
    docs = list(coll.find({"i": 3}, {"s": 1}))
    assert docs == [{"_id": 3, "s": "s06"}]
    docs = list(coll.find({"i": 3}, {"_id": 0, "g": 1, "s": 1}))
    assert docs == [{"g": 0, "s": "s06"}]
    docs = list(coll.find({"i": 3}, ["i", "g"]))
    assert docs == [{"_id": 3, "i": 3, "g": 0}]
    docs = list(coll.find({"i": 3}, projection={"s": 0, "g": 0}))
    assert docs == [{"_id": 3, "i": 3}]
    docs = list(coll.find({"i": 3}, fields=["s"]))  # PyMongo 2's name
    assert docs == [{"_id": 3, "s": "s06"}]


def test_sort_by_key_and_direction(coll):
    assert [d["i"] for d in coll.find().sort("i", DESCENDING)] == list(range(9, -1, -1))
    assert [d["i"] for d in coll.find().sort("i", ASCENDING)] == list(range(10))
    assert [d["i"] for d in coll.find().sort("i")] == list(range(10))
    assert [d["i"] for d in coll.find().sort("s")] == list(range(9, -1, -1))


def test_sort_by_list_of_pairs(coll):
    docs = list(coll.find().sort([("g", ASCENDING), ("i", DESCENDING)]))
    expected = sorted(range(10), key=lambda i: (i % 3, -i))
    assert [d["i"] for d in docs] == expected
    docs = list(coll.find(sort=[("g", DESCENDING), ("i", ASCENDING)]))
    assert [d["i"] for d in docs] == sorted(range(10), key=lambda i: (-(i % 3), i))


def test_sort_rejects_bad_specs(coll):
    with pytest.raises(TypeError):
        coll.find().sort(5)
    with pytest.raises(TypeError):
        coll.find().sort([("a", 1, 2)])
    with pytest.raises(TypeError):
        coll.find().sort([("a", 1)], 1)


def test_skip_and_limit(coll):
    assert [d["i"] for d in coll.find().sort("i").skip(3)] == list(range(3, 10))
    assert [d["i"] for d in coll.find().sort("i").limit(4)] == [0, 1, 2, 3]
    assert [d["i"] for d in coll.find().sort("i").skip(2).limit(3)] == [2, 3, 4]
    assert [d["i"] for d in coll.find(skip=8, limit=5, sort=[("i", 1)])] == [8, 9]
    assert list(coll.find().skip(20)) == []
    assert len(list(coll.find().limit(0))) == 10  # 0 means no limit


def test_skip_limit_batch_size_type_checks(coll):
    cursor = coll.find()
    with pytest.raises(TypeError):
        cursor.skip("1")
    with pytest.raises(ValueError):
        cursor.skip(-1)
    with pytest.raises(TypeError):
        cursor.limit(1.5)
    with pytest.raises(TypeError):
        cursor.batch_size(None)
    with pytest.raises(ValueError):
        cursor.batch_size(-1)


def test_batch_size_with_getmore(big, admin_client):
    before = get_more_total(admin_client)
    docs = list(big.find({}, {"_id": 0, "i": 1}).sort("i", ASCENDING).batch_size(100))
    getmores = get_more_total(admin_client) - before
    assert [d["i"] for d in docs] == list(range(N))
    # 100 batches: the first from find, the rest from getMore (perhaps one
    # more, empty, if the server only learns at the end that it is done).
    assert N // 100 - 1 <= getmores <= N // 100


def test_getmore_without_sort_returns_everything(big, admin_client):
    before = get_more_total(admin_client)
    seen = [d["i"] for d in big.find().batch_size(100)]
    assert get_more_total(admin_client) - before >= N // 100 - 1
    assert len(seen) == N
    assert sorted(seen) == list(range(N))


def test_getmore_with_the_default_batch_size(big):
    docs = list(big.find({}, {"i": 1}).sort("i", DESCENDING))
    assert [d["i"] for d in docs] == list(range(N - 1, -1, -1))


def test_limit_across_getmores(big, admin_client):
    before_open = open_cursors(admin_client)
    cursor = big.find().sort("i").batch_size(100).limit(250)
    assert [d["i"] for d in cursor] == list(range(250))
    assert cursor.cursor_id == 0
    assert not cursor.alive
    assert open_cursors(admin_client) == before_open


def test_limit_smaller_than_batch_size(big, admin_client):
    before = get_more_total(admin_client)
    assert [d["i"] for d in big.find().sort("i").batch_size(100).limit(7)] == list(range(7))
    assert get_more_total(admin_client) == before


def test_limit_with_skip_across_getmores(big):
    docs = list(big.find().sort("i").skip(9_950).batch_size(20).limit(100))
    assert [d["i"] for d in docs] == list(range(9_950, N))


def test_negative_limit_is_a_single_batch(big, admin_client):
    before_open = open_cursors(admin_client)
    before_gm = get_more_total(admin_client)
    cursor = big.find().sort("i").limit(-5)
    assert [d["i"] for d in cursor] == [0, 1, 2, 3, 4]
    assert cursor.cursor_id == 0
    assert not cursor.alive
    # Larger than one batch: what the first batch holds, and never a getMore.
    cursor = big.find().sort("i").batch_size(50).limit(-500)
    docs = [d["i"] for d in cursor]
    assert docs == list(range(50))
    cursor = big.find().sort("i").limit(-500)
    docs = [d["i"] for d in cursor]
    assert 0 < len(docs) <= 500
    assert docs == list(range(len(docs)))
    assert get_more_total(admin_client) == before_gm
    assert open_cursors(admin_client) == before_open


def test_exhausted_cursor(coll):
    cursor = coll.find().batch_size(3)
    assert cursor.cursor_id is None  # not started yet
    assert cursor.alive
    first = next(cursor)
    assert cursor.cursor_id and cursor.alive
    rest = list(cursor)
    assert len(rest) == 9 and first not in rest
    assert cursor.cursor_id == 0
    assert cursor.alive is False
    with pytest.raises(StopIteration):
        next(cursor)
    assert list(cursor) == []


def test_empty_result_cursor(coll):
    cursor = coll.find({"i": -1})
    assert list(cursor) == []
    assert cursor.cursor_id == 0
    assert cursor.alive is False


def test_next_is_pymongo2_spelling(coll):
    cursor = coll.find().sort("i")
    assert cursor.next()["i"] == 0
    assert next(cursor)["i"] == 1


def test_to_list(coll):
    cursor = coll.find().sort("i")
    assert [d["i"] for d in cursor.to_list(3)] == [0, 1, 2]
    assert [d["i"] for d in cursor.to_list()] == list(range(3, 10))


# -- modifiers after iteration ----------------------------------------------


@pytest.mark.parametrize(
    "modify",
    [
        lambda c: c.sort("i"),
        lambda c: c.skip(1),
        lambda c: c.limit(1),
        lambda c: c.batch_size(5),
        lambda c: c.hint([("_id", 1)]),
        lambda c: c.max_time_ms(1000),
        lambda c: c.comment("late"),
    ],
    ids=["sort", "skip", "limit", "batch_size", "hint", "max_time_ms", "comment"],
)
def test_modifiers_after_iteration_raise(coll, modify):
    cursor = coll.find().batch_size(2)
    next(cursor)
    with pytest.raises(InvalidOperation):
        modify(cursor)
    # The cursor is still usable and unchanged.
    assert len(list(cursor)) == 9


def test_modifiers_after_exhaustion_raise(coll):
    cursor = coll.find()
    list(cursor)
    with pytest.raises(InvalidOperation):
        cursor.limit(3)


def test_modifiers_chain_before_iteration(coll):
    cursor = coll.find()
    assert cursor.sort("i", -1).skip(1).limit(2).batch_size(1) is cursor
    assert [d["i"] for d in cursor] == [8, 7]


# -- rewind and clone ---------------------------------------------------------


def test_rewind(big, admin_client):
    cursor = big.find().sort("i").batch_size(100)
    first = [next(cursor)["i"] for _ in range(150)]
    assert first == list(range(150))
    before = open_cursors(admin_client)
    old_id = cursor.cursor_id
    assert cursor.rewind() is cursor
    assert open_cursors(admin_client) == before - 1  # the old server cursor is killed
    assert_cursor_gone(big.database, big.name, old_id)
    assert cursor.alive
    assert [d["i"] for d in cursor] == list(range(N))


def test_rewind_an_exhausted_cursor(coll):
    cursor = coll.find({"g": 0}).sort("i")
    assert [d["i"] for d in cursor] == [0, 3, 6, 9]
    cursor.rewind()
    assert [d["i"] for d in cursor] == [0, 3, 6, 9]


def test_clone(coll):
    cursor = coll.find({"g": {"$ne": 1}}, {"_id": 0, "i": 1}).sort("i", -1).skip(1).limit(3).batch_size(2)
    first = next(cursor)
    other = cursor.clone()
    assert isinstance(other, Cursor) and other is not cursor
    assert other.cursor_id is None and other.alive
    expected = [{"i": 8}, {"i": 6}, {"i": 5}]
    assert [first] + list(cursor) == expected
    assert list(other) == expected
    # A clone is unstarted: it takes modifiers, and they do not touch the original.
    another = cursor.clone().limit(1)
    assert list(another) == [{"i": 8}]
    cursor.rewind()
    assert list(cursor) == expected


def test_clone_keeps_negative_limit(coll):
    cursor = coll.find().sort("i").limit(-2)
    assert [d["i"] for d in cursor.clone()] == [0, 1]


# -- closing and killing server cursors -------------------------------------


def test_close_kills_the_server_cursor(big, admin_client):
    before = open_cursors(admin_client)
    cursor = big.find().batch_size(10)
    next(cursor)
    cursor_id = cursor.cursor_id
    assert cursor_id
    assert open_cursors(admin_client) == before + 1
    cursor.close()
    assert open_cursors(admin_client) == before
    assert_cursor_gone(big.database, big.name, cursor_id)
    assert cursor.alive is False
    assert cursor.cursor_id == 0
    assert list(cursor) == []
    cursor.close()  # twice is harmless


def test_with_closes_the_cursor(big, admin_client):
    before = open_cursors(admin_client)
    with big.find().batch_size(10) as cursor:
        assert next(cursor) is not None
        cursor_id = cursor.cursor_id
        assert open_cursors(admin_client) == before + 1
    assert open_cursors(admin_client) == before
    assert_cursor_gone(big.database, big.name, cursor_id)
    assert not cursor.alive


def test_with_closes_the_cursor_on_error(big, admin_client):
    before = open_cursors(admin_client)
    with pytest.raises(RuntimeError):
        with big.find().batch_size(10) as cursor:
            next(cursor)
            assert open_cursors(admin_client) == before + 1
            raise RuntimeError("boom")
    assert open_cursors(admin_client) == before


def test_close_an_unstarted_cursor(big, admin_client):
    before = open_cursors(admin_client)
    cursor = big.find().batch_size(10)
    cursor.close()
    assert not cursor.alive
    # Closed means closed: no query, no documents, no server cursor left open
    # (not just the first batch of a query nobody asked for).
    assert list(cursor) == []
    assert open_cursors(admin_client) == before
    # rewind() reopens it.
    assert len(list(cursor.rewind())) == N


def test_close_inside_a_request_keeps_the_socket(client, big, admin_client):
    before = open_cursors(admin_client)
    with client.start_request():
        conn_id = client.admin.command("hello")["connectionId"]
        cursor = big.find().batch_size(10)
        next(cursor)
        cursor.close()
        assert client.admin.command("hello")["connectionId"] == conn_id
    assert open_cursors(admin_client) == before


def test_partly_read_cursor_stays_open_until_closed(big, admin_client):
    before = open_cursors(admin_client)
    cursor = big.find().batch_size(10)
    docs = cursor.to_list(15)
    assert len(docs) == 15
    assert cursor.alive
    assert open_cursors(admin_client) == before + 1
    assert len(cursor.to_list(5)) == 5  # it goes on where it stopped
    cursor.close()
    assert open_cursors(admin_client) == before


def test_garbage_collected_cursor_is_killed_with_the_next_operation(client, big, admin_client):
    before = open_cursors(admin_client)
    cursor = big.find().batch_size(10)
    next(cursor)
    cursor_id = cursor.cursor_id
    assert open_cursors(admin_client) == before + 1
    del cursor
    gc.collect()
    # The finalizer only queues the kill (no I/O inside the garbage collector)...
    assert open_cursors(admin_client) == before + 1
    # ...and the client's next operation sends it.
    client.admin.command("ping")
    assert open_cursors(admin_client) == before
    assert_cursor_gone(big.database, big.name, cursor_id)


def test_garbage_collected_cursors_are_killed_together(client, big, admin_client):
    before = open_cursors(admin_client)
    cursors = [big.find().batch_size(5) for _ in range(3)]
    ids = []
    for c in cursors:
        next(c)
        ids.append(c.cursor_id)
    assert len(set(ids)) == 3
    assert open_cursors(admin_client) == before + 3
    del cursors, c
    gc.collect()
    big.find_one()
    assert open_cursors(admin_client) == before
    for cursor_id in ids:
        assert_cursor_gone(big.database, big.name, cursor_id)


def test_garbage_collected_cursor_is_killed_on_close(make_client, big, admin_client):
    other = make_client()
    before = open_cursors(admin_client)
    cursor = other[big.database.name][big.name].find().batch_size(10)
    next(cursor)
    assert open_cursors(admin_client) == before + 1
    del cursor
    gc.collect()
    other.close()
    assert open_cursors(admin_client) == before


def test_exhausted_cursor_leaves_nothing_to_kill(client, big, admin_client):
    before = open_cursors(admin_client)
    cursor = big.find().batch_size(1000)
    assert len(list(cursor)) == N
    assert cursor.cursor_id == 0
    assert open_cursors(admin_client) == before
    del cursor
    gc.collect()
    client.admin.command("ping")
    assert open_cursors(admin_client) == before


# -- the rest of the Cursor API ------------------------------------------------


def test_cursor_count_and_distinct(coll):
    cursor = coll.find({"g": 0})
    assert cursor.count() == 4
    assert sorted(cursor.distinct("i")) == [0, 3, 6, 9]


def test_hint(coll):
    coll.create_index("g")
    assert [d["i"] for d in coll.find({"g": 2}).hint([("g", 1)]).sort("i")] == [2, 5, 8]
    assert [d["i"] for d in coll.find({"g": 2}).hint("g_1").sort("i")] == [2, 5, 8]
    with pytest.raises(OperationFailure):
        list(coll.find().hint("no_such_index"))


def test_max_time_ms_and_comment(coll):
    assert len(list(coll.find().max_time_ms(10_000).comment("hello from the tests"))) == 10


def test_explain(coll):
    plan = coll.find({"g": 1}).explain()
    assert plan["ok"] == 1
    assert "queryPlanner" in plan


def test_command_cursor_from_aggregate(big, admin_client):
    before_gm = get_more_total(admin_client)
    cursor = big.aggregate([{"$match": {"i": {"$lt": 1000}}}, {"$sort": {"i": -1}}], batch_size=100)
    assert isinstance(cursor, CommandCursor)
    assert cursor.alive
    docs = [d["i"] for d in cursor]
    assert docs == list(range(999, -1, -1))
    assert get_more_total(admin_client) - before_gm >= 9
    assert cursor.cursor_id == 0 and not cursor.alive


def test_command_cursor_close(big, admin_client):
    before = open_cursors(admin_client)
    cursor = big.aggregate([{"$match": {}}], batch_size=10)
    assert cursor.cursor_id
    assert open_cursors(admin_client) == before + 1
    cursor.close()
    assert open_cursors(admin_client) == before
