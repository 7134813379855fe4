"""Pair generation from each source (policy vs base, two seeds, guided vs unguided) and guided previews, run in
this process on tiny models; the "Generate N pairs" action, the personalisation page and the job file view."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from annotate.models import Batch, Pair, Prompt
from workers.models import Job, ModelVersion
from workers.services.generation import (
    GenerationInputError,
    generation_job_create,
    generation_work,
    queue_priorities,
    uncertainty_priority,
)
from workers.services.jobs import job_execute, job_folder

PROMPTS = ["a red square moving left quickly", "a blue circle moving up slowly"]
FAST = {"pairs": 2, "steps": 3}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny base policy, a different "aligned" one, a latent reward on the base's first block and a small
    VideoReward, all random: enough to run every code path in seconds."""
    import torch

    from alignment.flow.latent_reward import LatentRewardModel, save_latent_reward
    from alignment.flow.model import load_policy
    from alignment.flow.tiny import build_tiny_wan_policy
    from alignment.reward.config import RewardModelConfig
    from alignment.reward.model import RewardModel, save_reward_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("generation")
    base = build_tiny_wan_policy(root / "base", pixel_patch=4, num_layers=2)
    aligned = build_tiny_wan_policy(root / "aligned", pixel_patch=4, num_layers=2, seed=1)
    torch.manual_seed(0)
    latent = save_latent_reward(LatentRewardModel.from_policy(load_policy(base).transformer, 1), root / "latent")
    reward = save_reward_model(
        RewardModel(
            RewardModelConfig(
                backbone="small", hidden_size=32, num_layers=1, num_heads=2, num_frames=4, tubelet=(2, 8, 8)
            )
        ),
        root / "reward",
    )
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    return SimpleNamespace(base=base, aligned=aligned, latent=latent, reward=reward, prompts=prompts)


@pytest.fixture
def site(db, models, settings, tmp_path):
    settings.VIDPREF_BASE_POLICY = str(models.base)
    settings.JOB_ROOT = tmp_path / "jobs"
    return SimpleNamespace(
        policy=ModelVersion.objects.create(kind="policy", name="flow-dpo-7", path=str(models.aligned)),
        latent=ModelVersion.objects.create(kind="latent_reward", name="latent-reward-5", path=str(models.latent)),
        reward=ModelVersion.objects.create(kind="reward", name="reward-3", path=str(models.reward)),
        prompt_file=str(models.prompts),
    )


def run_generation(django_capture_on_commit_callbacks, **kwargs) -> tuple[Job, list[Pair]]:
    with django_capture_on_commit_callbacks():  # the task is not sent: the service runs here
        job = generation_job_create(**kwargs)
    job_execute(job_id=job.pk, work=generation_work)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log
    pairs = list(
        Pair.objects.filter(batch=Batch.objects.get(source=f"generated:job-{job.pk}")).select_related(
            "video_a", "video_b", "prompt"
        )
    )
    return job, pairs


def by_generator(pair: Pair) -> dict:
    return {video.generator: video for video in (pair.video_a, pair.video_b)}


def test_policy_vs_base_with_a_latent_reward_guides_side_a_and_queues_the_least_certain_first(
    site, django_capture_on_commit_callbacks
):
    job, pairs = run_generation(
        django_capture_on_commit_callbacks,
        policy_version=site.policy,
        reward_version=site.reward,
        latent_reward_version=site.latent,
        overrides={**FAST, "weights": "vq=1,mq=0,ta=2", "prompt_file": site.prompt_file, "queue_order": "uncertainty"},
    )
    guided_name = "flow-dpo-7+nrg(vq=1,mq=0,ta=2,w=100)"
    assert job.result["generator_a"] == guided_name and job.result["generator_b"] == "base"
    assert len(pairs) == 2 and {pair.prompt.text for pair in pairs} <= set(PROMPTS)
    for pair in pairs:
        videos = by_generator(pair)
        guided, base = videos[guided_name].generation_params, videos["base"].generation_params
        assert guided["nrg"] == {
            "weights": {"VQ": 1.0, "MQ": 0.0, "TA": 2.0},
            "strength": 100.0,
            "sigma_min": 0.0,
            "max_ratio": 10.0,
            "latent_reward": "latent-reward-5",
        }
        assert base["nrg"] is None and base["seed"] == guided["seed"] + 1  # each side its own seed
        assert (guided["policy"], base["policy"], guided["source"], guided["steps"]) == (
            "flow-dpo-7",
            "base",
            "policy_vs_base",
            3,
        )
        assert 0 < pair.priority <= 1
        assert pair.priority == pytest.approx(1 / (1 + abs(guided["reward"] - base["reward"])))
    assert len({pair.priority for pair in pairs}) == 2  # the reward model's margins set the order


def test_two_seeds_of_the_base_policy(site, django_capture_on_commit_callbacks):
    job, pairs = run_generation(
        django_capture_on_commit_callbacks, overrides={**FAST, "source": "two_seeds", "prompt_file": site.prompt_file}
    )
    assert job.result["policy"] == "base" and len(pairs) == 2
    for pair in pairs:
        a, b = pair.video_a.generation_params, pair.video_b.generation_params
        assert pair.video_a.generator == pair.video_b.generator == "base"
        assert abs(a["seed"] - b["seed"]) == 1 and a["nrg"] is None and b["nrg"] is None
        assert 0 < pair.priority <= 1  # the default order: random
    assert len({pair.priority for pair in pairs}) == 2


def test_guided_vs_unguided_keeps_the_seed_and_changes_the_video(site, django_capture_on_commit_callbacks):
    job, pairs = run_generation(
        django_capture_on_commit_callbacks,
        latent_reward_version=site.latent,
        reward_version=site.reward,
        overrides={
            **FAST,
            "source": "guided_vs_unguided",
            "guidance_strength": 50.0,
            "guidance_sigma_min": 0.2,
            "guidance_max_ratio": 1.0,
            "prompt_file": site.prompt_file,
        },
    )
    assert len(pairs) == 2, job.log
    for pair in pairs:
        videos = by_generator(pair)
        guided, unguided = videos["base+nrg(vq=1,mq=1,ta=1,w=50,cap=1,sigma_min=0.2)"], videos["base"]
        assert guided.generation_params["seed"] == unguided.generation_params["seed"]
        assert guided.generation_params["nrg"]["strength"] == 50.0 and unguided.generation_params["nrg"] is None
        nrg = guided.generation_params["nrg"]
        assert nrg["sigma_min"] == 0.2 and nrg["max_ratio"] == 1.0
        assert guided.sha256 != unguided.sha256  # the reward gradient moved the sample
        assert 0 < pair.priority <= 1


def test_generation_refuses_bad_inputs_naming_the_field(site):
    cases = [
        ({"overrides": {"source": "guided_vs_unguided"}}, "latent_reward_version"),
        ({"overrides": {}}, "policy_version"),  # policy_vs_base without a policy
        ({"policy_version": site.policy, "overrides": {"weights": "vq=high"}}, "weights"),
        ({"latent_reward_version": site.latent, "overrides": {"source": "two_seeds", "weights": "vq=0"}}, "weights"),
        (
            {"latent_reward_version": site.latent, "overrides": {"source": "two_seeds", "guidance_strength": 0}},
            "guidance_strength",
        ),
        (
            {"latent_reward_version": site.reward, "overrides": {"source": "guided_vs_unguided"}},
            "latent_reward_version",
        ),
        ({"policy_version": site.latent, "overrides": {}}, "policy_version"),
        ({"overrides": {"source": "three_seeds"}}, "source"),
        ({"overrides": {"source": "two_seeds", "pairs": 0}}, "pairs"),
        (
            {"latent_reward_version": site.latent, "overrides": {"source": "two_seeds", "guidance_sigma_min": 1.0}},
            "guidance_sigma_min",
        ),
        (
            {"latent_reward_version": site.latent, "overrides": {"source": "two_seeds", "guidance_max_ratio": 0}},
            "guidance_max_ratio",
        ),
    ]
    for kwargs, field in cases:
        with pytest.raises(GenerationInputError) as caught:
            generation_job_create(**kwargs)
        assert caught.value.field == field and str(caught.value).startswith(f"{field}: "), (kwargs, str(caught.value))
    assert not Job.objects.exists()


def test_a_latent_reward_for_another_policy_is_refused_when_the_job_runs(
    site, tmp_path, models, django_capture_on_commit_callbacks
):
    from alignment.flow.latent_reward import LatentRewardModel, save_latent_reward
    from alignment.flow.model import load_policy
    from alignment.flow.tiny import build_tiny_wan_policy

    other = build_tiny_wan_policy(tmp_path / "other", pixel_patch=2, num_layers=1)  # 12 latent channels, not 48
    folder = save_latent_reward(LatentRewardModel.from_policy(load_policy(other).transformer, 1), tmp_path / "lr")
    mismatched = ModelVersion.objects.create(kind="latent_reward", name="latent-other", path=str(folder))
    with django_capture_on_commit_callbacks():
        job = generation_job_create(
            latent_reward_version=mismatched,
            overrides={**FAST, "source": "guided_vs_unguided", "prompt_file": site.prompt_file},
        )
    with pytest.raises(GenerationInputError, match="latent-other reads latents with in_channels=12"):
        job_execute(job_id=job.pk, work=generation_work)
    assert Job.objects.get(pk=job.pk).status == Job.Status.FAILED


# --------------------------------------------------------------------------------------------------
# The admin: the generation form, the "Generate N pairs" action
# --------------------------------------------------------------------------------------------------


def generation_post(**values) -> dict:
    return {
        "pairs": 4,
        "source": "policy_vs_base",
        "steps": 20,
        "guidance_scale": 5.0,
        "weights": "vq=1,mq=1,ta=1",
        "guidance_strength": 100.0,
        "guidance_sigma_min": 0.0,
        "guidance_max_ratio": 10.0,
        "queue_order": "random",
        **values,
    }


def test_generation_form_puts_the_services_error_on_the_field(site, staff_client, django_capture_on_commit_callbacks):
    refused = staff_client.post("/admin/workers/job/new/generate/", generation_post(source="guided_vs_unguided"))
    assert refused.status_code == 200 and not Job.objects.exists()
    assert "needs a latent reward model" in refused.context["form"].errors["latent_reward_version"][0]
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff_client.post(
            "/admin/workers/job/new/generate/",
            generation_post(
                source="guided_vs_unguided", latent_reward_version=site.latent.pk, weights="vq=0,mq=1,ta=3"
            ),
        )
    assert response.status_code == 302, response.context["form"].errors
    job = Job.objects.get(kind=Job.Kind.GENERATE)
    assert job.params == {
        "pairs": 4,
        "source": "guided_vs_unguided",
        "weights": "vq=0,mq=1,ta=3",
        "policy_model_version_id": None,
        "reward_model_version_id": None,
        "latent_reward_model_version_id": site.latent.pk,
    }
    assert len(callbacks) == 1


def test_generate_n_pairs_action_opens_a_filled_in_form_and_queues_the_job(
    site, staff_client, django_capture_on_commit_callbacks
):
    changelist = "/admin/workers/modelversion/"
    response = staff_client.post(
        changelist, {"action": "generate_pairs", "_selected_action": [site.policy.pk, site.latent.pk]}
    )
    assert response.status_code == 302
    assert response["Location"] == (
        f"/admin/workers/modelversion/generate/?policy_version={site.policy.pk}&latent_reward_version={site.latent.pk}"
    )
    page = staff_client.get(response["Location"])
    form = page.context["form"]
    assert page.status_code == 200 and b'name="guidance_strength"' in page.content
    assert (form["policy_version"].value(), form["latent_reward_version"].value(), form["reward_version"].value()) == (
        str(site.policy.pk),
        str(site.latent.pk),
        site.reward.pk,
    )  # the newest reward model orders the pairs
    assert [value for value, _ in form.fields["source"].choices] == [
        "policy_vs_base",
        "two_seeds",
        "guided_vs_unguided",
    ]
    with django_capture_on_commit_callbacks():
        queued = staff_client.post(
            response["Location"],
            generation_post(
                pairs=8,
                policy_version=site.policy.pk,
                latent_reward_version=site.latent.pk,
                reward_version=site.reward.pk,
                weights="vq=2,mq=1,ta=1",
                guidance_strength=60,
                prompt_file=site.prompt_file,
            ),
        )
    job = Job.objects.get(kind=Job.Kind.GENERATE)
    assert queued.status_code == 302 and queued["Location"] == f"/admin/workers/job/{job.pk}/change/"
    assert job.params == {
        "pairs": 8,
        "weights": "vq=2,mq=1,ta=1",
        "guidance_strength": 60.0,
        "prompt_file": site.prompt_file,
        "policy_model_version_id": site.policy.pk,
        "reward_model_version_id": site.reward.pk,
        "latent_reward_model_version_id": site.latent.pk,
    }

    alone = staff_client.post(changelist, {"action": "generate_pairs", "_selected_action": [site.latent.pk]})
    assert staff_client.get(alone["Location"]).context["form"]["source"].value() == "guided_vs_unguided"
    other = ModelVersion.objects.create(kind="policy", name="flow-rwr-8", path="/p")
    for selection, message in (
        ([site.policy.pk, other.pk], "Select at most one"),
        ([site.reward.pk], "Select a policy"),
    ):
        refused = staff_client.post(
            changelist, {"action": "generate_pairs", "_selected_action": selection}, follow=True
        )
        assert message in refused.content.decode()
    assert Job.objects.count() == 1


def test_the_admin_pages_are_for_staff_only(site, client, make_user):
    job = Job.objects.create(kind=Job.Kind.PREVIEW, params={"prompt": "x"})
    urls = [
        "/admin/workers/guidedpreview/",
        f"/admin/workers/guidedpreview/{job.pk}/live/",
        "/admin/workers/modelversion/generate/",
        f"/admin/workers/job/{job.pk}/files/guided.mp4",
    ]
    for who in (None, make_user()):
        if who is not None:
            client.force_login(who)
        for url in urls:
            response = client.get(url)
            assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url
    assert client.post("/admin/workers/guidedpreview/", {"prompt_text": "a cat", "seed": 1}).status_code == 302
    assert not Job.objects.exclude(pk=job.pk).exists()
    client.force_login(make_user(staff=True))  # any staff member, no model permissions needed
    assert client.get("/admin/workers/guidedpreview/").status_code == 200
    assert "/admin/workers/guidedpreview/" in client.get("/admin/").content.decode()  # listed in the admin index


# --------------------------------------------------------------------------------------------------
# The personalisation page and guided previews
# --------------------------------------------------------------------------------------------------


def preview_post(site, **values) -> dict:
    return {
        "prompt_choice": "",
        "prompt_text": "",
        "vq": 1.0,
        "mq": 1.0,
        "ta": 1.0,
        "guidance_strength": 100,
        "guidance_sigma_min": 0,
        "guidance_max_ratio": 10,
        "seed": 3,
        "policy_version": "",
        "latent_reward_version": site.latent.pk,
        "steps": 3,
        "guidance_scale": 5.0,
        **values,
    }


def test_personalisation_page_queues_a_preview_and_lists_the_sessions_previews(
    site, staff_client, django_capture_on_commit_callbacks
):
    prompt = Prompt.objects.create(text="a green triangle moving right")
    page = staff_client.get("/admin/workers/guidedpreview/")
    html = page.content.decode()
    assert page.status_code == 200 and html.count('type="range"') == 3 and 'id="id_vq-value"' in html
    assert "a green triangle moving right" in html and f'value="{site.latent.pk}" selected' in html
    assert staff_client.get("/admin/").content.decode().count("/admin/workers/guidedpreview/") >= 1  # in the index
    assert "/admin/workers/guidedpreview/" in staff_client.get("/admin/workers/modelversion/").content.decode()

    refused = staff_client.post("/admin/workers/guidedpreview/", preview_post(site), HTTP_HX_REQUEST="true")
    assert "choose a prompt or type one" in refused.content.decode() and not Job.objects.exists()
    refused = staff_client.post(
        "/admin/workers/guidedpreview/", preview_post(site, prompt_text="x", vq=0, mq=0, ta=0), HTTP_HX_REQUEST="true"
    )
    assert refused.context["form"].errors["__all__"][0].startswith("weights:")  # all zero: no field of that name

    with django_capture_on_commit_callbacks() as callbacks:
        fragment = staff_client.post(
            "/admin/workers/guidedpreview/",
            preview_post(site, prompt_choice=prompt.pk, vq=2.5, ta=0.5, seed=11),
            HTTP_HX_REQUEST="true",
        )
    job = Job.objects.get(kind=Job.Kind.PREVIEW)
    assert len(callbacks) == 1 and job.created_by is not None
    assert job.params == {
        "prompt": "a green triangle moving right",
        "seed": 11,
        "weights": "vq=2.5,mq=1,ta=0.5",
        "guidance_strength": 100.0,
        "guidance_sigma_min": 0.0,
        "guidance_max_ratio": 10.0,
        "steps": 3,
        "guidance_scale": 5.0,
        "policy_model_version_id": None,
        "latent_reward_model_version_id": site.latent.pk,
    }
    html = fragment.content.decode()
    assert "<html" not in html and f'hx-get="/admin/workers/guidedpreview/{job.pk}/live/"' in html
    assert 'hx-trigger="every 2s"' in html and f"?job={job.pk}" in html  # polling, and in the session's list
    live = staff_client.get(f"/admin/workers/guidedpreview/{job.pk}/live/").content.decode()
    assert f'id="preview-status-{job.pk}" class="badge" hx-swap-oob="true">queued' in live  # the list follows the job

    with django_capture_on_commit_callbacks():
        response = staff_client.post(
            "/admin/workers/guidedpreview/",
            preview_post(
                site, prompt_choice=prompt.pk, prompt_text="  a cat on the street  ", policy_version=site.policy.pk
            ),
        )
    second = Job.objects.filter(kind=Job.Kind.PREVIEW).latest("pk")
    assert response.status_code == 302 and response["Location"] == f"/admin/workers/guidedpreview/?job={second.pk}"
    assert second.params["prompt"] == "a cat on the street"  # typed text wins over the select
    page = staff_client.get(response["Location"])
    assert [item.pk for item in page.context["history"]] == [second.pk, job.pk]
    assert page.context["form"]["prompt_text"].value() == "a cat on the street"  # the form as it was queued


def test_a_guided_preview_writes_both_videos_and_the_page_plays_them(
    site, staff_client, django_capture_on_commit_callbacks
):
    from workers.services.previews import preview_job_create, preview_work

    with django_capture_on_commit_callbacks():
        job = preview_job_create(
            prompt=PROMPTS[0],
            seed=5,
            latent_reward_version=site.latent,
            weights="vq=1,mq=0,ta=3",
            guidance_strength=80,
            steps=3,
        )
    running = staff_client.get(f"/admin/workers/guidedpreview/{job.pk}/live/").content.decode()
    assert 'hx-trigger="every 2s"' in running and "<video" not in running
    job_execute(job_id=job.pk, work=preview_work)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    folder = job_folder(job)
    guided, unguided = (folder / "guided.mp4").read_bytes(), (folder / "unguided.mp4").read_bytes()
    assert guided != unguided  # same seed, the reward gradient made the difference
    scores = job.result["latent_reward_scores"]
    assert set(scores) == {"guided", "unguided"} and set(scores["guided"]) == {"weighted", "VQ", "MQ", "TA"}
    assert job.result["generators"] == {"unguided": "base", "guided": "base+nrg(vq=1,mq=0,ta=3,w=80)"}

    live = staff_client.get(f"/admin/workers/guidedpreview/{job.pk}/live/").content.decode()
    assert "hx-trigger" not in live and live.count("<video") == 2  # polling stopped; both videos, synced
    assert live.index("preview-unguided") < live.index("preview-guided") and "<strong>TA 3</strong>" in live
    assert "σ/(1 − σ) capped at 10," in live
    assert "hx-swap-oob" not in live  # not a preview of this session: no history entry to update
    served = staff_client.get(f"/admin/workers/job/{job.pk}/files/guided.mp4")
    assert served.status_code == 200 and b"".join(served.streaming_content) == guided
    assert served["Content-Type"] == "video/mp4" and served["Accept-Ranges"] == "bytes"
    part = staff_client.get(f"/admin/workers/job/{job.pk}/files/guided.mp4", HTTP_RANGE="bytes=4-11")
    assert part.status_code == 206 and b"".join(part.streaming_content) == guided[4:12]
    assert part["Content-Range"] == f"bytes 4-11/{len(guided)}"
    past_end = staff_client.get(f"/admin/workers/job/{job.pk}/files/guided.mp4", HTTP_RANGE=f"bytes={len(guided)}-")
    assert past_end.status_code == 416


def test_the_file_view_refuses_paths_outside_the_job_folder(site, staff_client, tmp_path):
    from workers.selectors import job_file_path

    job, neighbour = Job.objects.create(kind=Job.Kind.PREVIEW), Job.objects.create(kind=Job.Kind.PREVIEW)
    (job_folder(job) / "guided.mp4").write_bytes(b"mine")
    (job_folder(neighbour) / "secret.txt").write_text("not yours")
    outside = tmp_path / "outside.txt"
    outside.write_text("outside")
    (job_folder(job) / "link.txt").symlink_to(outside)
    base = f"/admin/workers/job/{job.pk}/files/"
    assert staff_client.get(base + "guided.mp4").status_code == 200
    neighbour_name = job_folder(neighbour).name
    for name in (
        f"../{neighbour_name}/secret.txt",
        "..%2F..%2Fsecret.txt",
        "%2Fetc%2Fpasswd",
        "link.txt",
        "nothing.mp4",
    ):
        response = staff_client.get(base + name)
        assert response.status_code == 404, name
    for name in (f"../{neighbour_name}/secret.txt", str(outside), "/etc/passwd", "link.txt", "."):
        assert job_file_path(job=job, name=name) is None, name
    assert job_file_path(job=job, name="./guided.mp4") == (job_folder(job) / "guided.mp4").resolve()
    assert staff_client.post(base + "guided.mp4").status_code == 405
    assert Path(job_folder(job) / "guided.mp4").read_bytes() == b"mine"


def test_pairs_from_the_untrained_built_in_policy_are_held_out_of_the_queue(make_pairs, make_user, settings):
    """No VIDPREF_BASE_POLICY: generation samples the built-in tiny Wan, whose videos are noise. Its pairs are kept
    in their batch, retired, and no annotator is served them; the job's outcome says so."""
    from annotate.models import Batch
    from annotate.services.assignment import assignment_next
    from workers.services.generation import pairs_hold_if_untrained
    from workers.services.jobs import job_outcome_text

    batch = Batch.objects.create(source="generated:job-test", name="noise")
    pairs = make_pairs(3)
    Pair.objects.filter(pk__in=[p.pk for p in pairs]).update(batch=batch)
    settings.VIDPREF_BASE_POLICY = "/models/wan"
    assert pairs_hold_if_untrained(batch_id=batch.pk) == 0  # a real model: queued
    settings.VIDPREF_BASE_POLICY = ""
    settings.VIDPREF_QUEUE_UNTRAINED_POLICY_PAIRS = True
    assert pairs_hold_if_untrained(batch_id=batch.pk) == 0  # asked for: queued
    annotator = make_user()
    settings.VIDPREF_QUEUE_UNTRAINED_POLICY_PAIRS = False
    assert pairs_hold_if_untrained(batch_id=batch.pk) == 3
    assert set(Pair.objects.filter(batch=batch).values_list("status", flat=True)) == {Pair.Status.RETIRED}
    assert assignment_next(annotator=annotator) is None
    job = Job(
        kind=Job.Kind.GENERATE,
        status=Job.Status.SUCCEEDED,
        result={"pairs_created": 3, "pairs_existing": 0, "skipped": [], "pairs_held": 3},
    )
    assert job_outcome_text(job) == "done: 0 pairs queued, 3 pairs from the untrained built-in policy held back"


def test_queue_order_random_by_default_and_uncertainty_on_request():
    """Random order is the default (no order saved judgments: docs/ml/reward.md §5); |Δr| stays a setting."""
    import random

    from alignment.flow.config import GenerationConfig

    assert GenerationConfig().queue_order == "random"
    rewards = [(0.1, 0.1), (0.0, 2.0), (1.0, 0.5)] * 20
    drawn = queue_priorities(rewards, order="random", rng=random.Random(3))
    assert all(0 < p <= 1 for p in drawn) and len(set(drawn)) == len(drawn)  # a fresh draw per pair
    assert drawn == queue_priorities(rewards, order="random", rng=random.Random(3))  # seeded by the job
    by_margin = queue_priorities(rewards, order="uncertainty", rng=random.Random(3))
    assert by_margin == [uncertainty_priority(a, b) for a, b in rewards] and by_margin[0] == 1.0
    with pytest.raises(ValueError, match="queue_order 'loudest'"):
        queue_priorities(rewards, order="loudest", rng=random.Random(0))
