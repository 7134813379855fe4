import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotate.models import Judgment


@pytest.fixture
def api(make_user):
    user = make_user()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    client.user = user
    return client


def test_next_judge_and_repeat(api, make_pairs):
    make_pairs(2)
    lease = api.post("/api/v1/assignments/next/")
    assert lease.status_code == 200
    body = lease.json()
    assert set(body) >= {"id", "prompt", "left_video_url", "right_video_url", "expires_at"}
    assert "generator" not in str(body)
    payload = {"vq": "left", "mq": "tie", "ta": "right", "comment": "fine"}
    first = api.post(f"/api/v1/assignments/{body['id']}/judgment/", payload, format="json")
    assert first.status_code == 201
    assert {k: first.json()[k] for k in ("vq", "mq", "ta")} == {"vq": "left", "mq": "tie", "ta": "right"}
    again = api.post(f"/api/v1/assignments/{body['id']}/judgment/", payload, format="json")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    judgment = Judgment.objects.get()
    assert judgment.vq == ("A" if judgment.left_is_a else "B") and judgment.ta == ("B" if judgment.left_is_a else "A")


def test_nothing_left_is_204(api):
    assert api.post("/api/v1/assignments/next/").status_code == 204


def test_malformed_judgment_names_the_field(api, make_pairs):
    make_pairs(1)
    lease = api.post("/api/v1/assignments/next/").json()
    response = api.post(f"/api/v1/assignments/{lease['id']}/judgment/", {"vq": "up", "mq": "tie"}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"vq", "ta"}
    assert Judgment.objects.count() == 0


def test_heartbeat_skip_and_others_leases(api, make_pairs, make_user):
    make_pairs(2)
    lease = api.post("/api/v1/assignments/next/").json()
    assert api.post(f"/api/v1/assignments/{lease['id']}/heartbeat/").status_code == 200
    stranger = APIClient()
    stranger.force_authenticate(make_user())
    assert (
        stranger.post(
            f"/api/v1/assignments/{lease['id']}/judgment/", {"vq": "left", "mq": "left", "ta": "left"}, format="json"
        ).status_code
        == 404
    )
    assert api.post(f"/api/v1/assignments/{lease['id']}/skip/", {"reason": "blurry"}, format="json").status_code == 200
    assert (
        api.post(
            f"/api/v1/assignments/{lease['id']}/judgment/", {"vq": "left", "mq": "left", "ta": "left"}, format="json"
        ).status_code
        == 409
    )
    assert api.post("/api/v1/assignments/next/").json()["id"] != lease["id"]


def test_anonymous_is_refused(client, db):
    assert client.post("/api/v1/assignments/next/").status_code in (401, 403)


def test_openapi_schema_lists_the_endpoints(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    text = response.content.decode()
    for path in ("/api/v1/assignments/next/", "/api/v1/assignments/{assignment_id}/judgment/", "/api/v1/imports/"):
        assert path in text


def test_annotators_command_prints_tokens(db, capsys):
    from django.core.management import call_command

    call_command("annotators", "add", "ann-a", "ann-b")
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    token = lines[0].split("token: ")[1]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.post("/api/v1/assignments/next/").status_code == 204


def test_one_round_trip_per_judgment_the_answer_carries_the_next_lease(api, make_pairs, settings):
    """The judgment's answer holds the next assignment (the same object POST /assignments/next/ returns), so a
    client judges with one request each; null once nothing is left; a repeat answers the current lease."""
    from annotate.api.serializers import JudgmentOutSerializer, LeaseSerializer
    from annotate.models import Assignment

    settings.VIDPREF = {**settings.VIDPREF, "GOLD_RATE": 0.0}
    make_pairs(3)
    lease = api.post("/api/v1/assignments/next/").json()
    assert set(lease) == set(LeaseSerializer().fields)
    seen = [lease["id"]]
    payload = {"vq": "left", "mq": "right", "ta": "tie"}
    for _ in range(2):
        answer = api.post(f"/api/v1/assignments/{lease['id']}/judgment/", payload, format="json")
        assert answer.status_code == 201
        body = answer.json()
        assert set(body) == set(JudgmentOutSerializer().fields) and body["assignment"] == lease["id"]
        assert {k: body[k] for k in payload} == payload
        lease = body["next"]
        assert set(lease) == set(LeaseSerializer().fields) and lease["id"] not in seen
        assert lease["left_video_url"].startswith("http://testserver/media/videos/")
        assert lease["expires_at"].endswith("Z")
        seen.append(lease["id"])
        # the lease it names is the one POST /assignments/next/ would answer now
        assert api.post("/api/v1/assignments/next/").json() == lease
    repeat = api.post(f"/api/v1/assignments/{seen[1]}/judgment/", payload, format="json")
    assert repeat.status_code == 200 and repeat.json()["next"]["id"] == lease["id"]
    last = api.post(f"/api/v1/assignments/{lease['id']}/judgment/", payload, format="json")
    assert last.status_code == 201 and last.json()["next"] is None
    assert api.post("/api/v1/assignments/next/").status_code == 204
    assert Assignment.objects.filter(annotator=api.user, state="submitted").count() == 3


def test_a_judgment_takes_a_handful_of_statements(api, make_pairs, settings):
    """Token (with the participant flag), the submission, the membership under the person's lock, the next lease:
    four statements for a judgment and its next pair (two requests took 24 before issue 30)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.VIDPREF = {**settings.VIDPREF, "GOLD_RATE": 0.0}
    make_pairs(5)
    lease = api.post("/api/v1/assignments/next/").json()
    with CaptureQueriesContext(connection) as captured:
        answer = api.post(
            f"/api/v1/assignments/{lease['id']}/judgment/", {"vq": "left", "mq": "left", "ta": "left"}, format="json"
        )
    assert answer.status_code == 201 and answer.json()["next"] is not None
    statements = [q["sql"] for q in captured if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]
    assert len(statements) == 4, statements


def test_the_hot_statements_are_prepared_on_the_server(api, make_pairs, settings):
    """Django's default client-side binding never prepares (the parameters go inside the text); with server-side
    binding the lease and submit statements are planned once per connection, after five runs."""
    from django.db import connection

    settings.VIDPREF = {**settings.VIDPREF, "GOLD_RATE": 0.0}
    make_pairs(8)
    lease = api.post("/api/v1/assignments/next/").json()
    for _ in range(7):
        answer = api.post(f"/api/v1/assignments/{lease['id']}/judgment/", {"vq": "left", "mq": "tie", "ta": "right"})
        assert answer.status_code == 201, answer.content
        lease = answer.json()["next"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert any("WITH lease AS" in sql for sql in prepared), prepared  # the submission
    assert any("WITH current AS" in sql for sql in prepared), prepared  # the lease
