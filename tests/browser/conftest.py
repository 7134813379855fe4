import os

# Playwright's sync API keeps an event loop in the test thread; the ORM calls made around it are still
# synchronous and safe here (Playwright's documented set-up for Django tests).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
