"""The test helpers' own promises, where a user meets them.

A user who points the suite at a mongod of their own without
``enableTestCommands=1`` must be told so by the tests that need fail points,
not left with a bare OperationFailure (issue 8; the README says the same).
"""

from __future__ import annotations

import pytest

import mongo_requests
from helpers import THREADS, fail_point, require_fail_points
from mongo_requests.testing import MongodServer

# The helpers run the same in every mode; the server is started and stopped here.
pytestmark = pytest.mark.modes(THREADS)


class _WithoutTestCommands(MongodServer):
    """A throwaway mongod as a user's own server would be: no test commands."""

    def _argv(self) -> list[str]:
        argv = super()._argv()
        at = argv.index("enableTestCommands=1")
        assert argv[at - 1] == "--setParameter", argv
        return argv[: at - 1] + argv[at + 1 :]


def test_fail_point_tests_say_how_to_get_fail_points():
    server = _WithoutTestCommands()
    server.start()
    client = mongo_requests.MongoClient(server.uri)
    try:
        assert client.admin.command("ping")["ok"] == 1
        with pytest.raises(pytest.fail.Exception) as info:
            require_fail_points(client)
        message = str(info.value)
        assert "enableTestCommands=1" in message and "configureFailPoint" in message, message
        # The context manager the tests use goes through the same check.
        with pytest.raises(pytest.fail.Exception):
            with fail_point(client, {"times": 1}, failCommands=["ping"], errorCode=2):
                pass  # pragma: no cover - never reached
    finally:
        client.close()
        server.stop()
        server.cleanup()
