"""Test settings: the product's settings module, with a test-only SECRET_KEY default.

Everything else (DATABASE_URL, REDIS_URL) comes from the environment exactly as in
production, so `make test` runs on SQLite by default and on PostgreSQL + Redis in CI.
"""

import os

os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-not-for-production-0123456789")
os.environ.setdefault("HTTPS", "0")
os.environ.setdefault("LOG_FORMAT", "text")

from tradingportal.settings import *  # noqa: E402,F403
from tradingportal.settings import CACHES, CHANNEL_LAYERS, Q_CLUSTER, REDIS_URL  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Keep test keys apart from a development portal sharing the same Redis.
if REDIS_URL:
    CACHES["default"]["KEY_PREFIX"] = f"tptest{os.getpid()}"
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"tptest{os.getpid()}"  # type: ignore[index]
Q_CLUSTER["name"] = "tradingportal-tests"

# A file, not :memory:, so real processes started by end-to-end tests see the test data.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / f"test-{os.getpid()}.sqlite3")}  # noqa: F405
    (BASE_DIR / "var").mkdir(exist_ok=True)  # noqa: F405
