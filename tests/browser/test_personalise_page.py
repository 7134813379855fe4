"""Staff personalise a video in headless Chromium: weights on sliders, Generate, a real worker samples the prompt
unguided and Flow-NRG-guided, and the page plays both videos side by side."""

from pathlib import Path

import pytest

from annotate.models import Prompt
from tests.browser.conftest import admin_log_in
from workers.models import Job, ModelVersion

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def latent_reward_version(tmp_path) -> ModelVersion:
    """A latent reward on the base policy the worker will load (random: guidance still moves the sample)."""
    from alignment.flow.latent_reward import LatentRewardModel, save_latent_reward
    from alignment.flow.model import load_policy
    from workers.services.alignment import base_policy_folder

    model = LatentRewardModel.from_policy(load_policy(base_policy_folder()).transformer, 1)
    return ModelVersion.objects.create(
        kind="latent_reward", name="latent-reward-browser", path=str(save_latent_reward(model, tmp_path / "latent"))
    )


def test_staff_personalise_a_prompt_and_watch_both_videos(
    browser, live_server, celery_worker_process, make_user, tmp_path, settings
):
    make_user("curator", staff=True, password="correct horse battery")
    latent = latent_reward_version(tmp_path)
    prompt = Prompt.objects.create(text="a red square moving left quickly")

    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    admin_log_in(page, live_server.url, "curator", "correct horse battery", "/admin/annotate/agreementreport/")
    page.goto(f"{live_server.url}/admin/")
    page.click("a[href='/admin/workers/guidedpreview/']")  # the admin index links the page
    page.wait_for_selector("#preview-form")
    page.select_option("select[name=prompt_choice]", str(prompt.pk))
    assert page.input_value("select[name=latent_reward_version]") == str(latent.pk)  # the newest is preselected
    page.focus("input[name=ta]")
    for _ in range(5):
        page.keyboard.press("ArrowRight")  # 1.0 → 1.5 in steps of 0.1
    assert page.inner_text("#id_ta-value") == "1.5"
    page.fill("input[name=steps]", "4")
    page.fill("input[name=seed]", "7")
    page.click("input[type=submit][value=Generate]")

    page.wait_for_selector("#preview-live")  # htmx swapped the preview panel in, polling the job
    job = Job.objects.get(kind=Job.Kind.PREVIEW)
    assert job.params["weights"] == "vq=1,mq=1,ta=1.5" and job.params["seed"] == 7
    page.wait_for_selector("#preview-live.status-succeeded", timeout=180_000)
    assert page.get_attribute("#preview-live", "hx-trigger") is None  # polling stopped
    page.wait_for_function(
        """() => {
        const videos = [...document.querySelectorAll('.preview-player video')];
        return videos.length === 2 && videos.every((v) => v.readyState >= 2 && v.duration > 0 && v.currentTime > 0);
    }""",
        timeout=30_000,
    )  # both loaded and playing
    states = page.evaluate(
        "() => [...document.querySelectorAll('.preview-player video')].map((v) => "
        "[v.id, v.readyState, v.duration, v.paused])"
    )
    assert [state[0] for state in states] == ["preview-unguided", "preview-guided"]
    assert all(ready >= 2 and duration > 0 and not paused for _, ready, duration, paused in states)
    assert page.inner_text(".preview-weights").startswith("Weights VQ 1 · MQ 1 · TA 1.5,")
    assert int(page.get_attribute("#preview-live", "data-job")) == job.pk
    assert page.locator("#preview-history li").count() == 1
    page.wait_for_function(f"() => document.getElementById('preview-status-{job.pk}').textContent === 'succeeded'")
    assert errors == []
    page.screenshot(path=str(Path(settings.VAR_DIR) / "test" / "personalise-page.png"), full_page=True)
