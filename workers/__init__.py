"""Celery app and the Django app that records jobs, dataset snapshots and model versions.

`celery -A workers worker` finds the app here. Tasks are thin: they take ids, load rows, call an
`annotate` service or an `alignment` entry point (imported inside the task body), and record the outcome.
"""

from .celery import app as celery_app

__all__ = ["celery_app"]
