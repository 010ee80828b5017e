"""Benchmarks for mongo_requests: raw OP_MSG socket vs mongo_requests vs PyMongo.

Run ``python -m benchmarks --help``; ``benchmarks/README.md`` explains the
method and how to read the results.

This file imports nothing on purpose: ``python -m benchmarks.gevent_bench``
imports this package *before* its own module runs, and that subprocess must
call ``gevent.monkey.patch_all()`` before ``socket`` or ``threading`` are
imported by anyone.
"""
