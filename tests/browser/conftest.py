import pytest


@pytest.fixture(autouse=True)
def _orm_beside_playwright(monkeypatch):
    """Playwright's sync API keeps an event loop in the test thread; the ORM calls made around it are
    still synchronous and safe here (Playwright's documented set-up for Django tests). Scoped to these
    tests so no other process inherits the variable."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
