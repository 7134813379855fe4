"""Schemathesis against /api/schema/: generated requests (valid and invalid) for every operation, bounded in
examples and time; no 5xx, and every answer matches the schema."""

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())


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


@pytest.fixture
def fuzz_tokens(db, make_pairs, in_test_transaction):
    """A member of staff's token (every operation is theirs to call) with open pairs and a lease to act on."""
    from django.contrib.auth import get_user_model

    from annotate.services.accounts import annotator_create
    from annotate.services.assignment import assignment_next

    make_pairs(5, overlap=2)
    account = annotator_create(username="fuzz-staff", password="pw-for-tests-1")
    user = get_user_model().objects.get(username=account.username)
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    assignment_next(annotator=user)
    return account.token


@schema.exclude(path="/api/v1/imports/").parametrize()
@settings(max_examples=30, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_api_answers_every_generated_request_within_its_schema(case, fuzz_tokens, monkeypatch):
    from celery import current_app

    monkeypatch.setattr(current_app, "send_task", lambda *args, **kwargs: None)  # recompute requests
    case.call_and_validate(headers={"Authorization": f"Token {fuzz_tokens}"},
                           checks=[not_a_server_error, response_schema_conformance])


def test_an_import_request_that_is_not_multipart_is_refused_with_the_reason(make_user):
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(make_user(staff=True))
    response = api.post("/api/v1/imports/", {"gold": True}, format="json")
    assert response.status_code == 415 and "application/json" in response.json()["detail"]
    response = api.post("/api/v1/imports/", "gold=true", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400 and "manifest" in response.json()
