"""VidPref's ML library: reward models, losses, metrics, flow trainers, guidance and the toy world.

Pure PyTorch: imports nothing of Django, Celery, ``annotate`` or ``workers`` (docs/architecture.md §1).
"""
