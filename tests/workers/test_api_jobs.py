"""Starting jobs and pipelines from scripts: POST /api/v1/jobs/ and /api/v1/pipelines/ with a staff token."""

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotate.models import Batch
from workers.models import DatasetSnapshot, Job, ModelVersion, Pipeline


def _client(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def staff(make_user):
    return _client(make_user("script", staff=True))


@pytest.fixture
def snapshot(db, tmp_path):
    return DatasetSnapshot.objects.create(
        name="snap-20261101-020000", uri=str(tmp_path / "snap"), counts={"pairs": 40, "train": 32, "val": 4, "test": 4}
    )


def test_staff_start_a_reward_job_by_snapshot_id_with_nested_config(
    staff, snapshot, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as sent:  # collected, not run: no broker here
        response = staff.post(
            "/api/v1/jobs/",
            {
                "kind": "reward",
                "params": {"snapshot": snapshot.pk, "epochs": 2, "learning_rate": 0.001, "model": {"lora_rank": 16}},
            },
            format="json",
        )
    assert response.status_code == 202, response.content
    job = Job.objects.get()
    assert (job.kind, job.status, job.created_by.username) == (Job.Kind.REWARD, Job.Status.QUEUED, "script")
    # only what differs from the site's defaults is stored (learning_rate 0.001 is the default)
    assert job.params == {"snapshot_id": snapshot.pk, "config": {"epochs": 2, "model": {"lora_rank": 16}}}
    assert response.json() == staff.get(f"/api/v1/jobs/{job.pk}/").json()  # the job, as GET shows it
    assert len(sent) == 1  # its task is queued once the request commits


def test_a_snapshot_by_name_and_dotted_config_names(staff, snapshot):
    response = staff.post(
        "/api/v1/jobs/",
        {"kind": "reward", "params": {"snapshot": snapshot.name, "model.lora_rank": 4, "loss": "bt"}},
        format="json",
    )
    assert response.status_code == 202, response.content
    assert response.json()["params"] == {
        "snapshot_id": snapshot.pk,
        "config": {"loss": "bt", "model": {"lora_rank": 4}},
    }


def test_staff_start_an_export_job_with_the_admin_forms_filters(staff):
    batch = Batch.objects.create(source="import:x", name="x.csv")
    response = staff.post(
        "/api/v1/jobs/",
        {
            "kind": "export",
            "params": {
                "name": "nightly-by-script",
                "min_judgments": 2,
                "min_agreement": 0.6,
                "batches": [batch.pk],
                "judged_from": "2026-11-01T00:00:00Z",
                "bundle_videos": True,
            },
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["kind"] == "export" and body["status"] == "queued"
    params = Job.objects.get(pk=body["id"]).params
    assert params == {
        "name": "nightly-by-script",
        "min_judgments": 2,
        "min_agreement": 0.6,
        "no_majority": "tie",
        "include_flagged": False,
        "include_excluded_annotators": False,
        "include_gold": False,
        "bundle_videos": True,
        "batch_ids": [batch.pk],
        "judged_from": "2026-11-01T00:00:00+00:00",
    }
    # with no params at all: the admin form's defaults
    response = staff.post("/api/v1/jobs/", {"kind": "export"}, format="json")
    assert response.status_code == 202 and response.json()["params"]["min_judgments"] == 1


def test_generation_and_alignment_inputs_by_id_or_name(staff, snapshot):
    reward = ModelVersion.objects.create(kind=ModelVersion.Kind.REWARD, name="reward-7", path="/m/r")
    policy = ModelVersion.objects.create(kind=ModelVersion.Kind.POLICY, name="flow-dpo-9", path="/m/p")
    response = staff.post(
        "/api/v1/jobs/",
        {"kind": "flow_dpo", "params": {"snapshot": snapshot.pk, "reward_version": "reward-7", "beta": 1000.0}},
        format="json",
    )
    assert response.status_code == 202, response.content
    params = response.json()["params"]
    assert (params["snapshot_id"], params["reward_model_version_id"]) == (snapshot.pk, reward.pk)
    assert params["config"]["beta"] == 1000.0
    response = staff.post(
        "/api/v1/jobs/",
        {"kind": "generate", "params": {"policy_version": policy.pk, "reward_version": reward.pk, "pairs": 8}},
        format="json",
    )
    assert response.status_code == 202, response.content
    assert response.json()["params"]["policy_model_version_id"] == policy.pk


@pytest.mark.parametrize(
    "body, field, words",
    [
        ({"kind": "train"}, "kind", '"train" is not a job kind; choose one of import, export, reward'),
        ({"kind": "import", "params": {}}, "kind", "multipart/form-data to /api/v1/imports/"),
        ({"params": {}}, "kind", "This field is required."),
        ({"kind": "reward", "params": []}, "params", "Expected a dictionary"),
    ],
)
def test_a_bad_kind_is_400_naming_it(staff, body, field, words):
    response = staff.post("/api/v1/jobs/", body, format="json")
    assert response.status_code == 400
    assert words in " ".join(response.json()[field])
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    "params, field, words",
    [
        ({"snapshot": 999999}, "snapshot", "Select a valid choice"),
        ({"snapshot": "no-such-snapshot"}, "snapshot", "no dataset snapshot named 'no-such-snapshot'"),
        ({"epochs": "two"}, "epochs", "Enter a whole number."),
        ({"model": {"lora_rank": 2.5}}, "model.lora_rank", "Enter a whole number."),
        ({"model": {"tubelet": [2, "x", 8]}}, "model.tubelet", "comma-separated int values"),
        ({"keep_best": "maybe"}, "keep_best", "give true or false"),
        ({"epochz": 3}, "epochz", "not a parameter of a reward job; it takes snapshot, "),
        ({"model": {"nope": 1}}, "model.nope", "not a parameter of a reward job"),
        ({"output_dir": "/tmp/x"}, "output_dir", "the worker sets output_dir itself"),
    ],
)
def test_a_bad_parameter_is_400_naming_it(staff, snapshot, params, field, words):
    response = staff.post(
        "/api/v1/jobs/", {"kind": "reward", "params": {"snapshot": snapshot.pk, **params}}, format="json"
    )
    assert response.status_code == 400, response.content
    errors = response.json()["params"]
    assert field in errors and words in " ".join(errors[field]), errors
    if "it takes" in words:  # the list names every parameter, nested ones dotted
        assert {"epochs", "model.lora_rank", "learning_rate"} <= set(errors[field][0].split("it takes ")[1].split(", "))
    assert not Job.objects.exists()


def test_a_refusal_of_the_service_is_400_with_its_reason(staff, snapshot):
    snapshot.counts = {"pairs": 3, "train": 0}
    snapshot.save()
    response = staff.post("/api/v1/jobs/", {"kind": "reward", "params": {"snapshot": snapshot.pk}}, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "params": {"non_field_errors": [f"snapshot {snapshot.name} has no pairs in its train split"]}
    }
    # the generation service names the input to fix
    response = staff.post("/api/v1/jobs/", {"kind": "generate", "params": {"source": "policy_vs_base"}}, format="json")
    assert response.status_code == 400
    assert "policy_version" in response.json()["params"]
    # the export form's bounds
    response = staff.post(
        "/api/v1/jobs/", {"kind": "export", "params": {"min_agreement": 1.5, "no_majority": "x"}}, format="json"
    )
    assert response.status_code == 400 and set(response.json()["params"]) == {"min_agreement", "no_majority"}
    assert not Job.objects.exists()


def test_annotators_and_anonymous_callers_are_refused(make_user, snapshot):
    body = {"kind": "reward", "params": {"snapshot": snapshot.pk}}
    annotator = _client(make_user("annotator"))
    assert annotator.post("/api/v1/jobs/", body, format="json").status_code == 403
    assert annotator.post("/api/v1/pipelines/", {"force": True}, format="json").status_code == 403
    assert _client().post("/api/v1/jobs/", body, format="json").status_code in (401, 403)
    assert _client().post("/api/v1/pipelines/", {"force": True}, format="json").status_code in (401, 403)
    assert not Job.objects.exists() and not Pipeline.objects.exists()


def test_a_pipeline_starts_then_a_second_is_409_with_the_running_ones_id(staff, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as sent:
        response = staff.post(
            "/api/v1/pipelines/", {"force": True, "alignment_method": "rwr", "generate_pairs": 8}, format="json"
        )
    assert response.status_code == 202, response.content
    body = response.json()
    pipeline = Pipeline.objects.get()
    assert body["id"] == pipeline.pk and body["status"] == "queued" and body["is_active"]
    assert pipeline.params["alignment_method"] == "rwr" and pipeline.params["generate_pairs"] == 8
    assert [(s["stage"], s["kind"], s["job"], s["status"]) for s in body["stages"]] == [
        ("export", "export", None, "pending"),
        ("reward", "reward", None, "pending"),
        ("align", "flow_rwr", None, "pending"),
        ("generate", "generate", None, "pending"),
    ]
    assert len(sent) == 1  # the chain is sent once the request commits

    for again in ({"force": True}, {"force": False}, {}):
        second = staff.post("/api/v1/pipelines/", again, format="json")
        assert second.status_code == 409, second.content
        assert second.json()["pipeline_id"] == pipeline.pk
        assert f"pipeline #{pipeline.pk}" in second.json()["detail"]
    assert Pipeline.objects.count() == 1


def test_get_a_pipeline_shows_its_stages_and_their_jobs(staff):
    pipeline = Pipeline.objects.create(
        status=Pipeline.Status.RUNNING, stage="reward", params={"alignment_method": "dpo"}
    )
    export = Job.objects.create(kind=Job.Kind.EXPORT, status=Job.Status.SUCCEEDED, progress=1.0, pipeline=pipeline)
    reward = Job.objects.create(kind=Job.Kind.REWARD, status=Job.Status.RUNNING, progress=0.25, pipeline=pipeline)
    body = staff.get(f"/api/v1/pipelines/{pipeline.pk}/").json()
    assert (body["status"], body["stage"]) == ("running", "reward")
    assert [(s["stage"], s["kind"], s["job"], s["status"], s["progress"]) for s in body["stages"]] == [
        ("export", "export", export.pk, "succeeded", 1.0),
        ("reward", "reward", reward.pk, "running", 0.25),
        ("align", "flow_dpo", None, "pending", 0.0),
        ("generate", "generate", None, "pending", 0.0),
    ]
    assert staff.get("/api/v1/pipelines/999999/").status_code == 404


def test_too_few_judgments_without_force_is_a_skipped_pipeline_with_the_reason(staff, settings):
    settings.VIDPREF_PIPELINE_MIN_NEW_JUDGMENTS = 5
    response = staff.post("/api/v1/pipelines/", {"force": False}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "skipped" and not body["is_active"]
    assert "0 new judgments since the last snapshot; a pipeline needs 5" in body["reason"]
    assert [s["status"] for s in body["stages"]] == ["not run"] * 4


@pytest.mark.parametrize(
    "body, field",
    [
        ({"force": "perhaps"}, "force"),
        ({"alignment_method": "ppo"}, "alignment_method"),
        ({"generate_pairs": 0}, "generate_pairs"),
    ],
)
def test_a_bad_pipeline_request_is_400_naming_the_field(staff, body, field):
    response = staff.post("/api/v1/pipelines/", body, format="json")
    assert response.status_code == 400 and field in response.json()
    assert not Pipeline.objects.exists()


def test_the_schema_documents_both_endpoints_with_examples(staff):
    schema = staff.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    jobs = schema["paths"]["/api/v1/jobs/"]["post"]
    examples = jobs["requestBody"]["content"]["application/json"]["examples"]
    assert {example["value"]["kind"] for example in examples.values()} >= {"reward", "export"}
    assert set(jobs["responses"]) >= {"202", "400"}
    pipelines = schema["paths"]["/api/v1/pipelines/"]["post"]
    assert set(pipelines["responses"]) >= {"202", "409"}
    assert pipelines["requestBody"]["content"]["application/json"]["examples"]
    assert "get" in schema["paths"]["/api/v1/pipelines/{pipeline_id}/"]


def test_one_answer_names_every_wrong_parameter(staff, snapshot):
    response = staff.post(
        "/api/v1/jobs/",
        {
            "kind": "reward",
            "params": {"snapshot": "nope", "epochz": 1, "keep_best": "yes", "model": {"lora_rank": "big"}, "epochs": 3},
        },
        format="json",
    )
    assert response.status_code == 400
    assert set(response.json()["params"]) == {"snapshot", "epochz", "keep_best", "model.lora_rank"}
