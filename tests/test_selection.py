"""Server selection as a pure function: no server needed.

Cases follow the facts of the MongoDB Server Selection specification's test
plan (modes per topology type, tag sets, the latency window, staleness),
written as this project's own scenarios.
"""

from __future__ import annotations

import datetime

import pytest
from pymongo.errors import ConfigurationError
from pymongo.read_preferences import Nearest, Primary, PrimaryPreferred, ReadPreference, Secondary, SecondaryPreferred

from mongo_requests.sdam import ServerDescription, TopologyDescription, TopologyType, apply, initial_topology
from mongo_requests.selection import (
    choose,
    in_latency_window,
    select,
    selection_error_message,
    suitable_servers,
    validate_max_staleness,
)

# Pure state: the same code in every mode, so it runs once (threads).
pytestmark = pytest.mark.modes("threads")

A, B, C, D = ("a", 27017), ("b", 27017), ("c", 27017), ("d", 27017)
HOSTS = ["a:27017", "b:27017", "c:27017"]
EPOCH = datetime.datetime(2024, 1, 1)


def hello(kind: str, tags=None, write_age: float | None = None, **extra) -> dict:
    doc = {
        "ok": 1,
        "setName": "rs",
        "hosts": HOSTS,
        "minWireVersion": 0,
        "maxWireVersion": 17,
        "tags": tags or {},
        **extra,
    }
    if kind == "primary":
        doc["isWritablePrimary"] = True
    elif kind == "secondary":
        doc["secondary"] = True
    elif kind == "arbiter":
        doc["arbiterOnly"] = True
    if write_age is not None:
        # lastWriteDate write_age seconds before EPOCH + 1000 s.
        doc["lastWrite"] = {"lastWriteDate": EPOCH + datetime.timedelta(seconds=1000 - write_age)}
    return doc


def topology(*members, replica_set="rs") -> TopologyDescription:
    """members: (address, hello, rtt seconds); every check at the same instant."""
    td = initial_topology([m[0] for m in members], replica_set=replica_set)
    for address, reply, rtt in members:
        td = apply(td, ServerDescription.from_hello(address, reply, rtt, now=500.0))
    return td


def addresses(servers) -> set:
    return {sd.address for sd in servers}


FULL = topology(
    (A, hello("primary", {"dc": "ny"}), 0.005),
    (B, hello("secondary", {"dc": "ny", "rack": "1"}), 0.005),
    (C, hello("secondary", {"dc": "sf"}), 0.005),
)
NO_PRIMARY = topology((B, hello("secondary", {"dc": "ny"}), 0.005), (C, hello("secondary", {"dc": "sf"}), 0.005))


@pytest.mark.parametrize(
    "pref, expected",
    [
        (Primary(), {A}),
        (PrimaryPreferred(), {A}),
        (PrimaryPreferred([{"dc": "sf"}]), {A}),  # tags never filter the primary out
        (Secondary(), {B, C}),
        (Secondary([{"dc": "sf"}]), {C}),
        (Secondary([{"dc": "la"}, {"dc": "ny"}]), {B}),  # first matching tag set wins
        (Secondary([{"dc": "la"}]), set()),
        (Secondary([{"dc": "la"}, {}]), {B, C}),  # the empty set matches anyone
        (Secondary([{"dc": "ny", "rack": "1"}]), {B}),
        (SecondaryPreferred(), {B, C}),
        (SecondaryPreferred([{"dc": "la"}]), {A}),  # falls back to the primary
        (Nearest(), {A, B, C}),
        (Nearest([{"dc": "ny"}]), {A, B}),
    ],
)
def test_modes_with_a_primary(pref, expected):
    assert addresses(suitable_servers(FULL, pref)) == expected


@pytest.mark.parametrize(
    "pref, expected",
    [
        (Primary(), set()),
        (PrimaryPreferred(), {B, C}),
        (PrimaryPreferred([{"dc": "sf"}]), {C}),
        (Secondary(), {B, C}),
        (SecondaryPreferred([{"dc": "la"}]), set()),
        (Nearest([{"dc": "sf"}]), {C}),
    ],
)
def test_modes_without_a_primary(pref, expected):
    assert NO_PRIMARY.type is TopologyType.ReplicaSetNoPrimary
    assert addresses(suitable_servers(NO_PRIMARY, pref)) == expected


def test_writes_go_to_the_primary_whatever_the_read_preference():
    assert addresses(suitable_servers(FULL, Secondary(), for_write=True)) == {A}
    assert suitable_servers(NO_PRIMARY, Nearest(), for_write=True) == []


def test_arbiters_and_unknown_members_are_never_selected():
    td = topology((A, hello("primary"), 0.001), (B, hello("arbiter"), 0.001))
    assert addresses(suitable_servers(td, Nearest())) == {A}
    assert addresses(suitable_servers(td, Secondary())) == set()
    assert C in td.servers  # C is Unknown: listed but never chosen


def test_unknown_topology_selects_nothing():
    assert suitable_servers(initial_topology([A, B]), Nearest()) == []


def test_single_topology_uses_its_server_for_any_preference():
    td = apply(initial_topology([B], direct_connection=True), ServerDescription.from_hello(B, hello("secondary")))
    assert addresses(suitable_servers(td, Primary())) == {B}
    assert addresses(suitable_servers(td, Secondary(), for_write=True)) == {B}


def test_sharded_topology_selects_every_mongos():
    mongos = {"ok": 1, "msg": "isdbgrid", "minWireVersion": 0, "maxWireVersion": 17}
    td = initial_topology([A, B])
    for address in (A, B):
        td = apply(td, ServerDescription.from_hello(address, mongos, 0.001))
    assert td.type is TopologyType.Sharded
    assert addresses(suitable_servers(td, Secondary([{"dc": "x"}]))) == {A, B}


def test_incompatible_server_makes_selection_fail():
    td = apply(initial_topology([A]), ServerDescription.from_hello(A, {"ok": 1, "maxWireVersion": 2}))
    with pytest.raises(ConfigurationError, match="requires at least"):
        suitable_servers(td)


# --- Latency window --------------------------------------------------------


def test_latency_window_keeps_servers_within_the_threshold_of_the_fastest():
    td = topology((A, hello("primary"), 0.030), (B, hello("secondary"), 0.010), (C, hello("secondary"), 0.026))
    nearest = suitable_servers(td, Nearest())
    assert addresses(in_latency_window(nearest, 0.015)) == {B}
    assert addresses(in_latency_window(nearest, 0.016)) == {B, C}
    assert addresses(in_latency_window(nearest, 0.020)) == {A, B, C}
    assert addresses(in_latency_window(nearest, 0.0)) == {B}


def test_random_choice_within_the_window():
    td = topology((A, hello("primary"), 0.001), (B, hello("secondary"), 0.001), (C, hello("secondary"), 0.5))
    seen = {select(td, Nearest()).address for _ in range(200)}
    assert seen == {A, B}
    # The random source is injectable, so the choice is testable exactly.
    assert select(td, Nearest(), rng=lambda servers: servers[-1]).address == B
    assert choose([]) is None


# --- Staleness -------------------------------------------------------------


def test_max_staleness_must_be_measurable():
    validate_max_staleness(Secondary(max_staleness=90), 10.0)
    validate_max_staleness(Secondary(), 10.0)  # -1: no limit
    with pytest.raises(ConfigurationError, match="at least 90"):
        validate_max_staleness(Secondary(max_staleness=89), 10.0)
    with pytest.raises(ConfigurationError, match="at least 130"):
        validate_max_staleness(Secondary(max_staleness=100), 120.0)


def test_staleness_relative_to_the_primary():
    # Checked at the same instant: staleness = primary's write - secondary's write + heartbeat.
    td = topology(
        (A, hello("primary", write_age=0), 0.001),
        (B, hello("secondary", write_age=50), 0.001),
        (C, hello("secondary", write_age=150), 0.001),
    )
    assert addresses(suitable_servers(td, Secondary(max_staleness=90), heartbeat_frequency=10)) == {B}
    assert addresses(suitable_servers(td, Secondary(max_staleness=90), heartbeat_frequency=45)) == set()
    assert addresses(suitable_servers(td, Secondary(max_staleness=200), heartbeat_frequency=10)) == {B, C}
    assert addresses(suitable_servers(td, Nearest(max_staleness=90), heartbeat_frequency=10)) == {A, B}
    # secondaryPreferred falls back to the primary when every secondary is stale.
    assert addresses(suitable_servers(td, SecondaryPreferred(max_staleness=90), heartbeat_frequency=85)) == {A}


def test_staleness_counts_when_each_member_was_checked():
    # B was checked 100 s before the primary: its write is older, but so is what we know.
    td = initial_topology([A, B], replica_set="rs")
    td = apply(td, ServerDescription.from_hello(A, hello("primary", write_age=0), 0.001, now=600.0))
    td = apply(td, ServerDescription.from_hello(B, hello("secondary", write_age=100), 0.001, now=500.0))
    assert addresses(suitable_servers(td, Secondary(max_staleness=90), heartbeat_frequency=10)) == {B}


def test_staleness_without_a_primary_uses_the_freshest_secondary():
    td = topology((B, hello("secondary", write_age=0), 0.001), (C, hello("secondary", write_age=100), 0.001))
    assert addresses(suitable_servers(td, Secondary(max_staleness=90), heartbeat_frequency=10)) == {B}
    assert addresses(suitable_servers(td, Secondary(max_staleness=120), heartbeat_frequency=10)) == {B, C}


def test_staleness_filter_comes_before_tags():
    td = topology(
        (A, hello("primary", write_age=0), 0.001),
        (B, hello("secondary", {"dc": "ny"}, write_age=500), 0.001),
        (C, hello("secondary", {"dc": "sf"}, write_age=0), 0.001),
    )
    pref = Secondary([{"dc": "ny"}, {"dc": "sf"}], max_staleness=90)
    assert addresses(suitable_servers(td, pref)) == {C}


# --- Error message ----------------------------------------------------------


def test_selection_error_message_lists_each_member_with_type_and_error():
    td = FULL
    td = apply(td, ServerDescription.unknown(A, OSError("connection refused")))
    message = selection_error_message(td, ReadPreference.PRIMARY, for_write=True, timeout=2.5)
    assert "a writable primary" in message and "ReplicaSetNoPrimary 'rs'" in message
    assert "a:27017: Unknown (connection refused)" in message
    assert "b:27017: RSSecondary" in message and "c:27017: RSSecondary" in message
    assert "serverSelectionTimeoutMS=2500" in message
    message = selection_error_message(td, Secondary([{"dc": "la"}], max_staleness=100))
    assert "read preference Secondary" in message and "'la'" in message and "maxStalenessSeconds=100" in message


# --- Client options that feed selection ------------------------------------


def test_read_preference_options_from_uri_and_keywords():
    from mongo_requests.options import ClientOptions

    opts = ClientOptions.parse(
        "mongodb://a,b/?replicaSet=rs&readPreference=secondaryPreferred"
        "&readPreferenceTags=dc:ny,rack:1&readPreferenceTags=&maxStalenessSeconds=120"
        "&localThresholdMS=30&heartbeatFrequencyMS=2000"
    )
    pref = opts.read_preference
    assert pref.mode == 3 and pref.tag_sets == [{"dc": "ny", "rack": "1"}, {}] and pref.max_staleness == 120
    assert (opts.replica_set, opts.local_threshold, opts.heartbeat_frequency) == ("rs", 0.03, 2.0)
    kw = ClientOptions.parse("a", read_preference=Nearest(tag_sets=[{"dc": "sf"}]), retryWrites=False)
    assert kw.read_preference.mode == 4 and kw.read_preference.tag_sets == [{"dc": "sf"}] and not kw.retry_writes
    assert ClientOptions.parse("a").read_preference.mode == 0
    for bad in (
        "readPreferenceTags=dc:ny",
        "readPreference=secondary&maxStalenessSeconds=30",
        "heartbeatFrequencyMS=100",
        "readPreference=sideways",
    ):
        with pytest.raises(ConfigurationError):
            ClientOptions.parse("mongodb://a/?" + bad)
