"""Pair.generator_a/b follow their videos' generator on every path that writes pairs or renames a generator (database
triggers, migration 0004): the statistics rank generators from the pairs alone."""

from django.db import connection

from annotate.models import Pair, Prompt, Video


def videos(tag: str, *generators: str) -> list[Video]:
    prompt = Prompt.objects.create(text=f"prompt {tag}", text_sha256=tag.ljust(64, "0"))
    return Video.objects.bulk_create(
        [
            Video(prompt=prompt, file=f"videos/{tag}-{i}.mp4", sha256=f"{tag}{i}".ljust(64, "0"), generator=name)
            for i, name in enumerate(generators)
        ]
    )


def test_a_pair_made_by_the_orm_bulk_create_or_raw_sql_carries_its_videos_generators(db):
    a, b, c, d, e, f = videos("make", "gen-a", "gen-b", "gen-c", "gen-d", "", "gen-f")
    one = Pair.objects.create(prompt=a.prompt, video_a=a, video_b=b)
    assert (one.generator_a, one.generator_b) == ("gen-a", "gen-b")  # read back from the insert
    (two,) = Pair.objects.bulk_create([Pair(prompt=c.prompt, video_a=c, video_b=d)])
    assert (two.generator_a, two.generator_b) == ("gen-c", "gen-d")
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO annotate_pair (prompt_id, video_a_id, video_b_id, overlap, priority, status, is_gold, filled,"
            " judgment_count, created_at, campaign_id, gold_reason) SELECT %s, %s, %s, 3, 0, 'open', false, 0, 0,"
            " now(), (SELECT id FROM annotate_campaign WHERE slug = 'default'), '' RETURNING id",
            [e.prompt_id, e.pk, f.pk],
        )
        raw = Pair.objects.get(pk=cursor.fetchone()[0])
    assert (raw.generator_a, raw.generator_b) == ("", "gen-f")  # an unnamed generator stays empty


def test_renaming_a_generator_or_swapping_a_video_reaches_the_pairs_and_only_them(db):
    a, b, c, d = videos("rename", "old", "other", "old", "kept")
    first = Pair.objects.create(prompt=a.prompt, video_a=a, video_b=b)
    second = Pair.objects.create(prompt=c.prompt, video_a=b, video_b=c)
    untouched = Pair.objects.create(prompt=d.prompt, video_a=b, video_b=d)

    Video.objects.filter(generator="old").update(generator="new")  # one statement, many videos
    first.refresh_from_db()
    second.refresh_from_db()
    untouched.refresh_from_db()
    assert (first.generator_a, first.generator_b) == ("new", "other")
    assert (second.generator_a, second.generator_b) == ("other", "new")
    assert (untouched.generator_a, untouched.generator_b) == ("other", "kept")

    b.generator = "renamed"
    b.save()  # a model's save() too
    Pair.objects.filter(pk=untouched.pk).update(video_a=a)  # the pair's video changes
    untouched.refresh_from_db()
    assert (untouched.generator_a, untouched.generator_b) == ("new", "kept")
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.generator_b == second.generator_a == "renamed"
