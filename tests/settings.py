"""Test settings: the product's settings module, with a test-only SECRET_KEY default.

Everything else (DATABASE_URL, REDIS_URL) comes from the environment exactly as in
production, so `make test` runs on SQLite by default and on PostgreSQL + Redis in CI.

Each test process keeps its own state, so that pytest-xdist workers (``make test`` runs
``PYTEST_WORKERS`` of them, gw0, gw1, ...) never see each other's: its own test database (a
SQLite file named after the process; on PostgreSQL pytest-django adds ``_gw<N>`` to the
name), its own worker cache folder, and under xdist its own Redis database, REDIS_URL's
number plus N (the tests' ``cache.clear()`` empties a whole Redis database, and django-q2's
queue and the channel layer's groups live there too). What is chosen here is also put in
the environment, so the real processes a test starts use the same.
"""

import os
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-not-for-production-0123456789")
os.environ.setdefault("HTTPS", "0")
os.environ.setdefault("LOG_FORMAT", "text")
# Heartbeats, busy marks and cluster stats without Redis (see tradingportal/worker.py): this
# process's own folder, unless it inherited one (a process a test starts uses its test
# process's; conftest.py keeps the xdist controller's from reaching its workers).
OWN_WORKER_CACHE_DIR = str(Path(__file__).resolve().parent.parent / "var" / f"test-{os.getpid()}-worker")
os.environ.setdefault("WORKER_CACHE_DIR", OWN_WORKER_CACHE_DIR)

from tradingportal.settings import *  # noqa: E402,F403
from tradingportal.settings import CACHES, CHANNEL_LAYERS, Q_CLUSTER, REDIS_URL  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# "gw0", "gw1", ... in a pytest-xdist worker and in the processes its tests start; "" otherwise.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


def worker_redis_url(url: str, worker: str) -> str:
    """``url`` moved to the Redis database of xdist worker ``gw<N>``: its own number plus N
    (``redis://h:6379/8`` is database 10 for gw2). The ``?db=`` parameter wins over the path
    in redis-py, so it is the one moved when given (and the only place for ``unix://``)."""
    index = int(worker.removeprefix("gw"))
    address, _, query_string = url.partition("?")
    query = dict(parse_qsl(query_string))
    if "db" in query or address.startswith("unix:"):
        query["db"] = str(int(query.get("db") or 0) + index)
        return f"{address}?{urlencode(query)}"
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{int(parts.path.strip('/') or 0) + index}"))


# A process a worker's test starts inherits the worker's URL, already moved: not moved again.
if REDIS_URL and XDIST_WORKER and os.environ.get("TESTS_WORKER_REDIS_URL") != REDIS_URL:
    REDIS_URL = worker_redis_url(REDIS_URL, XDIST_WORKER)
    os.environ["REDIS_URL"] = os.environ["TESTS_WORKER_REDIS_URL"] = REDIS_URL
    CACHES["default"]["LOCATION"] = REDIS_URL
    CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]["address"] = REDIS_URL  # type: ignore[index]
# Cache keys and channel-layer groups of this process only. The tests' cache.clear() still
# empties the whole Redis database: tests need a database no portal keeps anything in.
if REDIS_URL:
    CACHES["default"]["KEY_PREFIX"] = f"tptest{os.getpid()}"
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"tptest{os.getpid()}"  # type: ignore[index]
Q_CLUSTER["name"] = "tradingportal-tests"

# A file, not :memory:, so real processes started by end-to-end tests see the test data.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / f"test-{os.getpid()}.sqlite3")}  # noqa: F405
    (BASE_DIR / "var").mkdir(exist_ok=True)  # noqa: F405
