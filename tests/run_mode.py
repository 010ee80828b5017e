"""Run pytest in one test mode, patching first where the mode needs it.

    python tests/run_mode.py MODE [pytest args...]

MODE is ``threads``, ``gevent-patched`` (``gevent.monkey.patch_all()``),
``gevent-unpatched`` (nothing patched; clients get ``use_greenlets=True``)
or ``mixed`` (``patch_all(thread=False)``: real threads each running
greenlets; only the tests marked for mixed mode run).  Monkey-patching must
happen before anything imports ``threading``, ``socket`` or ``ssl`` - pytest
included - so this script patches first and only then starts pytest.  The
mode reaches the tests through ``MONGO_REQUESTS_TEST_MODE`` and the ``mode``
fixture (tests/conftest.py).
"""

import sys

_MODES = ("threads", "gevent-patched", "gevent-unpatched", "mixed")
_MODE = sys.argv[1] if len(sys.argv) > 1 else ""

if __name__ == "__main__" and _MODE == "gevent-patched":
    from gevent import monkey

    monkey.patch_all()
elif __name__ == "__main__" and _MODE == "mixed":
    from gevent import monkey

    monkey.patch_all(thread=False)

import os  # noqa: E402

import pytest  # noqa: E402

if __name__ == "__main__":
    if _MODE not in _MODES:
        print("usage: %s {%s} [pytest args...]" % (sys.argv[0], ",".join(_MODES)), file=sys.stderr)
        sys.exit(2)
    os.environ["MONGO_REQUESTS_TEST_MODE"] = _MODE
    sys.exit(pytest.main(sys.argv[2:]))
