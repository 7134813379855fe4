"""Middleware that keeps failures clear: a request too big for us, a database that went away."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 5


def _wants_json(request) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", "")


class RequestSizeLimitMiddleware:
    """Refuse a request whose declared body is larger than ``MAX_REQUEST_BYTES`` with 413, before anything
    (CSRF, the upload handlers) reads it: an oversized upload never reaches the disk. Django reads no more
    than Content-Length, so a body without one is read as empty."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.MAX_REQUEST_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit:
            detail = (
                f"the request is {length / 2**20:.1f} MB; this server accepts at most {limit / 2**20:.1f} MB "
                "(VIDPREF_MAX_REQUEST_MB); split the upload into smaller imports"
            )
            if _wants_json(request):
                return JsonResponse({"detail": detail}, status=413)
            return HttpResponse(f"Request too large: {detail}.", status=413, content_type="text/plain; charset=utf-8")
        return self.get_response(request)


class DatabaseUnavailableMiddleware:
    """A view that loses its database (the server restarted, the connection was killed, a failover) answers
    503 with Retry-After instead of a 500: the client knows to try again. Every write is one transaction,
    so nothing was half-written; Django drops the broken connection at the end of the request and the
    retry gets a fresh one."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        logger.warning(
            "database unavailable during %s %s: %s",
            request.method,
            request.path,
            str(exception).strip().splitlines()[0] if str(exception).strip() else type(exception).__name__,
        )
        detail = (
            "The database was unavailable and the request did not complete. Retry in a few seconds: "
            "repeating a submission is safe, it is stored once."
        )
        if _wants_json(request):
            response = JsonResponse({"detail": detail}, status=503)
        else:
            response = HttpResponse(
                f"<!doctype html><title>Try again</title><h1>Try again in a moment</h1><p>{detail}</p>", status=503
            )
        response["Retry-After"] = str(RETRY_AFTER_S)
        return response
