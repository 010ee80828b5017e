"""Who is calling: threads or greenlets, and the primitives that suit each.

A *request* pins a socket to its caller, so the pool needs three things from
"the caller", and this module is the only place that knows what a caller is:

``calls()``, ``current``
    the caller's request records: one dict per caller, shared by a topology
    and all its pools (and every other client), keyed by a weakref to the
    record's owner.  It hangs on the caller itself (the greenlet object, or a
    thread-local for threads), so a pool finds its record with one attribute
    read of ``current()``, and a caller's first request makes one store, not
    one ``gevent.local`` per owner.  When the caller dies, each live owner's
    ``_caller_died(record)`` runs once (the death watch of ``watch()``,
    registered once per caller), so a socket pinned by a thread or greenlet
    that never called ``end_request`` comes back to its pool;
``local_base()``
    the base class of other storage private to the current caller
    (``threading.local`` for threads, ``gevent.local.local`` for greenlets);
``watch(callback)``
    call ``callback()`` once after the current caller has died;
``waiter()``, ``socket``, ``sleep``, ``poll``
    the blocking primitives that suit the caller: in greenlet mode they are
    gevent's, so a wait for a pool slot or for the network yields to the hub
    instead of blocking it, even when nothing has been monkey-patched.  A
    waiter also carries the wait-queue hand-off protocol (``set``, ``fail``,
    ``wait``, ``abandon``: see :mod:`mongo_requests.waiters`), so the pool's queue has one
    place that settles who gets a slot.

Death callbacks are written defensively: they hold only what they need (the
pool holds them, never the other way round), and they never touch a
thread-local.  PyMongo 2 learned the last rule the hard way (PYTHON-353):
thread-locals are being torn down when a thread's vigil dies.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from .errors import ConfigurationError
from .originals import _original, gevent_patched, real_lock, real_poll
from .waiters import _ThreadWaiter, greenlet_waiter, use_gevent

__all__ = [
    "RecordOwner",
    "ThreadIdentity",
    "GreenletIdentity",
    "choose_identity",
    "gevent_patched",
    "notify_when_threading_patched",
    "real_lock",
    "real_poll",
]


class _Vigil:
    """A token kept in a thread-local: when it dies, its thread has ended."""

    __slots__ = ("__weakref__",)


def _watch_ref(obj: Any, callback: Callable[[], None], refs: set[weakref.ref[Any]]) -> None:
    """Call ``callback()`` once ``obj`` is freed; ``refs`` keeps the weakref alive."""

    def on_death(
        ref: weakref.ref[Any], refs: set[weakref.ref[Any]] = refs, callback: Callable[[], None] = callback
    ) -> None:
        refs.discard(ref)
        callback()

    refs.add(weakref.ref(obj, on_death))


class _ThreadVigils:
    """Death watch for threads: a vigil in a thread-local, and a weakref to it.

    CPython clears a thread's locals when the thread ends; the vigil's last
    reference goes, and the weakref's callback fires in the dying thread.
    One per thread-local class for the whole process (:func:`_thread_vigils`):
    the callers' request records hang on the same thread-local, and a vigil
    must outlive whichever pool happened to register it.
    """

    def __init__(self, local_cls: type) -> None:
        self.tl = local_cls()
        # Live weakrefs must be kept somewhere, or their callbacks never run.
        self.refs: set[weakref.ref[Any]] = set()

    def watch(self, callback: Callable[[], None]) -> None:
        vigil = _Vigil()
        try:
            self.tl.items.append(vigil)
        except AttributeError:
            self.tl.items = [vigil]
        _watch_ref(vigil, callback, self.refs)


_all_thread_vigils: dict[type, _ThreadVigils] = {}


def _thread_vigils(local_cls: type) -> _ThreadVigils:
    """The process's :class:`_ThreadVigils` for ``local_cls`` (made on first use)."""
    vigils = _all_thread_vigils.get(local_cls)
    if vigils is None:
        vigils = _all_thread_vigils.setdefault(local_cls, _ThreadVigils(local_cls))
    return vigils


# The attribute of a caller (a greenlet, or a thread's thread-local) that holds
# its request records: {weakref to owner: record}.  See calls().
CALLS = "_mongo_requests_calls"


_R = TypeVar("_R")


class RecordOwner(Generic[_R]):
    """Base of the owners of request records (a topology, a pool): finds the caller's record.

    The owner sets ``_caller`` (its identity's ``current``) and ``_self_ref`` (a weakref to itself, the
    record's key in every caller's :class:`CallerRecords`).
    """

    _caller: Callable[[], Any]
    _self_ref: weakref.ref[Any]
    identity: ThreadIdentity | GreenletIdentity

    def _own_record(self) -> _R | None:
        """The caller's record with this owner, if it has one (Pool.checkout inlines this)."""
        calls = getattr(self._caller(), CALLS, None)
        return None if calls is None else calls.get(self._self_ref)


class CallerRecords(dict[weakref.ref[Any], Any]):
    """One caller's request records: ``{weakref to owner: record}``, and its death callback.

    A dict subclass, so one object per caller for the garbage collector to
    track (10,000 greenlets keep them all alive).  A gevent Greenlet's death
    watch is a module function that finds the records on the greenlet, so
    it adds no object; other callers' watches use the bound ``caller_died``.
    """

    __slots__ = ()

    def caller_died(self, *_: Any) -> None:
        """Death watch (any arguments ignored: rawlink passes the greenlet): each live owner reclaims its record.

        A record at depth 0 holds nothing to reclaim (no pin, no pipeline, no pools: every owner's outermost end
        and reap clear them), which is the common case (a greenlet that ended its requests): it is skipped.
        """
        for owner_ref, record in list(self.items()):
            if record.depth:
                owner = owner_ref()
                if owner is not None:
                    owner._caller_died(record)

    def add(self, owner_ref: weakref.ref[Any], record: Any) -> None:
        """File ``record`` under ``owner_ref``, dropping the records of freed owners.

        A long-lived caller (a main thread) that uses many short-lived clients
        keeps one small record per live owner this way, not one per client ever used.
        """
        if self:  # a fresh store (a new greenlet's first record) has nothing to drop
            for dead in [ref for ref in self if ref() is None]:
                del self[dead]
        self[owner_ref] = record


def _greenlet_died(glet: Any) -> None:
    """rawlink callback of a gevent Greenlet that had request records: the records' death watch."""
    calls: CallerRecords | None = getattr(glet, CALLS, None)
    if calls is not None:
        calls.caller_died()


class ThreadIdentity:
    """Callers are OS threads (or whatever ``threading`` is: see below).

    When gevent has patched ``threading``, a "thread" is really a greenlet and
    :class:`GreenletIdentity` is the right choice; ``use_greenlets=False`` can
    still force this class, and it stays correct because it uses the
    ``threading`` module as the process sees it.
    """

    kind = "thread"

    def __init__(self) -> None:
        import socket
        import ssl
        import time

        self.socket = socket
        self.ssl = ssl
        self.sleep = time.sleep
        self._lock_factory = threading.Lock
        self._vigils = _thread_vigils(threading.local)
        # The object that carries the caller's records: the thread-local
        # itself.  A C callable, so the pool's lookup runs no Python frame.
        self.current: Callable[[], Any] = itertools.repeat(self._vigils.tl).__next__

    @staticmethod
    def local_base() -> type:
        """The base class for caller-private storage."""
        return threading.local

    def watch(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` once, after the current thread has ended."""
        self._vigils.watch(callback)

    def calls(self) -> CallerRecords:
        """The calling thread's request records, made (and its death watched) on first use."""
        tl = self._vigils.tl
        calls: CallerRecords | None = getattr(tl, CALLS, None)
        if calls is None:
            calls = CallerRecords()
            setattr(tl, CALLS, calls)
            self._vigils.watch(calls.caller_died)
        return calls

    def waiter(self, settle_lock: Any = None) -> _ThreadWaiter:
        """A one-shot waiter for the pool's wait queue (``settle_lock``: the pool's lock, else a new one)."""
        return _ThreadWaiter(self._lock_factory, real_lock() if settle_lock is None else settle_lock)

    # Threads can share plain sockets freely: nothing to re-home, and no hub.
    rehome = None
    current_hub: Callable[[], Any] | None = None

    @staticmethod
    def fan_out(tasks: Sequence[Callable[[], Any]]) -> list[Any]:
        """Run ``tasks`` at the same time, one in this thread and one thread each for the rest; join all.

        Server checks use it: nothing started here outlives the call.  A
        task's exception is raised here, after every thread has ended.
        """
        if len(tasks) <= 1:
            return [task() for task in tasks]
        results: list[Any] = [None] * len(tasks)
        errors: list[BaseException] = []

        def run(i: int) -> None:
            try:
                results[i] = tasks[i]()
            except BaseException as exc:  # re-raised in the caller
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(1, len(tasks))]
        for thread in threads:
            thread.start()
        run(0)
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return results

    def after_fork(self) -> None:
        """Nothing to do for threads in a forked child."""

    def __repr__(self) -> str:
        return "<ThreadIdentity>"


_reinit_pid: int | None = None
# The weakrefs watching raw greenlets (no rawlink): process-wide, like the records they reclaim.
_raw_greenlet_refs: set[weakref.ref[Any]] = set()


class GreenletIdentity:
    """Callers are greenlets; all waits and I/O cooperate with gevent's hub.

    A greenlet's request records hang on the greenlet object itself (an
    attribute, ``CALLS``).  Like ``gevent.local.local``, which they replaced,
    they need no locking, work in every thread of a mixed-mode process, and
    are freed with the greenlet; but one store serves every topology and pool,
    and reading it is an attribute of ``getcurrent()`` (about a third of a
    ``gevent.local`` read; making one costs half of a ``gevent.local``'s first
    use).  Death is *detected* separately (``watch``), because a dead
    greenlet can stay referenced (by a ``joinall`` list, say) long after it
    stopped running, and its socket should come back as soon as it stops.
    """

    kind = "greenlet"

    def __init__(self) -> None:
        try:
            import gevent
            import gevent.local
            import gevent.socket
            import gevent.ssl
            import greenlet
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigurationError("use_greenlets=True needs gevent: pip install 'mongo_requests[gevent]'") from exc
        self._gevent = gevent
        self._getcurrent = greenlet.getcurrent
        self._Greenlet = gevent.Greenlet
        self._local_cls = gevent.local.local
        self._get_hub = gevent.get_hub
        use_gevent(gevent.get_hub, greenlet.getcurrent)
        # The calling thread's hub: the pool compares it with the hub its
        # sockets were made in, to skip rehome() while there is only one.
        self.current_hub = gevent.get_hub
        self.socket = gevent.socket
        # TLS sockets that wait on the hub, patched or not.
        self.ssl = gevent.ssl
        self.sleep = gevent.sleep
        # The object that carries the caller's records: the greenlet itself.
        self.current: Callable[[], Any] = greenlet.getcurrent
        # A thread's main greenlet lives as long as its thread (gevent keeps a
        # finished thread's hub, and with it the main greenlet, referenced),
        # so it is watched like a thread: a vigil in a real thread-local.
        self._thread_vigils = _thread_vigils(_original("_thread", "_local"))

    def local_base(self) -> type:
        """The base class for caller-private storage."""
        local_cls: type = self._local_cls
        return local_cls

    def watch(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` once, after the current greenlet has died.

        ``gevent.Greenlet`` objects tell us through ``rawlink`` as soon as
        they finish (killed, raised, or returned), even while something still
        references them.  Raw greenlets (``greenlet.greenlet``,
        ``gevent.spawn_raw``) have no such hook, so we hold a weakref and hear
        of them when the greenlet object is freed.
        """
        self._watch(self._getcurrent(), callback)

    def _watch(self, current: Any, callback: Callable[[], None]) -> None:
        """``watch()`` of the greenlet ``current``."""
        if isinstance(current, self._Greenlet):
            current.rawlink(lambda _g, callback=callback: callback())
            return
        if current.parent is None:  # the main greenlet of a thread
            self._thread_vigils.watch(callback)
            return
        _watch_ref(current, callback, _raw_greenlet_refs)

    def calls(self) -> CallerRecords:
        """The calling greenlet's request records, made (and its death watched) on first use."""
        current = self._getcurrent()
        calls: CallerRecords | None = getattr(current, CALLS, None)
        if calls is None:
            calls = CallerRecords()
            setattr(current, CALLS, calls)
            if isinstance(current, self._Greenlet):
                current.rawlink(_greenlet_died)  # a module function: no bound method per greenlet
            else:
                self._watch(current, calls.caller_died)
        return calls

    #: ``waiter(settle_lock=None)``: the calling greenlet's waiter for the pool's wait queue, reset
    #: for this wait (``settle_lock``: the pool's lock, else a new one).  Its wake-up may come
    #: from another thread's hub (or a plain thread), which mixed mode needs: see
    #: :class:`_GreenletWaiter` and :func:`greenlet_waiter`.
    waiter = staticmethod(greenlet_waiter)

    def after_fork(self) -> None:
        """In a forked child: make gevent's hub usable again.

        ``gevent.os.fork`` (what monkey-patching installs) reinitialises the
        hub itself; after a plain ``os.fork`` in an unpatched process the
        child's hub still holds the parent's event loop state, and the first
        socket wait hangs.  gevent documents ``gevent.reinit()`` as the cure;
        it runs once per child, however many pools there are.
        """
        global _reinit_pid
        pid = os.getpid()
        if _reinit_pid != pid and not gevent_patched("os"):
            _reinit_pid = pid
            self._gevent.reinit()

    def fan_out(self, tasks: Sequence[Callable[[], Any]]) -> list[Any]:
        """Run ``tasks`` at the same time, one in this greenlet and one greenlet each for the rest; join all.

        Server checks use it: nothing spawned here outlives the call.  A
        task's exception is raised here, after every greenlet has ended.
        """
        if len(tasks) <= 1:
            return [task() for task in tasks]
        greenlets = [self._gevent.spawn(task) for task in tasks[1:]]
        try:
            first = tasks[0]()
        finally:
            self._gevent.joinall(greenlets)
        return [first] + [g.get() for g in greenlets]

    def rehome(self, sock: Any) -> Any:
        """Return ``sock`` usable from this thread's hub (re-wrapping it if needed).

        A gevent socket belongs to the hub of the thread that made it: used
        from another thread it fails with "Cannot switch to a different
        thread" as soon as it has to wait.  In mixed mode (real threads, each
        running greenlets) an idle socket may have been opened by another
        thread, so it is re-wrapped around the same descriptor: the TCP
        connection and its server-side state are unchanged.

        A TLS socket cannot be moved that way: its session lives in the SSL
        object of the socket object itself, and a re-wrapped descriptor would
        carry plaintext over the TLS connection.  For one, this returns None,
        and the pool closes it and takes (or opens) another.
        """
        hub = getattr(sock, "hub", None)
        if hub is None or hub is self._get_hub():
            return sock
        if isinstance(sock, self.ssl.SSLSocket):
            return None
        timeout = sock.gettimeout()
        fresh = self.socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        fresh.settimeout(timeout)
        return fresh

    def __repr__(self) -> str:
        return "<GreenletIdentity>"


def choose_identity(use_greenlets: bool | None) -> ThreadIdentity | GreenletIdentity:
    """Pick the identity for ``use_greenlets``: None means auto.

    Auto uses greenlets exactly when gevent has patched ``threading``: then
    every "thread" the application starts is a greenlet, and only greenlet
    identity gives each one its own request.
    """
    if use_greenlets is None:
        use_greenlets = gevent_patched("threading")
    if use_greenlets:
        return GreenletIdentity()
    return ThreadIdentity()


# Objects (pools with use_greenlets=None) to tell when gevent patches
# ``threading`` after they were made: ``gunicorn --preload -k gevent`` creates
# the client in the master, before the worker patches, and the workers'
# greenlets must still each get their own request.
_patch_watchers: weakref.WeakSet[Any] = weakref.WeakSet()
_subscribed = False


def _on_gevent_event(event: Any) -> None:
    """zope.event subscriber: gevent announces each module it patches."""
    if type(event).__name__ == "GeventDidPatchModuleEvent" and getattr(event, "module_name", None) == "threading":
        for watcher in list(_patch_watchers):
            watcher._threading_patched()


def notify_when_threading_patched(watcher: Any) -> None:
    """Call ``watcher._threading_patched()`` if gevent later patches ``threading``.

    gevent publishes its patch events through ``zope.event`` (a dependency of
    gevent, and importable without importing gevent).  Without zope.event
    there is no gevent, so nothing can be patched and there is nothing to do.
    """
    global _subscribed
    _patch_watchers.add(watcher)
    if _subscribed:
        return
    try:
        import zope.event
    except ImportError:
        return
    zope.event.subscribers.append(_on_gevent_event)
    _subscribed = True


# The unpatched lock and poll, for the pool's tiny critical sections and the
# idle-socket check.  Neither ever waits for long, so the real ones are right
# even under gevent (and they are much cheaper than gevent's).
#
