"""Wire compression: OP_COMPRESSED as pure functions, and each compressor against the
real server, whose ``serverStatus().network.compression`` counters prove that it
decompressed our messages and compressed its replies.

The session mongod runs with its default ``--networkMessageCompressors``
(snappy, zstd, zlib).  serverStatus is read through a separate client that
does not compress, so the readings do not move the counters.
"""

from __future__ import annotations

import warnings

import bson
import pytest
from pymongo.errors import ConfigurationError, OperationFailure, ProtocolError

import mongo_requests
from mongo_requests import compression, wire
from mongo_requests.socket_info import SocketInfo
from security_fixtures import MODE_OPTIONS, scram_uri, server_status

COMPRESSORS = ["zstd", "snappy", "zlib"]


def _msg(cmd: dict, rid: int = 7) -> bytes:
    return wire.pack_msg(rid, bson.encode(cmd))


@pytest.mark.parametrize("name", COMPRESSORS)
def test_round_trip_pure(name):
    c = compression.compressor_for(name)
    msg = _msg({"insert": "c", "documents": [{"x": "y" * 1000}], "$db": "d"})
    packed = compression.compress_message(msg, c)
    length, rid, _to, op = wire.HEADER.unpack_from(packed, 0)
    assert (length, rid, op) == (len(packed), 7, compression.OP_COMPRESSED)
    assert len(packed) < len(msg)
    original_op, body = compression.decompress_body(memoryview(packed)[16:], 48_000_000)
    assert original_op == wire.OP_MSG
    assert bytes(body) == msg[16:]


@pytest.mark.parametrize("command", ["hello", "isMaster", "saslStart", "saslContinue", "createUser", "authenticate"])
def test_never_compressed_commands_stay_plain(command):
    msg = _msg({command: 1, "$db": "admin"})
    for name in COMPRESSORS:
        assert compression.compress_message(msg, compression.compressor_for(name)) is msg


def test_hostile_compressed_replies_are_protocol_errors():
    zlib_c = compression.compressor_for("zlib")
    packed = compression.compress_message(_msg({"find": "c", "$db": "d"}), zlib_c)
    body = bytearray(packed[16:])
    with pytest.raises(ProtocolError, match="limit"):
        compression.decompress_body(body, 10)  # claims more than the server's limit
    body[8] = 9  # an unknown compressor id
    with pytest.raises(ProtocolError, match="unsupported compressor"):
        compression.decompress_body(body, 48_000_000)
    body[8] = 2
    body[12:20] = b"\x00" * 8  # corrupt the zlib stream
    with pytest.raises(ProtocolError):
        compression.decompress_body(body, 48_000_000)


def test_option_parsing():
    assert compression.parse_compressors("zstd,snappy,zlib") == ("zstd", "snappy", "zlib")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert compression.parse_compressors("lz4,zlib,zlib") == ("zlib",)
    assert any("lz4" in str(w.message) for w in caught)
    assert compression.check_zlib_level("9") == 9
    for bad in (10, -2, "x", True):
        with pytest.raises(ConfigurationError):
            compression.check_zlib_level(bad)
    # PyMongo's own validation would drop zstd (PyMongo lacks its module); ours keeps it.
    c = mongo_requests.MongoClient("mongodb://127.0.0.1:9/?compressors=zstd%2Csnappy,zlib")
    assert c.pool.opts.setup.compressors == ("zstd", "snappy", "zlib")
    c.close()


def _counters(status: dict, name: str) -> tuple[int, int]:
    """(bytes the server decompressed from clients, bytes it compressed for them)."""
    entry = status["network"]["compression"][name]
    return entry["decompressor"]["bytesIn"], entry["compressor"]["bytesOut"]


@pytest.mark.parametrize("name", COMPRESSORS)
def test_each_compressor_against_the_server(mongodb_uri, admin_client, name):
    sep = "&" if "?" in mongodb_uri else "?"
    uri = mongodb_uri + sep + "compressors=%s&zlibCompressionLevel=6" % name
    c = mongo_requests.MongoClient(uri, **MODE_OPTIONS)
    try:
        coll = c.t_compression[name]
        coll.drop()
        before = _counters(admin_client.admin.command("serverStatus"), name)
        coll.insert_many([{"i": i, "text": "compress me " * 20} for i in range(200)])
        with c.start_request():  # the w=0 write, compressed too, is read back
            coll.insert_one({"w0": True}, w=0)
            docs = list(coll.find({}, {"_id": 0}).sort("i", 1))
        assert len(docs) == 201 and docs[0] == {"w0": True}
        assert docs[-1] == {"i": 199, "text": "compress me " * 20}
        after = _counters(admin_client.admin.command("serverStatus"), name)
        assert after[0] > before[0], "the server decompressed nothing from us"
        assert after[1] > before[1], "the server compressed no reply to us"
        with c.start_request():
            c.admin.command("ping")
            sock = c.pool.pinned_socket()
            assert type(sock).__name__ == "CompressedSocketInfo_%s" % name
            assert sock.compressor.name == name
        c.drop_database("t_compression")
    finally:
        c.close()


def test_no_compression_keeps_the_plain_socket(client):
    with client.start_request():
        client.admin.command("ping")
        assert type(client.pool.pinned_socket()) is SocketInfo


def test_compressors_the_server_lacks_are_not_used(mongodb_uri, admin_client):
    # Our preference order wins among what the server accepts.
    sep = "&" if "?" in mongodb_uri else "?"
    c = mongo_requests.MongoClient(mongodb_uri + sep + "compressors=zlib,zstd", **MODE_OPTIONS)
    try:
        with c.start_request():
            c.admin.command("ping")
            assert c.pool.pinned_socket().compressor.name == "zlib"
    finally:
        c.close()


def test_authentication_is_never_compressed(auth_server, auth_users):
    # Connecting authenticates (speculative hello + saslContinue); if any of
    # it were compressed the server's decompressor counters would move.
    uri = scram_uri(auth_server, auth_users.alice, auth_users.password, compressors="zlib")
    before = _counters(server_status(auth_server), "zlib")
    c = mongo_requests.MongoClient(uri, **MODE_OPTIONS)
    try:
        with c.start_request():
            c.admin.command("ping")  # connects and authenticates, then one compressed ping
            sock = c.pool.pinned_socket()
            middle = _counters(server_status(auth_server), "zlib")
            # Only the ping went compressed: one small message.
            assert 0 < middle[0] - before[0] < 200
            c.pool.reset()
        with pytest.raises(OperationFailure):
            # A fresh connection, authenticated, then a compressed command that fails.
            c.admin.command("nosuchcommand")
        assert sock.closed
    finally:
        c.close()


@pytest.mark.parametrize("command", ["hello", "isMaster"])
def test_hello_stays_plain_after_compression_is_negotiated(mongodb_uri, admin_client, command):
    # The pure test above checks compress_message; this one asks the server:
    # on a connection that compresses, a hello moves no decompressor counter,
    # while a ping (the control) does.
    sep = "&" if "?" in mongodb_uri else "?"
    c = mongo_requests.MongoClient(mongodb_uri + sep + "compressors=zlib", **MODE_OPTIONS)
    try:
        with c.start_request():
            c.admin.command("ping")  # connect first: the handshake is OP_QUERY anyway
            before = _counters(admin_client.admin.command("serverStatus"), "zlib")[0]
            for _ in range(5):
                c.admin.command(command)
            middle = _counters(admin_client.admin.command("serverStatus"), "zlib")[0]
            c.admin.command("ping")
            after = _counters(admin_client.admin.command("serverStatus"), "zlib")[0]
            assert type(c.pool.pinned_socket()).__name__ == "CompressedSocketInfo_zlib"
    finally:
        c.close()
    assert middle == before, "a %s went compressed" % command
    assert after > middle, "the control ping was not compressed"


def test_missing_compression_libraries_are_left_out_with_a_warning(mongodb_uri):
    # zstandard and python-snappy are optional extras.  Without them (a child
    # whose imports of both fail), a client asking for zstd,snappy,zlib warns
    # about each missing one, names its extra, and talks zlib to the server.
    import subprocess
    import sys

    code = (
        "import sys, warnings; sys.modules['zstandard'] = None; sys.modules['snappy'] = None\n"
        "import mongo_requests\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    c = mongo_requests.MongoClient(sys.argv[1], compressors='zstd,snappy,zlib')\n"
        "for w in caught: print('WARN', w.message)\n"
        "with c.start_request():\n"
        "    c.admin.command('ping')\n"
        "    print('USING', c.pool.pinned_socket().compressor.name)\n"
        "c.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code, mongodb_uri], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "mongo_requests[zstd]" in out.stdout and "mongo_requests[snappy]" in out.stdout, out.stdout
    assert "USING zlib" in out.stdout, out.stdout
