# Defaults for the page-view counters app; command-line options win.
# gunicorn reads ./gunicorn.conf.py from the --chdir directory by itself.
import os

worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Concurrent HTTP connections per worker (greenlets).  Only MAX_POOL_SIZE of
# them hold a MongoDB socket at once; the others queue in the driver's pool.
worker_connections = 1000
bind = os.environ.get("BIND", "127.0.0.1:8000")
keepalive = 5
