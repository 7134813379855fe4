"""The test suite: real PostgreSQL (embedded unless DATABASE_URL is set), fast hashing, media in var/test."""

import os

from .base import *  # noqa: F401,F403
from .base import CELERY_BROKER_URL, DATABASES, EMBEDDED_REDIS, VAR_DIR

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MEDIA_ROOT = VAR_DIR / "test" / "media"
SNAPSHOT_ROOT = VAR_DIR / "test" / "snapshots"
JOB_ROOT = VAR_DIR / "test" / "jobs"
VIDPREF_FRAME_CACHE = str(VAR_DIR / "test" / "frame-cache")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
# Two test sessions on one PostgreSQL server (a developer's and a helper's) each need their own database.
DATABASES["default"]["TEST"] = {"NAME": os.environ.get("VIDPREF_TEST_DB") or f"test_{DATABASES['default']['NAME']}"}
# ...and their own Redis database on the embedded broker (a demo on the same var/ uses database 0), so a
# worker of one session never takes another session's tasks and runs them against the wrong database.
if EMBEDDED_REDIS:
    import zlib

    CELERY_BROKER_URL = (
        f"{CELERY_BROKER_URL}?virtual_host={1 + zlib.crc32(DATABASES['default']['TEST']['NAME'].encode()) % 15}"
    )
