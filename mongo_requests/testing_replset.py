"""A throwaway replica set on 127.0.0.1, for tests and manual work.

:class:`ReplicaSet` starts N ``mongod`` members (3 by default) from the same
binary as :class:`~mongo_requests.testing.MongodServer`, initiates the set
with short election timeouts, so that a failover takes a few seconds instead
of the default ten or more, and waits until a primary is elected and every
other member is a secondary.  It offers the fault helpers tests need:
:meth:`~ReplicaSet.stepdown`, :meth:`~ReplicaSet.kill_primary`,
:meth:`~ReplicaSet.restart`, :meth:`~ReplicaSet.remove_member` and
:meth:`~ReplicaSet.add_member`.

With ``auth=True`` every member runs with ``--auth`` and a ``--keyFile``
(a random secret written at run time, mode 0600, into a temporary directory
deleted by :meth:`~ReplicaSet.cleanup`), and the admin user is created on the
primary, through the localhost exception, once the set is initiated.  With
``certs`` (a :class:`~mongo_requests.testing.TestCertificates`) every member
requires TLS, for clients and for the other members alike, with a
certificate valid for ``127.0.0.1`` and ``localhost``.

Like the rest of :mod:`mongo_requests.testing` it talks to the servers with
:func:`~mongo_requests.testing.raw_command` (and, once a secure set has
users, PyMongo, the reference driver), never with the driver under test.
Import it as ``from mongo_requests.testing import ReplicaSet``; run
``python -m mongo_requests.testing --replset [--auth] [--tls]`` for a set to
play with.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import tempfile
import threading
import time
from typing import Any

from .testing import _TEMP_DIRS, MongodServer, MongodStartError
from .testing_secure import SecureMongodServer, TestCertificates

__all__ = ["ReplicaSet"]

# The member's failure is noticed within one election timeout (plus up to
# 15% random offset that mongod adds); heartbeats every half second keep
# hello's view of the set fresh.  Two seconds rather than one, so that a busy
# 2-core CI machine does not trigger spurious elections.
ELECTION_TIMEOUT_MS = 2000
HEARTBEAT_INTERVAL_MS = 500
# Since 5.0 a member told to stop (SIGTERM) first waits 15 s in "quiesce
# mode" for clients to move away; a throwaway set has no such clients to
# protect, and 3 x 15 s per test session is too slow.
_MEMBER_ARGS = ("--setParameter", "shutdownTimeoutMillisForSignaledShutdown=100")


class ReplicaSet:
    """A replica set of ``members`` ``mongod`` processes on 127.0.0.1.

    Each member ``i`` carries the tags ``{"name": "m<i>"}`` so that tests can
    aim read preferences at a particular member.  Use it as a context manager,
    or call :meth:`start` and then :meth:`stop` and :meth:`cleanup`.

    :param name: the replica set name.
    :param members: number of data-bearing members, 1 to 7.
    :param binary: path of ``mongod``; found like MongodServer's by default.
    :param startup_timeout: seconds to wait for the whole set to be ready.
    :param auth: start every member with ``--auth`` and a shared ``--keyFile``;
        the set then has one user, :attr:`admin_user` (``root``), whose
        password is :attr:`admin_password`.  :meth:`create_user` adds more.
    :param certs: a :class:`~mongo_requests.testing.TestCertificates`: every
        member requires TLS (``--tlsMode requireTLS``) and presents
        ``certs.member``.
    """

    admin_user = SecureMongodServer.admin_user

    def __init__(
        self,
        name: str = "rs0",
        members: int = 3,
        binary: str | None = None,
        startup_timeout: float = 120.0,
        auth: bool = False,
        certs: TestCertificates | None = None,
    ) -> None:
        if not 1 <= members <= 7:
            raise ValueError("a test replica set has 1 to 7 members, not %d" % members)
        self.name = name
        self.startup_timeout = startup_timeout
        self.auth = auth
        self.certs = certs
        self.admin_password = secrets.token_urlsafe(16)
        self._binary = binary
        self._secret_dir: str | None = None
        self.key_file: str | None = self._write_key_file() if auth else None
        self.members: list[MongodServer] = [self._new_member() for _ in range(members)]
        # Members removed by remove_member() keep running (for reconfig tests)
        # but are no longer part of the configuration.
        self.removed: list[MongodServer] = []
        # Each member keeps its tag name ("m0", ...) when removed and added back.
        self._tags: dict[str, str] = {}

    def _write_key_file(self) -> str:
        """The members' shared secret, made now and readable by its owner only (mongod insists)."""
        self._secret_dir = tempfile.mkdtemp(prefix="mongo_requests-keyfile-")
        _TEMP_DIRS[self._secret_dir] = os.getpid()
        path = os.path.join(self._secret_dir, "keyfile")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(base64.b64encode(secrets.token_bytes(96)))
        return path

    def _new_member(self) -> MongodServer:
        args = ("--replSet", self.name) + _MEMBER_ARGS
        if not (self.auth or self.certs):
            return MongodServer(binary=self._binary, extra_args=args, startup_timeout=self.startup_timeout)
        member = SecureMongodServer(
            auth=self.auth,
            certs=self.certs,
            key_file=self.key_file,
            first_user=False,
            admin_password=self.admin_password,
            certificate=self.certs.member if self.certs else None,
            binary=self._binary,
            extra_args=args,
            startup_timeout=self.startup_timeout,
        )
        # A member added later joins a set whose users already exist.
        member.users_exist = any(
            isinstance(m, SecureMongodServer) and m.users_exist for m in getattr(self, "members", ())
        )
        return member

    def _tag(self, host: str) -> str:
        return self._tags.setdefault(host, "m%d" % len(self._tags))

    # --- addresses ----------------------------------------------------------

    @property
    def hosts(self) -> list[str]:
        """``host:port`` of every configured member."""
        return ["%s:%d" % m.address for m in self.members]

    @property
    def uri(self) -> str:
        """A connection string with every member as a seed and ``replicaSet``."""
        return "mongodb://%s/?replicaSet=%s" % (",".join(self.hosts), self.name)

    def seed_uri(self, member: MongodServer | None = None) -> str:
        """A connection string with one seed only (the first member by default)."""
        member = member or self.members[0]
        return "mongodb://%s:%d/?replicaSet=%s" % (member.address + (self.name,))

    def member_named(self, host: str) -> MongodServer:
        """The member whose ``host:port`` is ``host``."""
        for member in self.members + self.removed:
            if "%s:%d" % member.address == host:
                return member
        raise KeyError(host)

    # --- life cycle ---------------------------------------------------------

    def start(self) -> ReplicaSet:
        """Start every member, initiate the set and wait until it is healthy.

        :raises MongodStartError: if a member does not start, or the set
            has no primary and secondaries within ``startup_timeout``.
        """
        deadline = time.monotonic() + self.startup_timeout
        try:
            _each(self.members, MongodServer.start)
            config = self._initial_config()
            self._until(deadline, "accept replSetInitiate", lambda: self._initiate(config))
            if self.auth:
                self._create_first_user(deadline)
            self.wait_healthy(max(deadline - time.monotonic(), 1.0))
        except BaseException:
            self.stop()
            raise
        return self

    def _initial_config(self) -> dict[str, Any]:
        members = [{"_id": i, "host": host, "tags": {"name": self._tag(host)}} for i, host in enumerate(self.hosts)]
        return {
            "_id": self.name,
            "members": members,
            "settings": {
                "electionTimeoutMillis": ELECTION_TIMEOUT_MS,
                "heartbeatIntervalMillis": HEARTBEAT_INTERVAL_MS,
            },
        }

    def _create_first_user(self, deadline: float) -> None:
        # The localhost exception lets a connection from 127.0.0.1 initiate
        # the set and create the first user, on the primary only; the user
        # then replicates and every member's exception closes.
        primary = self.wait_for_primary(max(deadline - time.monotonic(), 1.0))
        assert isinstance(primary, SecureMongodServer)
        primary.create_first_user()
        for member in self.members:
            assert isinstance(member, SecureMongodServer)
            member.users_exist = True

    def create_user(
        self, name: str, password: str | None = None, roles: Any = ("root",), db: str = "admin", mechanisms: Any = None
    ) -> None:
        """Create a user on the primary, acknowledged by every member (so any member can log it in at once)."""
        primary = self.wait_for_primary()
        if not isinstance(primary, SecureMongodServer) or not self.auth:
            raise RuntimeError("create_user needs a ReplicaSet(auth=True)")
        primary.create_user(
            name, password, roles, db, mechanisms, writeConcern={"w": len(self.members), "wtimeout": 30000}
        )

    def _initiate(self, config: dict[str, Any]) -> bool:
        reply = self.members[0].command({"replSetInitiate": config}, timeout=30)
        return bool(reply.get("ok")) or reply.get("codeName") == "AlreadyInitialized"

    def stop(self) -> None:
        """Shut every member down (the data directories stay until cleanup()).

        Secondaries go first, so that the primary does not wait for a
        secondary to catch up before stepping down to shut down.
        """
        primary = self.primary()
        _each([m for m in self.members + self.removed if m is not primary], MongodServer.stop)
        if primary is not None:
            primary.stop()

    def cleanup(self) -> None:
        """Stop if needed and delete every member's temporary data directory."""
        for member in self.members + self.removed:
            member.cleanup()
        if self._secret_dir is not None:
            shutil.rmtree(self._secret_dir, ignore_errors=True)
            _TEMP_DIRS.pop(self._secret_dir, None)

    def __enter__(self) -> ReplicaSet:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self.cleanup()

    # --- state --------------------------------------------------------------

    def hello(self, member: MongodServer, timeout: float = 5.0) -> dict[str, Any] | None:
        """The member's ``hello`` reply, or None if it does not answer."""
        if not member.running:
            return None
        try:
            return member.command({"hello": 1}, timeout=timeout)
        except OSError:
            return None

    def primary(self) -> MongodServer | None:
        """The member that says it is the writable primary now, if any."""
        for member in self.members:
            reply = self.hello(member)
            if reply and reply.get("isWritablePrimary"):
                return member
        return None

    def secondaries(self) -> list[MongodServer]:
        """The members that say they are secondaries now."""
        return [m for m in self.members if (self.hello(m) or {}).get("secondary")]

    def wait_for_primary(self, timeout: float = 60.0, not_this: MongodServer | None = None) -> MongodServer:
        """Wait until some member (other than ``not_this``) is primary; return it."""
        found: list[MongodServer] = []

        def ready() -> bool:
            member = self.primary()
            if member is None or member is not_this:
                return False
            found.append(member)
            return True

        self._until(time.monotonic() + timeout, "elect a primary", ready)
        return found[-1]

    def wait_healthy(self, timeout: float = 60.0) -> MongodServer:
        """Wait for a primary and for every running member to be a secondary or the primary.

        :returns: the primary.
        """
        deadline = time.monotonic() + timeout
        primary = self.wait_for_primary(timeout)

        def all_up() -> bool:
            status = primary.command({"replSetGetStatus": 1}, timeout=5)
            states = {m["name"]: m.get("stateStr") for m in status.get("members", ())}
            wanted = ["%s:%d" % m.address for m in self.members if m.running]
            if not all(states.get(host) in ("PRIMARY", "SECONDARY") for host in wanted):
                return False
            # A member added by a reconfig is listed among the "passives"
            # (it has no vote yet) until the primary clears its newlyAdded
            # flag in a further, automatic, reconfig: wait for that too.
            hosts = primary.command({"hello": 1}, timeout=5).get("hosts", ())
            return set(wanted) <= set(hosts)

        self._until(deadline, "bring every member to PRIMARY or SECONDARY", all_up)
        return self.wait_for_primary(max(deadline - time.monotonic(), 1.0))

    def _until(self, deadline: float, what: str, ready: Any) -> None:
        # Poll ``ready()``; connection errors are normal while members start,
        # stop or hold elections.
        last: object = None
        while True:
            try:
                if ready():
                    return
            except OSError as exc:
                last = exc
            if time.monotonic() >= deadline:
                raise MongodStartError(
                    "replica set %r did not %s in time; last error: %r\n%s" % (self.name, what, last, self._logs())
                )
            time.sleep(0.1)

    def _logs(self) -> str:
        return "\n".join(
            "--- %s:%d (%s) ---\n%s" % (m.address + ("running" if m.running else "down", m.log_tail(8)))
            for m in self.members
        )

    # --- faults -------------------------------------------------------------

    def stepdown(self, seconds: int = 10, wait: bool = True) -> MongodServer:
        """Ask the primary to step down for ``seconds``; return the old primary.

        With ``wait``, return only once another member has been elected.
        """
        old = self.wait_for_primary()
        try:
            old.command({"replSetStepDown": seconds, "secondaryCatchUpPeriodSecs": min(5, seconds)}, timeout=30)
        except OSError:
            pass  # older servers closed every connection on stepdown
        if wait:
            self.wait_for_primary(not_this=old)
        return old

    def kill_primary(self, wait: bool = True) -> MongodServer:
        """SIGKILL the primary; return it.  With ``wait``, return once another member is primary."""
        old = self.wait_for_primary()
        old.kill()
        if wait:
            self.wait_for_primary(not_this=old)
        return old

    def restart(self, member: MongodServer, wait: bool = True) -> None:
        """Start a killed or stopped member again on its port and dbpath.

        With ``wait``, return once every member is healthy again.
        """
        member.start()
        if wait:
            self.wait_healthy()

    def _reconfig(self, change: Any) -> None:
        primary = self.wait_for_primary()
        config = primary.command({"replSetGetConfig": 1})["config"]
        config = change(config)
        config["version"] += 1
        reply = primary.command({"replSetReconfig": config}, timeout=60)
        if not reply.get("ok"):
            raise MongodStartError("replSetReconfig failed: %r" % (reply,))

    def remove_member(self, member: MongodServer) -> None:
        """Reconfigure the set without ``member``; it keeps running, outside the set."""
        host = "%s:%d" % member.address

        def without(config: dict[str, Any]) -> dict[str, Any]:
            config["members"] = [m for m in config["members"] if m["host"] != host]
            return config

        self._reconfig(without)
        self.members.remove(member)
        self.removed.append(member)

    def add_member(self, member: MongodServer | None = None, wait: bool = True) -> MongodServer:
        """Add ``member`` back (or a new one) to the set; return it."""
        if member is None:
            member = self._new_member()
        if not member.running:
            member.start()
        host = "%s:%d" % member.address

        def with_member(config: dict[str, Any]) -> dict[str, Any]:
            next_id = max(m["_id"] for m in config["members"]) + 1
            config["members"].append({"_id": next_id, "host": host, "tags": {"name": self._tag(host)}})
            return config

        self._reconfig(with_member)
        if member in self.removed:
            self.removed.remove(member)
        self.members.append(member)
        if wait:
            self.wait_healthy()
        return member

    def __repr__(self) -> str:
        return "<ReplicaSet %r %s>" % (self.name, ",".join(self.hosts))


def _each(members: list[MongodServer], action: Any) -> None:
    """``action(member)`` for every member at once (each mostly waits on its mongod); re-raise the first error."""
    errors: list[BaseException] = []

    def run(member: MongodServer) -> None:
        try:
            action(member)
        except BaseException as exc:  # re-raised below, in the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(m,), daemon=True) for m in members]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
