"""Run the whole test suite under ``gevent.monkey.patch_all()``.

Monkey-patching must happen before anything imports ``threading``,
``socket`` or ``ssl`` - pytest included - so this script patches first and
only then starts pytest.  Under it, ``use_greenlets=None`` (auto) picks
greenlet identity, every "thread" a test starts is a greenlet, and every
request belongs to a greenlet.

    python tests/run_patched.py [pytest args...]
"""
from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

if __name__ == "__main__":
    os.environ["MONGO_REQUESTS_TEST_MODE"] = "gevent"
    sys.exit(pytest.main(sys.argv[1:]))
