"""Jobs from the admin: forms from config dataclasses, the live page, cancel / retry / run, attempts, the watchdog."""

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from workers.job_specs import JOB_SPECS, JobConfigForm, choices_from_doc
from workers.models import DatasetSnapshot, Job, JobCancelled, ModelVersion
from workers.services.jobs import job_cancel, job_execute, job_retry, job_run, job_start, jobs_mark_stale


@pytest.fixture
def snapshot(db):
    return DatasetSnapshot.objects.create(name="snap-1", uri="/nowhere", counts={"pairs": 40, "train": 32})


def test_reward_form_lists_every_config_field_with_the_sites_defaults_and_help(db):
    form = JobConfigForm(JOB_SPECS[Job.Kind.REWARD])
    assert "output_dir" not in form.fields and "snapshot" in form.fields  # filled by the worker / a model choice
    assert form.fields["learning_rate"].initial == 1e-3  # the site's small-backbone default, not the dataclass's 2e-6
    assert form.fields["model.lora_rank"].initial == 64  # nested dataclass fields, dotted
    assert [value for value, _ in form.fields["loss"].choices] == ["bt_ties", "bt", "regression"]
    assert form.fields["model.tubelet"].prepare_value(form.fields["model.tubelet"].initial) == "2, 8, 8"
    assert "one head for all three tokens" in form.fields["model.shared_head"].help_text  # from the source comment
    assert choices_from_doc("constant | cosine (after the warmup)") == ["constant", "cosine"]
    assert choices_from_doc("pairs per optimizer step") is None


def test_staff_queues_a_reward_job_and_only_the_changes_are_stored(
    staff_client, snapshot, django_capture_on_commit_callbacks
):
    page = staff_client.get("/admin/workers/job/new/reward/")
    assert page.status_code == 200 and b'name="model.lora_rank"' in page.content
    form = JobConfigForm(JOB_SPECS[Job.Kind.REWARD])
    data = {name: form[name].value() for name in form.fields if name != "snapshot"}
    data = {
        key: ("on" if value is True else value)
        for key, value in data.items()
        if value is not False and value is not None
    }
    data["model.tubelet"] = "1, 8, 8"
    data.update(snapshot=snapshot.pk, epochs=2, loss="bt")
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff_client.post("/admin/workers/job/new/reward/", data)
    assert response.status_code == 302, response.content.decode()[-3000:]
    job = Job.objects.get(kind=Job.Kind.REWARD)
    assert job.params == {
        "snapshot_id": snapshot.pk,
        "config": {"epochs": 2, "loss": "bt", "model": {"tubelet": [1, 8, 8]}},
    }
    assert len(callbacks) == 1  # the task is sent once the row is committed


def test_bad_config_values_are_refused_with_the_field_named(staff_client, snapshot):
    response = staff_client.post(
        "/admin/workers/job/new/reward/", {"snapshot": snapshot.pk, "epochs": "two", "model.tubelet": "2, x, 8"}
    )
    assert response.status_code == 200 and not Job.objects.exists()
    errors = response.context["form"].errors
    assert "Enter a whole number." in errors["epochs"][0] and "comma-separated int" in errors["model.tubelet"][0]


def test_job_page_polls_while_running_and_stops_when_finished(staff_client, snapshot):
    job = Job.objects.create(
        kind=Job.Kind.REWARD,
        status=Job.Status.RUNNING,
        progress=0.25,
        log="line 1\nline 2\n",
        metrics={"live": {"train_loss": [[1, 0.9], [2, 0.7]]}},
    )
    page = staff_client.get(f"/admin/workers/job/{job.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'hx-trigger="every 2s"' in html and "25 %" in html and "line 2" in html and 'name="cancel"' in html
    assert '"train_loss": [[1, 0.9], [2, 0.7]]' in html  # the live loss curve for the chart
    version = ModelVersion.objects.create(kind="reward", name="reward-x", path="/m", snapshot=snapshot, job=job)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED, progress=1.0)
    live = staff_client.get(f"/admin/workers/job/{job.pk}/live/").content.decode()
    assert "hx-trigger" not in live and "Succeeded" in live  # htmx stops polling
    assert f"/admin/workers/modelversion/{version.pk}/change/" in live and "snap-1" in live
    assert 'name="cancel"' not in live and 'name="retry"' not in live


def test_live_page_is_for_staff_only(client, make_user):
    job = Job.objects.create(kind=Job.Kind.EXPORT)
    client.force_login(make_user())
    assert client.get(f"/admin/workers/job/{job.pk}/live/").status_code == 302  # to the admin login
    assert client.post(f"/admin/workers/job/{job.pk}/cancel/").status_code == 302
    assert Job.objects.get(pk=job.pk).status == Job.Status.QUEUED


def test_cancel_stops_a_running_job_at_its_next_step(db):
    job = Job.objects.create(kind=Job.Kind.EXPORT)
    steps = []

    def work(running):
        for step in range(1, 100):
            if step == 3:
                job_cancel(job=Job.objects.get(pk=running.pk), by="admin")
            running.report_progress(step, 100)  # raises JobCancelled once cancelled
            steps.append(step)
        return {}

    assert job_execute(job_id=job.pk, work=work) is None
    job.refresh_from_db()
    assert steps == [1, 2] and job.status == Job.Status.CANCELLED
    assert job.attempts[-1]["outcome"] == "cancelled" and "cancelled by admin" in job.log
    with pytest.raises(JobCancelled):
        job.report_progress(1, 2)
    assert job_cancel(job=job) is False  # already finished


def test_retry_resumes_the_same_job_and_keeps_every_attempt(db, django_capture_on_commit_callbacks):
    job = Job.objects.create(kind=Job.Kind.REWARD)

    def boom(_job):
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError):
        job_execute(job_id=job.pk, work=boom)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "CUDA out of memory" in job.error
    with django_capture_on_commit_callbacks() as callbacks:
        job_retry(job=job, by="admin")
    job.refresh_from_db()
    assert (job.status, job.error, len(callbacks)) == (Job.Status.QUEUED, "", 1)
    assert job_execute(job_id=job.pk, work=lambda _job: {"ok": True}) == {"ok": True}
    job.refresh_from_db()
    assert [a["outcome"] for a in job.attempts] == ["failed", "succeeded"] and job.status == Job.Status.SUCCEEDED
    with pytest.raises(ValueError, match="only a failed or cancelled job"):
        job_retry(job=job)
    with pytest.raises(ValueError, match="only a queued job"):
        job_run(job=job)


def test_a_redelivered_job_closes_the_dead_attempt_and_ignores_a_live_duplicate(db):
    job = Job.objects.create(kind=Job.Kind.REWARD)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert job_start(job_id=job.pk) is not None
        Job.objects.filter(pk=job.pk).update(attempts=[{**Job.objects.get(pk=job.pk).attempts[0], "pid": alive.pid}])
        assert job_start(job_id=job.pk) is None  # its first attempt still runs: a duplicate delivery does nothing
        assert "was ignored" in Job.objects.get(pk=job.pk).log
        Job.objects.filter(pk=job.pk).update(attempts=[{**Job.objects.get(pk=job.pk).attempts[0], "pid": dead.pid}])
        resumed = job_start(job_id=job.pk)
    finally:
        alive.kill()
    assert [a["outcome"] for a in resumed.attempts] == ["lost (worker died or was killed)", "running"]
    assert resumed.attempts[1]["pid"] == os.getpid() and "resuming" in Job.objects.get(pk=job.pk).log


def test_watchdog_fails_jobs_whose_worker_went_silent(db, settings):
    settings.VIDPREF_JOB_STALE_MINUTES = 30
    quiet = Job.objects.create(
        kind=Job.Kind.REWARD,
        status=Job.Status.RUNNING,
        heartbeat_at=timezone.now() - timedelta(minutes=31),
        attempts=[{"number": 1, "worker": "gpu-7", "pid": 1, "outcome": "running"}],
    )
    busy = Job.objects.create(kind=Job.Kind.REWARD, status=Job.Status.RUNNING, heartbeat_at=timezone.now())
    assert jobs_mark_stale() == [quiet.pk]
    quiet.refresh_from_db()
    assert quiet.status == Job.Status.FAILED and "no sign of life from the worker for 31 minutes" in quiet.error
    assert quiet.attempts[0]["outcome"] == "lost (no heartbeat)"
    assert Job.objects.get(pk=busy.pk).status == Job.Status.RUNNING


def test_model_versions_compare_side_by_side(staff_client, snapshot):
    def version(name, vq, epochs):
        return ModelVersion.objects.create(
            kind="reward",
            name=name,
            path="/m",
            snapshot=snapshot,
            config={"epochs": epochs, "model": {"hidden_size": 64}},
            metrics={
                "validation": {"VQ": {"accuracy_without_ties": vq, "accuracy_with_ties": vq - 0.1}},
                "charts": {"train_loss": [[1, 0.7], [2, 0.5]]},
            },
        )

    first, second = version("reward-a", 0.71, 2), version("reward-b", 0.78, 4)
    response = staff_client.post(
        "/admin/workers/modelversion/", {"action": "compare", "_selected_action": [first.pk, second.pk]}
    )
    assert response.status_code == 302
    page = staff_client.get(response["Location"])
    html = page.content.decode()
    assert page.status_code == 200 and "reward-a" in html and "reward-b" in html
    assert "<strong>0.780</strong>" in html  # the best value of the row stands out
    assert [row["key"] for row in page.context["config_differences"]] == ["epochs"]
    assert staff_client.get("/admin/workers/modelversion/compare/?ids=x").status_code == 404


def test_flow_dpo_form_reads_the_flow_config_and_queues_on_the_gpu_queue(
    staff_client, snapshot, django_capture_on_commit_callbacks
):
    reward = ModelVersion.objects.create(kind="reward", name="reward-1", path="/m", snapshot=snapshot)
    form = JobConfigForm(JOB_SPECS[Job.Kind.FLOW_DPO])
    assert [value for value, _ in form.fields["beta_schedule"].choices] == ["constant", "time"]
    assert [value for value, _ in form.fields["finetune"].choices] == ["lora", "full"]  # a comment of the base class
    assert "policy" not in form.fields and "temperature" not in form.fields  # set by the worker / an RWR field
    data = {name: form[name].value() for name in form.fields if name not in ("snapshot", "reward_version")}
    data = {
        key: ("on" if value is True else form.fields[key].prepare_value(value))
        for key, value in data.items()
        if value is not False and value is not None
    }
    data.update(snapshot=snapshot.pk, reward_version=reward.pk, beta=250, beta_schedule="time")
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff_client.post("/admin/workers/job/new/flow_dpo/", data)
    assert response.status_code == 302, response.context["form"].errors
    job = Job.objects.get(kind=Job.Kind.FLOW_DPO)
    assert job.params == {
        "snapshot_id": snapshot.pk,
        "config": {"beta": 250.0, "beta_schedule": "time"},
        "reward_model_version_id": reward.pk,
    }
    assert len(callbacks) == 1


def test_jobs_whose_message_never_left_are_sent_by_the_beat_entry(db, django_capture_on_commit_callbacks):
    from workers.services.jobs import jobs_resend

    old = Job.objects.create(kind=Job.Kind.EXPORT)
    Job.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    Job.objects.create(kind=Job.Kind.EXPORT)  # just created: its own on-commit send may still be under way
    Job.objects.create(kind=Job.Kind.EXPORT, celery_id="sent-already", created_at=timezone.now())
    with django_capture_on_commit_callbacks() as callbacks:
        assert jobs_resend() == [old.pk]
    assert len(callbacks) == 1


def test_generate_pairs_form_takes_an_aligned_policy_and_a_reward_model(
    staff_client, snapshot, django_capture_on_commit_callbacks
):
    policy = ModelVersion.objects.create(kind="policy", name="flow-dpo-3", path="/p", snapshot=snapshot)
    reward = ModelVersion.objects.create(kind="reward", name="reward-2", path="/r", snapshot=snapshot)
    page = staff_client.get("/admin/workers/job/new/")
    assert b"Generate pairs" in page.content and b"Flow-DPO" in page.content
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff_client.post(
            "/admin/workers/job/new/generate/",
            {
                "policy_version": policy.pk,
                "reward_version": reward.pk,
                "pairs": 12,
                "source": "policy_vs_base",
                "steps": 20,
                "guidance_scale": 5.0,
                "weights": "vq=1,mq=1,ta=1",
                "guidance_strength": 100,
                "guidance_sigma_min": 0,
                "guidance_max_ratio": 10,
                "queue_order": "random",
            },
        )
    assert response.status_code == 302, response.context["form"].errors
    job = Job.objects.get(kind=Job.Kind.GENERATE)
    assert job.params == {
        "pairs": 12,
        "policy_model_version_id": policy.pk,
        "reward_model_version_id": reward.pk,
        "latent_reward_model_version_id": None,
    }
    assert len(callbacks) == 1
    refused = staff_client.post(
        "/admin/workers/job/new/generate/",
        {
            "policy_version": reward.pk,
            "pairs": 1,
            "source": "two_seeds",
            "steps": 1,
            "guidance_scale": 1,
            "weights": "vq=1",
            "guidance_strength": 100,
            "guidance_sigma_min": 0,
            "guidance_max_ratio": 10,
            "queue_order": "random",
        },
    )
    assert "policy_version" in refused.context["form"].errors  # a reward model is not a policy


def test_a_latent_reward_job_trains_on_a_snapshot_and_registers_its_model(
    db, tmp_path, settings, django_capture_on_commit_callbacks
):
    """The admin's form → the job → the worker's service (in this process) → ModelVersion(kind=latent_reward)."""
    from alignment.flow.latent_reward import load_latent_reward
    from alignment.flow.tiny import build_tiny_wan_policy
    from tests.alignment.test_flow import toy_snapshot
    from workers.services.alignment import policy_job_create, policy_work

    settings.JOB_ROOT, settings.VAR_DIR = tmp_path / "jobs", tmp_path / "var"
    settings.VIDPREF_BASE_POLICY = str(build_tiny_wan_policy(tmp_path / "wan", pixel_patch=4, num_layers=2))
    folder = toy_snapshot(tmp_path / "snap")
    snapshot = DatasetSnapshot.objects.create(name="toy", uri=str(folder), counts={"pairs": 12, "train": 8})
    form = JobConfigForm(JOB_SPECS[Job.Kind.LATENT_REWARD])
    assert form.fields["noisy"].initial is True and "lora_rank" not in form.fields
    with django_capture_on_commit_callbacks():
        job = policy_job_create(
            kind=Job.Kind.LATENT_REWARD, snapshot=snapshot, overrides={"max_steps": 2, "batch_size": 2, "num_layers": 1}
        )
    with pytest.raises(ValueError, match="leave the reward model empty"):
        policy_job_create(
            kind=Job.Kind.LATENT_REWARD,
            snapshot=snapshot,
            reward_version=ModelVersion.objects.create(kind="reward", name="r", path="/r"),
        )
    result = job_execute(job_id=job.pk, work=policy_work)
    version = ModelVersion.objects.get(pk=result["model_version_id"])
    assert version.kind == ModelVersion.Kind.LATENT_REWARD and version.name == f"latent-reward-{job.pk}"
    assert load_latent_reward(version.path) is not None
    assert Job.objects.get(pk=job.pk).progress_text == f"done: model {version.name}"  # the outcome, not the last step


def test_metrics_with_nan_are_stored_with_none(db):
    """An empty validation split makes some accuracy NaN; PostgreSQL's json refuses NaN, so it is stored as null."""
    from workers.services.jobs import json_safe

    assert json_safe({"a": [1.0, float("nan")], "b": (float("inf"), "x"), "c": {"d": -float("inf")}}) == {
        "a": [1.0, None],
        "b": [None, "x"],
        "c": {"d": None},
    }
    job = Job.objects.create(kind=Job.Kind.REWARD)
    assert job_execute(job_id=job.pk, work=lambda _job: ({"loss": float("nan")}, {"VQ": {"accuracy": float("nan")}}))
    job.refresh_from_db()
    assert (job.status, job.result, job.metrics) == (Job.Status.SUCCEEDED, {"loss": None}, {"VQ": {"accuracy": None}})


@pytest.mark.parametrize(
    ("kind", "result", "outcome"),
    [
        (
            Job.Kind.GENERATE,
            {"pairs_created": 24, "pairs_existing": 0, "skipped": [], "batch_id": 1},
            "done: 24 pairs queued",
        ),
        (
            Job.Kind.IMPORT,
            {"pairs_created": 1, "pairs_existing": 3, "skipped": [{"line": 4, "reason": "x"}] * 2},
            "done: 1 pair imported, 3 already present, 2 skipped",
        ),
        (
            Job.Kind.EXPORT,
            {"snapshot_id": 5, "name": "nightly-7", "counts": {"pairs": 40}},
            "done: snapshot nightly-7 (40 pairs)",
        ),
        (Job.Kind.REWARD, {"model_version_id": 3, "name": "reward-3", "path": "/m"}, "done: model reward-3"),
        (Job.Kind.FLOW_DPO, {"model_version_id": 4, "name": "flow-dpo-4", "path": "/m"}, "done: model flow-dpo-4"),
        (
            Job.Kind.PREVIEW,
            {"videos": {"guided": "g.mp4", "unguided": "u.mp4"}},
            "done: guided and unguided videos ready",
        ),
        (Job.Kind.SFT, {}, "done"),
    ],
)
def test_a_finished_jobs_progress_text_says_its_outcome_not_its_last_step(db, kind, result, outcome):
    job = Job.objects.create(kind=kind)

    def work(running):
        assert Job.objects.get(pk=running.pk).progress_text.startswith("started on ")
        running.report_progress(9, 10, "sampling guided")
        return result

    job_execute(job_id=job.pk, work=work)
    job.refresh_from_db()
    assert (job.progress, job.progress_text) == (1.0, outcome)


def test_a_failed_cancelled_or_retried_jobs_progress_text_says_so(db, django_capture_on_commit_callbacks):
    failing = Job.objects.create(kind=Job.Kind.REWARD)

    def boom(running):
        running.report_progress(1, 4, "epoch 1 of 4")
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError):
        job_execute(job_id=failing.pk, work=boom)
    failing.refresh_from_db()
    assert (failing.progress, failing.progress_text) == (0.25, "failed: RuntimeError: CUDA out of memory")
    with django_capture_on_commit_callbacks():
        job_retry(job=failing)
    assert Job.objects.get(pk=failing.pk).progress_text == "queued again: resumes from its newest checkpoint"
    assert job_start(job_id=failing.pk).progress_text.startswith("attempt 2 on ")

    running = Job.objects.create(kind=Job.Kind.EXPORT, status=Job.Status.RUNNING, progress=0.3, progress_text="pair 3")
    assert job_cancel(job=running, by="admin")
    assert Job.objects.get(pk=running.pk).progress_text == "cancelled by admin at 30 %"

    silent = Job.objects.create(
        kind=Job.Kind.REWARD,
        status=Job.Status.RUNNING,
        progress_text="epoch 2 of 4",
        heartbeat_at=timezone.now() - timedelta(days=1),
    )
    jobs_mark_stale()
    assert Job.objects.get(pk=silent.pk).progress_text.startswith("failed: RuntimeError: no sign of life")


def test_job_page_shows_params_metrics_and_log_as_tables_and_lines(staff_client, snapshot):
    job = Job.objects.create(
        kind=Job.Kind.REWARD,
        status=Job.Status.SUCCEEDED,
        progress=1.0,
        params={
            "snapshot_id": snapshot.pk,
            "config": {"epochs": 2, "model": {"lora_rank": 8, "tubelet": [1, 8, 8]}, "keep_best": True},
        },
        metrics={
            "validation": {
                "VQ": {"accuracy_with_ties": 0.61234, "accuracy_without_ties": 0.75},
                "MQ": {"accuracy_with_ties": None, "accuracy_without_ties": 0.5},
            },
            "final_train_loss": 0.693147,
            "normalization": {"mean": 0.1},
            "charts": {"train_loss": [[1, 0.7]]},
        },
        log="12:00:01 base config: the small CPU backbone\n12:00:09 Traceback (most recent call last):\n"
        "  File \"x.py\", line 1\nValueError: {'a': 1}\n12:00:10 retry queued\n",
    )
    html = staff_client.get(f"/admin/workers/job/{job.pk}/change/").content.decode()
    assert '<table class="kv-table job-params">' in html and "{&#x27;" not in html.split("job-log")[0]  # no dict repr
    for key, value in [
        ("snapshot_id", f'<a href="/admin/workers/datasetsnapshot/{snapshot.pk}/change/">{snapshot.pk}</a>'),
        ("config.epochs", "2"),
        ("config.model.lora_rank", "8"),
        ("config.model.tubelet", "1, 8, 8"),
        ("config.keep_best", "yes"),
    ]:
        assert f'<tr><th scope="row">{key}</th><td>{value}</td></tr>' in html
    assert '<tr><th scope="row">VQ</th><td>0.612</td><td>0.750</td></tr>' in html  # validation, a row a dimension
    assert '<tr><th scope="row">MQ</th><td>–</td><td>0.500</td></tr>' in html
    assert html.index('"row">VQ</th>') < html.index('"row">MQ</th>')  # in DIMENSIONS' order, though jsonb sorts keys
    params = html.split('class="kv-table job-params"')[1]
    assert params.index("config.epochs") < params.index("config.keep_best") < params.index("snapshot_id")  # a-z
    assert '<th scope="row">final_train_loss</th><td>0.6931</td>' in html and "normalization.mean" in html
    assert '<th scope="row">charts' not in html  # drawn, not listed
    entries = html.split('<ol class="job-log">')[1].split("</ol>")[0].split("<li")[1:]
    assert len(entries) == 3 and "<time>12:00:09</time>" in entries[1] and 'class="log-error"' in entries[1]
    assert "ValueError: {&#x27;a&#x27;: 1}" in entries[1] and "<time>12:00:10</time>" in entries[2]


def test_made_by_this_job_links_the_pairs_of_a_generation_or_an_import(staff_client, make_pairs):
    from annotate.models import Batch

    batch = Batch.objects.create(name="two_seeds: base vs base (job 9)", source="generated:job-9")
    pairs = make_pairs(3)
    for pair in pairs:
        pair.batch = batch
        pair.save(update_fields=["batch"])
    job = Job.objects.create(
        kind=Job.Kind.GENERATE,
        status=Job.Status.SUCCEEDED,
        progress=1.0,
        result={"pairs_created": 3, "pairs_existing": 0, "skipped": [], "batch_id": batch.pk, "videos_created": 6},
    )
    live = staff_client.get(f"/admin/workers/job/{job.pk}/live/").content.decode()
    assert f'href="/admin/annotate/pair/?batch__id__exact={batch.pk}">3 new pairs</a>' in live
    assert f'href="/admin/annotate/batch/{batch.pk}/change/">two_seeds: base vs base (job 9)</a>' in live
    listed = staff_client.get(f"/admin/annotate/pair/?batch__id__exact={batch.pk}")
    assert listed.status_code == 200 and listed.context["cl"].result_count == 3
    imported = Job.objects.create(
        kind=Job.Kind.IMPORT,
        status=Job.Status.SUCCEEDED,
        progress=1.0,
        result={
            "pairs_created": 0,
            "pairs_existing": 2,
            "batch_id": batch.pk,
            "skipped": [{"line": 3, "reason": "gone.mp4: file not found"}],
        },
    )
    live = staff_client.get(f"/admin/workers/job/{imported.pk}/live/").content.decode()
    assert "0 new pairs</a> and 2 already present" in live and "line 3: gone.mp4: file not found" in live
    running = Job.objects.create(kind=Job.Kind.GENERATE, status=Job.Status.RUNNING, result={"batch_id": batch.pk})
    assert "Made by this job" not in staff_client.get(f"/admin/workers/job/{running.pk}/live/").content.decode()


def test_a_flow_grpo_job_from_the_admin_trains_on_the_snapshots_prompts_with_a_reward_model(
    db, staff_client, tmp_path, settings, django_capture_on_commit_callbacks
):
    """The admin's Flow-GRPO form (a reward model required) → the job → the worker's service (the trainer in a
    child process) → a policy ModelVersion with the reward curve among its charts."""
    from alignment.flow import load_policy
    from alignment.flow.tiny import build_tiny_wan_policy
    from tests.alignment.test_flow import toy_snapshot
    from tests.alignment.test_flow_grpo import _small_reward_model
    from workers.services.alignment import policy_job_create, policy_work

    settings.JOB_ROOT, settings.VAR_DIR = tmp_path / "jobs", tmp_path / "var"
    settings.VIDPREF_BASE_POLICY = str(build_tiny_wan_policy(tmp_path / "wan", pixel_patch=4, num_layers=2))
    folder = toy_snapshot(tmp_path / "snap")
    snapshot = DatasetSnapshot.objects.create(name="toy", uri=str(folder), counts={"pairs": 12, "train": 8})
    reward = ModelVersion.objects.create(
        kind="reward", name="reward-small", path=str(_small_reward_model(tmp_path / "reward")), snapshot=snapshot
    )
    form = JobConfigForm(JOB_SPECS[Job.Kind.FLOW_GRPO])
    assert {"group_size", "sample_steps", "kl_weight", "clip_range"} <= set(form.fields)
    assert "reward_model" not in form.fields and "policy" not in form.fields  # the inputs and the worker set them
    posted = {
        key: ("on" if value is True else form.fields[key].prepare_value(value))
        for key, value in ((name, form[name].value()) for name in form.fields)
        if value is not False and value is not None
    }
    refused = staff_client.post("/admin/workers/job/new/flow_grpo/", {**posted, "snapshot": snapshot.pk})
    assert "choose a reward model" in refused.content.decode()
    with django_capture_on_commit_callbacks():
        response = staff_client.post(
            "/admin/workers/job/new/flow_grpo/",
            {**posted, "snapshot": snapshot.pk, "reward_version": reward.pk, "max_steps": 2, "group_size": 2},
        )
    assert response.status_code == 302
    job = Job.objects.get(kind=Job.Kind.FLOW_GRPO)
    assert job.params["reward_model_version_id"] == reward.pk
    result = job_execute(job_id=job.pk, work=policy_work)
    version = ModelVersion.objects.get(pk=result["model_version_id"])
    assert version.kind == ModelVersion.Kind.POLICY and version.name == f"flow-grpo-{job.pk}"
    assert [point[0] for point in version.metrics["charts"]["reward_mean"]] == [1, 2]
    assert load_policy(version.path).transformer is not None
    with pytest.raises(ValueError, match="choose a reward model"):
        policy_job_create(kind=Job.Kind.FLOW_GRPO, snapshot=snapshot)
