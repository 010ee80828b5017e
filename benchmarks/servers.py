"""The server a benchmark runs against: the one given, or a throwaway mongod."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def server_uri(uri: str | None) -> Iterator[str]:
    """``uri``; without one, a throwaway mongod's on 127.0.0.1, stopped and removed when the block ends."""
    if uri:
        yield uri
        return
    from mongo_requests.testing import MongodServer

    with MongodServer() as server:
        yield server.uri
