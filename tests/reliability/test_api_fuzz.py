"""Schemathesis against /api/schema/: generated requests (valid and invalid) for every operation — the
multipart import included — as a member of staff and as an annotator, bounded in examples and time; no
5xx, and every answer matches the schema."""

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())


def test_the_fuzzer_reaches_every_operation_of_the_schema():
    """Nothing is left out: a new endpoint is fuzzed as soon as it is in the schema."""
    operations = {(op.method.upper(), op.path) for op in (result.ok() for result in schema.get_all_operations())}
    assert ("POST", "/api/v1/imports/") in operations
    assert {
        ("POST", "/api/v1/jobs/"),
        ("POST", "/api/v1/pipelines/"),
        ("GET", "/api/v1/pipelines/{pipeline_id}/"),
        ("GET", "/api/v1/jobs/{id}/"),
    } <= operations


@pytest.fixture
def in_test_transaction():
    """Calls go straight into the WSGI app, in this test's transaction: like Django's test client, keep the
    request signals from closing that transaction's connection."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture(params=["staff", "annotator"])
def fuzz_token(request, db, make_pairs, in_test_transaction, settings, tmp_path):
    """A token of staff (every operation is theirs to call) or of an annotator (the staff operations refuse
    them), with open pairs, a lease to act on, a job, a training snapshot and a pipeline to read."""
    from django.contrib.auth import get_user_model

    from annotate.services.accounts import annotator_create
    from annotate.services.assignment import assignment_next
    from workers.models import DatasetSnapshot, Job, Pipeline

    settings.JOB_ROOT = tmp_path / "jobs"  # uploads the fuzzer imports land here, not in var/test
    make_pairs(5, overlap=2)
    account = annotator_create(username=f"fuzz-{request.param}", password="pw-for-tests-1")
    user = get_user_model().objects.get(username=account.username)
    user.is_staff = request.param == "staff"
    user.save(update_fields=["is_staff"])
    assignment_next(annotator=user)
    Job.objects.create(kind=Job.Kind.EXPORT, params={}, created_by=user)
    DatasetSnapshot.objects.create(
        name="fuzz-snapshot", uri=str(tmp_path / "snapshot"), counts={"pairs": 4, "train": 4}
    )
    Pipeline.objects.create(status=Pipeline.Status.SKIPPED, is_active=False, reason="fuzz")
    return account.token


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_api_answers_every_generated_request_within_its_schema(case, fuzz_token, monkeypatch):
    from celery import current_app

    monkeypatch.setattr(current_app, "send_task", lambda *args, **kwargs: None)  # recompute requests
    case.call_and_validate(
        headers={"Authorization": f"Token {fuzz_token}"}, checks=[not_a_server_error, response_schema_conformance]
    )


def test_an_import_request_that_is_not_multipart_is_refused_with_the_reason(make_user):
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(make_user(staff=True))
    response = api.post("/api/v1/imports/", {"gold": True}, format="json")
    assert response.status_code == 415 and "application/json" in response.json()["detail"]
    response = api.post("/api/v1/imports/", "gold=true", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400 and "manifest" in response.json()


def test_an_import_request_without_a_body_names_the_manifest(make_user):
    """The fuzzer's first find: an empty POST (no content type) was a 500 ('dict' object has no attribute 'dict')."""
    from rest_framework.test import APIClient

    from workers.models import Job

    api = APIClient()
    api.force_authenticate(make_user(staff=True))
    response = api.generic("POST", "/api/v1/imports/")
    assert response.status_code == 400, response.content
    assert response.json() == {"manifest": ["No file was submitted."]}
    assert not Job.objects.exists()


def test_a_refused_upload_leaves_no_job_behind(make_user, settings, tmp_path):
    """A file name the upload cannot store is a JSON 400 naming it, and the job row made for it is rolled back
    (else it would sit queued until the resend task sent a job with no manifest to a worker)."""
    from django.core.files.uploadedfile import SimpleUploadedFile
    from rest_framework.test import APIClient

    from workers.models import Job

    settings.JOB_ROOT = tmp_path / "jobs"
    api = APIClient()
    api.force_authenticate(make_user(staff=True))
    response = api.post(
        "/api/v1/imports/", {"manifest": SimpleUploadedFile("!!!", b"prompt,path_A,path_B\n")}, format="multipart"
    )
    assert response.status_code == 400, response.content
    assert "'!!!'" in response.json()["detail"]
    assert not Job.objects.exists()


HOSTILE = [None, "x", "\x00", -1, 10**30, 0.5, True, [None, "a"], {"a": 1}]


def test_every_job_parameter_takes_hostile_values_without_a_server_error(make_user, settings, tmp_path):
    """The generated requests above rarely name a real parameter (``params`` is any object); here every
    parameter of every kind's form gets each hostile JSON value, next to valid inputs, so the value reaches
    the form and, when the form lets it through, the service. A refusal names the parameter; nothing is a 5xx."""
    from rest_framework.test import APIClient

    from annotate.models import Batch
    from workers.api import job_form_and_create
    from workers.models import DatasetSnapshot, Job, ModelVersion

    settings.JOB_ROOT = tmp_path / "jobs"
    api = APIClient(raise_request_exception=False)  # a 500 is counted, and the walk goes on
    api.force_authenticate(make_user(staff=True))
    snapshot = DatasetSnapshot.objects.create(name="hostile", uri=str(tmp_path), counts={"pairs": 4, "train": 4})
    versions = {
        kind: ModelVersion.objects.create(kind=kind, name=f"v-{kind}", path=str(tmp_path / kind))
        for kind in ModelVersion.Kind.values
    }
    Batch.objects.create(source="import:hostile", name="hostile.csv")
    valid = {
        "snapshot": snapshot.pk,
        "policy_version": versions["policy"].pk,
        "latent_reward_version": versions["latent_reward"].pk,
        "reward_version": versions["reward"].pk,  # Flow-GRPO needs one; the others take one
        "prompt_text": "a red square moving left",
    }
    server_errors, unnamed, tried = [], [], set()
    for kind in Job.Kind.values:
        if kind == Job.Kind.IMPORT:
            continue
        make_form, _ = job_form_and_create(kind)
        fields = make_form().fields
        base = {name: value for name, value in valid.items() if name in fields}
        assert api.post("/api/v1/jobs/", {"kind": kind, "params": base}, format="json").status_code == 202, kind
        for name, field in fields.items():
            # the four policy trainers share most config fields, and their service reads none of them: once is enough
            if kind in ("sft", "flow_dpo", "flow_rwr", "flow_grpo", "latent_reward") and (name, type(field)) in tried:
                continue
            tried.add((name, type(field)))
            for value in HOSTILE:
                response = api.post("/api/v1/jobs/", {"kind": kind, "params": {**base, name: value}}, format="json")
                if response.status_code >= 500:
                    server_errors.append(f"{kind} {name}={value!r}: {response.status_code}")
                elif response.status_code == 400 and not response.json()["params"]:
                    unnamed.append(f"{kind} {name}={value!r}: {response.json()}")
                else:
                    assert response.status_code in (202, 400), (kind, name, value, response.status_code)
    assert not server_errors, "\n".join(server_errors)
    assert not unnamed, "\n".join(unnamed)
