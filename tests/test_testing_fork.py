"""No mongod outlives the process that started it, even when a forked child runs the parent's code.

gevent's Popen forks in Python, so the at-fork hooks of the test process run in the child before it execs
mongod.  One that switches greenlets (OpenTelemetry's TracerProvider, left registered by test_monitoring,
starts a thread there) lets the parent's other greenlets run in that child: the members of a replica set
being started at once were launched a second time from such copies, and those mongods were tracked by no
process (every gevent-patched CI run left the 3 members of rs_secure behind).  These tests recreate that
in a child interpreter of this mode, and check by pid, and by a tag in the command line, what survives.
"""

from __future__ import annotations

import os
import secrets
import time

import mongo_requests.testing as testing
from helpers import child_env, pid_alive, run_child
from mongo_requests.testing import MongodServer, raw_command

_LAUNCH_THREE = """
import os, sys, threading
if sys.argv[1] == "gevent-patched":
    from gevent import monkey
    monkey.patch_all()
from mongo_requests.testing import MongodServer
from mongo_requests.testing_replset import _each

def start_a_thread():
    # What OpenTelemetry's TracerProvider does in every forked child: under gevent, waiting for the
    # new thread to start switches greenlets before gevent's Popen child has exec'd mongod.
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()

os.register_at_fork(after_in_child=start_a_thread)
servers = [MongodServer(extra_args=("--replSet", sys.argv[2])) for _ in range(3)]
_each(servers, MongodServer.start)  # all at once, as ReplicaSet.start does
print(" ".join(str(s.pid) for s in servers), flush=True)
for server in servers:
    server.stop()
    server.cleanup()
"""


def _tagged(tag: str) -> list[int]:
    """Pids of the processes whose command line holds the argument ``tag``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        if tag.encode() in argv:
            found.append(int(entry))
    return found


def test_members_started_at_once_leave_no_mongod_behind(mode):
    tag = "leak_" + secrets.token_hex(6)
    try:
        out = run_child(["-c", _LAUNCH_THREE, mode.name, tag], timeout=120, env=child_env(), check=False)
    finally:
        # A second launch of a member on its port and dbpath dies on its own (DBPathInUse): give it
        # time; then kill whatever is left, before failing on it.
        deadline = time.monotonic() + 5
        while _tagged(tag) and time.monotonic() < deadline:
            time.sleep(0.1)
        leftovers = _tagged(tag)
        for pid in leftovers:
            os.kill(pid, 9)
    assert leftovers == [], "mongods launched with --replSet %s outlived the process that started them:\n%s" % (
        tag,
        out.stderr[-3000:],
    )
    assert out.returncode == 0, out.stderr[-5000:]
    pids = [int(p) for p in out.stdout.split()]
    assert len(set(pids)) == 3 and not any(pid_alive(pid) for pid in pids), out.stdout


def test_a_relaunch_kills_the_earlier_process_first():
    # What a retry after a start that looked failed does: it must not orphan the first process, which
    # would hold the port and dbpath (the new one dies with DBPathInUse) and be tracked by nobody.
    server = MongodServer()
    try:
        server.start()
        first = server.pid
        assert first is not None
        server._launch()
        second = server.pid
        assert second is not None and second != first
        assert not pid_alive(first)
        assert raw_command(server.address, {"ping": 1})["ok"] == 1
        assert server.stop() == 0
    finally:
        server.cleanup()
    assert not pid_alive(second)


def test_a_forked_child_leaves_the_parents_servers_alone():
    # A forked child owns neither the parent's processes nor its files: it may not start, stop, kill or
    # clean up its servers, and its atexit hook kills and deletes only what the child itself made.
    with MongodServer() as server:
        pid, dbpath = server.pid, server.dbpath
        assert pid is not None and dbpath is not None
        child = os.fork()
        if child == 0:
            code = 0
            try:
                for bit, action in enumerate((server.stop, server.kill, server.cleanup, server.start)):
                    try:
                        action()
                        code |= 1 << bit  # the child acted on the parent's server
                    except RuntimeError:
                        pass
                testing._kill_leftovers()
            except BaseException:
                code |= 1 << 4
            os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert server.pid == pid and pid_alive(pid) and os.path.isdir(dbpath)
        assert raw_command(server.address, {"ping": 1})["ok"] == 1
