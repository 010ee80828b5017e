"""The unpatched primitives: the thread id, locks and ``poll`` that gevent's ``patch_all`` leaves alone.

The pool's lock, a waiter's settle lock and the OS thread's id must be the
real ones even in a monkey-patched process: a patched lock would yield to
the hub inside the pool's critical sections, and a patched ``get_ident``
names the greenlet, not the thread.  Each is looked up once, at import.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def _original(module: str, name: str) -> Any:
    """Return the unpatched ``module.name``, even after gevent's patch_all."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched(module):
        return monkey.get_original(module, name)
    return getattr(__import__(module), name)


# The OS thread's id, even under patch_all (where ``_thread.get_ident`` names the greenlet).
_get_ident: Callable[[], int] = _original("_thread", "get_ident")


def gevent_patched(module: str = "threading") -> bool:
    """True when gevent has monkey-patched ``module`` in this process.

    Looks in ``sys.modules`` rather than importing gevent: a process that never
    imported gevent cannot have been patched by it, and we must not pay for
    (or require) the import.
    """
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey is not None and monkey.is_module_patched(module))


# The lock constructor is looked up once, here: each wait for a pool slot
# makes a lock, and ``gevent.monkey.get_original`` costs about 4 us a call
# against 0.16 us for the cached function.  The original never changes: if
# gevent patches ``_thread`` after this import, the function kept here is
# still the unpatched one, and if it patched before, ``_original`` finds it.
_allocate_lock: Callable[[], Any] = _original("_thread", "allocate_lock")


def real_lock() -> Any:
    """Return a new unpatched ``_thread`` lock."""
    return _allocate_lock()


def real_poll() -> Any | None:
    """Return the unpatched ``select.poll`` constructor, or None on platforms without it."""
    try:
        return _original("select", "poll")
    except (AttributeError, KeyError):
        return None
