"""Wire compression: OP_COMPRESSED, as pure functions over bytes.

A client lists the compressors it wants (``compressors=zstd,snappy,zlib``)
in its first ``hello``; the server answers with the ones it accepts, in the
client's order, and the first of those is used for that connection.  An
OP_COMPRESSED message wraps any other message::

    header            int32 messageLength, requestID, responseTo, opCode=2012
    originalOpcode    int32 (2013, OP_MSG)
    uncompressedSize  int32 (the original message without its header)
    compressorId      uint8 (1 snappy, 2 zlib, 3 zstd)
    compressedMessage the original message's body, compressed

The server answers a compressed request with a compressed reply, using the
same compressor.  Commands that carry credentials or set up the connection
(``hello``, the SASL conversation, user management) are never compressed, so
they are not hidden from, or mangled by, whatever inspects the stream.

``zstandard`` and ``python-snappy`` are optional extras (``pip install
'mongo_requests[zstd,snappy]'``); zlib is in the standard library.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from .errors import ConfigurationError, ProtocolError

__all__ = [
    "OP_COMPRESSED",
    "Compressor",
    "NEVER_COMPRESSED",
    "parse_compressors",
    "compressor_for",
    "compress_message",
    "decompress_body",
]

OP_COMPRESSED = 2012
_OP_MSG = 2013

_HEADER = struct.Struct("<iiii")
_PREFIX = struct.Struct("<iiB")  # originalOpcode, uncompressedSize, compressorId

# Command names (lower case) sent uncompressed whatever was negotiated: the
# MongoDB compression specification lists them.
NEVER_COMPRESSED = frozenset(
    (
        "hello",
        "ismaster",
        "saslstart",
        "saslcontinue",
        "getnonce",
        "authenticate",
        "createuser",
        "updateuser",
        "copydbsaslstart",
        "copydbgetnonce",
        "copydb",
    )
)

# name -> compressorId, in the specification's numbering.
_IDS = {"snappy": 1, "zlib": 2, "zstd": 3}


class Compressor:
    """One negotiated compressor: its id and its two functions (immutable)."""

    __slots__ = ("name", "id", "compress", "decompress")

    name: str
    id: int
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes], bytes]

    def __init__(self, name: str, compress: Callable[[bytes], bytes], decompress: Callable[[bytes], bytes]) -> None:
        set_ = object.__setattr__
        set_(self, "name", name)
        set_(self, "id", _IDS[name])
        set_(self, "compress", compress)
        set_(self, "decompress", decompress)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Compressor is immutable")

    def __repr__(self) -> str:
        return "<Compressor %s>" % self.name


def _snappy() -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]] | None:
    """snappy's raw (unframed) block format, which is what MongoDB speaks."""
    try:
        import snappy
    except ImportError:
        return None
    return snappy.compress, snappy.uncompress


def _zstd() -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]] | None:
    try:
        import zstandard
    except ImportError:
        return None

    # A ZstdCompressor is not thread-safe, and greenlets may share a process
    # with threads, so each call makes its own: that costs about a
    # microsecond, small beside the compression itself.
    def compress(data: bytes) -> bytes:
        return zstandard.ZstdCompressor().compress(data)

    def decompress(data: bytes) -> bytes:
        # The frame written by mongod carries its content size, so the
        # one-shot API can size the output.
        return zstandard.ZstdDecompressor().decompress(data)

    return compress, decompress


def _zlib(level: int) -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    def compress(data: bytes) -> bytes:
        return zlib.compress(data, level)

    return compress, zlib.decompress


def parse_compressors(value: Any) -> tuple[str, ...]:
    """The ``compressors`` option as a tuple of known names, in order.

    Accepts a comma-separated string or a sequence of names.  Names this
    driver does not know, and those whose library is not installed, are left
    out with a warning (as the specification asks), so a URI written for
    another driver still connects, uncompressed.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        names: Sequence[Any] = [v for v in value.split(",")]
    elif isinstance(value, (list, tuple)):
        names = value
    else:
        raise TypeError("compressors must be a comma-separated string or a list of names, not %r" % (value,))
    result: list[str] = []
    for raw in names:
        if not isinstance(raw, str):
            raise TypeError("compressor names must be strings, not %r" % (raw,))
        name = raw.strip().lower()
        if not name or name in result:
            continue
        if name not in _IDS:
            warnings.warn("Unsupported compressor %r ignored; use zstd, snappy or zlib" % (name,), stacklevel=3)
            continue
        if name == "snappy" and _snappy() is None:
            warnings.warn(
                "compressor snappy ignored: python-snappy is not installed (pip install 'mongo_requests[snappy]')",
                stacklevel=3,
            )
            continue
        if name == "zstd" and _zstd() is None:
            warnings.warn(
                "compressor zstd ignored: zstandard is not installed (pip install 'mongo_requests[zstd]')",
                stacklevel=3,
            )
            continue
        result.append(name)
    return tuple(result)


def check_zlib_level(value: Any) -> int:
    """``zlibCompressionLevel``: -1 (zlib's default) through 9."""
    if value is None:
        return -1
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ConfigurationError(
                "zlibCompressionLevel must be an integer from -1 to 9, not %r" % (value,)
            ) from None
    if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value <= 9:
        raise ConfigurationError("zlibCompressionLevel must be an integer from -1 to 9, not %r" % (value,))
    return value


_made: dict[tuple[str, int], Compressor] = {}


def compressor_for(name: str, zlib_level: int = -1) -> Compressor:
    """The :class:`Compressor` for a negotiated name (one object per name and level)."""
    key = (name, zlib_level if name == "zlib" else 0)
    made = _made.get(key)
    if made is None:
        made = _made[key] = _make_compressor(name, zlib_level)
    return made


def _make_compressor(name: str, zlib_level: int) -> Compressor:
    """Build a Compressor, or raise ConfigurationError for a missing library."""
    if name == "zlib":
        pair = _zlib(zlib_level)
    elif name == "snappy":
        got = _snappy()
        if got is None:
            raise ConfigurationError("python-snappy is not installed")
        pair = got
    elif name == "zstd":
        got = _zstd()
        if got is None:
            raise ConfigurationError("zstandard is not installed")
        pair = got
    else:
        raise ConfigurationError("unknown compressor %r" % (name,))
    return Compressor(name, pair[0], pair[1])


def negotiate(offered: Sequence[str], accepted: Any, zlib_level: int = -1) -> Compressor | None:
    """The first of our ``offered`` names that the server ``accepted`` (a hello's ``compression``)."""
    if not offered or not accepted:
        return None
    accepted_set = {a.lower() for a in accepted if isinstance(a, str)}
    for name in offered:
        if name in accepted_set:
            return compressor_for(name, zlib_level)
    return None


def command_name(msg: bytes | bytearray | memoryview) -> str:
    """The lower-cased name of the command in an OP_MSG (its body's first key)."""
    # header (16) + flagBits (4) + section kind (1) + document length (4),
    # then the first element's type byte: its name starts at 26.
    end = bytes(msg[26:90]).find(b"\x00")
    if end < 0:
        return ""
    return bytes(msg[26 : 26 + end]).decode("utf-8", "replace").lower()


def compress_message(msg: bytes, compressor: Compressor) -> bytes:
    """Wrap a framed OP_MSG in OP_COMPRESSED, unless the command must stay plain."""
    if len(msg) < 26 or command_name(msg) in NEVER_COMPRESSED:
        return msg
    length, request_id, response_to, op = _HEADER.unpack_from(msg, 0)
    payload = compressor.compress(bytes(msg[16:]))
    return (
        _HEADER.pack(16 + 9 + len(payload), request_id, response_to, OP_COMPRESSED)
        + _PREFIX.pack(op, length - 16, compressor.id)
        + payload
    )


_DECOMPRESSORS: dict[int, Callable[[bytes], bytes]] = {2: zlib.decompress}


def _decompressor(compressor_id: int) -> Callable[[bytes], bytes]:
    """The decompress function for an id (the server may only use one we offered)."""
    fn = _DECOMPRESSORS.get(compressor_id)
    if fn is not None:
        return fn
    pair = _snappy() if compressor_id == 1 else _zstd() if compressor_id == 3 else None
    if pair is None:
        raise ProtocolError("reply compressed with unsupported compressor id %d" % compressor_id)
    _DECOMPRESSORS[compressor_id] = pair[1]
    return pair[1]


def decompress_body(body: bytes | bytearray | memoryview, max_size: int) -> tuple[int, memoryview]:
    """Unwrap an OP_COMPRESSED body (the bytes after its header): ``(opcode, original body)``.

    :param max_size: the largest uncompressed size to accept (the server's
        ``maxMessageSizeBytes``): a hostile or broken size is refused before
        anything is inflated.
    """
    if len(body) < 9:
        raise ProtocolError("OP_COMPRESSED body too short: %d bytes" % len(body))
    op, size, compressor_id = _PREFIX.unpack_from(body, 0)
    if size < 0 or size > max_size:
        raise ProtocolError("OP_COMPRESSED claims %d uncompressed bytes (limit %d)" % (size, max_size))
    try:
        data = _decompressor(compressor_id)(bytes(body[9:]))
    except ProtocolError:
        raise
    except Exception as exc:  # each library has its own error class
        raise ProtocolError("could not decompress a reply (compressor id %d): %s" % (compressor_id, exc)) from exc
    if len(data) != size:
        raise ProtocolError("OP_COMPRESSED reply inflated to %d bytes, header said %d" % (len(data), size))
    return op, memoryview(data)
