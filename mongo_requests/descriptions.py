"""What the client knows about servers, as values: server and topology descriptions.

Part of the SDAM specification's model (see :mod:`mongo_requests.sdam` for the
transitions): a :class:`ServerDescription` is what one ``hello`` reply (or one
failure) said about one server, a :class:`TopologyDescription` is what the
client believes about all of them.  Both are immutable; nothing here does I/O.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "Address",
    "ServerType",
    "TopologyType",
    "ServerDescription",
    "TopologyDescription",
    "initial_topology",
    "parse_address",
    "format_address",
    "server_type",
    "MIN_SUPPORTED_WIRE_VERSION",
    "MAX_SUPPORTED_WIRE_VERSION",
]

Address = tuple[str, int]

DEFAULT_PORT = 27017
# OP_MSG needs MongoDB 3.6 (wire version 6); the highest version the driver
# has been written against is that of MongoDB 8.x.  A server outside this
# range makes the topology incompatible (selection then raises).
MIN_SUPPORTED_WIRE_VERSION = 6
MAX_SUPPORTED_WIRE_VERSION = 27
# MongoDB 6.0: the electionId is compared before the setVersion.
_ELECTION_ID_FIRST_WIRE_VERSION = 17


class ServerType(enum.Enum):
    """What one server is, according to its latest ``hello`` reply."""

    Unknown = "Unknown"
    Standalone = "Standalone"
    Mongos = "Mongos"
    PossiblePrimary = "PossiblePrimary"
    RSPrimary = "RSPrimary"
    RSSecondary = "RSSecondary"
    RSArbiter = "RSArbiter"
    RSOther = "RSOther"
    RSGhost = "RSGhost"
    LoadBalancer = "LoadBalancer"


class TopologyType(enum.Enum):
    """What the client is connected to as a whole."""

    Single = "Single"
    ReplicaSetNoPrimary = "ReplicaSetNoPrimary"
    ReplicaSetWithPrimary = "ReplicaSetWithPrimary"
    Sharded = "Sharded"
    Unknown = "Unknown"
    LoadBalanced = "LoadBalanced"


_DATA_BEARING = frozenset(
    (ServerType.Standalone, ServerType.Mongos, ServerType.RSPrimary, ServerType.RSSecondary, ServerType.LoadBalancer)
)
_RS_MEMBER = frozenset((ServerType.RSSecondary, ServerType.RSArbiter, ServerType.RSOther))


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> Address:
    """Parse ``host[:port]`` (IPv6 in brackets) into a lower-cased address.

    :raises ValueError: if the port is not a number in 1..65535.
    """
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:  # a bare name, or a bare IPv6 address without brackets
        host, port_text = text, ""
    port = int(port_text) if port_text else default_port
    if not 0 < port < 65536:
        raise ValueError("port out of range in %r" % text)
    return (host.lower(), port)


def format_address(address: Address) -> str:
    """Return ``host:port``, with brackets around an IPv6 host."""
    host, port = address
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)


def server_type(hello: Mapping[str, Any]) -> ServerType:
    """Classify a ``hello`` (or legacy ``isMaster``) reply."""
    if not hello.get("ok"):
        return ServerType.Unknown
    if hello.get("msg") == "isdbgrid":
        return ServerType.Mongos
    if hello.get("setName") is not None:
        if hello.get("isWritablePrimary") or hello.get("ismaster"):
            return ServerType.RSPrimary
        if hello.get("hidden"):
            return ServerType.RSOther
        if hello.get("secondary"):
            return ServerType.RSSecondary
        if hello.get("arbiterOnly"):
            return ServerType.RSArbiter
        return ServerType.RSOther
    if hello.get("isreplicaset"):
        return ServerType.RSGhost
    return ServerType.Standalone


def _epoch(date: datetime.datetime) -> float:
    # bson decodes dates as naive UTC datetimes; naive .timestamp() would
    # read them as local time.
    if date.tzinfo is None:
        date = date.replace(tzinfo=datetime.UTC)
    return date.timestamp()


def _addresses(hello: Mapping[str, Any], field: str) -> frozenset[Address]:
    return frozenset(parse_address(h) for h in hello.get(field) or ())


class ServerDescription:
    """What the client knows about one server; immutable.

    Build one with :meth:`from_hello` after a successful check, or
    :meth:`unknown` after a failed one (or an error that marks it unknown).

    :ivar address: ``(host, port)``, host lower-cased.
    :ivar type: a :class:`ServerType`.
    :ivar error: the error that made it Unknown, if any.
    :ivar round_trip_time: average round trip in seconds, None if unknown.
    :ivar last_update_time: monotonic time of the check that produced this.
    :ivar last_write_date: the server's ``lastWrite.lastWriteDate`` in seconds
        since the epoch (replica set members), else None.
    """

    __slots__ = (
        "address",
        "type",
        "error",
        "round_trip_time",
        "last_update_time",
        "last_write_date",
        "min_wire_version",
        "max_wire_version",
        "me",
        "hosts",
        "passives",
        "arbiters",
        "tags",
        "set_name",
        "set_version",
        "election_id",
        "primary",
        "logical_session_timeout_minutes",
        "topology_version",
        "hello",
    )

    address: Address
    type: ServerType
    error: BaseException | None
    round_trip_time: float | None
    last_update_time: float
    last_write_date: float | None
    min_wire_version: int
    max_wire_version: int
    me: Address | None
    hosts: frozenset[Address]
    passives: frozenset[Address]
    arbiters: frozenset[Address]
    tags: Mapping[str, str]
    set_name: str | None
    set_version: int | None
    election_id: Any
    primary: Address | None
    logical_session_timeout_minutes: int | None
    topology_version: Mapping[str, Any] | None
    hello: Mapping[str, Any] | None

    def __init__(self, address: Address, **fields: Any) -> None:
        values: dict[str, Any] = dict(_DEFAULTS)
        unknown = set(fields) - set(values)
        if unknown:
            raise TypeError("unknown ServerDescription fields: %s" % ", ".join(sorted(unknown)))
        values.update(fields)
        object.__setattr__(self, "address", address)
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ServerDescription is immutable")

    @classmethod
    def unknown(
        cls,
        address: Address,
        error: BaseException | None = None,
        now: float = 0.0,
        topology_version: Mapping[str, Any] | None = None,
    ) -> ServerDescription:
        """A default (Unknown) description, optionally carrying the error that caused it."""
        return cls(address, error=error, last_update_time=now, topology_version=topology_version)

    @classmethod
    def from_hello(
        cls, address: Address, hello: Mapping[str, Any], round_trip_time: float | None = None, now: float = 0.0
    ) -> ServerDescription:
        """Describe a server from its ``hello`` reply.

        :param round_trip_time: the (averaged) round trip in seconds.
        :param now: monotonic time at which the reply arrived.
        """
        stype = server_type(hello)
        if stype is ServerType.Unknown:
            return cls.unknown(address, now=now, topology_version=hello.get("topologyVersion"))
        last_write = hello.get("lastWrite") or {}
        write_date = last_write.get("lastWriteDate")
        me = hello.get("me")
        primary = hello.get("primary")
        return cls(
            address,
            type=stype,
            round_trip_time=round_trip_time,
            last_update_time=now,
            last_write_date=_epoch(write_date) if write_date is not None else None,
            min_wire_version=hello.get("minWireVersion", 0),
            max_wire_version=hello.get("maxWireVersion", 0),
            me=parse_address(me) if me else None,
            hosts=_addresses(hello, "hosts"),
            passives=_addresses(hello, "passives"),
            arbiters=_addresses(hello, "arbiters"),
            tags=dict(hello.get("tags") or {}),
            set_name=hello.get("setName"),
            set_version=hello.get("setVersion"),
            election_id=hello.get("electionId"),
            primary=parse_address(primary) if primary else None,
            logical_session_timeout_minutes=hello.get("logicalSessionTimeoutMinutes"),
            topology_version=hello.get("topologyVersion"),
            hello=hello,
        )

    def replace(self, **fields: Any) -> ServerDescription:
        """A copy with some fields changed."""
        values = {name: getattr(self, name) for name in _DEFAULTS}
        values.update(fields)
        return ServerDescription(self.address, **values)

    @property
    def is_data_bearing(self) -> bool:
        return self.type in _DATA_BEARING

    @property
    def is_readable(self) -> bool:
        """True for primaries, secondaries, standalones, mongoses."""
        return self.is_data_bearing

    @property
    def all_hosts(self) -> frozenset[Address]:
        """The ``hosts``, ``passives`` and ``arbiters`` this server reported."""
        return self.hosts | self.passives | self.arbiters

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ServerDescription):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__ if n not in ("error", "hello"))

    def __hash__(self) -> int:
        return hash((self.address, self.type))

    def __repr__(self) -> str:
        extra = ""
        if self.error is not None:
            extra = ", error=%r" % (str(self.error),)
        elif self.round_trip_time is not None:
            extra = ", rtt=%.1fms" % (self.round_trip_time * 1000)
        return "<ServerDescription %s %s%s>" % (format_address(self.address), self.type.name, extra)


_DEFAULTS: dict[str, Any] = {
    "type": ServerType.Unknown,
    "error": None,
    "round_trip_time": None,
    "last_update_time": 0.0,
    "last_write_date": None,
    "min_wire_version": 0,
    "max_wire_version": 0,
    "me": None,
    "hosts": frozenset(),
    "passives": frozenset(),
    "arbiters": frozenset(),
    "tags": {},
    "set_name": None,
    "set_version": None,
    "election_id": None,
    "primary": None,
    "logical_session_timeout_minutes": None,
    "topology_version": None,
    "hello": None,
}


class TopologyDescription:
    """What the client knows about all its servers; immutable.

    :ivar type: a :class:`TopologyType`.
    :ivar servers: mapping of address to :class:`ServerDescription` (do not
        mutate it; :func:`apply` returns a new description with a new mapping).
    :ivar set_name: the replica set name, configured or discovered.
    :ivar max_set_version: highest setVersion accepted from a primary.
    :ivar max_election_id: highest electionId accepted from a primary.
    :ivar seed_count: number of seeds the client started from.
    :ivar compatibility_error: why the driver cannot use this topology, if so.
    :ivar logical_session_timeout_minutes: min over data-bearing servers; None
        if any of them does not support sessions.
    """

    __slots__ = (
        "type",
        "servers",
        "set_name",
        "max_set_version",
        "max_election_id",
        "seed_count",
        "compatibility_error",
        "logical_session_timeout_minutes",
    )

    type: TopologyType
    servers: Mapping[Address, ServerDescription]
    set_name: str | None
    max_set_version: int | None
    max_election_id: Any
    seed_count: int
    compatibility_error: str | None
    logical_session_timeout_minutes: int | None

    def __init__(
        self,
        type: TopologyType,
        servers: Mapping[Address, ServerDescription],
        set_name: str | None = None,
        max_set_version: int | None = None,
        max_election_id: Any = None,
        seed_count: int = 1,
    ) -> None:
        for name, value in (
            ("type", type),
            ("servers", servers),
            ("set_name", set_name),
            ("max_set_version", max_set_version),
            ("max_election_id", max_election_id),
            ("seed_count", seed_count),
        ):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "compatibility_error", _compatibility(servers))
        object.__setattr__(self, "logical_session_timeout_minutes", _session_timeout(servers))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("TopologyDescription is immutable")

    @property
    def primary(self) -> ServerDescription | None:
        """The RSPrimary's description, if one is known."""
        for sd in self.servers.values():
            if sd.type is ServerType.RSPrimary:
                return sd
        return None

    def by_type(self, *types: ServerType) -> list[ServerDescription]:
        """Descriptions of the servers with one of ``types``, in address order."""
        return [self.servers[a] for a in sorted(self.servers) if self.servers[a].type in types]

    @property
    def has_readable_server(self) -> bool:
        return any(sd.is_data_bearing for sd in self.servers.values())

    def __repr__(self) -> str:
        members = ", ".join("%s %s" % (format_address(a), sd.type.name) for a, sd in sorted(self.servers.items()))
        name = " %r" % self.set_name if self.set_name else ""
        return "<TopologyDescription %s%s: %s>" % (self.type.name, name, members)


def _compatibility(servers: Mapping[Address, ServerDescription]) -> str | None:
    for sd in servers.values():
        if sd.type is ServerType.Unknown or sd.type is ServerType.PossiblePrimary:
            continue  # not heard from (yet): nothing to judge
        if sd.min_wire_version > MAX_SUPPORTED_WIRE_VERSION:
            return (
                "Server at %s requires wire version %d, but this version of mongo_requests only supports up "
                "to %d." % (format_address(sd.address), sd.min_wire_version, MAX_SUPPORTED_WIRE_VERSION)
            )
        if sd.max_wire_version < MIN_SUPPORTED_WIRE_VERSION:
            return (
                "Server at %s reports wire version %d, but this version of mongo_requests requires at least "
                "%d (MongoDB 3.6)." % (format_address(sd.address), sd.max_wire_version, MIN_SUPPORTED_WIRE_VERSION)
            )
    return None


def _session_timeout(servers: Mapping[Address, ServerDescription]) -> int | None:
    timeouts = [sd.logical_session_timeout_minutes for sd in servers.values() if sd.is_data_bearing]
    if not timeouts or any(t is None for t in timeouts):
        return None
    return min(timeouts)  # type: ignore[type-var]


def initial_topology(
    seeds: Iterable[Address], replica_set: str | None = None, direct_connection: bool | None = None
) -> TopologyDescription:
    """The topology description before any check, per the URI options.

    :raises ValueError: for ``directConnection=true`` with several seeds.
    """
    addresses = list(dict.fromkeys(seeds))  # keep order, drop duplicates
    if not addresses:
        raise ValueError("need at least one seed")
    if direct_connection and len(addresses) > 1:
        raise ValueError("directConnection=true cannot be used with multiple seeds")
    if direct_connection:
        ttype = TopologyType.Single
    elif replica_set is not None:
        ttype = TopologyType.ReplicaSetNoPrimary
    else:
        ttype = TopologyType.Unknown
    servers = {a: ServerDescription.unknown(a) for a in addresses}
    return TopologyDescription(ttype, servers, set_name=replica_set, seed_count=len(addresses))
