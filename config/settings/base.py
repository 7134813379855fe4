"""Settings shared by every mode, read from the environment (12-factor, django-environ).

With no ``DATABASE_URL`` / ``CELERY_BROKER_URL`` the embedded PostgreSQL and Redis in ``var/`` are
started (or reused) here, so any process that loads the settings finds its services.
"""

import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote

import environ
from celery.schedules import crontab

from config import embedded, tools

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

VAR_DIR = Path(env("VIDPREF_VAR_DIR", default=str(BASE_DIR / "var")))

SECRET_KEY = env("SECRET_KEY", default="dev-only-insecure-key-set-SECRET_KEY-in-production")
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_celery_beat",
    "django_celery_results",
    "annotate",
    "workers",
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
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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
    }
]

# --- Database ---------------------------------------------------------------------------------------
if env("DATABASE_URL", default=""):
    DATABASES = {"default": env.db("DATABASE_URL")}
    # A unix-socket folder arrives percent-encoded (postgres://user@%2Frun%2Fpostgresql/db), as libpq writes it.
    DATABASES["default"]["HOST"] = unquote(DATABASES["default"]["HOST"])
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    EMBEDDED_POSTGRES = False
else:
    DATABASES = {"default": embedded.ensure_postgres(VAR_DIR).django_settings()}
    EMBEDDED_POSTGRES = True
# A web process takes its connections from a pool (psycopg_pool, Django's "pool" option) of at most
# VIDPREF_DB_POOL_MAX: a connection goes back at the end of each request, so however many threads serve (gunicorn's
# --threads, runserver's thread per request) the server sees at most that many per process, and a request that
# finds them all busy waits up to VIDPREF_DB_POOL_TIMEOUT_S for one. config/processes.web_command sizes it from
# gunicorn's threads; `manage.py runserver` pools by default; other processes (Celery's prefork children, commands,
# tests) keep one persistent connection each (CONN_MAX_AGE). Many web nodes: PgBouncer, docs/operations.md.
DB_POOL_MAX = env.int("VIDPREF_DB_POOL_MAX", default=8 if sys.argv[1:2] == ["runserver"] else 0)
# Server-side prepared statements after 5 runs of a statement on a connection (psycopg's default): the hot
# statements are parsed and planned once per connection, not per request: PostgreSQL's CPU per judgment × 0.58
# (docs/benchmarks.md §2). psycopg prepares only with server-side parameter binding, which Django leaves off by default
# (its client-side cursors merge the parameters into the text and never prepare), so it is on with them.
# VIDPREF_DB_PREPARE_THRESHOLD= (empty) turns both off (PgBouncer < 1.21 in transaction mode).
_prepare = env("VIDPREF_DB_PREPARE_THRESHOLD", default="5")
DATABASES["default"].setdefault("OPTIONS", {}).update(
    prepare_threshold=int(_prepare) if _prepare else None, server_side_binding=bool(_prepare)
)
if DB_POOL_MAX > 0:
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps the connections; Django refuses both
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": DB_POOL_MAX,
        "timeout": env.float("VIDPREF_DB_POOL_TIMEOUT_S", default=10.0),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth -------------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "annotate:home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

# --- Static and media -------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env("STATIC_ROOT", default=str(VAR_DIR / "static")))
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = env("MEDIA_URL", default="/media/")
MEDIA_ROOT = Path(env("MEDIA_ROOT", default=str(VAR_DIR / "media")))
# "local" keeps files in MEDIA_ROOT; "s3" uses django-storages with the AWS_* variables below.
MEDIA_STORAGE = env("MEDIA_STORAGE", default="local")
AWS_S3_ENDPOINT_URL = env("AWS_S3_ENDPOINT_URL", default=None)  # any S3-compatible store (MinIO, Ceph, R2, …)
AWS_S3_REGION_NAME = env("AWS_S3_REGION_NAME", default=None)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
if MEDIA_STORAGE == "s3":
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env("AWS_STORAGE_BUCKET_NAME"),
            "endpoint_url": AWS_S3_ENDPOINT_URL,
            "region_name": AWS_S3_REGION_NAME,
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }
elif MEDIA_STORAGE != "local":
    raise environ.ImproperlyConfigured(f"MEDIA_STORAGE={MEDIA_STORAGE!r}: use 'local' or 's3'.")
WHITENOISE_USE_FINDERS = DEBUG
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# --- ffmpeg -----------------------------------------------------------------------------------------
# The binaries in use: FFMPEG_BINARY / FFPROBE_BINARY from the environment, else the system's, else
# the ffmpeg that the imageio-ffmpeg wheel ships (probing then goes through PyAV: FFPROBE_BINARY None).
FFMPEG_BINARY, FFPROBE_BINARY = tools.find_ffmpeg(env("FFMPEG_BINARY", default=""), env("FFPROBE_BINARY", default=""))

# --- Celery -----------------------------------------------------------------------------------------
if env("CELERY_BROKER_URL", default=""):
    CELERY_BROKER_URL = env("CELERY_BROKER_URL")
    EMBEDDED_REDIS = False
else:
    CELERY_BROKER_URL = embedded.ensure_redis(VAR_DIR)
    EMBEDDED_REDIS = True
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_CACHE_BACKEND = "django-cache"
CELERY_TASK_DEFAULT_QUEUE = "default"
# Tasks are routed by the module their name starts with: workers.tasks.<queue>.<name>.
CELERY_TASK_ROUTES = {
    "workers.tasks.media.*": {"queue": "media"},
    "workers.tasks.gpu.*": {"queue": "gpu"},
    "workers.tasks.default.*": {"queue": "default"},
}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TRACK_STARTED = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # a worker holds only the task it runs; the next waits in the broker
# A task is acknowledged when it ends, and given back to the broker when its worker process dies, so a killed
# job is delivered again (and resumes from its checkpoint). Tasks are idempotent: a finished job is skipped.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Longer than the longest GPU job, so an unacknowledged task is not redelivered while it still runs.
# A message whose worker died unacknowledged (SIGKILL, a lost machine) is given back to the queue after it.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=12 * 3600),
    "unacked_restore_interval": env.int("CELERY_UNACKED_RESTORE_INTERVAL", default=10),
    "unacked_restore_throttle": env.int("CELERY_UNACKED_RESTORE_THROTTLE", default=10),
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = {  # synced into django-celery-beat's tables when beat starts; editable in the admin
    "nightly snapshot export": {
        "task": "workers.tasks.default.export_snapshot_nightly",
        "schedule": crontab(hour=env.int("VIDPREF_SNAPSHOT_HOUR", default=3), minute=0),
    },
    "training pipeline": {  # export → reward → alignment → new pairs; skipped when too few new judgments
        "task": "workers.tasks.default.pipeline_scheduled",
        "schedule": crontab(hour=env.int("VIDPREF_PIPELINE_HOUR", default=2), minute=0),
    },
    "resend unsent jobs": {  # jobs created while the broker was down wait, queued, until it is back
        "task": "workers.tasks.default.jobs_resend",
        "schedule": timedelta(minutes=1),
    },
    "lease sweep": {  # frees the slots of expired leases (next-pair requests sweep only when they find nothing)
        "task": "workers.tasks.default.sweep_leases",
        "schedule": timedelta(minutes=1),
    },
    "stale job watchdog": {  # fails running jobs whose worker stopped reporting (its machine died)
        "task": "workers.tasks.default.jobs_watchdog",
        "schedule": timedelta(minutes=5),
    },
    "agreement statistics": {  # the dashboard renders the stored result; this keeps it fresh
        "task": "workers.tasks.default.recompute_agreement",
        "schedule": timedelta(minutes=env.int("VIDPREF_STATS_EVERY_MIN", default=15)),
    },
}
CELERY_TIMEZONE = TIME_ZONE
HEALTHZ_BROKER_TIMEOUT_S = 2.0

# --- API --------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "annotate.api.authentication.AnnotatorTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["annotate.api.permissions.IsAnnotatorAccount"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "VidPref API",
    "DESCRIPTION": "Pairwise video preference annotation: assignments, judgments, statistics and jobs.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "ENUM_NAME_OVERRIDES": {"ScreenSideEnum": ["left", "right", "tie"]},
}

# --- VidPref ----------------------------------------------------------------------------------------
VIDPREF = {
    "DEFAULT_OVERLAP": env.int("VIDPREF_DEFAULT_OVERLAP", default=3),
    "LEASE_TTL": timedelta(seconds=env.int("VIDPREF_LEASE_TTL_S", default=600)),
    "GOLD_RATE": env.float("VIDPREF_GOLD_RATE", default=0.05),
    "REQUIRE_FULL_VIEW": env.bool("VIDPREF_REQUIRE_FULL_VIEW", default=True),
    "MAX_VIDEO_SECONDS": env.float("VIDPREF_MAX_VIDEO_SECONDS", default=120.0),
    "MAX_LONG_SIDE": env.int("VIDPREF_MAX_LONG_SIDE", default=1280),
    # how long after submitting a judgment its annotator may take it back (the judging page's Undo)
    "UNDO_WINDOW": timedelta(seconds=env.int("VIDPREF_UNDO_WINDOW_S", default=300)),
}
SNAPSHOT_ROOT = Path(env("SNAPSHOT_ROOT", default=str(VAR_DIR / "snapshots")))
# Empty: snapshots stay in SNAPSHOT_ROOT. "s3://bucket/prefix": written there first, then uploaded (manifest
# last, so a reader that finds manifest.json finds a complete snapshot) to AWS_S3_ENDPOINT_URL's store.
SNAPSHOT_STORAGE_URL = env("SNAPSHOT_STORAGE_URL", default="")
# A RewardTrainConfig file (JSON/YAML) the admin's "train a reward model" starts from; empty: the small CPU backbone.
VIDPREF_REWARD_CONFIG = env("VIDPREF_REWARD_CONFIG", default="")
# Decoded training frames kept across reward-training runs (the next snapshot reuses most videos); "" turns it off.
VIDPREF_FRAME_CACHE = env("VIDPREF_FRAME_CACHE", default=str(VAR_DIR / "frame-cache"))
# Its size limit in GB: reward training deletes the least recently used videos' frames beyond it (0: no limit).
VIDPREF_FRAME_CACHE_MAX_GB = env.float("VIDPREF_FRAME_CACHE_MAX_GB", default=50.0)
JOB_ROOT = Path(env("JOB_ROOT", default=str(VAR_DIR / "jobs")))
# A running job whose worker has not reported progress for this long is failed by the watchdog (Retry resumes it).
VIDPREF_JOB_STALE_MINUTES = env.int("VIDPREF_JOB_STALE_MINUTES", default=30)
# The pipeline: how many judgments must arrive after the last snapshot before a scheduled run goes ahead,
# the alignment method (dpo | rwr), and how many new pairs it generates for labelling.
VIDPREF_PIPELINE_MIN_NEW_JUDGMENTS = env.int("VIDPREF_PIPELINE_MIN_NEW_JUDGMENTS", default=500)
VIDPREF_ALIGNMENT_METHOD = env("VIDPREF_ALIGNMENT_METHOD", default="dpo")
VIDPREF_PIPELINE_GENERATE_PAIRS = env.int("VIDPREF_PIPELINE_GENERATE_PAIRS", default=64)
# The video model every alignment starts from (a local diffusers-format Wan folder); empty: a tiny CPU policy.
VIDPREF_BASE_POLICY = env("VIDPREF_BASE_POLICY", default="")
# Pairs that the tiny policy generates (no VIDPREF_BASE_POLICY: untrained, its videos are noise) are kept out of the
# labelling queue (retired, in their batch) unless this is true: whatever annotators are served must be judgeable.
VIDPREF_QUEUE_UNTRAINED_POLICY_PAIRS = env.bool("VIDPREF_QUEUE_UNTRAINED_POLICY_PAIRS", default=False)
# An SFT/Flow-DPO/Flow-RWR config file (JSON/YAML) the alignment jobs start from; empty: a short LoRA run.
VIDPREF_ALIGNMENT_CONFIG = env("VIDPREF_ALIGNMENT_CONFIG", default="")
# Prompts new pairs are generated for (CSV with a "prompt" column, or one a line); empty: the database's.
VIDPREF_PROMPT_SET = env("VIDPREF_PROMPT_SET", default="")
# Training processes per job: "auto" = one per GPU of the worker's machine (accelerate launch when > 1), or a number.
VIDPREF_TRAIN_PROCESSES = env("VIDPREF_TRAIN_PROCESSES", default="auto")
# Webhook deliveries: attempts in all, and the first retry's delay (doubling each time).
VIDPREF_WEBHOOK_ATTEMPTS = env.int("VIDPREF_WEBHOOK_ATTEMPTS", default=6)
VIDPREF_WEBHOOK_BACKOFF_S = env.float("VIDPREF_WEBHOOK_BACKOFF_S", default=10.0)
VIDPREF_WEBHOOK_TIMEOUT_S = env.float("VIDPREF_WEBHOOK_TIMEOUT_S", default=10.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "pgserver": {"level": "WARNING"},
        # Quiet by default: one line per meaningful event. Jobs log their start and outcome themselves
        # (workers.services.jobs); Celery's per-task "received" / "succeeded" lines, beat's "sending due task"
        # every minute and the start-up chatter of each process say nothing a person needs. A task's failure
        # is still logged (ERROR). LOG_LEVEL=INFO (or DEBUG) brings everything back.
        **{
            name: {"level": env("LOG_LEVEL", default="WARNING")}
            for name in (
                "celery.worker.strategy",
                "celery.app.trace",
                "celery.beat",
                "celery.worker.consumer.mingle",
                "celery.worker.consumer.gossip",
                "axes",
            )
        },
    },
}

# --- Security ---------------------------------------------------------------------------------------
# Login throttling (django-axes): AXES_FAILURE_LIMIT wrong passwords for one user name from one address
# lock that pair out for AXES_COOLOFF_MIN minutes (429); a correct login resets the count. Behind a proxy
# every client shares its address, so the lock degrades to per-user: never to a bypass.
INSTALLED_APPS.append("axes")
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MIN", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# The largest request body accepted (a staff import with its videos); larger ones get 413 before they are read.
MAX_REQUEST_BYTES = env.int("VIDPREF_MAX_REQUEST_MB", default=2048) * 2**20
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
    "config.middleware.RequestSizeLimitMiddleware",
)
MIDDLEWARE += [
    "config.middleware.DatabaseUnavailableMiddleware",  # a lost database connection → 503 + Retry-After
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks
]
# Secure cookies, HSTS and the HTTPS redirect are switched on in production.py.
