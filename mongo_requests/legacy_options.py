"""PyMongo 2's spellings of the read, write and codec options, on clients, databases and collections.

PyMongo 2 code reads ``coll.safe``, ``db.slave_okay`` or ``client.tag_sets``.
Without these properties the names would resolve to a sub-database or
sub-collection, which is truthy: a silent wrong answer.  Each one here is
read-only and derived from today's option objects (``write_concern``,
``read_preference``, ``codec_options``); PyMongo 2's setters are refused with
what to use instead, since option objects are immutable here as in PyMongo 4.
"""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = ["LegacyOptions"]


def _immutable(name: str, instead: str) -> NoReturn:
    raise AttributeError("%s cannot be changed in mongo_requests: options are immutable; %s" % (name, instead))


class LegacyOptions:
    """Read-only PyMongo 2 option names, for :class:`MongoClient`, :class:`Database` and :class:`Collection`."""

    write_concern: Any
    read_preference: Any
    codec_options: Any

    @property
    def safe(self) -> bool:
        """PyMongo 2: True when writes are acknowledged (``write_concern.acknowledged``)."""
        return bool(self.write_concern.acknowledged)

    @safe.setter
    def safe(self, value: Any) -> None:
        _immutable("safe", "use with_options(write_concern=WriteConcern(w=1)) or pass w= to the write")

    def get_lasterror_options(self) -> dict[str, Any]:
        """PyMongo 2: the write concern as a dict (``write_concern.document``)."""
        return dict(self.write_concern.document)

    def set_lasterror_options(self, **kwargs: Any) -> NoReturn:
        """PyMongo 2: refused; options are immutable (use ``with_options(write_concern=...)``)."""
        _immutable("the write concern", "use with_options(write_concern=WriteConcern(...))")

    def unset_lasterror_options(self, *options: Any) -> NoReturn:
        """PyMongo 2: refused; options are immutable (use ``with_options(write_concern=...)``)."""
        _immutable("the write concern", "use with_options(write_concern=WriteConcern(...))")

    @property
    def slave_okay(self) -> bool:
        """PyMongo 2: True when reads may go to secondaries (a read preference other than primary)."""
        return bool(self.read_preference.mode)

    @slave_okay.setter
    def slave_okay(self, value: Any) -> None:
        _immutable("slave_okay", "use with_options(read_preference=ReadPreference.SECONDARY_PREFERRED)")

    @property
    def tag_sets(self) -> list[dict[str, Any]]:
        """PyMongo 2: the read preference's tag sets (``[{}]`` when it has none)."""
        tags = getattr(self.read_preference, "tag_sets", None)
        return list(tags) if tags else [{}]

    @property
    def secondary_acceptable_latency_ms(self) -> float:
        """PyMongo 2: the latency window of server selection, in milliseconds (``localThresholdMS``)."""
        client = self.__dict__.get("_client", self)
        return float(client._topology.local_threshold * 1000.0)

    @property
    def uuid_subtype(self) -> int:
        """PyMongo 2: how UUIDs are encoded (``codec_options.uuid_representation``)."""
        return int(self.codec_options.uuid_representation)
