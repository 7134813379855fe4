"""The htmx pages over the same services as the API."""

from annotate.models import Assignment, Judgment


def _login(client, make_user):
    user = make_user()
    client.force_login(user)
    return user


def test_page_shows_a_lease_without_generator_names(client, make_user, make_pairs):
    make_pairs(2)
    user = _login(client, make_user)
    page = client.get("/")
    assert page.status_code == 200
    lease = Assignment.objects.get(annotator=user)
    html = page.content.decode()
    assert f'data-assignment="{lease.pk}"' in html and lease.pair.prompt.text in html
    assert "generator" not in html.lower()


def test_htmx_judge_returns_the_next_fragment(client, make_user, make_pairs):
    make_pairs(2)
    user = _login(client, make_user)
    client.get("/")
    lease = Assignment.objects.get(annotator=user)
    response = client.post(
        f"/assignments/{lease.pk}/judge/", {"vq": "left", "mq": "tie", "ta": "right"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="workspace"') and "<html" not in html
    assert Judgment.objects.get(assignment=lease).mq == "TIE"
    assert Assignment.objects.filter(annotator=user, state="active").exclude(pk=lease.pk).exists()


def test_incomplete_form_is_422_and_stores_nothing(client, make_user, make_pairs):
    make_pairs(1)
    user = _login(client, make_user)
    client.get("/")
    lease = Assignment.objects.get(annotator=user)
    response = client.post(f"/assignments/{lease.pk}/judge/", {"vq": "left"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 422 and "Choose left, tie or right" in response.content.decode()
    assert not Judgment.objects.exists()


def test_plain_post_redirects_and_refusals_are_shown(client, make_user, make_pairs):
    make_pairs(2)
    user = _login(client, make_user)
    client.get("/")
    lease = Assignment.objects.get(annotator=user)
    assert client.post(f"/assignments/{lease.pk}/skip/", {"reason": "other"}).status_code == 302
    again = client.post(
        f"/assignments/{lease.pk}/judge/", {"vq": "left", "mq": "left", "ta": "left"}, HTTP_HX_REQUEST="true"
    )
    assert "was skipped" in again.content.decode()


def test_history_guidelines_and_admin_boundary(client, make_user):
    _login(client, make_user)
    assert client.get("/history/").status_code == 200
    assert "Visual quality" in client.get("/guidelines/").content.decode()
    assert client.get("/admin/").status_code == 302  # annotators are not staff
    client.logout()
    assert client.get("/").status_code == 302
