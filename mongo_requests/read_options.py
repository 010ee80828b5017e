"""Checks of the read options that databases and collections take (``read_preference``, ``read_concern``)."""

from __future__ import annotations

from typing import Any

from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import Nearest, Primary, PrimaryPreferred, Secondary, SecondaryPreferred

from .errors import ConfigurationError

__all__ = ["check_read_options"]

_MODES = (Primary, PrimaryPreferred, Secondary, SecondaryPreferred, Nearest)


def check_read_options(read_preference: Any, read_concern: Any) -> None:
    """Refuse what reads cannot honour: a read preference that is not a mode, a non-default read concern.

    Every :mod:`pymongo.read_preferences` mode is honoured (see
    :mod:`mongo_requests.selection`); read concerns are not configurable yet.
    """
    if read_preference is not None and not isinstance(read_preference, _MODES):
        raise TypeError("%r is not a read preference: use a pymongo.read_preferences mode" % (read_preference,))
    if read_concern is not None:
        if not isinstance(read_concern, ReadConcern):
            raise TypeError("read_concern must be an instance of pymongo.read_concern.ReadConcern")
        if read_concern.level is not None:
            raise ConfigurationError(
                "read_concern %r is not supported: reads use the server's default read concern" % (read_concern.level,)
            )
