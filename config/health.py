"""GET /healthz: does the database answer, does the broker answer."""

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "down"; the message says which
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def _check_broker() -> str | None:
    from workers.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=settings.HEALTHZ_BROKER_TIMEOUT_S)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    return None


@never_cache
@require_GET
def healthz(request):
    checks = {"database": _check_database(), "broker": _check_broker()}
    failing = [name for name, error in checks.items() if error]
    body = {
        "status": "ok" if not failing else "unavailable",
        "checks": {name: ("ok" if error is None else error) for name, error in checks.items()},
    }
    if failing:
        body["failing"] = failing
    return JsonResponse(body, status=503 if failing else 200)
