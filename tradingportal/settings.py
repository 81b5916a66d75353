"""Settings for the trading portal, read once from the environment.

Every value has the embedded default of DESIGN.md when its variable is absent (SQLite,
local-memory cache, in-memory channel layer, django-q2 on the ORM). Setting
``DATABASE_URL`` and ``REDIS_URL`` moves the same code onto PostgreSQL, django-redis,
channels-redis and a Redis django-q2 broker. Values that must be set in production
(``SECRET_KEY``) have no default there.
"""

import os
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# Local overrides: ENV_FILE (default .env beside manage.py); real environment variables win.
ENV_FILE = Path(os.environ.get("ENV_FILE") or BASE_DIR / ".env")
if ENV_FILE.is_file():
    env.read_env(str(ENV_FILE), overwrite=False)

# --- core ---------------------------------------------------------------------------
DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off. Set SECRET_KEY in the environment "
            "(a long random string), or DEBUG=1 for local development (`make run` does)."
        )
    SECRET_KEY = "insecure-development-key-only-used-when-debug-is-on"  # noqa: S105

PORT = env.int("PORT", default=8000)
LOCAL_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
ALLOWED_HOSTS = [*env.list("ALLOWED_HOSTS", default=[]), *LOCAL_HOSTS]
CSRF_TRUSTED_ORIGINS = [
    *env.list("CSRF_TRUSTED_ORIGINS", default=[]),
    f"http://127.0.0.1:{PORT}",
    f"http://localhost:{PORT}",
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "tradingportal",
    "instruments",
    "ingestion",
    "oms",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "tradingportal.urls"
ASGI_APPLICATION = "tradingportal.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database -----------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and ingestion share the file: wait for locks instead of failing, WAL
    # so readers never block the writer, and take the write lock at BEGIN.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=0))
DB_IS_POSTGRES = DATABASES["default"]["ENGINE"].startswith("django.db.backends.postgresql")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- redis: cache, channel layer, django-q2 broker ----------------------------------
REDIS_URL = env.str("REDIS_URL", default="")

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="tp"),
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "SOCKET_CONNECT_TIMEOUT": 2,
                "SOCKET_TIMEOUT": 2,
            },
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": env.str("CHANNEL_LAYER_PREFIX", default="tp"),
                # Ticks are published as coalesced batches; a consumer that falls behind
                # should lose old batches quickly, not queue them.
                "capacity": 1000,
                "expiry": 10,
            },
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "tradingportal",
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 1000, "expiry": 10},
        }
    }

Q_CLUSTER = {
    "name": "tradingportal",
    "workers": env.int("Q_WORKERS", default=2),
    # A full instrument sync can take a minute on a slow disk; retry must exceed timeout
    # or a long task runs twice.
    "timeout": 900,
    "retry": 1200,
    "max_attempts": 1,
    "catch_up": False,
    "save_limit": 500,
    "label": "Task queue",
    **({"django_redis": "default"} if REDIS_URL else {"orm": "default"}),
}

# --- auth, i18n, static -------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Sessions read from the cache, written through to the database (one query less a request).
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "Asia/Kolkata"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve app static files straight from the apps too, so a deployment that skipped
# `collectstatic` still has its dashboard script (make run collects them anyway).
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=True)
WHITENOISE_AUTOREFRESH = DEBUG

# --- security -----------------------------------------------------------------------
# HTTPS defaults to on when DEBUG is off: secure cookies, redirect to https, HSTS. Set
# HTTPS=0 only to serve plain HTTP on a trusted network.
HTTPS = env.bool("HTTPS", default=not DEBUG)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS
SECURE_REDIRECT_EXEMPT = [r"^healthz/?$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=HTTPS)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=HTTPS)
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
DEFAULT_EXCEPTION_REPORTER_FILTER = "tradingportal.security.RedactingExceptionReporterFilter"
DEFAULT_EXCEPTION_REPORTER = "tradingportal.security.RedactingExceptionReporter"

# --- API ----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: an anonymous API call gets 401 with a WWW-Authenticate header.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "COERCE_DECIMAL_TO_STRING": True,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Kite Trading Desk API",
    "DESCRIPTION": "Instrument master, live data and orders for desks trading on Zerodha Kite.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Served from our own static files: the docs page works without the internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- broker (Zerodha Kite) ----------------------------------------------------------
KITE_API_KEY = env.str("KITE_API_KEY", default="")
KITE_API_SECRET = env.str("KITE_API_SECRET", default="")
KITE_ACCESS_TOKEN = env.str("KITE_ACCESS_TOKEN", default="")
KITE_TICKER_URL = env.str("KITE_TICKER_URL", default="wss://ws.kite.trade")
KITE_API_URL = env.str("KITE_API_URL", default="https://api.kite.trade")
KITE_INSTRUMENTS_URL = env.str("KITE_INSTRUMENTS_URL", default="https://api.kite.trade/instruments")
# Kite's ticker limits: instruments per connection, connections per API key.
KITE_TICKER_MAX_PER_CONNECTION = env.int("KITE_TICKER_MAX_PER_CONNECTION", default=3000)
KITE_TICKER_MAX_CONNECTIONS = env.int("KITE_TICKER_MAX_CONNECTIONS", default=3)

KITE_ACCESS_TOKEN_FILE = env.str("KITE_ACCESS_TOKEN_FILE", default="")

# --- live data -------------------------------------------------------------------------
# One-command mode without Redis runs the feed inside the web process (the in-memory
# channel layer reaches only its own process); the runner sets these.
INGESTION_IN_PROCESS = env.bool("INGESTION_IN_PROCESS", default=False)
INGESTION_SIMULATE = env.bool("INGESTION_SIMULATE", default=False)
INGESTION_PUBLISH_INTERVAL = env.float("INGESTION_PUBLISH_INTERVAL", default=0.1)
INGESTION_POLL_SECONDS = env.float("INGESTION_POLL_SECONDS", default=1.0)
FEED_STALE_SECONDS = env.float("FEED_STALE_SECONDS", default=10.0)

# --- instrument master ----------------------------------------------------------------
UPSTOX_INSTRUMENTS_URL = env.str(
    "UPSTOX_INSTRUMENTS_URL",
    default="https://assets.upstox.com/market-quote/instruments/exchange/complete.json.gz",
)
# A dump with fewer rows than this fraction of the last good one (same source and scope)
# is refused unless forced.
SYNC_SHRINK_RATIO = env.float("SYNC_SHRINK_RATIO", default=0.5)
# Daily schedule (Asia/Kolkata), HH:MM. Kite publishes the day's dump around 08:30.
SYNC_DAILY_AT = env.str("SYNC_DAILY_AT", default="08:45")
SYNC_DAILY_SOURCE = env.str("SYNC_DAILY_SOURCE", default="kite")
EXPIRED_DEACTIVATE_AT = env.str("EXPIRED_DEACTIVATE_AT", default="08:40")

# --- logging ------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOG_FORMAT = env.str("LOG_FORMAT", default="text" if DEBUG else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "tradingportal.logging.RedactSecretsFilter"}},
    "formatters": {
        "json": {"()": "tradingportal.logging.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["redact"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "django.db.backends": {"level": "INFO"},
        "django-q": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "websockets": {"level": "WARNING"},
    },
}
