"""Server selection as a pure function over a topology description.

Follows the MongoDB *Server Selection* specification: which servers are
*suitable* for an operation depends on the topology type, the read preference
(mode, tag sets, ``maxStalenessSeconds``) and whether it writes; the chosen
server then comes from the *latency window*, the suitable servers whose
average round trip is within ``localThresholdMS`` of the fastest one.

Nothing here does I/O or waits: :func:`suitable_servers` and
:func:`in_latency_window` return lists, the caller (the topology) re-checks
the servers and tries again until ``serverSelectionTimeoutMS`` runs out, and
then raises with :func:`selection_error_message`.

Read preferences are :mod:`pymongo.read_preferences` objects.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pymongo.errors import ConfigurationError
from pymongo.read_preferences import ReadPreference

from .sdam import ServerDescription, ServerType, TopologyDescription, TopologyType, format_address

__all__ = [
    "IDLE_WRITE_PERIOD",
    "SMALLEST_MAX_STALENESS",
    "choose",
    "in_latency_window",
    "select",
    "selection_error_message",
    "suitable_servers",
    "validate_max_staleness",
]

# Secondaries' lastWriteDate advances at least every 10 s (the primary writes
# a no-op when idle), which bounds how precise a staleness estimate can be.
IDLE_WRITE_PERIOD = 10.0
SMALLEST_MAX_STALENESS = 90.0

# pymongo's mode numbers (stable since PyMongo 2.x).
_PRIMARY, _PRIMARY_PREFERRED, _SECONDARY, _SECONDARY_PREFERRED, _NEAREST = range(5)

PRIMARY = ReadPreference.PRIMARY


class _ServerMode(Protocol):
    """What selection reads from a :mod:`pymongo.read_preferences` object."""

    @property
    def mode(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def tag_sets(self) -> Any: ...

    @property
    def max_staleness(self) -> Any: ...


def validate_max_staleness(read_preference: _ServerMode, heartbeat_frequency: float) -> None:
    """Refuse a ``maxStalenessSeconds`` too small to be measured.

    :param heartbeat_frequency: ``heartbeatFrequencyMS`` in seconds.
    :raises ConfigurationError: if it is below 90 s or below the heartbeat
        frequency plus the 10 s idle write period.
    """
    max_staleness = read_preference.max_staleness
    if max_staleness == -1:
        return
    floor = max(SMALLEST_MAX_STALENESS, heartbeat_frequency + IDLE_WRITE_PERIOD)
    if max_staleness < floor:
        raise ConfigurationError(
            "maxStalenessSeconds=%s is too small: it must be at least %d seconds (90, and at least "
            "heartbeatFrequencyMS + 10 seconds)" % (max_staleness, int(floor))
        )


def _staleness(sd: ServerDescription, td: TopologyDescription, heartbeat_frequency: float) -> float | None:
    """Estimated staleness of secondary ``sd`` in seconds, None if unknown."""
    if sd.last_write_date is None:
        return None
    primary = td.primary
    if primary is not None:
        if primary.last_write_date is None:
            return None
        return (
            (sd.last_update_time - sd.last_write_date)
            - (primary.last_update_time - primary.last_write_date)
            + heartbeat_frequency
        )
    dates = [
        s.last_write_date
        for s in td.servers.values()
        if s.type is ServerType.RSSecondary and s.last_write_date is not None
    ]
    return max(dates) - sd.last_write_date + heartbeat_frequency


def _fresh_secondaries(
    td: TopologyDescription, read_preference: _ServerMode, heartbeat_frequency: float
) -> list[ServerDescription]:
    secondaries = td.by_type(ServerType.RSSecondary)
    max_staleness = read_preference.max_staleness
    if max_staleness == -1:
        return secondaries
    fresh = []
    for sd in secondaries:
        staleness = _staleness(sd, td, heartbeat_frequency)
        if staleness is None or staleness <= max_staleness:
            fresh.append(sd)
    return fresh


def _matches(sd: ServerDescription, tag_set: Any) -> bool:
    return all(sd.tags.get(key) == value for key, value in tag_set.items())


def _with_tags(servers: list[ServerDescription], tag_sets: Sequence[Any]) -> list[ServerDescription]:
    # The first tag set that matches any server wins; an empty set matches all.
    for tag_set in tag_sets or ({},):
        matching = [sd for sd in servers if _matches(sd, tag_set)]
        if matching:
            return matching
    return []


def suitable_servers(
    td: TopologyDescription,
    read_preference: _ServerMode = PRIMARY,
    for_write: bool = False,
    heartbeat_frequency: float = 10.0,
) -> list[ServerDescription]:
    """The servers an operation may use, before the latency window.

    :param read_preference: a :mod:`pymongo.read_preferences` mode; ignored for
        writes, which always go to a primary (or standalone, or mongos).
    :param for_write: select for a write.
    :param heartbeat_frequency: ``heartbeatFrequencyMS`` in seconds (it enters
        the staleness estimate).
    """
    if td.compatibility_error is not None:
        raise ConfigurationError(td.compatibility_error)
    ttype = td.type
    servers = td.servers
    if ttype is TopologyType.Unknown:
        return []
    if ttype is TopologyType.Single:
        # A direct connection uses its one server whatever it is; the server
        # itself refuses what it cannot do.
        return [
            sd
            for sd in servers.values()
            if sd.is_data_bearing or sd.type in (ServerType.RSArbiter, ServerType.RSOther, ServerType.RSGhost)
        ]
    if ttype in (TopologyType.Sharded, TopologyType.LoadBalanced):
        return [sd for sd in servers.values() if sd.type in (ServerType.Mongos, ServerType.LoadBalancer)]
    primary = td.primary
    mode = PRIMARY.mode if for_write else read_preference.mode
    if mode == _PRIMARY:
        return [primary] if primary is not None else []
    tag_sets = read_preference.tag_sets
    if mode == _PRIMARY_PREFERRED:
        if primary is not None:
            return [primary]
        return _with_tags(_fresh_secondaries(td, read_preference, heartbeat_frequency), tag_sets)
    if mode == _SECONDARY:
        return _with_tags(_fresh_secondaries(td, read_preference, heartbeat_frequency), tag_sets)
    if mode == _SECONDARY_PREFERRED:
        chosen = _with_tags(_fresh_secondaries(td, read_preference, heartbeat_frequency), tag_sets)
        if chosen:
            return chosen
        return [primary] if primary is not None else []
    # Nearest: the primary and the fresh secondaries, filtered by tags.
    candidates = _fresh_secondaries(td, read_preference, heartbeat_frequency)
    if primary is not None:
        candidates.insert(0, primary)
    return _with_tags(candidates, tag_sets)


def in_latency_window(servers: Sequence[ServerDescription], local_threshold: float = 0.015) -> list[ServerDescription]:
    """The servers whose round trip is within ``local_threshold`` s of the fastest.

    Servers with no measured round trip yet count as the fastest (0 s): a
    freshly discovered member is not shunned for lack of data.
    """
    if len(servers) <= 1:
        return list(servers)
    rtts = [sd.round_trip_time or 0.0 for sd in servers]
    limit = min(rtts) + local_threshold
    return [sd for sd, rtt in zip(servers, rtts, strict=True) if rtt <= limit]


def choose(
    servers: Sequence[ServerDescription], rng: Callable[[Sequence[Any]], Any] = random.choice
) -> ServerDescription | None:
    """Pick one server at random (the specification's rule), None if there is none."""
    if not servers:
        return None
    if len(servers) == 1:
        return servers[0]
    return rng(servers)  # type: ignore[no-any-return]


def select(
    td: TopologyDescription,
    read_preference: _ServerMode = PRIMARY,
    for_write: bool = False,
    local_threshold: float = 0.015,
    heartbeat_frequency: float = 10.0,
    rng: Callable[[Sequence[Any]], Any] = random.choice,
) -> ServerDescription | None:
    """Choose the server for one operation, or None if no server is suitable now."""
    suitable = suitable_servers(td, read_preference, for_write, heartbeat_frequency)
    return choose(in_latency_window(suitable, local_threshold), rng)


def _describe_preference(read_preference: _ServerMode, for_write: bool) -> str:
    if for_write:
        return "a writable primary"
    text = "read preference %s" % read_preference.name
    if read_preference.tag_sets and read_preference.tag_sets != [{}]:
        text += " with tags %s" % (read_preference.tag_sets,)
    if read_preference.max_staleness != -1:
        text += " and maxStalenessSeconds=%s" % read_preference.max_staleness
    return text


def selection_error_message(
    td: TopologyDescription,
    read_preference: _ServerMode = PRIMARY,
    for_write: bool = False,
    timeout: float | None = None,
) -> str:
    """The message of a ServerSelectionTimeoutError: what was wanted, each member's type and last error."""
    wanted = _describe_preference(read_preference, for_write)
    name = " %r" % td.set_name if td.set_name else ""
    head = "No server matches %s in topology %s%s" % (wanted, td.type.name, name)
    if timeout is not None:
        head += " (gave up after serverSelectionTimeoutMS=%d)" % round(timeout * 1000)
    if td.compatibility_error:
        head += "; " + td.compatibility_error
    lines = []
    for address in sorted(td.servers):
        sd = td.servers[address]
        line = "%s: %s" % (format_address(address), sd.type.name)
        if sd.error is not None:
            line += " (%s)" % (sd.error,)
        elif sd.tags:
            line += " tags=%s" % (dict(sd.tags),)
        lines.append(line)
    if not lines:
        lines.append("no members known")
    return head + ". Members: " + "; ".join(lines)
