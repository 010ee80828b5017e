"""The validators of the client options table (:data:`mongo_requests.options.OPTIONS`).

Each takes ``(name, value)``, where the value is a URI string or a keyword's Python object, and returns the
value the client uses: ``TypeError`` for a wrong type, ``ConfigurationError`` for a bad value, so that
``socketTimeoutMS=0`` means the same in a URI and as a keyword.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from typing import Any

from bson.binary import UuidRepresentation
from bson.raw_bson import RawBSONDocument
from pymongo.read_preferences import (
    Nearest,
    Primary,
    PrimaryPreferred,
    Secondary,
    SecondaryPreferred,
)

from .errors import ConfigurationError


# -- validators: (name, value) -> value; TypeError for a wrong type, ConfigurationError for a bad value -----
def _boolean(name: str, value: Any) -> bool:
    """True/False, or "true"/"false" from a URI (PyMongo 2.8's validate_boolean)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.lower()
        if lowered not in ("true", "false"):
            raise ConfigurationError("The value of %s must be 'true' or 'false', not %r" % (name, value))
        return lowered == "true"
    raise TypeError("Wrong type for %s, value must be a boolean, not %s" % (name, type(value).__name__))


def _boolean_or_none(name: str, value: Any) -> bool | None:
    return None if value is None else _boolean(name, value)


def _integer(name: str, value: Any) -> int:
    """An int, or the digits of one from a URI."""
    if isinstance(value, bool):
        raise TypeError("Wrong type for %s, value must be an integer, not bool" % (name,))
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ConfigurationError("The value of %s must be an integer, not %r" % (name, value)) from None
    if isinstance(value, float):  # a number, but not a whole one: a bad value rather than a wrong type
        raise ConfigurationError("The value of %s must be an integer, not %r" % (name, value))
    raise TypeError("Wrong type for %s, value must be an integer, not %s" % (name, type(value).__name__))


def _positive_integer(name: str, value: Any) -> int:
    number = _integer(name, value)
    if number <= 0:
        raise ConfigurationError("The value of %s must be a positive integer, not %r" % (name, value))
    return number


def _non_negative_integer(name: str, value: Any) -> int:
    number = _integer(name, value)
    if number < 0:
        raise ConfigurationError("The value of %s must be a non-negative integer, not %r" % (name, value))
    return number


def _milliseconds(name: str, value: Any) -> float:
    """A finite, non-negative number of milliseconds (int, float, or a URI string)."""
    if isinstance(value, bool):
        raise TypeError("Wrong type for %s, value must be a number of milliseconds, not bool" % (name,))
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise ConfigurationError(
                "The value of %s must be a number of milliseconds, not %r" % (name, value)
            ) from None
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        raise TypeError(
            "Wrong type for %s, value must be a number of milliseconds, not %s" % (name, type(value).__name__)
        )
    if not math.isfinite(number) or number < 0:
        raise ConfigurationError(
            "The value of %s must be a non-negative number of milliseconds, not %r" % (name, value)
        )
    return number


def _timeout_zero_is_none(name: str, value: Any) -> float | None:
    """Seconds; 0 or None means no timeout, as in PyMongo (a 0 socket timeout would mean non-blocking)."""
    if value is None:
        return None
    ms = _milliseconds(name, value)
    return ms / 1000.0 if ms else None


def _timeout_positive_or_none(name: str, value: Any) -> float | None:
    """Seconds, or None to wait for ever; 0 is refused, as PyMongo does for waitQueueTimeoutMS."""
    if value is None:
        return None
    ms = _milliseconds(name, value)
    if ms == 0:
        raise ConfigurationError("The value of %s must be greater than 0 (None waits for ever)" % (name,))
    return ms / 1000.0


def _timeout_or_zero(name: str, value: Any) -> float:
    """Seconds, 0 allowed (serverSelectionTimeoutMS=0: one attempt)."""
    if value is None:
        raise TypeError("Wrong type for %s, value must be a number of milliseconds, not None" % (name,))
    return _milliseconds(name, value) / 1000.0


def _w(name: str, value: Any) -> int | str:
    if isinstance(value, str):
        if value.lstrip("+-").isdigit():  # a number in a URI: w=2 is a count, w=-1 an error
            return _non_negative_integer(name, value)
        if not value:
            raise ConfigurationError("The value of %s must not be empty" % (name,))
        return value
    return _non_negative_integer(name, value)


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("Wrong type for %s, value must be a string, not %s" % (name, type(value).__name__))
    return value


def _string_or_none(name: str, value: Any) -> str | None:
    return None if value is None else _string(name, value)


def _callable_or_none(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError("%s must be callable or None, not %s" % (name, type(value).__name__))
    return value


def _compressors(name: str, value: Any) -> tuple[str, ...]:
    """zstd, snappy, zlib: a comma-separated string or a list (see mongo_requests.compression)."""
    from .compression import parse_compressors

    return parse_compressors(value)


def _zlib_level(name: str, value: Any) -> int:
    from .compression import check_zlib_level

    return check_zlib_level(_integer(name, value))


def _mechanism_properties(name: str, value: Any) -> dict[str, Any]:
    """``K:V,K:V`` from a URI, or a dict."""
    if isinstance(value, Mapping):
        return dict(value)
    text = _string(name, value)
    props: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, sep, val = item.partition(":")
        if not sep:
            raise ConfigurationError("%s must be a list of KEY:VALUE pairs, not %r" % (name, value))
        props[key] = val
    return props


def _appname(name: str, value: Any) -> str:
    text = _string(name, value)
    if len(text.encode("utf-8")) > 128:
        raise ConfigurationError("%s must be at most 128 bytes of UTF-8" % (name,))
    return text


def _document_class(name: str, value: Any) -> type:
    if not isinstance(value, type) or not (issubclass(value, MutableMapping) or issubclass(value, RawBSONDocument)):
        raise TypeError(
            "%s must be dict, bson.son.SON, bson.raw_bson.RawBSONDocument, or a subclass of "
            "collections.abc.MutableMapping, not %r" % (name, value)
        )
    return value


_UUID_NAMES = {
    "unspecified": UuidRepresentation.UNSPECIFIED,
    "standard": UuidRepresentation.STANDARD,
    "pythonlegacy": UuidRepresentation.PYTHON_LEGACY,
    "javalegacy": UuidRepresentation.JAVA_LEGACY,
    "csharplegacy": UuidRepresentation.CSHARP_LEGACY,
}


def _uuid_representation(name: str, value: Any) -> int:
    if isinstance(value, str):
        try:
            return _UUID_NAMES[value.lower()]
        except KeyError:
            raise ConfigurationError(
                "The value of %s must be one of %s, not %r" % (name, ", ".join(sorted(_UUID_NAMES)), value)
            ) from None
    number = _integer(name, value)
    if number not in _UUID_NAMES.values():
        raise ConfigurationError("%s=%r is not a bson.binary.UuidRepresentation" % (name, value))
    return number


def _any(name: str, value: Any) -> Any:
    """Checked later, by the object it is given to (CodecOptions)."""
    return value


_READ_MODES = {
    "primary": Primary,
    "primarypreferred": PrimaryPreferred,
    "secondary": Secondary,
    "secondarypreferred": SecondaryPreferred,
    "nearest": Nearest,
}


def _read_preference(name: str, value: Any) -> Any:
    """A pymongo.read_preferences mode, from its name ("secondaryPreferred") or the object itself."""
    if isinstance(value, str):
        if value.lower() not in _READ_MODES:
            raise ConfigurationError("%r is not a valid read preference" % (value,))
        return _READ_MODES[value.lower()]()
    if isinstance(value, tuple(_READ_MODES.values())):
        return value
    raise TypeError("%s must be a string or a pymongo.read_preferences mode, not %s" % (name, type(value).__name__))


def _tag_sets(name: str, value: Any) -> list[dict[str, str]]:
    """Tag sets: a list of dicts (keyword), or URI values ``"dc:ny,rack:1"`` (one per readPreferenceTags)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise TypeError("%s must be a list of tag sets (dicts), not %s" % (name, type(value).__name__))
    tag_sets: list[dict[str, str]] = []
    for item in value:
        if isinstance(item, str):
            tags: dict[str, str] = {}
            for pair in filter(None, item.split(",")):
                key, sep, val = pair.partition(":")
                if not sep or not key:
                    raise ConfigurationError("%s must look like 'dc:ny,rack:1', not %r" % (name, item))
                tags[key.strip()] = val.strip()
            tag_sets.append(tags)
        elif isinstance(item, Mapping):
            tag_sets.append(dict(item))
        else:
            raise TypeError("each tag set in %s must be a dict, not %s" % (name, type(item).__name__))
    return tag_sets


def _max_staleness(name: str, value: Any) -> int:
    """Seconds; -1 means no limit (the default)."""
    number = _integer(name, value)
    if number < -1 or number == 0:
        raise ConfigurationError("%s must be -1 (no limit) or a positive number of seconds, not %r" % (name, value))
    return number


def _heartbeat(name: str, value: Any) -> float:
    """Seconds; at least 500 ms, as in PyMongo (checks more often would load the servers for nothing)."""
    ms = _milliseconds(name, value)
    if ms < 500:
        raise ConfigurationError("%s must be at least 500, not %r" % (name, value))
    return ms / 1000.0


def _seconds_from_ms(name: str, value: Any) -> float:
    return _milliseconds(name, value) / 1000.0
