import contextlib
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
LAPTOP = {"width": 1366, "height": 768}
STAFF_PASSWORD = "correct horse battery"


def admin_log_in(page, base: str, username: str, password: str, next_path: str = "/admin/") -> None:
    page.goto(f"{base}/admin/login/?next={next_path}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    # wait for the landing page's own load event, so a test that counts loads from here counts only reloads
    with page.expect_navigation(wait_until="load"):
        page.click("input[type=submit]")


def watch_problems(page) -> list[str]:
    """Every console error, uncaught exception, failed request and HTTP error response of ``page``, as text."""
    problems = []
    page.on("console", lambda message: message.type == "error" and problems.append(f"console: {message.text}"))
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "requestfailed",
        lambda request: problems.append(f"request failed: {request.method} {request.url}: {request.failure}"),
    )
    page.on(
        "response",
        lambda response: (
            response.status >= 400
            and problems.append(f"HTTP {response.status}: {response.request.method} {response.url}")
        ),
    )
    return problems


@pytest.fixture(autouse=True)
def _orm_beside_playwright(monkeypatch):
    """Playwright's sync API keeps an event loop in the test thread; the ORM calls made around it are
    still synchronous and safe here (Playwright's documented set-up for Django tests). Scoped to these
    tests so no other process inherits the variable."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@contextlib.contextmanager
def chromium():
    """Headless Debian Chromium driven by Playwright (skips where it is not installed; .ci/run installs it)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium (`apt-get install chromium`; .ci/run does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-gpu",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture
def staff_page(browser, live_server, transactional_db, make_user):
    """A superuser's admin page at 1366×768, logged in; ``page.problems`` collects what went wrong in it."""
    staff = make_user("staff-member", staff=True, password=STAFF_PASSWORD)
    staff.is_superuser = True
    staff.save()
    page = browser.new_page(viewport=LAPTOP)
    problems = watch_problems(page)
    admin_log_in(page, live_server.url, "staff-member", STAFF_PASSWORD)
    page.wait_for_selector("#content")
    page.problems, page.staff = problems, staff
    return page
