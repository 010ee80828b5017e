"""Client options: every option is honoured or refused, and credentials never leak into errors.

The options table is :mod:`mongo_requests.options`.  What an honoured option does is checked against
the real server where the server can see it (a timeout of 0, the UUID representation, tz_aware).
"""

from __future__ import annotations

import dataclasses
import datetime
import traceback
import uuid

import pytest
from bson.binary import UuidRepresentation
from pymongo.errors import ConfigurationError, InvalidURI, PyMongoError
from pymongo.read_preferences import ReadPreference

from mongo_requests import Connection, MongoClient
from mongo_requests.options import OPTIONS, ClientOptions, redact_uri

ADDR = "127.0.0.1:1"  # never connected to: option errors come from the constructor


def _refused(exc: BaseException, name: str) -> None:
    message = str(exc)
    assert name.lower() in message.lower() and "not supported" in message, message


# -- Defect 2: timeoutMS and the TLS options we cannot honour are refused ---------------------------------
# (tls, the tls* files and switches, credentials and compressors are honoured: tests/test_tls.py,
# test_auth.py and test_compression.py try them against real servers.)

TLS_OPTIONS = [
    ("tlsDisableOCSPEndpointCheck", "false"),
    ("tlsDisableCertificateRevocationCheck", "false"),
    ("timeoutMS", "1000"),
]


@pytest.mark.parametrize("name, value", TLS_OPTIONS)
def test_tls_and_timeout_ms_in_a_uri_are_refused(tmp_path, name, value):
    if value == "FILE":
        path = tmp_path / "file.pem"
        path.write_text("not read")
        value = str(path)
    with pytest.raises(ConfigurationError) as info:
        MongoClient("mongodb://%s/?%s=%s" % (ADDR, name, value))
    _refused(info.value, name)


@pytest.mark.parametrize("name, value", TLS_OPTIONS)
def test_tls_and_timeout_ms_keywords_are_refused(tmp_path, name, value):
    if value == "FILE":
        path = tmp_path / "file.pem"
        path.write_text("not read")
        value = str(path)
    value = {"true": True, "false": False}.get(value, value)
    if name == "timeoutMS":
        value = 1000
    with pytest.raises(ConfigurationError) as info:
        MongoClient(ADDR, **{name: value})
    _refused(info.value, name)


@pytest.mark.parametrize("name", ["ssl_keyfile", "ssl_cert_reqs", "ssl_match_hostname", "ssl_context"])
def test_pymongo2_ssl_keywords_are_refused(name):
    with pytest.raises(ConfigurationError) as info:
        MongoClient(ADDR, **{name: "x"})
    _refused(info.value, name)


def test_tls_false_is_what_we_do(client):
    for uri in ("mongodb://%s/?tls=false" % ADDR, "mongodb://%s/?ssl=false" % ADDR):
        MongoClient(uri).close()
    MongoClient(ADDR, tls=False).close()
    MongoClient(ADDR, ssl=False).close()


def test_a_missing_tls_file_in_a_uri_is_a_configuration_error():
    # pymongo's URI validation raised FileNotFoundError, which is not a PyMongoError.
    with pytest.raises(ConfigurationError):
        MongoClient("mongodb://%s/?tlsCAFile=/nonexistent/ca.pem" % ADDR)


# -- options accepted and ignored until now: refused, except the values that are what we do ---------------


@pytest.mark.parametrize(
    "query",
    ["minPoolSize=3", "maxIdleTimeMS=5000", "readConcernLevel=majority", "loadBalanced=true", "maxConnecting=3"],
)
def test_unsupported_uri_options_are_refused(query):
    with pytest.raises(ConfigurationError) as info:
        MongoClient("mongodb://%s/?%s" % (ADDR, query))
    _refused(info.value, query.partition("=")[0])


@pytest.mark.parametrize(
    "kwargs",
    [{"minPoolSize": 1}, {"maxIdleTimeMS": 1}],
)
def test_unsupported_keywords_are_refused(kwargs):
    with pytest.raises(ConfigurationError) as info:
        MongoClient(ADDR, **kwargs)
    _refused(info.value, next(iter(kwargs)))


@pytest.mark.parametrize(
    "query",
    [
        "readPreference=primary",
        "minPoolSize=0",
        "maxIdleTimeMS=0",
        "retryWrites=true",
        "retryWrites=false",
        "retryReads=false",
        "directConnection=true",
        "loadBalanced=false",
        "tls=false",
    ],
)
def test_options_that_describe_what_we_do_are_accepted(query):
    MongoClient("mongodb://%s/?%s" % (ADDR, query)).close()


def test_primary_read_preference_object_is_accepted():
    MongoClient(ADDR, read_preference=ReadPreference.PRIMARY).close()


@pytest.mark.parametrize("query", ["retryWrites=maybe", "retryReads=1", "directConnection=yes"])
def test_retry_options_are_validated_as_booleans(query):
    with pytest.raises(ConfigurationError):
        MongoClient("mongodb://%s/?%s" % (ADDR, query))


# -- types are validated, as PyMongo 2.8's validators did --------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "auto_start_request",
        "use_greenlets",
        "tz_aware",
        "journal",
        "j",
        "fsync",
        "safe",
        "retryWrites",
        "retryReads",
        "directConnection",
        "connect",
    ],
)
@pytest.mark.parametrize("value", [5, "hi", 1.5, [True]])
def test_boolean_options_refuse_non_booleans(name, value):
    with pytest.raises((ConfigurationError, TypeError)):
        MongoClient(ADDR, **{name: value})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"maxPoolSize": "many"},
        {"maxPoolSize": 0},
        {"max_pool_size": -1},
        {"max_pool_size": 2.5},
        {"waitQueueTimeoutMS": 0},
        {"connectTimeoutMS": float("nan")},
        {"socketTimeoutMS": float("inf")},
        {"serverSelectionTimeoutMS": None},
        {"wTimeoutMS": -1},
        {"w": -1},
        {"w": 1.5},
        {"appname": 5},
        {"appname": "x" * 129},
        {"document_class": 5},
        {"document_class": list},
        {"uuidRepresentation": "nope"},
        {"uuidRepresentation": 99},
    ],
)
def test_bad_values_and_types(kwargs):
    with pytest.raises((ConfigurationError, TypeError)):
        MongoClient(ADDR, **kwargs)


def test_unknown_keyword_is_a_configuration_error():
    with pytest.raises(ConfigurationError) as info:
        MongoClient(ADDR, bogus_option=1)
    assert "Unknown option" in str(info.value)


def test_unknown_uri_option_is_a_configuration_error():
    with pytest.raises(ConfigurationError) as info:
        MongoClient("mongodb://%s/?bogusOption=1" % ADDR)
    assert "Unknown option" in str(info.value)


def test_keyword_only_options_are_not_uri_options():
    with pytest.raises(ConfigurationError):
        MongoClient("mongodb://%s/?auto_start_request=true" % ADDR)


def test_the_table_is_honest():
    # Every option is honoured (no reason) or refused with a reason; every spelling maps to one option.
    for spelling, opt in OPTIONS.items():
        assert spelling == spelling.lower()
        assert opt.refused is None or opt.refused.strip()
        assert spelling in [s.lower() for s in (opt.name,) + opt.aliases]
    honoured = {opt.name for opt in OPTIONS.values() if opt.refused is None}
    # What ClientOptions reads: anything honoured must be read by it or by the codec/write concern.
    assert honoured == {
        "maxPoolSize",
        "auto_start_request",
        "use_greenlets",
        "w",
        "wTimeoutMS",
        "journal",
        "fsync",
        "safe",
        "appname",
        "connectTimeoutMS",
        "socketTimeoutMS",
        "waitQueueTimeoutMS",
        "serverSelectionTimeoutMS",
        "document_class",
        "tz_aware",
        "uuidRepresentation",
        "unicode_decode_error_handler",
        "tzinfo",
        "type_registry",
        "datetime_conversion",
        "directConnection",
        "connect",
        "retryWrites",
        "retryReads",
        "replicaSet",
        "readPreference",
        "readPreferenceTags",
        "maxStalenessSeconds",
        "heartbeatFrequencyMS",
        "localThresholdMS",
        # read by mongo_requests.handshake.setup_from_options, or by pymongo.uri_parser for SRV
        "username",
        "password",
        "authSource",
        "authMechanism",
        "authMechanismProperties",
        "tls",
        "tlsCAFile",
        "tlsCertificateKeyFile",
        "tlsCertificateKeyFilePassword",
        "tlsAllowInvalidCertificates",
        "tlsAllowInvalidHostnames",
        "tlsInsecure",
        "tlsCRLFile",
        "compressors",
        "zlibCompressionLevel",
        "srvServiceName",
        "srvMaxHosts",
        "speculativeAuthentication",
        # read by mongo_requests.monitoring.Listeners.build
        "event_listeners",
    }


def test_client_options_are_immutable():
    opts = ClientOptions.parse(ADDR)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.max_pool_size = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        opts.raw["maxPoolSize"] = 5  # type: ignore[index]


# -- honoured options, the same in a URI and as a keyword --------------------------------------------------


@pytest.mark.parametrize("spelling", ["uri", "keyword"])
def test_wtimeout_is_milliseconds_in_every_spelling(spelling):
    if spelling == "uri":
        c = MongoClient("mongodb://%s/?wtimeoutMS=10&w=1" % ADDR)
    else:
        c = MongoClient(ADDR, wTimeoutMS=10, w=1)
    assert c.write_concern.document == {"w": 1, "wtimeout": 10}
    assert MongoClient(ADDR, wtimeout=10, w=1).write_concern.document == {"w": 1, "wtimeout": 10}


@pytest.mark.parametrize("name", ["socketTimeoutMS", "connectTimeoutMS"])
def test_zero_timeout_means_no_timeout_in_both_spellings(mongodb_uri, make_client, name):
    # Defect 5: a keyword 0 made the socket non-blocking, and every operation failed with EAGAIN.
    sep = "&" if "?" in mongodb_uri else "/?" if mongodb_uri.count("/") == 2 else "?"
    from_uri = MongoClient(mongodb_uri + sep + name + "=0")
    try:
        assert from_uri.admin.command("ping")["ok"] == 1
    finally:
        from_uri.close()
    c = make_client(**{name: 0})
    assert c.admin.command("ping")["ok"] == 1
    c.db.things.insert_one({"big": "x" * 200000})  # a reply and a request of several segments
    assert len(c.db.things.find_one()["big"]) == 200000
    c.drop_database("db")
    attr = {"socketTimeoutMS": "socket_timeout", "connectTimeoutMS": "connect_timeout"}[name]
    assert getattr(c.pool.opts, attr) is None
    assert getattr(from_uri.pool.opts, attr) is None


def test_connection_safe_overrides_its_default_w():
    assert Connection(ADDR).write_concern.document == {"w": 0}
    assert Connection(ADDR, safe=True).write_concern.document == {"w": 1}
    assert MongoClient(ADDR, safe=False).write_concern.document == {"w": 0}
    with pytest.raises(ConfigurationError):
        MongoClient(ADDR, safe=True, w=0)


def test_uuid_representation_is_honoured(make_client, db):
    value = uuid.uuid4()
    c = make_client(uuidRepresentation="standard")
    assert c.codec_options.uuid_representation == UuidRepresentation.STANDARD
    coll = c[db.name].things
    coll.insert_one({"_id": 1, "u": value})
    assert coll.find_one(1)["u"] == value
    # Without it PyMongo 4's default refuses a native UUID, and so do we.
    plain = make_client()
    with pytest.raises(ValueError):
        plain[db.name].things.insert_one({"_id": 2, "u": value})


def test_tz_aware_in_a_uri_is_honoured(mongodb_uri, db):
    sep = "&" if "?" in mongodb_uri else "/?" if mongodb_uri.count("/") == 2 else "?"
    c = MongoClient(mongodb_uri + sep + "tz_aware=true")
    try:
        coll = c[db.name].things
        coll.insert_one({"_id": 1, "at": datetime.datetime(2020, 1, 2, 3, 4, 5)})
        assert coll.find_one(1)["at"].tzinfo is not None
    finally:
        c.close()


# -- Defect 9: a host name label over 63 bytes was a UnicodeError ----------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "a" * 64 + ".example.com",
        "mongodb://" + "b" * 64 + ".example.com/",
        "x..y",
        "mongodb://%2Ftmp%2Fmongodb-27017.sock/",
    ],  # a Unix socket would fail later, with an OSError of its own
)
def test_bad_host_names_are_configuration_errors(host):
    with pytest.raises(ConfigurationError):
        MongoClient(host)


# -- Defect 3: credentials never appear in an error ---------------------------------------------------------

SECRET = "s3cr3tPassw0rd"


def _no_secret(exc: BaseException) -> None:
    """Neither the message, the args, nor any chained exception (as a traceback shows them) has it."""
    assert isinstance(exc, PyMongoError)
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert SECRET not in text
    assert SECRET not in repr(exc.args)
    seen = exc.__cause__ or exc.__context__
    while seen is not None:
        assert SECRET not in str(seen) and SECRET not in repr(seen.args)
        seen = seen.__cause__ or seen.__context__


@pytest.mark.parametrize(
    "uri",
    [
        "mongodb://user:%s@127.0.0.1:notaport/" % SECRET,  # bad port
        "mongodb://user:%s@127.0.0.1:99999/" % SECRET,  # port out of range
        "mongodb://user:%s@127.0.0.1/?maxPoolSize=abc" % SECRET,  # bad option value
        "mongodb://user:%s@127.0.0.1/?bogus=1" % SECRET,  # unknown option
        "mongodb://user:%s@::1/" % SECRET,  # an IPv6 literal without brackets
        "mongodb://user:%s@[::1/" % SECRET,
        "mongodb://user:%s@127.0.0.1/?tls=true&tlsCAFile=/nonexistent/ca.pem" % SECRET,
        "mongodb://user:%s@127.0.0.1/?authMechanism=PLAIN" % SECRET,  # a mechanism we do not speak
        "mongodb://user:%s/x@127.0.0.1:bad/" % SECRET,  # an unescaped / in the password
        "mongodb://user:%s@@127.0.0.1/" % SECRET,  # an unescaped @
        "mongodb+srv://user:%s@db.example.com:27017/" % SECRET,  # SRV failures (no DNS needed)
        "mongodb+srv://user:%s@a.example.com,b.example.com/" % SECRET,
        "mongodb://user:%s@%s.example.com/" % (SECRET, "c" * 64),
    ],
)
def test_password_is_never_echoed(uri):
    with pytest.raises(ConfigurationError) as info:
        MongoClient(uri)
    _no_secret(info.value)


def test_a_quoted_uri_is_redacted_but_still_says_where():
    with pytest.raises(InvalidURI) as info:
        MongoClient("mongodb://user:%s@127.0.0.1:notaport/" % SECRET)
    assert "<redacted>@127.0.0.1:notaport" in str(info.value)


def test_a_short_password_is_redacted_as_a_token():
    with pytest.raises(InvalidURI) as info:
        MongoClient("mongodb://bob:pw@127.0.0.1:notaport/")
    message = str(info.value)
    assert "bob" not in message and ":pw@" not in message and "password" in message  # pymongo's hint stays


@pytest.mark.parametrize(
    "text, expected",
    [
        ("mongodb://u:p@h:1/db", "mongodb://<redacted>@h:1/db"),
        ("see mongodb+srv://u:p%40ss@h/x?y=1 here", "see mongodb+srv://<redacted>@h/x?y=1 here"),
        ("mongodb://h:1/db", "mongodb://h:1/db"),
        ("a mongodb://u:p/@q@h b mongodb://x:y@z", "a mongodb://<redacted>@h b mongodb://<redacted>@z"),
    ],
)
def test_redact_uri(text, expected):
    assert redact_uri(text) == expected
