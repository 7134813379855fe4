"""Tasks on the `default` queue: light bookkeeping."""

import os

from celery import shared_task


@shared_task(name="workers.tasks.default.ping")
def ping(payload: str = "pong") -> dict:
    """Round trip through the broker, a worker and the result store; used by health checks and tests."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        database = cursor.fetchone()[0]
    return {"payload": payload, "database": database, "pid": os.getpid()}
