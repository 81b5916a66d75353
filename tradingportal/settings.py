"""Settings for the trading portal, read once from the environment.

Every value has the embedded default of ``docs/ARCHITECTURE.md`` (the project's map:
processes, data flow, where each behaviour lives) when its variable is absent (SQLite,
local-memory cache, in-memory channel layer, django-q2 on the ORM). Setting
``DATABASE_URL`` and ``REDIS_URL`` moves the same code onto PostgreSQL, django-redis,
channels-redis and a Redis django-q2 broker. Values that must be set in production
(``SECRET_KEY``) have no default there.
"""

import ipaddress
import os
import sys
from datetime import time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import validate_email

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
HOST = env.str("HOST", default="127.0.0.1")  # where `make run` serves (uvicorn --host)
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
    "axes",
    "csp",
    "tradingportal",
    "instruments",
    "ingestion",
    "oms",
    "alerts",
    "kitesession",
    "markets",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "tradingportal.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a login refused for a lockout into the lockout page.
    "axes.middleware.AxesMiddleware",
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
                # No read timeout: channels-redis waits for messages in a 5 s blocking
                # read (BZPOPMIN), and redis-py 8's default 5 s socket timeout would fail
                # it whenever the channel is quiet for 5 s, dropping every dashboard
                # (django/channels_redis#422, redis/redis-py#4091). Connecting still times
                # out; keepalive notices a dead peer; calls that must not hang (publishing,
                # /healthz) carry their own time limits.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": None,
                        "socket_connect_timeout": 2,
                        "socket_keepalive": True,
                    }
                ],
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
    # django-q2 1.11.1 reads this whenever Q_CLUSTER_NAME (its documented way to name the
    # queue of one cluster) is set, and fails with a KeyError without it.
    "ALT_CLUSTERS": {},
    **({"django_redis": "default"} if REDIS_URL else {"orm": "default"}),
}

# --- worker liveness ------------------------------------------------------------------
# The cluster proves it runs tasks with a heartbeat task every WORKER_HEARTBEAT_SECONDS;
# one that waited over WORKER_STALE_SECONDS while no worker was busy means the cluster is
# stuck (/healthz says so, the runner restarts it). Heartbeats, busy marks and django-q2's
# cluster stats live where web, worker and runner all see them: Redis, else a file cache.
WORKER_HEARTBEAT_SECONDS = env.float("WORKER_HEARTBEAT_SECONDS", default=5.0)
WORKER_STALE_SECONDS = env.float("WORKER_STALE_SECONDS", default=20.0)
if not 0 < WORKER_HEARTBEAT_SECONDS < WORKER_STALE_SECONDS:
    raise ImproperlyConfigured("WORKER_HEARTBEAT_SECONDS must be above 0 and below WORKER_STALE_SECONDS.")
if REDIS_URL:
    WORKER_CACHE = "default"
else:
    WORKER_CACHE = "worker"
    CACHES["worker"] = {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": env.str("WORKER_CACHE_DIR", default=str(BASE_DIR / "var" / "worker")),
    }
# Brokers that give back what a killed cluster had taken (tradingportal/broker.py).
Q_CLUSTER["broker_class"] = "tradingportal.broker." + ("RedisBroker" if REDIS_URL else "OrmBroker")
Q_CLUSTER["cache"] = WORKER_CACHE

# --- /healthz -------------------------------------------------------------------------
# Anyone gets the status and each check's ok/failed; details (errors, latencies, the feed,
# the worker) need a logged-in staff user or `Authorization: Bearer <HEALTHZ_TOKEN>`.
HEALTHZ_TOKEN = env.str("HEALTHZ_TOKEN", default="")
HEALTH_CHECK_TIMEOUT = env.float("HEALTH_CHECK_TIMEOUT", default=1.0)  # seconds, per check
if HEALTH_CHECK_TIMEOUT <= 0:
    raise ImproperlyConfigured("HEALTH_CHECK_TIMEOUT must be above 0 (seconds).")

# --- metrics (/metrics, Prometheus) -----------------------------------------------------
# Readable with `Authorization: Bearer <METRICS_TOKEN>`, or from an address in
# METRICS_ALLOWED_NETWORKS (comma-separated CIDRs, e.g. 10.0.0.0/8,192.168.1.7/32); with
# neither set, from loopback only. Database figures are read per scrape, each query limited
# to METRICS_QUERY_TIMEOUT seconds. PROMETHEUS_MULTIPROC_DIR (the runner sets it) sums the
# figures of every portal process.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_QUERY_TIMEOUT = env.float("METRICS_QUERY_TIMEOUT", default=2.0)
if METRICS_QUERY_TIMEOUT <= 0:
    raise ImproperlyConfigured("METRICS_QUERY_TIMEOUT must be above 0 (seconds).")
METRICS_ALLOWED_NETWORKS: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
for _network in env.list("METRICS_ALLOWED_NETWORKS", default=[]):
    try:
        METRICS_ALLOWED_NETWORKS.append(ipaddress.ip_network(_network.strip(), strict=False))
    except ValueError:
        raise ImproperlyConfigured(
            f"METRICS_ALLOWED_NETWORKS: {_network!r} is not a network; use CIDRs like 10.0.0.0/8 or 192.168.1.7"
        ) from None

# --- auth, i18n, static -------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: a locked-out login is refused before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
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
SECURE_REDIRECT_EXEMPT = [r"^healthz/?$", r"^metrics/?$"]
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
# Proxies in front of the portal that append the caller to X-Forwarded-For (0: none, the
# peer address is the caller). Login lockouts and API throttles count per caller address.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

# Login lockout (django-axes, on the admin login and /accounts/login/): after
# LOGIN_FAILURE_LIMIT wrong passwords for one user name from one address, that pair is
# refused (HTTP 429) for LOGIN_COOLOFF_MINUTES. Keyed on the pair, so a guesser elsewhere
# cannot lock a colleague out, and a shared office address does not lock out the desk.
# Attempts live in the database (every web worker sees them; admin -> Axes to unlock).
LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
LOGIN_COOLOFF_MINUTES = env.float("LOGIN_COOLOFF_MINUTES", default=15.0)
if LOGIN_FAILURE_LIMIT < 1 or LOGIN_COOLOFF_MINUTES <= 0:
    raise ImproperlyConfigured("LOGIN_FAILURE_LIMIT must be at least 1 and LOGIN_COOLOFF_MINUTES above 0.")
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True  # a login that succeeds forgets that pair's earlier typos
# The cool-off runs from the lockout: attempts while locked are refused, not counted.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_CLIENT_IP_CALLABLE = "tradingportal.security.client_address"
AXES_LOCKOUT_CALLABLE = "tradingportal.security.login_lockout_response"

# Content-Security-Policy (django-csp). No inline script or style anywhere (the API docs
# page is django-spectacular's split Swagger UI); the dashboard's websocket origin is added
# per request by the middleware.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

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
    # Throttles on every API view, counted in the cache (Redis: shared by all web workers);
    # rates are read per request from API_THROTTLE_ANON / API_THROTTLE_USER.
    "DEFAULT_THROTTLE_CLASSES": [
        "tradingportal.security.AnonymousThrottle",
        "tradingportal.security.UserThrottle",
    ],
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
    "EXCEPTION_HANDLER": "tradingportal.security.api_exception_handler",
}
# Requests per period ("30/min", "20/s", "1000/hour"): strict for anonymous callers (per
# address; refused requests count too), generous per user for strategies that poll.
API_THROTTLE_ANON = env.str("API_THROTTLE_ANON", default="30/min")
API_THROTTLE_USER = env.str("API_THROTTLE_USER", default="1200/min")
for _name, _rate in (("API_THROTTLE_ANON", API_THROTTLE_ANON), ("API_THROTTLE_USER", API_THROTTLE_USER)):
    _count, _, _period = _rate.partition("/")
    if not (_count.isascii() and _count.isdigit() and int(_count) > 0 and _period[:1] in "smhd" and _period):
        raise ImproperlyConfigured(f"{_name}={_rate!r} is not a rate; use e.g. 30/min, 20/s, 1000/hour.")
SPECTACULAR_SETTINGS = {
    "TITLE": "Kite Trading Desk API",
    "DESCRIPTION": "Instrument master, live data and orders for desks trading on Zerodha Kite.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its docs are for logged-in users (session or token), like the API.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Served from our own static files: the docs page works without the internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Fields of the same name with different choices get their own enum names.
    "ENUM_NAME_OVERRIDES": {
        "InstrumentSourceEnum": "instruments.models.Source",
        "OrderEventSourceEnum": "oms.models.OrderEvent.Source",
    },
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
# Kite's order rate limits per API key (Zerodha has changed the caps over time), enforced
# before an order is sent and counted across processes; and how long a REST call may take
# (seconds; kiteconnect's own default is 7) before its outcome is unknown.
KITE_ORDERS_PER_SECOND = env.int("KITE_ORDERS_PER_SECOND", default=10)
KITE_ORDERS_PER_MINUTE = env.int("KITE_ORDERS_PER_MINUTE", default=400)
KITE_ORDERS_PER_DAY = env.int("KITE_ORDERS_PER_DAY", default=5000)
KITE_REQUEST_TIMEOUT = env.float("KITE_REQUEST_TIMEOUT", default=7.0)
if min(KITE_ORDERS_PER_SECOND, KITE_ORDERS_PER_MINUTE, KITE_ORDERS_PER_DAY) < 1:
    raise ImproperlyConfigured("KITE_ORDERS_PER_SECOND, _PER_MINUTE and _PER_DAY must each be at least 1.")
if not 0 < KITE_REQUEST_TIMEOUT <= 120:
    raise ImproperlyConfigured("KITE_REQUEST_TIMEOUT must be above 0 and at most 120 (seconds).")

# --- Kite session (daily login from the portal: kitesession/) ---------------------------
# /kite/login/ sends a desk user to KITE_LOGIN_URL; the access token Kite hands back is stored
# encrypted with KITE_TOKEN_KEY (a Fernet key; make one with
#   python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"
# ). Checked when a login is attempted or a stored token is read, not at start-up: without a
# key the portal runs on the bootstrap KITE_ACCESS_TOKEN(_FILE) only. A stored session wins over
# the bootstrap token while it is valid (until the next 06:00 IST).
KITE_TOKEN_KEY = env.str("KITE_TOKEN_KEY", default="")
KITE_LOGIN_URL = env.str("KITE_LOGIN_URL", default="https://kite.zerodha.com/connect/login")
# How long a login started at /kite/login/ may take to come back to /kite/callback/ (seconds).
KITE_LOGIN_STATE_SECONDS = env.int("KITE_LOGIN_STATE_SECONDS", default=600)
# The desk's Kite user id (e.g. AB1234): when set, a login as any other Kite user is refused
# (any Zerodha client can log in to a Kite Connect app: the desk's orders must not go elsewhere).
KITE_USER_ID = env.str("KITE_USER_ID", default="")

# --- live data -------------------------------------------------------------------------
# One-command mode without Redis runs the feed inside the web process (the in-memory
# channel layer reaches only its own process); the runner sets these.
INGESTION_IN_PROCESS = env.bool("INGESTION_IN_PROCESS", default=False)
INGESTION_SIMULATE = env.bool("INGESTION_SIMULATE", default=False)
INGESTION_PUBLISH_INTERVAL = env.float("INGESTION_PUBLISH_INTERVAL", default=0.1)
INGESTION_POLL_SECONDS = env.float("INGESTION_POLL_SECONDS", default=1.0)
FEED_STALE_SECONDS = env.float("FEED_STALE_SECONDS", default=10.0)
# Open /ws/ticks/ sockets per user, counted across web workers (Redis) and so across
# browser tabs: the next one is refused with close code 1008.
WS_MAX_CONNECTIONS_PER_USER = env.int("WS_MAX_CONNECTIONS_PER_USER", default=20)
if WS_MAX_CONNECTIONS_PER_USER < 1:
    raise ImproperlyConfigured("WS_MAX_CONNECTIONS_PER_USER must be at least 1.")


# --- order management (global risk limits; a strategy's own limits override them) ----
def _decimal(name: str, default: str) -> Decimal:
    raw = env.str(name, default=default)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if not value.is_finite() or value < 0:
        raise ImproperlyConfigured(f"{name}={raw!r} must be a finite number, 0 or more")
    return value


OMS_MAX_ORDER_QUANTITY = env.int("OMS_MAX_ORDER_QUANTITY", default=10_000)
OMS_MAX_ORDER_VALUE = _decimal("OMS_MAX_ORDER_VALUE", "1000000")
OMS_MAX_POSITION_QUANTITY = env.int("OMS_MAX_POSITION_QUANTITY", default=50_000)
OMS_MAX_OPEN_POSITIONS = env.int("OMS_MAX_OPEN_POSITIONS", default=20)
OMS_MAX_RISK_PER_TRADE_PERCENT = _decimal("OMS_MAX_RISK_PER_TRADE_PERCENT", "2")
OMS_MIN_REWARD_RISK = _decimal("OMS_MIN_REWARD_RISK", "1.5")
OMS_MAX_DAILY_LOSS = _decimal("OMS_MAX_DAILY_LOSS", "50000")
OMS_MAX_DRAWDOWN = _decimal("OMS_MAX_DRAWDOWN", "50000")
OMS_MAX_POSITION_LOSS = _decimal("OMS_MAX_POSITION_LOSS", "25000")
OMS_PRICE_BAND_PERCENT = _decimal("OMS_PRICE_BAND_PERCENT", "10")
OMS_MAX_PRICE_AGE_SECONDS = env.float("OMS_MAX_PRICE_AGE_SECONDS", default=10.0)
OMS_ORDERS_PER_SECOND = env.int("OMS_ORDERS_PER_SECOND", default=10)
OMS_MAX_ORDER_TO_TRADE_RATIO = _decimal("OMS_MAX_ORDER_TO_TRADE_RATIO", "50")
OMS_RUNAWAY_REFUSALS_PER_MINUTE = env.int("OMS_RUNAWAY_REFUSALS_PER_MINUTE", default=30)
OMS_RISK_MONITOR_SECONDS = env.float("OMS_RISK_MONITOR_SECONDS", default=2.0)
OMS_AUTO_SQUARE_OFF = env.bool("OMS_AUTO_SQUARE_OFF", default=False)

# --- reconciliation with Kite (oms/reconciliation/) -----------------------------------------
# A run every RECONCILE_SECONDS: django-q2's scheduler fires a schedule at most once a
# minute, so below a minute the once-a-minute task runs 60 / RECONCILE_SECONDS runs that far
# apart (10, 12, 15, 20 or 30), above it the schedule runs every RECONCILE_SECONDS / 60
# minutes. A position's average price differing from ours by at most
# RECONCILE_AVERAGE_TOLERANCE rupees is the same; runs without issues are kept
# RECONCILE_KEEP_DAYS days.
RECONCILE_SECONDS = env.int("RECONCILE_SECONDS", default=30)
if not (10 <= RECONCILE_SECONDS < 60 and 60 % RECONCILE_SECONDS == 0) and not (
    RECONCILE_SECONDS >= 60 and RECONCILE_SECONDS % 60 == 0
):
    raise ImproperlyConfigured(
        f"RECONCILE_SECONDS={RECONCILE_SECONDS} must be 10, 12, 15, 20 or 30, or whole minutes (60, 120, ...): "
        "django-q2 fires a schedule at most once a minute, and the task runs the rest of the minute's runs."
    )
RECONCILE_AVERAGE_TOLERANCE = _decimal("RECONCILE_AVERAGE_TOLERANCE", "0.01")
RECONCILE_KEEP_DAYS = env.int("RECONCILE_KEEP_DAYS", default=30)
if RECONCILE_KEEP_DAYS < 1:
    raise ImproperlyConfigured("RECONCILE_KEEP_DAYS must be at least 1 (days).")

# --- charges (brokerage, STT, exchange, SEBI, stamp duty, GST: net P&L) --------------------
# Zerodha's published schedule (oms/charges/schedule.py), with a desk's overrides
# merged key by key: a JSON file at CHARGES_SCHEDULE_FILE, then JSON text in CHARGES_SCHEDULE,
# e.g. '{"brokerage": {"equity_intraday": {"max": "15"}}}'. A bad table stops start-up with the key.
from oms.charges.schedule import schedule_load  # noqa: E402  (plain Python: no models, no settings)

CHARGES_SCHEDULE_FILE = env.str("CHARGES_SCHEDULE_FILE", default="")
CHARGES_SCHEDULE = schedule_load(file=CHARGES_SCHEDULE_FILE, text=env.str("CHARGES_SCHEDULE", default=""))


# --- end of day and MIS square-off (times HH:MM, Asia/Kolkata; trading days are weekdays) -------
# EOD_STATS_AT closes each strategy's day (oms/endofday.py): after the last session the desk
# trades (a currency desk 17:15); a day changed after its close is closed again on the next run.
# Open MIS positions are squared off by market orders at MIS_SQUARE_OFF_AT, or at their exchange's
# time in MIS_SQUARE_OFF_TIMES ("CDS=16:30,MCX=22:50", merged over the defaults), each before the
# broker's own auto square-off (MIS_BROKER_SQUARE_OFF_TIMES: Zerodha's published times; Rs 50 + GST
# an order). A refused square-off is retried for MIS_SQUARE_OFF_RETRY_SECONDS, and alerted.
def _clock(name: str, raw: str) -> str:
    text = raw.strip()
    try:
        valid = len(text) == 5 and time.fromisoformat(text).strftime("%H:%M") == text
    except ValueError:
        valid = False
    if not valid:
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a time of day; use HH:MM (Asia/Kolkata), e.g. 15:15."
        )
    return text


def _clock_table(name: str, defaults: dict[str, str]) -> dict[str, str]:
    table = dict(defaults)
    for part in filter(None, (p.strip() for p in env.str(name, default="").split(","))):
        exchange, _, at = part.partition("=")
        if not exchange.strip().isalnum():
            raise ImproperlyConfigured(f"{name}: {part!r} is not EXCHANGE=HH:MM, e.g. CDS=16:30.")
        table[exchange.strip().upper()] = _clock(f"{name} ({exchange.strip()})", at)
    return table


EOD_STATS_AT = _clock("EOD_STATS_AT", env.str("EOD_STATS_AT", default="15:45"))
MIS_SQUARE_OFF_AT = _clock("MIS_SQUARE_OFF_AT", env.str("MIS_SQUARE_OFF_AT", default="15:15"))
MIS_SQUARE_OFF_TIMES = _clock_table("MIS_SQUARE_OFF_TIMES", {"CDS": "16:30", "BCD": "16:30", "MCX": "22:50"})
# MCX: 25 minutes before its close, 23:30 in the US summer (23:55 in winter).
MIS_BROKER_SQUARE_OFF_TIMES = _clock_table("MIS_BROKER_SQUARE_OFF_TIMES", {
    "NSE": "15:20", "BSE": "15:20", "NFO": "15:25", "BFO": "15:25",
    "CDS": "16:45", "BCD": "16:45", "MCX": "23:05",
})  # fmt: skip
for _exchange, _broker_at in MIS_BROKER_SQUARE_OFF_TIMES.items():
    _ours = MIS_SQUARE_OFF_TIMES.get(_exchange, MIS_SQUARE_OFF_AT)
    if _ours >= _broker_at:  # HH:MM compares as the time it is
        raise ImproperlyConfigured(
            f"The MIS square-off of {_exchange} at {_ours} is not before the broker's own at {_broker_at}: "
            f"set MIS_SQUARE_OFF_TIMES={_exchange}=HH:MM (or MIS_SQUARE_OFF_AT) earlier."
        )
MIS_SQUARE_OFF_RETRY_SECONDS = env.float("MIS_SQUARE_OFF_RETRY_SECONDS", default=60.0)
if not 0 <= MIS_SQUARE_OFF_RETRY_SECONDS <= 240:
    raise ImproperlyConfigured(
        "MIS_SQUARE_OFF_RETRY_SECONDS must be 0 to 240 (the broker squares off minutes after)."
    )


# --- market calendar (markets/: hours here, holidays in the admin; times HH:MM-HH:MM IST) -----------
# MARKET_HOURS per exchange ("MCX=09:00-23:30,CDS=09:00-17:00", merged over the defaults). MCX's is
# its close while the US is on daylight saving time (mid-March to early November); the rest of the
# year MCX closes at MARKET_MCX_CLOSE_US_WINTER (MCX's circulars: 23:30 in the US summer, 23:55 in
# its winter; non-agri commodities). MCX's evening session (a holiday row "evening session only")
# starts at MARKET_MCX_EVENING_OPENS. Each process reloads the holidays every
# MARKET_CALENDAR_REFRESH_SECONDS, at once when another saved one (via the cache), and daily.
def _hours_table(name: str, defaults: dict[str, str]) -> dict[str, str]:
    table = dict(defaults)
    for part in filter(None, (p.strip() for p in env.str(name, default="").split(","))):
        exchange, _, hours = part.partition("=")
        opens, _, closes = hours.partition("-")
        if not exchange.strip().isalnum() or not closes:
            raise ImproperlyConfigured(f"{name}: {part!r} is not EXCHANGE=HH:MM-HH:MM, e.g. MCX=09:00-23:30.")
        label = f"{name} ({exchange.strip()})"
        opens, closes = _clock(label, opens), _clock(label, closes)
        if opens >= closes:
            raise ImproperlyConfigured(f"{name}: {part!r}: the open must be before the close (same day).")
        table[exchange.strip().upper()] = f"{opens}-{closes}"
    return table


_EQUITY_HOURS = "09:15-15:30"
MARKET_HOURS = _hours_table("MARKET_HOURS", {
    "NSE": _EQUITY_HOURS, "BSE": _EQUITY_HOURS, "NFO": _EQUITY_HOURS, "BFO": _EQUITY_HOURS,
    "CDS": "09:00-17:00", "BCD": "09:00-17:00", "MCX": "09:00-23:30",
})  # fmt: skip
MARKET_MCX_CLOSE_US_WINTER = _clock(
    "MARKET_MCX_CLOSE_US_WINTER", env.str("MARKET_MCX_CLOSE_US_WINTER", default="23:55")
)
MARKET_MCX_EVENING_OPENS = _clock(
    "MARKET_MCX_EVENING_OPENS", env.str("MARKET_MCX_EVENING_OPENS", default="17:00")
)
MARKET_CALENDAR_REFRESH_SECONDS = env.float("MARKET_CALENDAR_REFRESH_SECONDS", default=300.0)
if MARKET_CALENDAR_REFRESH_SECONDS <= 0:
    raise ImproperlyConfigured("MARKET_CALENDAR_REFRESH_SECONDS must be above 0.")

# --- instrument master ----------------------------------------------------------------
UPSTOX_INSTRUMENTS_URL = env.str(
    "UPSTOX_INSTRUMENTS_URL",
    default="https://assets.upstox.com/market-quote/instruments/exchange/complete.json.gz",
)
# A dump with fewer rows than this fraction of the last good one (same source and scope)
# is refused unless forced.
SYNC_SHRINK_RATIO = env.float("SYNC_SHRINK_RATIO", default=0.5)
# Syncs started from the web (API, admin) fetch only from the hosts of
# KITE_INSTRUMENTS_URL and UPSTOX_INSTRUMENTS_URL and these (comma-separated `host` for
# any port, or `host:port`); hosts listed here may be private or loopback addresses
# (a dump mirror on the desk's network). `manage.py sync_instruments --url` is not limited.
SYNC_ALLOWED_HOSTS = env.list("SYNC_ALLOWED_HOSTS", default=[])
# Daily schedule (Asia/Kolkata), HH:MM. Kite publishes the day's dump around 08:30.
SYNC_DAILY_AT = env.str("SYNC_DAILY_AT", default="08:45")
SYNC_DAILY_SOURCE = env.str("SYNC_DAILY_SOURCE", default="kite")
EXPIRED_DEACTIVATE_AT = env.str("EXPIRED_DEACTIVATE_AT", default="08:40")

# --- alerts ---------------------------------------------------------------------------
# Sent from the worker to Telegram and by email (a channel not configured is skipped);
# the same condition at most once per ALERT_REPEAT_MINUTES. TELEGRAM_BOT_TOKEN is a secret:
# masked in logs, never stored on an alert. PORTAL_BASE_URL (the address people open the
# portal at) makes the admin links in alerts absolute; unset, they are paths.
TELEGRAM_BOT_TOKEN = env.str("TELEGRAM_BOT_TOKEN", default="")
TELEGRAM_CHAT_ID = env.str("TELEGRAM_CHAT_ID", default="")
TELEGRAM_API_URL = env.str("TELEGRAM_API_URL", default="https://api.telegram.org").rstrip("/")
_telegram = urlsplit(TELEGRAM_API_URL)
if not _telegram.hostname or not (
    _telegram.scheme == "https"
    or (_telegram.scheme == "http" and _telegram.hostname in ("localhost", "127.0.0.1", "::1"))
):
    raise ImproperlyConfigured(
        f"TELEGRAM_API_URL={TELEGRAM_API_URL!r}: use https:// (plain http only to a loopback address): "
        "the bot token is part of every request's URL."
    )
ALERT_EMAILS = env.list("ALERT_EMAILS", default=[])
for _address in ALERT_EMAILS:
    try:
        validate_email(_address)
    except ValidationError:
        raise ImproperlyConfigured(f"ALERT_EMAILS: {_address!r} is not an email address.") from None
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="tradingportal@localhost")
# Django's email backend from one URL: smtp://host:25, smtp+tls://user:password@host:587,
# smtp+ssl://...:465, consolemail:// (print them), filemail:///path (one file each).
_email = env.email_url("EMAIL_URL", default="smtp://localhost:25")
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email.get("EMAIL_HOST") or "localhost"
EMAIL_PORT = _email.get("EMAIL_PORT") or 25
EMAIL_HOST_USER = _email.get("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = _email.get("EMAIL_HOST_PASSWORD") or ""  # a secret (registered by alerts.apps)
EMAIL_USE_TLS = bool(_email.get("EMAIL_USE_TLS"))
EMAIL_USE_SSL = bool(_email.get("EMAIL_USE_SSL"))
if _email.get("EMAIL_FILE_PATH"):
    EMAIL_FILE_PATH = _email["EMAIL_FILE_PATH"]
# Seconds each channel may take to answer (connect, then the answer); email uses it too.
ALERT_SEND_TIMEOUT = env.float("ALERT_SEND_TIMEOUT", default=5.0)
EMAIL_TIMEOUT = ALERT_SEND_TIMEOUT
ALERT_REPEAT_MINUTES = env.float("ALERT_REPEAT_MINUTES", default=30.0)
# Tries per alert in all: the first, then retries after 1, 2, 4, ... minutes (alerts_retry_task).
ALERT_SEND_ATTEMPTS = env.int("ALERT_SEND_ATTEMPTS", default=5)
ALERT_FEED_DOWN_SECONDS = env.float("ALERT_FEED_DOWN_SECONDS", default=60.0)
# The feed being down is alerted while an exchange it streams trades: the market calendar
# decides (MARKET_HOURS and the holidays in the admin), no longer ALERT_MARKET_HOURS.
if "ALERT_MARKET_HOURS" in os.environ:
    raise ImproperlyConfigured(
        "ALERT_MARKET_HOURS is no longer read: the market calendar decides when a feed outage is alerted "
        "(MARKET_HOURS per exchange, holidays in the admin); remove ALERT_MARKET_HOURS from the environment."
    )
PORTAL_BASE_URL = env.str("PORTAL_BASE_URL", default="").rstrip("/")
if (
    ALERT_SEND_TIMEOUT <= 0
    or ALERT_REPEAT_MINUTES <= 0
    or ALERT_SEND_ATTEMPTS < 1
    or ALERT_FEED_DOWN_SECONDS < 0
):
    raise ImproperlyConfigured(
        "ALERT_SEND_TIMEOUT and ALERT_REPEAT_MINUTES must be above 0, ALERT_SEND_ATTEMPTS at least 1, "
        "ALERT_FEED_DOWN_SECONDS 0 or more."
    )
_portal = urlsplit(PORTAL_BASE_URL)
if PORTAL_BASE_URL and (
    _portal.scheme not in ("http", "https") or not _portal.hostname or _portal.query or _portal.fragment
):
    raise ImproperlyConfigured(
        f"PORTAL_BASE_URL={PORTAL_BASE_URL!r}: use the address people open the portal at, "
        "e.g. https://desk.example.com"
    )

# --- logging ------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
# json: one object per line (files, services, log shippers); text: plain lines for a person;
# auto (the default): text when stderr is a terminal, else json.
LOG_FORMAT = env.str("LOG_FORMAT", default="auto")
if LOG_FORMAT not in ("auto", "json", "text"):
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r}: use json, text or auto.")
if LOG_FORMAT == "auto":
    LOG_FORMAT = "text" if sys.stderr.isatty() else "json"
# uvicorn's own loggers (its access log too) go through the same handler, redacted and in
# the same format, whether the runner starts uvicorn or a person does.
LOGGING_CONFIG = "tradingportal.logging.configure"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact": {"()": "tradingportal.logging.RedactSecretsFilter"},
        "quiet_heartbeat": {"()": "tradingportal.logging.QuietHeartbeat"},
    },
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
        "django-q": {
            "handlers": ["console"],
            "level": LOG_LEVEL,
            "propagate": False,
            "filters": ["quiet_heartbeat"],
        },
        "uvicorn": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "uvicorn.error": {"level": LOG_LEVEL},
        "uvicorn.access": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "websockets": {"level": "WARNING"},
    },
}
