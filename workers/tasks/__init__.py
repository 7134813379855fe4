"""Task modules, one per queue; a task's name starts with its module path, which routes it.

Tasks are doors: they take ids and call a service. They import the services; the services send tasks by name
(``workers.task_routes``) and never import this package.
"""

from . import default, gpu, media  # noqa: F401  (registers the tasks with the app)
