"""A small world for the reliability tests: two annotators, a member of staff, a campaign participant, leases,
judgments, files."""

from types import SimpleNamespace

import pytest

GENERATOR_MARKERS = ("GENERATOR-SECRET-ALPHA", "GENERATOR-SECRET-BETA")
OTHERS_COMMENT = "COMMENT-OF-ANOTHER-ANNOTATOR"
OTHERS_PROMPT = "PROMPT-ONLY-FOR-ANOTHER-ANNOTATOR"


@pytest.fixture
def world(db, make_user, tmp_path, settings):
    """Annotator ``a`` holds an active lease and has judged one pair; annotator ``b`` holds another lease and
    judged a pair with a comment; ``staff`` is a superuser; every video has a (tiny) file and a poster."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from annotate.models import Assignment, Pair, Prompt, Video
    from annotate.services.assignment import ScreenLabels, assignment_next, judgment_submit
    from workers.models import Job

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.VIDPREF = {**settings.VIDPREF, "GOLD_RATE": 0.0}

    def pair(text: str, tag: str) -> Pair:
        prompt = Prompt.objects.create(text=text)
        videos = []
        for side, generator in zip("ab", GENERATOR_MARKERS):
            file = default_storage.save(
                f"videos/{tag}-{side}.mp4", ContentFile(b"\x00\x00\x00\x18ftypmp42 video bytes")
            )
            poster = default_storage.save(f"posters/{tag}-{side}.jpg", ContentFile(b"\xff\xd8\xff poster bytes"))
            videos.append(
                Video.objects.create(
                    prompt=prompt,
                    file=file,
                    poster=poster,
                    sha256=f"{tag}{side}".ljust(64, "0"),
                    generator=generator,
                    width=64,
                    height=48,
                    fps=12,
                    num_frames=12,
                )
            )
        return Pair.objects.create(prompt=prompt, video_a=videos[0], video_b=videos[1], overlap=1)

    a, b, c = make_user("annotator-a"), make_user("annotator-b"), make_user("annotator-c")
    staff = make_user("staff-member", staff=True)
    staff.is_superuser = True
    staff.save(update_fields=["is_superuser"])

    judged_by_a = pair("a prompt that annotator a judged", "ja")
    judged_by_b = pair(OTHERS_PROMPT + " (judged)", "jb")
    lease_of_b_pair = pair(OTHERS_PROMPT + " (leased)", "lb")
    lease_of_a_pair = pair("a prompt in annotator a's current lease", "la")
    lease_of_c_pair = pair("a prompt in annotator c's lease", "lc")

    def take(user, wanted: Pair) -> Assignment:
        # Every other open pair is full for a moment, so the next pair is the one wanted.
        Pair.objects.exclude(pk=wanted.pk).filter(status="open").update(status="retired")
        lease = assignment_next(annotator=user)
        Pair.objects.filter(status="retired").update(status="open")
        assert lease is not None and lease.pair_id == wanted.pk
        return lease

    labels = ScreenLabels(vq="left", mq="tie", ta="right")
    judgment_submit(assignment_id=take(a, judged_by_a).pk, annotator=a, labels=labels)
    judgment_submit(assignment_id=take(b, judged_by_b).pk, annotator=b, labels=labels, comment=OTHERS_COMMENT)
    lease_b = take(b, lease_of_b_pair)
    lease_a = take(a, lease_of_a_pair)
    lease_c = take(c, lease_of_c_pair)
    job = Job.objects.create(kind=Job.Kind.IMPORT, params={"manifest": "x.csv"}, created_by=staff)
    # an external participant of a campaign of its own (no pairs): they arrived by its link
    from annotate.models import Campaign
    from annotate.services.campaigns import participant_enter

    campaign = Campaign.objects.create(name="Crowd", slug="crowd", external_link=True)
    participant = participant_enter(campaign, {"PROLIFIC_PID": "PARTICIPANT-1"}).user
    return SimpleNamespace(
        campaign=campaign,
        participant=participant,
        a=a,
        b=b,
        c=c,
        staff=staff,
        lease_a=lease_a,
        lease_b=lease_b,
        lease_c=lease_c,
        judged_by_a=judged_by_a,
        judged_by_b=judged_by_b,
        job=job,
    )
