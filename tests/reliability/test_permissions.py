"""Every URL pattern, as anonymous, an annotator, another annotator, a campaign participant (arrived by a crowd
platform's link, no password) and staff: the expected status for each, and nothing an annotator or participant
must not see (generator names, other people's judgments, media outside their lease, staff pages)."""

import re

import pytest
from django.test import Client
from django.urls import URLResolver, get_resolver

from tests.reliability.conftest import GENERATOR_MARKERS, OTHERS_COMMENT, OTHERS_PROMPT

ROLES = ("anonymous", "annotator", "other annotator", "participant", "staff")
JUDGES = ("annotator", "other annotator", "participant")
LOGIN, ADMIN_LOGIN = "/login/", "/admin/login/"
REFUSED_API = {403}  # DRF: session auth first, so "not authenticated" is a 403 with a reason

# (GET, POST) per role, for every non-admin URL name. None: not sent (the annotator's own lease would change).
# "login": a redirect to the login page. A new URL pattern without a row here fails the test.
EXPECTED = {
    "favicon": {role: (302, 405) for role in ROLES},  # a redirect to the static SVG
    "healthz": {role: (200, 405) for role in ROLES},
    "login": {role: (200, 200) for role in ROLES},
    "logout": {role: (405, 302) for role in ROLES},
    "api-schema": {role: (200, 405) for role in ROLES},
    "annotate:home": {
        "anonymous": ("login", "login"),
        "annotator": (200, 200),
        "other annotator": (200, 200),
        "participant": (200, 200),
        "staff": (200, 200),
    },
    "annotate:guidelines": {
        "anonymous": ("login", "login"),
        "annotator": (200, 200),
        "other annotator": (200, 200),
        "participant": (200, 200),
        "staff": (200, 200),
    },
    "annotate:history": {
        "anonymous": ("login", "login"),
        "annotator": (200, 200),
        "other annotator": (200, 200),
        "participant": (200, 200),
        "staff": (200, 200),
    },
    # someone else's lease: the form is checked first (422), a valid one is refused (tested below)
    "annotate:judge": {
        "anonymous": ("login", "login"),
        "annotator": (405, None),
        "other annotator": (405, 422),
        "participant": (405, 422),
        "staff": (405, 422),
    },
    # a refusal becomes a message on the next page
    "annotate:skip": {
        "anonymous": ("login", "login"),
        "annotator": (405, None),
        "other annotator": (405, 302),
        "participant": (405, 302),
        "staff": (405, 302),
    },
    "annotate:heartbeat": {
        "anonymous": ("login", "login"),
        "annotator": (405, 200),
        "other annotator": (405, 404),
        "participant": (405, 404),
        "staff": (405, 404),
    },
    "annotate:video": {
        "anonymous": ("login", 405),
        "annotator": (200, 405),
        "other annotator": (404, 405),
        "participant": (404, 405),
        "staff": (200, 405),
    },
    "annotate:poster": {
        "anonymous": ("login", 405),
        "annotator": (200, 405),
        "other annotator": (404, 405),
        "participant": (404, 405),
        "staff": (200, 405),
    },
    "api-assignment-next": {
        "anonymous": (403, 403),
        "annotator": (405, 200),
        "other annotator": (405, 200),
        "participant": (403, 403),
        "staff": (405, (200, 204)),
    },
    "api-assignment-heartbeat": {
        "anonymous": (403, 403),
        "annotator": (405, 200),
        "other annotator": (405, 404),
        "participant": (403, 403),
        "staff": (405, 404),
    },
    "api-assignment-skip": {
        "anonymous": (403, 403),
        "annotator": (405, None),
        "other annotator": (405, 404),
        "participant": (403, 403),
        "staff": (405, 404),
    },
    "api-assignment-judgment": {
        "anonymous": (403, 403),
        "annotator": (405, 400),
        "other annotator": (405, 400),
        "participant": (403, 403),
        "staff": (405, 400),
    },
    "api-stats-agreement": {
        "anonymous": (403, 403),
        "annotator": (403, 403),
        "other annotator": (403, 403),
        "participant": (403, 403),
        "staff": (404, 202),
    },
    "api-import-create": {
        "anonymous": (403, 403),
        "annotator": (403, 403),
        "other annotator": (403, 403),
        "participant": (403, 403),
        "staff": (405, 400),
    },
    "api-job-detail": {
        "anonymous": (403, 403),
        "annotator": (403, 403),
        "other annotator": (403, 403),
        "participant": (403, 403),
        "staff": (200, 405),
    },
    # JSON only: the test client's empty POST is multipart, 415 for staff
    "api-job-create": {
        "anonymous": (403, 403),
        "annotator": (403, 403),
        "other annotator": (403, 403),
        "participant": (403, 403),
        "staff": (405, 415),
    },
    "api-pipeline-create": {
        "anonymous": (403, 403),
        "annotator": (403, 403),
        "other annotator": (403, 403),
        "participant": (403, 403),
        "staff": (405, 415),
    },
    # the campaign link: the participant comes back to their campaign; annotators and staff are not in it; an
    # anonymous visit without the participant id is told what is missing
    "annotate:campaign": {
        "anonymous": (400, 400),
        "annotator": (403, 403),
        "other annotator": (403, 403),
        "participant": (302, 302),
        "staff": (403, 403),
    },
    "annotate:campaign_guidelines": {
        "anonymous": ("login", "login"),
        "annotator": (403, 403),
        "other annotator": (403, 403),
        "participant": (200, 302),
        "staff": (403, 403),
    },
    # someone else's lease: refused, the refusal a message on the next page
    "annotate:undo": {
        "anonymous": ("login", "login"),
        "annotator": (405, 302),
        "other annotator": (405, 302),
        "participant": (405, 302),
        "staff": (405, 302),
    },
    "api-pipeline-detail": {
        "anonymous": (403, 403),
        "annotator": (403, 403),
        "other annotator": (403, 403),
        "participant": (403, 403),
        "staff": (200, 405),
    },
}


def _patterns(patterns=None, prefix="", namespace=None):
    """(route, name) of every URL pattern, admin included."""
    for pattern in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(pattern, URLResolver):
            yield from _patterns(pattern.url_patterns, prefix + str(pattern.pattern), pattern.namespace or namespace)
        else:
            name = pattern.name or pattern.callback.__name__
            yield prefix + str(pattern.pattern), f"{namespace}:{name}" if namespace else name


def _concrete(route: str, world) -> str:
    values = {
        "assignment_id": world.lease_a.pk,
        "video_id": world.lease_a.pair.video_a_id,
        "pk": world.job.pk,
        "job_id": world.job.pk,
        "pipeline_id": world.pipeline.pk,
        "slug": world.campaign.slug,
        "campaign_id": world.campaign.pk,
        "user_id": world.a.pk,
        "id": world.a.pk,
        "kind": "import",
        "object_id": 1,
        "content_type_id": 1,
        "name": "log.txt",
    }
    path = re.sub(r"\^\(\?P<app_label>[^)]*\)/\$", "annotate/", route)  # the admin's app index
    path = path.replace("(?P<url>.*)$", "no-such-page/")  # the admin's catch-all
    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]), path)
    return "/" + path


def _client(world, role: str) -> Client:
    client = Client()
    user = {
        "annotator": world.a,
        "other annotator": world.b,
        "participant": world.participant,
        "staff": world.staff,
    }.get(role)
    if user is not None:
        client.force_login(user)
    return client


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def _matches(response, expected, login_url: str) -> bool:
    if expected == "login":
        return response.status_code == 302 and response["Location"].startswith(login_url)
    if expected == "admin index":
        return response.status_code == 302 and response["Location"] == "/admin/"
    return response.status_code in (expected if isinstance(expected, tuple) else (expected,))


def test_every_url_as_every_role(world, monkeypatch):
    from celery import current_app

    from workers.models import Job, Pipeline

    monkeypatch.setattr(current_app, "send_task", lambda *args, **kwargs: None)  # the stats recompute
    world.pipeline = Pipeline.objects.create(status=Pipeline.Status.SUCCEEDED, is_active=False, stage="generate")
    Job.objects.filter(pk=world.job.pk).update(pipeline=world.pipeline)
    routes = sorted(set(_patterns()))
    unknown = [name for route, name in routes if not name.startswith("admin:") and name not in EXPECTED]
    assert not unknown, f"URL patterns without an expectation in this test: {unknown}; add a row to EXPECTED"
    wrong, seen_by_annotators = [], []
    clients = {role: _client(world, role) for role in ROLES}
    for route, name in routes:
        url = _concrete(route, world)
        for role in ROLES:
            for method, index in (("get", 0), ("post", 1)):
                if name.startswith("admin:"):
                    if role == "staff":
                        if method == "post":
                            continue
                        # reachable: the index and every list 200, the rest anything but an error (403 where
                        # a model takes no additions, the autocomplete without its parameters)
                        exact = name == "admin:index" or name.endswith("_changelist")
                        expected = 200 if exact else tuple(code for code in range(200, 500) if code != 401)
                    elif name == "admin:login":
                        expected = 200
                    elif name == "admin:logout":
                        expected = "admin index"  # which sends them on to the admin login
                    else:
                        expected = "login"  # every admin page sends a non-staff visitor to the admin login
                else:
                    expected = EXPECTED[name][role][index]
                if expected is None:
                    continue
                response = getattr(clients[role], method)(url)
                if name.endswith("logout"):
                    clients[role] = _client(world, role)
                if not _matches(response, expected, ADMIN_LOGIN if name.startswith("admin:") else LOGIN):
                    wrong.append(
                        f"{method.upper()} {url} ({name}) as {role}: {response.status_code}, expected {expected}"
                    )
                if role in JUDGES:
                    seen_by_annotators.append((role, url, response, _body(response)))
    assert not wrong, "\n".join(wrong)
    for role, url, response, body in seen_by_annotators:
        text = body.decode("utf-8", "replace") + str(response.headers)
        for secret in GENERATOR_MARKERS:
            assert secret not in text, f"{url} shows a generator name to {role}"
        if role in ("annotator", "participant"):
            assert OTHERS_COMMENT not in text and OTHERS_PROMPT not in text, f"{url} shows another annotator's work"


def test_annotator_media_only_within_the_current_lease(world):
    """Judged, skipped and other people's pairs are out of reach; the current lease's both videos are in."""
    from annotate.services.assignment import assignment_skip

    a = _client(world, "annotator")
    current = world.lease_a.pair
    for video_id in (current.video_a_id, current.video_b_id):
        assert a.get(f"/media/videos/{video_id}/").status_code == 200
        assert a.get(f"/media/posters/{video_id}/").status_code == 200
    for pair in (world.judged_by_a, world.judged_by_b, world.lease_b.pair, world.lease_c.pair):
        for video_id in (pair.video_a_id, pair.video_b_id):
            assert a.get(f"/media/videos/{video_id}/").status_code == 404, f"video {video_id} of pair {pair.pk}"
            assert a.get(f"/media/posters/{video_id}/").status_code == 404
    assignment_skip(assignment_id=world.lease_a.pk, annotator=world.a)
    assert a.get(f"/media/videos/{current.video_a_id}/").status_code == 404
    assert a.get("/media/videos/999999/").status_code == 404


def test_a_missing_media_file_is_404_not_500(world):
    import os

    os.remove(world.lease_a.pair.video_a.file.path)
    response = _client(world, "annotator").get(f"/media/videos/{world.lease_a.pair.video_a_id}/")
    assert response.status_code == 404


def test_nobody_acts_on_another_annotators_lease(world):
    """A valid judgment, skip or heartbeat on someone else's lease is refused and changes nothing."""
    from rest_framework.test import APIClient

    from annotate.models import Assignment, Judgment

    lease = world.lease_a
    body = {"vq": "left", "mq": "left", "ta": "left"}
    other = _client(world, "other annotator")
    page = other.post(f"/assignments/{lease.pk}/judge/", body, follow=True)
    assert page.status_code == 200 and f"assignment {lease.pk} is not yours" in page.content.decode()
    other.post(f"/assignments/{lease.pk}/skip/", {"reason": "x"})
    api = APIClient()
    api.force_authenticate(world.b)
    for action in ("judgment", "skip", "heartbeat"):
        answer = api.post(f"/api/v1/assignments/{lease.pk}/{action}/", body, format="json")
        assert answer.status_code == 404 and "not yours" in answer.json()["detail"]
    lease.refresh_from_db()
    assert lease.state == Assignment.State.ACTIVE
    assert not Judgment.objects.filter(assignment=lease).exists()


def test_history_and_api_show_only_ones_own_judgments(world):
    from rest_framework.test import APIClient

    page = _client(world, "annotator").get("/history/").content.decode()
    assert "a prompt that annotator a judged" in page and OTHERS_PROMPT not in page and OTHERS_COMMENT not in page
    api = APIClient()
    api.force_authenticate(world.a)
    lease = api.post("/api/v1/assignments/next/").json()
    assert lease["id"] == world.lease_a.pk
    assert not any(secret in str(lease) for secret in GENERATOR_MARKERS)


@pytest.mark.parametrize(
    "path",
    [
        "/admin/",
        "/admin/annotate/judgment/",
        "/admin/annotate/video/",
        "/admin/annotate/agreementreport/",
        "/api/v1/stats/agreement/",
    ],
)
@pytest.mark.parametrize("role", ["annotator", "participant"])
def test_annotators_never_reach_staff_pages(world, path, role):
    response = _client(world, role).get(path)
    assert response.status_code in (302, 403)
    assert OTHERS_COMMENT.encode() not in response.content


def test_participants_see_no_other_participant_and_no_campaign_report(world, client):
    """Another participant's id appears nowhere a participant can reach: not on their pages, not in the report
    (staff only)."""
    from annotate.services.campaigns import participant_enter

    participant_enter(world.campaign, {"PROLIFIC_PID": "OTHER-PARTICIPANT-7"})
    own = _client(world, "participant")
    for path in ("/", "/history/", "/guidelines/", f"/c/{world.campaign.slug}/guidelines/"):
        response = own.get(path, follow=True)
        assert response.status_code == 200 and b"OTHER-PARTICIPANT-7" not in response.content, path
    for path in (
        f"/admin/annotate/campaign/{world.campaign.pk}/report/",
        f"/admin/annotate/campaign/{world.campaign.pk}/report.csv",
        "/admin/annotate/campaignmember/",
    ):
        response = own.get(path)
        assert response.status_code == 302 and response["Location"].startswith(ADMIN_LOGIN), path


def test_api_clients_fetch_their_leases_media_with_their_token(world):
    """The API hands out media URLs; a token-only client can fetch its own lease's, and nothing else."""
    from annotate.services.accounts import annotator_create

    token_a = annotator_create(username=world.a.username, password="unused").token
    client = Client(HTTP_AUTHORIZATION=f"Token {token_a}")
    assert client.get(f"/media/videos/{world.lease_a.pair.video_a_id}/", HTTP_RANGE="bytes=0-7").status_code == 206
    assert client.get(f"/media/videos/{world.lease_b.pair.video_a_id}/").status_code == 404
    assert (
        Client(HTTP_AUTHORIZATION="Token not-a-token")
        .get(f"/media/videos/{world.lease_a.pair.video_a_id}/")
        .status_code
        == 302
    )
