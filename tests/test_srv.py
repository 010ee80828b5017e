"""mongodb+srv:// against a real DNS server, and a real TLS+auth mongod.

The DNS server is dnslib's, run by the test on 127.0.0.1 (UDP and TCP, a free
port); dnspython's default resolver is pointed at it for the test, so
PyMongo's URI parser, which the driver uses for SRV and TXT, really queries
it.  It serves the zone ``mongo-requests.test``: an SRV record
``_mongodb._tcp.cluster0.mongo-requests.test`` and a TXT record with
``authSource=admin`` for the TLS+auth standalone, and, for the TLS+auth
replica set (security_fixtures.secure_replica_set), three SRV records under
``_mongodb._tcp.set0.mongo-requests.test`` and a TXT record with
``replicaSet=...&authSource=admin``.

What is simulated, honestly: the SRV record's target.  It must be a name that
this machine's own resolver (glibc: /etc/hosts, then the network's DNS) maps
to 127.0.0.1, because connecting goes through the system resolver, which the
test cannot point at its DNS server.  Only ``localhost`` qualifies here
(``*.localhost`` does not resolve on this machine, nor does any public test
name: there is no outside network).  The SRV specification requires targets
to share the SRV name's parent domain, which ``localhost`` does not, so the
tests that connect pass ``srv_host_validator`` (PyMongo's own hook for that
rule, mirrored by mongo_requests) accepting exactly ``localhost``; one test
shows that without it the rule refuses the record.

PyMongo added that hook in 4.19.  With an older PyMongo (tox's pymongo-oldest
env) the connecting tests instead check that asking for the hook is refused
with a clear message; the refusal test still proves the SRV query reached
our DNS server.
"""

from __future__ import annotations

import inspect

import dns.resolver
import pytest
from dnslib import QTYPE, RR, SRV, TXT, A
from dnslib.server import BaseResolver, DNSServer
from pymongo import uri_parser
from pymongo.errors import ConfigurationError, InvalidURI

from security_fixtures import auth_counters

ZONE = "mongo-requests.test"
SRV_NAME = "cluster0." + ZONE
SET_SRV_NAME = "set0." + ZONE


class _Zone(BaseResolver):
    """Answers SRV and TXT for the test clusters; NXDOMAIN for anything else."""

    def __init__(self, port: int, txt: str) -> None:
        self.port = port
        self.txt = txt
        # More clusters, added by tests: SRV name -> (the members' ports, TXT).
        self.clusters: dict[str, tuple[list[int], str]] = {}
        self.queries: list[tuple[str, str]] = []

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        self.queries.append((name, qtype))
        if qtype == "SRV" and name == "_mongodb._tcp." + SRV_NAME:
            reply.add_answer(RR(request.q.qname, QTYPE.SRV, ttl=60, rdata=SRV(0, 0, self.port, "localhost.")))
        elif qtype == "TXT" and name == SRV_NAME:
            reply.add_answer(RR(request.q.qname, QTYPE.TXT, ttl=60, rdata=TXT(self.txt)))
        elif qtype == "SRV" and name.startswith("_mongodb._tcp.") and name[14:] in self.clusters:
            for port in self.clusters[name[14:]][0]:
                reply.add_answer(RR(request.q.qname, QTYPE.SRV, ttl=60, rdata=SRV(0, 0, port, "localhost.")))
        elif qtype == "TXT" and name in self.clusters:
            reply.add_answer(RR(request.q.qname, QTYPE.TXT, ttl=60, rdata=TXT(self.clusters[name][1])))
        elif qtype == "A" and name == SRV_NAME:
            reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=60, rdata=A("127.0.0.1")))
        else:
            reply.header.rcode = 3  # NXDOMAIN
        return reply


@pytest.fixture(scope="module")
def dns_zone(tls_server):
    """The test DNS server, with dnspython's default resolver pointed at it (restored afterwards)."""
    zone = _Zone(tls_server.port, "authSource=admin")
    # UDP takes a free port; TCP wants the same number, which something else
    # may hold: then try another (a bounded number of times).
    for attempt in range(20):
        udp = DNSServer(zone, address="127.0.0.1", port=0)
        port = udp.server.server_address[1]
        try:
            tcp = DNSServer(zone, address="127.0.0.1", port=port, tcp=True)
            break
        except OSError:
            udp.server.server_close()
            if attempt == 19:
                raise
    udp.start_thread()
    tcp.start_thread()
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    resolver.lifetime = 5.0
    saved = dns.resolver.default_resolver
    dns.resolver.default_resolver = resolver
    try:
        yield zone
    finally:
        dns.resolver.default_resolver = saved
        udp.stop()
        tcp.stop()
        udp.server.server_close()
        tcp.server.server_close()


def _only_localhost(host: str) -> bool:
    return host == "localhost"


HAS_VALIDATOR = "srv_host_validator" in inspect.signature(uri_parser.parse_uri).parameters


def _needs_validator(make) -> bool:
    """False (after checking the refusal) when PyMongo is too old for srv_host_validator."""
    if HAS_VALIDATOR:
        return True
    with pytest.raises(ConfigurationError, match="srv_host_validator needs PyMongo 4.19"):
        make()
    return False


def test_srv_seed_list_txt_options_and_tls_by_default(dns_zone, tls_server, test_certs, auth_users, secure_client):
    # The URI names the database "appdb": without the TXT record's
    # authSource=admin the user would be looked up there and not found.
    uri = "mongodb+srv://%s:%s@%s/appdb?tlsCAFile=%s" % (auth_users.alice, auth_users.password, SRV_NAME, test_certs.ca)
    if not _needs_validator(lambda: secure_client(uri, srv_host_validator=_only_localhost)):
        return
    before = auth_counters(tls_server, "SCRAM-SHA-256")
    c = secure_client(uri, srv_host_validator=_only_localhost)
    assert c.address == ("localhost", tls_server.port)
    status = c.admin.command("connectionStatus")
    assert status["authInfo"]["authenticatedUsers"] == [{"user": "alice", "db": "admin"}]
    assert auth_counters(tls_server, "SCRAM-SHA-256")["successful"] == before["successful"] + 1
    # TLS was on although the URI did not ask: mongodb+srv implies it.
    with c.start_request():
        c.admin.command("ping")
        sock = c.pool.pinned_socket().sock
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
    # Both records came from our server.
    assert ("_mongodb._tcp." + SRV_NAME, "SRV") in dns_zone.queries
    assert (SRV_NAME, "TXT") in dns_zone.queries
    assert c.get_default_database().name == "appdb"


def test_srv_without_tls_option_override(dns_zone, tls_server, secure_client, auth_users):
    # tls=false in the URI overrides the SRV default: the TLS-only server
    # then refuses the plaintext connection.
    uri = "mongodb+srv://%s:%s@%s/?tls=false" % (auth_users.alice, auth_users.password, SRV_NAME)
    if not _needs_validator(lambda: secure_client(uri, srv_host_validator=_only_localhost)):
        return
    c = secure_client(uri, srv_host_validator=_only_localhost, serverSelectionTimeoutMS=300)
    from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

    with pytest.raises((ServerSelectionTimeoutError, AutoReconnect)):
        c.admin.command("ping")


def test_srv_target_outside_the_domain_is_refused(dns_zone, secure_client):
    # The specification's rule, applied by PyMongo's parser: "localhost" is
    # not under "mongo-requests.test", so the record is refused.
    asked = len(dns_zone.queries)
    with pytest.raises((ConfigurationError, InvalidURI), match="Invalid SRV host"):
        secure_client("mongodb+srv://%s/" % SRV_NAME)
    assert ("_mongodb._tcp." + SRV_NAME, "SRV") in dns_zone.queries[asked:]


def test_srv_name_without_records(dns_zone, secure_client):
    with pytest.raises((ConfigurationError, InvalidURI)):
        secure_client("mongodb+srv://nothing.%s/" % ZONE)
    assert ("_mongodb._tcp.nothing." + ZONE, "SRV") in dns_zone.queries


def test_srv_turns_tls_on_with_no_tls_option_at_all(dns_zone, tls_server, secure_client, auth_users):
    # The test above names tlsCAFile, which turns TLS on by itself; here the URI
    # and keywords carry no tls* option.  The client must still speak TLS: the
    # server's certificate (from the test CA, which the system CAs do not
    # trust) is then refused at once with its cause.  A plaintext client would
    # instead time out on the TLS-only server.
    from pymongo.errors import AutoReconnect, ConnectionFailure

    uri = "mongodb+srv://%s:%s@%s/" % (auth_users.alice, auth_users.password, SRV_NAME)
    if not _needs_validator(lambda: secure_client(uri, srv_host_validator=_only_localhost)):
        return
    c = secure_client(uri, srv_host_validator=_only_localhost, serverSelectionTimeoutMS=10000)
    with pytest.raises(ConnectionFailure) as info:
        c.admin.command("ping")
    assert not isinstance(info.value, AutoReconnect), repr(info.value)
    assert "certificate verification failed" in str(info.value)
    assert auth_users.password not in str(info.value)


@pytest.mark.parametrize("txt", ["tls=false", "ssl=false&authSource=admin", "tlsInsecure=true"])
def test_txt_record_cannot_weaken_tls(dns_zone, secure_client, auth_users, txt):
    # Whoever controls DNS must not be able to switch TLS off or its checks
    # down: a TXT record may only carry authSource, replicaSet, loadBalanced.
    saved = dns_zone.txt
    dns_zone.txt = txt
    try:
        uri = "mongodb+srv://%s:%s@%s/" % (auth_users.alice, auth_users.password, SRV_NAME)
        with pytest.raises((ConfigurationError, InvalidURI)) as info:
            secure_client(uri, srv_host_validator=_only_localhost) if HAS_VALIDATOR else secure_client(uri)
    finally:
        dns_zone.txt = saved
    assert auth_users.password not in str(info.value)
    if HAS_VALIDATOR:
        assert "TXT" in str(info.value) or "DNS" in str(info.value) or "Only" in str(info.value), str(info.value)


def test_srv_discovers_a_replica_set_with_tls_and_auth(
    dns_zone, secure_replica_set, test_certs, auth_users, secure_client
):
    # Three SRV records (one per member) and a TXT record with the set's name
    # and authSource.  The client must find the set from DNS alone, speak TLS
    # without being told (mongodb+srv implies it) and log in on every member
    # it uses.  The records name the members "localhost" (see the module's
    # docstring); the set's own configuration names them 127.0.0.1, so the
    # client ends up with those addresses, whose certificates it verifies.
    from pymongo.read_preferences import Secondary

    rs = secure_replica_set
    dns_zone.clusters[SET_SRV_NAME] = ([m.port for m in rs.members], "replicaSet=%s&authSource=admin" % rs.name)
    uri = "mongodb+srv://%s:%s@%s/appdb?tlsCAFile=%s" % (
        auth_users.alice,
        auth_users.password,
        SET_SRV_NAME,
        test_certs.ca,
    )
    if not _needs_validator(lambda: secure_client(uri, srv_host_validator=_only_localhost)):
        return
    c = secure_client(uri, srv_host_validator=_only_localhost)
    primary = rs.primary()
    status = c.admin.command("connectionStatus")
    assert status["authInfo"]["authenticatedUsers"] == [{"user": "alice", "db": "admin"}]
    assert c.primary == primary.address
    assert c.nodes == {m.address for m in rs.members}
    with c.start_request():
        assert c.admin.command("hello")["me"] == "%s:%d" % primary.address
        assert c.pool.pinned_socket().sock.version() in ("TLSv1.2", "TLSv1.3")
    # A secondary, too, has the user logged in on the connection that read from it.
    secondary = rs.secondaries()[0]
    tag = secondary.command({"hello": 1})["tags"]["name"]
    admin = c.get_database("admin", read_preference=Secondary([{"name": tag}]))
    with c.start_request():
        assert admin.command("hello", read_preference=admin.read_preference)["me"] == "%s:%d" % secondary.address
        status = admin.command("connectionStatus", read_preference=admin.read_preference)
        assert status["authInfo"]["authenticatedUsers"] == [{"user": "alice", "db": "admin"}]
    assert ("_mongodb._tcp." + SET_SRV_NAME, "SRV") in dns_zone.queries
    assert (SET_SRV_NAME, "TXT") in dns_zone.queries
    assert c.get_default_database().name == "appdb"
    # tlsCAFile turns TLS on by itself; without any tls* option the client
    # must still speak TLS to the set's members: their certificate (from the
    # test CA, which the system CAs do not trust) is then refused.  Members
    # of a set are checked by heartbeats, so (as with PyMongo) the operation
    # gives up after serverSelectionTimeoutMS, naming the cause per member;
    # a plaintext client would only see the members hang up.
    from pymongo.errors import ServerSelectionTimeoutError

    bare = secure_client(uri.split("?")[0], srv_host_validator=_only_localhost, serverSelectionTimeoutMS=1000)
    with pytest.raises(ServerSelectionTimeoutError) as info:
        bare.admin.command("ping")
    assert str(info.value).count("TLS certificate verification failed") == len(rs.members), str(info.value)
    assert auth_users.password not in str(info.value)
