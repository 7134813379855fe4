"""CSRF on every form, secure cookies and HSTS in production mode, login throttling, upload size limits,
no path traversal in storage names or uploaded manifests."""

import json
import re
import subprocess
import sys
import textwrap

import pytest
from django.core.exceptions import SuspiciousFileOperation
from django.test import Client

from tests.conftest import ROOT, child_env

JUDGMENT = {"vq": "left", "mq": "tie", "ta": "right"}


def test_every_post_form_in_the_templates_carries_a_csrf_token():
    forms = []
    for template in (ROOT / "templates").rglob("*.html"):
        for form in re.findall(r"<form\b[^>]*>.*?</form>", template.read_text(), flags=re.S | re.I):
            if re.search(r"method=[\"']post", form, flags=re.I):
                forms.append((template.name, "{% csrf_token %}" in form))
    assert len(forms) >= 8
    assert all(has_token for _, has_token in forms), [name for name, has_token in forms if not has_token]


def test_posts_without_the_csrf_token_are_refused(db, make_user, make_pairs):
    from annotate.services.assignment import assignment_next

    make_pairs(1)
    annotator, staff = make_user(), make_user(staff=True)
    lease = assignment_next(annotator=annotator)
    strict = Client(enforce_csrf_checks=True)
    assert strict.post("/login/", {"username": annotator.username, "password": "pw-for-tests-1"}).status_code == 403
    strict.force_login(annotator)
    for url, body in (
        (f"/assignments/{lease.pk}/judge/", JUDGMENT),
        (f"/assignments/{lease.pk}/skip/", {}),
        (f"/assignments/{lease.pk}/heartbeat/", {}),
        ("/logout/", {}),
        ("/api/v1/assignments/next/", {}),
    ):  # the API with a session cookie is CSRF-checked too
        assert strict.post(url, body).status_code == 403, url
    strict.force_login(staff)
    for url in (
        "/admin/annotate/agreementreport/recompute/",
        "/admin/workers/job/import/",
        "/admin/annotate/prompt/add/",
    ):
        assert strict.post(url, {}).status_code == 403, url
    # the page's own token makes the same post work
    strict.force_login(annotator)
    page = strict.get("/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    accepted = strict.post(f"/assignments/{lease.pk}/judge/", {**JUDGMENT, "csrfmiddlewaretoken": token})
    assert accepted.status_code == 302


def test_production_mode_sets_secure_cookies_hsts_and_redirects_to_https(db, make_user):
    code = textwrap.dedent(
        """
        import json, django
        django.setup()
        from django.conf import settings
        from django.test import Client
        client = Client()
        plain = client.get("/login/", HTTP_HOST="vidpref.example.com")
        secure = client.get("/login/", HTTP_HOST="vidpref.example.com", HTTP_X_FORWARDED_PROTO="https")
        cookie = secure.cookies["csrftoken"]
        print(json.dumps({
            "plain": [plain.status_code, plain.get("Location", "")],
            "secure": secure.status_code, "hsts": secure.get("Strict-Transport-Security", ""),
            "csrf_cookie_secure": bool(cookie["secure"]), "session_cookie_secure": settings.SESSION_COOKIE_SECURE,
            "session_cookie_httponly": settings.SESSION_COOKIE_HTTPONLY, "debug": settings.DEBUG,
            "nosniff": secure.get("X-Content-Type-Options"), "frame": secure.get("X-Frame-Options"),
        }))
        """
    )
    env = child_env(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        DEBUG="false",
        SECRET_KEY="x" * 20 + "a-long-random-production-secret-key-0123456789",
        ALLOWED_HOSTS="vidpref.example.com",
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert facts["plain"] == [301, "https://vidpref.example.com/login/"]
    assert facts["secure"] == 200
    assert facts["hsts"] == "max-age=31536000; includeSubDomains; preload"
    assert facts["csrf_cookie_secure"] and facts["session_cookie_secure"] and facts["session_cookie_httponly"]
    assert facts["debug"] is False and facts["nosniff"] == "nosniff" and facts["frame"] == "DENY"


@pytest.mark.parametrize("login_url", ["/login/", "/admin/login/"])
def test_repeated_wrong_passwords_lock_the_login(db, make_user, settings, login_url):
    user = make_user(staff=True)
    client = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert client.post(login_url, {"username": user.username, "password": "wrong"}).status_code == 200
    locked = client.post(login_url, {"username": user.username, "password": "wrong"})
    assert locked.status_code == 429 and b"too many login attempts" in locked.content.lower()
    # the right password does not get in while locked…
    assert client.post(login_url, {"username": user.username, "password": "pw-for-tests-1"}).status_code == 429
    assert "_auth_user_id" not in client.session
    # …but the same person from elsewhere, and other people, still can
    elsewhere = Client(REMOTE_ADDR="198.51.100.9")
    assert elsewhere.post(login_url, {"username": user.username, "password": "pw-for-tests-1"}).status_code == 302
    other = make_user(staff=True)
    assert client.post(login_url, {"username": other.username, "password": "pw-for-tests-1"}).status_code == 302


def test_oversized_requests_are_refused_before_they_are_read(db, make_user, settings, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from rest_framework.test import APIClient

    from workers.models import Job

    settings.MAX_REQUEST_BYTES = 64 * 1024
    settings.JOB_ROOT = tmp_path / "jobs"
    api = APIClient()
    api.force_authenticate(make_user(staff=True))
    big = SimpleUploadedFile("big.mp4", b"\x00" * (128 * 1024), content_type="video/mp4")
    manifest = SimpleUploadedFile("m.jsonl", b'{"prompt": "p", "video_a": "big.mp4", "video_b": "big.mp4"}\n')
    refused = api.post("/api/v1/imports/", {"manifest": manifest, "videos": [big]}, format="multipart")
    assert refused.status_code == 413 and "at most 0.1 MB" in refused.json()["detail"]
    assert not Job.objects.exists() and not (tmp_path / "jobs").exists()
    # form posts above DATA_UPLOAD_MAX_MEMORY_SIZE (files aside) are refused too
    settings.MAX_REQUEST_BYTES = 2**30
    client = Client()
    client.force_login(make_user())
    too_much = client.post("/login/", {"username": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)})
    assert too_much.status_code == 400


@pytest.mark.parametrize("name", ["../outside.mp4", "videos/../../outside.mp4", "/etc/passwd"])
def test_storage_refuses_names_that_leave_the_media_root(tmp_path, settings, name):
    from django.core.files.base import ContentFile
    from django.core.files.storage import FileSystemStorage

    storage = FileSystemStorage(location=tmp_path / "media")
    with pytest.raises(SuspiciousFileOperation):
        storage.save(name, ContentFile(b"x"))
    assert not (tmp_path / "outside.mp4").exists()


@pytest.mark.parametrize("name", ["../../../../tmp/evil.mp4", "..\\..\\evil.mp4", "/etc/cron.d/evil", ".."])
def test_uploaded_file_names_stay_in_the_jobs_folder(name):
    from workers.services.imports import upload_file_name

    try:
        safe = upload_file_name(name)
    except ValueError:
        return
    assert "/" not in safe and "\\" not in safe and safe not in {".", ".."}


def test_an_uploaded_manifest_cannot_name_files_outside_its_folder(db, tmp_path, settings):
    from annotate.services.ingest import pairs_import
    from tests.conftest import render_clip

    settings.MEDIA_ROOT = tmp_path / "media"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    render_clip(outside / "secret.mp4")
    upload = tmp_path / "upload"
    upload.mkdir()
    render_clip(upload / "a.mp4", source="smptebars")
    (upload / "link.mp4").symlink_to(outside / "secret.mp4")
    rows = [
        {"prompt": "absolute", "video_a": "a.mp4", "video_b": str(outside / "secret.mp4")},
        {"prompt": "dot-dot", "video_a": "a.mp4", "video_b": "../elsewhere/secret.mp4"},
        {"prompt": "symlink", "video_a": "a.mp4", "video_b": "link.mp4"},
    ]
    (upload / "m.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    report = pairs_import(manifest=upload / "m.jsonl", confine_to_media_root=True)
    assert report.pairs_created == 0
    assert [error.line for error in report.skipped] == [1, 2, 3]
    assert all("outside the import's folder" in error.reason for error in report.skipped)


def test_the_upload_import_task_confines_its_manifest(db, tmp_path, settings, make_user):
    from annotate.models import Pair
    from tests.conftest import render_clip
    from workers.models import Job
    from workers.tasks.media import import_pairs

    settings.MEDIA_ROOT = tmp_path / "media"
    render_clip(tmp_path / "secret.mp4")
    upload = tmp_path / "upload"
    upload.mkdir()
    render_clip(upload / "a.mp4", source="smptebars")
    (upload / "m.jsonl").write_text(
        json.dumps({"prompt": "p", "video_a": "a.mp4", "video_b": str(tmp_path / "secret.mp4")}) + "\n"
    )
    job = Job.objects.create(
        kind=Job.Kind.IMPORT, params={"manifest": str(upload / "m.jsonl"), "media_root": str(upload)}
    )
    import_pairs(job.pk)
    assert not Pair.objects.exists()
