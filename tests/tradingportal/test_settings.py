"""Settings resolve from the environment: embedded defaults, or the real services."""

import json
import os

from tests.helpers import run_python

PROBE = """
import json, django
from django.conf import settings
django.setup()
print(json.dumps({
    "db_engine": settings.DATABASES["default"]["ENGINE"],
    "db_name": str(settings.DATABASES["default"]["NAME"]),
    "cache": settings.CACHES["default"]["BACKEND"],
    "cache_location": settings.CACHES["default"].get("LOCATION"),
    "layer": settings.CHANNEL_LAYERS["default"]["BACKEND"],
    "layer_hosts": settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("hosts"),
    "q_orm": settings.Q_CLUSTER.get("orm"),
    "q_redis": settings.Q_CLUSTER.get("django_redis"),
    "q_catch_up": settings.Q_CLUSTER.get("catch_up"),
    "q_timeout": settings.Q_CLUSTER["timeout"],
    "q_retry": settings.Q_CLUSTER["retry"],
    "debug": settings.DEBUG,
    "session_secure": settings.SESSION_COOKIE_SECURE,
    "csrf_origins": settings.CSRF_TRUSTED_ORIGINS,
    "hosts": settings.ALLOWED_HOSTS,
}))
"""

SERVICE_VARS = ("DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "HTTPS", "PORT", "ALLOWED_HOSTS")


def clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
    env["DJANGO_SETTINGS_MODULE"] = "tradingportal.settings"
    env["ENV_FILE"] = "/dev/null"  # a developer's .env must not change what is resolved here
    env.update(values)
    return env


def resolve(**values: str) -> dict:
    result = run_python(PROBE, clean_env(**values))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_embedded_defaults_when_nothing_is_set():
    resolved = resolve(SECRET_KEY="x" * 50)
    assert resolved["db_engine"] == "django.db.backends.sqlite3"
    assert resolved["db_name"].endswith("db.sqlite3")
    assert resolved["cache"] == "django.core.cache.backends.locmem.LocMemCache"
    assert resolved["layer"] == "channels.layers.InMemoryChannelLayer"
    assert resolved["q_orm"] == "default"
    assert resolved["q_redis"] is None
    assert resolved["debug"] is False
    assert resolved["q_catch_up"] is False
    assert resolved["q_retry"] > resolved["q_timeout"]


def test_real_services_from_urls():
    resolved = resolve(
        SECRET_KEY="x" * 50,
        DATABASE_URL="postgres://desk:pw@db.internal:5432/portal",
        REDIS_URL="redis://cache.internal:6379/2",
    )
    assert resolved["db_engine"] == "django.db.backends.postgresql"
    assert resolved["db_name"] == "portal"
    assert resolved["cache"] == "django_redis.cache.RedisCache"
    assert resolved["cache_location"] == "redis://cache.internal:6379/2"
    assert resolved["layer"] == "channels_redis.core.RedisChannelLayer"
    assert [h["address"] if isinstance(h, dict) else h for h in resolved["layer_hosts"]] == [
        "redis://cache.internal:6379/2"
    ]
    assert resolved["q_redis"] == "default"
    assert resolved["q_orm"] is None


def test_secret_key_is_required_when_debug_is_off():
    result = run_python(PROBE, clean_env(DEBUG="0"))
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_development_mode_works_over_plain_http_on_loopback():
    resolved = resolve(DEBUG="1", PORT="8123")
    assert resolved["debug"] is True
    assert resolved["session_secure"] is False
    assert "http://127.0.0.1:8123" in resolved["csrf_origins"]
    assert "http://localhost:8123" in resolved["csrf_origins"]
    assert {"127.0.0.1", "localhost"} <= set(resolved["hosts"])


def test_production_defaults_are_secure():
    resolved = resolve(SECRET_KEY="x" * 50, ALLOWED_HOSTS="desk.example.com")
    assert resolved["session_secure"] is True
    assert "desk.example.com" in resolved["hosts"]
