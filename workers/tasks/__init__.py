"""Task modules, one per queue; a task's name starts with its module path, which routes it."""

from . import default, gpu, media  # noqa: F401  (registers the tasks with the app)
