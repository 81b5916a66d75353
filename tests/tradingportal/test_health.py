import pytest
from django.test import override_settings

pytestmark = pytest.mark.django_db

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


def test_healthz_reports_every_dependency(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert set(body["checks"]) >= {"database", "cache", "channel_layer"}
    assert all(check["ok"] for check in body["checks"].values())


def test_healthz_is_503_when_the_cache_is_down(client):
    down_cache = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": UNREACHABLE_REDIS,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }
    with override_settings(CACHES=down_cache):
        response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["ok"] is False
    assert body["checks"]["cache"]["ok"] is False
    assert "ConnectionError" in body["checks"]["cache"]["error"]
    assert body["checks"]["database"]["ok"] is True


def test_healthz_is_503_when_the_channel_layer_is_down(client):
    down_layer = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [UNREACHABLE_REDIS]},
        }
    }
    with override_settings(CHANNEL_LAYERS=down_layer):
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["channel_layer"]["ok"] is False


def test_healthz_errors_do_not_show_the_redis_password(client):
    secret_url = "redis://:hunter2-redis-pass@127.0.0.1:1/0"
    down_cache = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": secret_url,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5},
        }
    }
    with override_settings(CACHES=down_cache, REDIS_URL=secret_url):
        response = client.get("/healthz")
    assert response.status_code == 503
    assert "hunter2-redis-pass" not in response.content.decode()


def test_admin_is_branded(client):
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert "Kite Trading Desk" in response.content.decode()
