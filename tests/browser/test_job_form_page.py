"""A training job's form in headless Chromium at 1366×768: the essentials on the first screen, the other options
folded by topic and opened with a click, selects where the values are a fixed set, nothing wider than the window."""

import pytest

from tests.browser.test_jobs_page import SCREENSHOTS, VIEWPORT
from workers.models import DatasetSnapshot, Job

pytestmark = [pytest.mark.browser]


def test_the_reward_form_fits_a_laptop_screen_and_unfolds_by_topic(staff_page, live_server):
    page = staff_page
    snapshot = DatasetSnapshot.objects.create(name="snap-form", uri="/nowhere", counts={"pairs": 40, "train": 32})
    page.goto(f"{live_server.url}/admin/workers/job/new/reward/")
    page.wait_for_selector("#job-config-form")
    page.screenshot(path=str(SCREENSHOTS / "job-form-reward.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]
    # The essentials are visible without scrolling; the ~40 other options are folded.
    for name in ("snapshot", "init_version", "epochs", "batch_size", "learning_rate", "model.backbone", "keep_best"):
        box = page.locator(f"[name='{name}']").bounding_box()
        assert box is not None and box["y"] + box["height"] <= VIEWPORT["height"], (name, box)
    assert (
        page.locator("select[name='best_by']").count() == 1
        and page.locator("select[name='model.backbone']").count() == 1
    )
    assert not page.locator("[name='model.hidden_size']").is_visible()
    assert page.locator("details.config-group").count() >= 6
    page.click("details[data-group='Model: small backbone'] > summary")
    assert page.locator("[name='model.hidden_size']").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]
    page.fill("input[name='model.tubelet']", "2, x, 8")  # a folded field, filled in wrongly, and sent (no task is
    page.fill("input[name='model.hidden_size']", "")  # queued: the form refuses it)
    page.select_option("select[name=snapshot]", str(snapshot.pk))
    page.locator("details[data-group='Model: small backbone'] > summary").click()  # folded again
    page.click("input[type=submit][value='Queue the job']")
    page.wait_for_selector(".errorlist")
    # The refused form comes back with the group that holds the error open, and only that group.
    assert page.locator("details.config-group[open]").evaluate_all("nodes => nodes.map(n => n.dataset.group)") == [
        "Model: small backbone"
    ]
    assert page.locator("[name='model.tubelet']").is_visible() and not Job.objects.exists()
    assert page.locator(".field-model\\.tubelet .errorlist").inner_text().startswith("comma-separated int")
    assert page.input_value("select[name=snapshot]") == str(snapshot.pk)
    assert [problem for problem in page.problems if "HTTP" not in problem] == [], page.problems
