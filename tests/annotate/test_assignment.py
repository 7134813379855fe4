"""Leases and judgments: the guarantees of docs/architecture.md §3, on real PostgreSQL."""

import random
import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from annotate.models import Assignment, Judgment, Pair
from annotate.services.assignment import (
    AssignmentConflict,
    AssignmentNotFound,
    ScreenLabels,
    assignment_heartbeat,
    assignment_next,
    assignment_skip,
    assignments_expire,
    judgment_submit,
)

LEFT = ScreenLabels(vq="left", mq="right", ta="tie")


def test_next_resumes_the_same_lease(make_user, make_pairs):
    make_pairs(3)
    user = make_user()
    first = assignment_next(annotator=user)
    assert assignment_next(annotator=user).pk == first.pk
    assert Pair.objects.get(pk=first.pair_id).filled == 1


def test_priority_first_then_closest_to_completion(make_user, make_pairs):
    low, high = make_pairs(1, priority=0.0)[0], make_pairs(1, priority=5.0)[0]
    near = make_pairs(1, priority=0.0)[0]
    Pair.objects.filter(pk=near.pk).update(filled=2, judgment_count=2)
    users = [make_user() for _ in range(3)]
    assert assignment_next(annotator=users[0]).pair_id == high.pk
    assert assignment_next(annotator=users[1]).pair_id == high.pk
    assert assignment_next(annotator=users[2]).pair_id == high.pk
    assert assignment_next(annotator=make_user()).pair_id == near.pk
    assert low.pk


def test_submit_maps_screen_sides_to_a_and_b(make_user, make_pairs):
    make_pairs(1)
    user = make_user()
    lease = assignment_next(annotator=user, rng=random.Random(3))
    judgment, created = judgment_submit(assignment_id=lease.pk, annotator=user, labels=LEFT)
    assert created
    expected = ("A", "B", "TIE") if lease.left_is_a else ("B", "A", "TIE")
    assert (judgment.vq, judgment.mq, judgment.ta) == expected
    assert judgment.left_is_a == lease.left_is_a


def test_double_submit_creates_one_judgment(make_user, make_pairs):
    make_pairs(1)
    user = make_user()
    lease = assignment_next(annotator=user)
    first, created_first = judgment_submit(assignment_id=lease.pk, annotator=user, labels=LEFT)
    again, created_again = judgment_submit(
        assignment_id=lease.pk, annotator=user, labels=ScreenLabels("tie", "tie", "tie")
    )
    assert created_first and not created_again and again.pk == first.pk
    assert Judgment.objects.count() == 1
    assert Pair.objects.get().judgment_count == 1


def test_someone_elses_lease_is_not_found(make_user, make_pairs):
    make_pairs(1)
    owner, other = make_user(), make_user()
    lease = assignment_next(annotator=owner)
    with pytest.raises(AssignmentNotFound):
        judgment_submit(assignment_id=lease.pk, annotator=other, labels=LEFT)


def test_pair_completes_at_k_and_is_not_offered_again(make_user, make_pairs):
    pair = make_pairs(1, overlap=2)[0]
    for _ in range(2):
        user = make_user()
        lease = assignment_next(annotator=user)
        judgment_submit(assignment_id=lease.pk, annotator=user, labels=LEFT)
    pair.refresh_from_db()
    assert pair.status == Pair.Status.COMPLETE and pair.judgment_count == 2
    assert assignment_next(annotator=make_user()) is None


def test_expired_lease_frees_its_slot(make_user, make_pairs):
    make_pairs(1, overlap=1)
    first, second = make_user(), make_user()
    lease = assignment_next(annotator=first)
    assert assignment_next(annotator=second) is None
    Assignment.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    taken = assignment_next(annotator=second)
    assert taken is not None and taken.pair_id == lease.pair_id
    lease.refresh_from_db()
    assert lease.state == Assignment.State.EXPIRED
    # the first annotator comes back late: the slot is gone, the refusal says so, nothing is over-collected
    with pytest.raises(AssignmentConflict, match="given to other annotators"):
        judgment_submit(assignment_id=lease.pk, annotator=first, labels=LEFT)
    assert Pair.objects.get().filled == 1


def test_late_submission_is_kept_when_the_slot_is_still_free(make_user, make_pairs):
    make_pairs(1, overlap=2)
    user = make_user()
    lease = assignment_next(annotator=user)
    Assignment.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert assignments_expire() == 1
    judgment, created = judgment_submit(assignment_id=lease.pk, annotator=user, labels=LEFT)
    assert created
    pair = Pair.objects.get()
    assert (pair.filled, pair.judgment_count) == (1, 1)


def test_heartbeat_extends_and_skip_gives_the_slot_back(make_user, make_pairs):
    make_pairs(1, overlap=1)
    user = make_user()
    lease = assignment_next(annotator=user)
    before = lease.expires_at
    assert assignment_heartbeat(assignment_id=lease.pk, annotator=user).expires_at >= before
    assignment_skip(assignment_id=lease.pk, annotator=user, reason="cannot judge")
    assert Pair.objects.get().filled == 0
    assert assignment_next(annotator=user) is None  # never the same pair twice
    assert assignment_next(annotator=make_user()) is not None


def test_gold_pairs_are_mixed_in(make_user, make_pairs, settings):
    settings.VIDPREF = {**settings.VIDPREF, "GOLD_RATE": 1.0}
    make_pairs(2)
    gold = make_pairs(1, is_gold=True, gold_labels={"vq": "A", "mq": "B", "ta": "TIE"})[0]
    user = make_user()
    assert assignment_next(annotator=user).pair_id == gold.pk


def test_a_gold_draw_in_a_campaign_is_the_same_one_statement_and_gold_goes_to_everyone(make_user, make_pairs, settings):
    from annotate.services.campaigns import default_campaign

    settings.VIDPREF = {**settings.VIDPREF, "GOLD_RATE": 1.0}
    regular = make_pairs(2, overlap=1)
    gold = make_pairs(2, is_gold=True, overlap=1, gold_labels={"vq": "A", "mq": "B", "ta": "TIE"})
    campaign = default_campaign()
    for person in range(3):  # more people than the gold pairs' overlap: gold has none
        user = make_user()
        seen = []
        for _ in range(3):
            with CaptureQueriesContext(connection) as queries:
                lease = assignment_next(annotator=user, campaign=campaign)
            seen.append(lease and lease.pair_id)
            if lease is None:
                break
            statements = [q for q in queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]
            assert len(statements) == 3, [q["sql"] for q in statements]  # lock, lease statement, its objects
            judgment_submit(assignment_id=lease.pk, annotator=user, labels=LEFT)
        # both gold pairs first (in either order), then a regular one (overlap 1: one each) while one is left
        assert sorted(seen[:2]) == sorted(pair.pk for pair in gold), seen
        assert seen[2] == (regular[person].pk if person < 2 else None), seen
    for pair in gold:
        pair.refresh_from_db()
        assert pair.filled == pair.judgment_count == 3 and pair.status == Pair.Status.OPEN


def test_database_refuses_over_collection_even_without_the_service(make_pairs):
    from django.db import IntegrityError, transaction

    pair = make_pairs(1, overlap=1)[0]
    with pytest.raises(IntegrityError), transaction.atomic():
        Pair.objects.filter(pk=pair.pk).update(filled=2)


def test_hot_path_query_counts(make_user, make_pairs, settings):
    from annotate.services.campaigns import default_campaign

    settings.VIDPREF = {**settings.VIDPREF, "GOLD_RATE": 0.0}
    make_pairs(50)
    campaign = default_campaign()
    user = make_user()
    with CaptureQueriesContext(connection) as fresh:
        lease = assignment_next(annotator=user, campaign=campaign)
    with CaptureQueriesContext(connection) as resumed:
        again = assignment_next(annotator=user, campaign=campaign)
    with CaptureQueriesContext(connection) as submit:
        judgment, created = judgment_submit(assignment_id=lease.pk, annotator=user, labels=LEFT)

    def statements(captured):  # savepoints are the test case's transaction wrapping, not the service's work
        return [q["sql"] for q in captured if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]

    # the per-user lock, the lease statement (current lease or pick + lock + count + lease), the lease's objects
    assert len(statements(fresh)) == 3, statements(fresh)
    assert len(statements(resumed)) == 3 and again.pk == lease.pk
    # one statement: mark the lease, count the judgment, store it
    assert len(statements(submit)) == 1, statements(submit)
    assert created and judgment.pair.is_gold is False and judgment.pair.campaign_id == campaign.pk
    lease.refresh_from_db()
    lease.pair.refresh_from_db()
    assert lease.state == "submitted" and lease.pair.judgment_count == 1 and lease.pair.filled == 1
    expected = LEFT.to_pair_labels(left_is_a=lease.left_is_a)
    assert {"vq": judgment.vq, "mq": judgment.mq, "ta": judgment.ta} == expected
    stored = Judgment.objects.get()
    assert {"vq": stored.vq, "mq": stored.mq, "ta": stored.ta} == expected and stored.left_is_a == lease.left_is_a


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("scope", ["campaign", "any campaign"])
def test_32_concurrent_annotators_never_over_collect_or_lose_a_judgment(django_user_model, scope):
    """With a campaign (the product's path: the one-statement lease) and without (the ORM path)."""
    from annotate.models import Prompt, Video
    from annotate.services.campaigns import default_campaign

    campaign = default_campaign() if scope == "campaign" else None

    overlap, n_pairs, n_users = 3, 40, 32
    prompt = Prompt.objects.create(text="concurrency")
    videos = Video.objects.bulk_create(
        [Video(prompt=prompt, file=f"v{i}.mp4", sha256=f"{i:064d}") for i in range(2 * n_pairs)]
    )
    Pair.objects.bulk_create(
        [Pair(prompt=prompt, video_a=videos[2 * i], video_b=videos[2 * i + 1], overlap=overlap) for i in range(n_pairs)]
    )
    users = [django_user_model.objects.create_user(username=f"u{i}") for i in range(n_users)]
    submitted: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    leases: list[int] = []
    lock = threading.Lock()

    def work(user, barrier, rng):
        try:
            barrier.wait()
            while True:
                lease = assignment_next(annotator=user, rng=rng, campaign=campaign)
                if lease is None:
                    break
                with lock:
                    leases.append(lease.pk)
                if rng.random() < 0.1:
                    assignment_skip(assignment_id=lease.pk, annotator=user, reason="test")
                    continue
                labels = ScreenLabels(*(rng.choice(["left", "right", "tie"]) for _ in range(3)))
                judgment, created = judgment_submit(assignment_id=lease.pk, annotator=user, labels=labels)
                again, created_again = judgment_submit(assignment_id=lease.pk, annotator=user, labels=labels)
                assert created and not created_again and again.pk == judgment.pk
                with lock:
                    submitted.append((judgment.pk, lease.pair_id))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connections.close_all()

    # An annotator who finds nothing stops, yet a slot can open again after that (another annotator skips a
    # pair this one has not seen): all of them start again until a whole round hands out no lease at all.
    rngs = {user.pk: random.Random(user.pk) for user in users}
    for _ in range(10):
        handed_out = len(leases)
        barrier = threading.Barrier(n_users)
        threads = [threading.Thread(target=work, args=(u, barrier, rngs[u.pk])) for u in users]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        if errors or len(leases) == handed_out:
            break
    assert not errors, errors[:3]
    per_pair = Counter(Judgment.objects.values_list("pair_id", flat=True))
    assert max(per_pair.values()) <= overlap
    assert Judgment.objects.count() == len(submitted)  # none lost, none duplicated
    assert set(Judgment.objects.values_list("pk", flat=True)) == {pk for pk, _ in submitted}
    pairs_by_user = Counter(Assignment.objects.values_list("annotator_id", "pair_id"))
    assert max(pairs_by_user.values()) == 1
    # with 32 annotators and 10 % skips, every pair filled up
    assert all(n == overlap for n in per_pair.values()) and len(per_pair) == n_pairs
    for pair in Pair.objects.all():
        assert pair.judgment_count == per_pair[pair.pk] == pair.filled
        assert pair.status == Pair.Status.COMPLETE


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_next_requests_from_one_annotator_takes_one_lease(django_user_model, make_pairs):
    """Eight simultaneous next-pair calls of one person (a double click, retries): one lease, one slot counted."""
    from annotate.services.campaigns import default_campaign

    campaign = default_campaign()
    make_pairs(20, overlap=3)
    user = django_user_model.objects.create_user(username="clicker")
    got, errors = [], []
    barrier = threading.Barrier(8)

    def call():
        try:
            barrier.wait()
            got.append(assignment_next(annotator=user, campaign=campaign, rng=random.Random()).pk)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    assert len(set(got)) == 1 and len(got) == 8
    assert Assignment.objects.filter(annotator=user).count() == 1
    assert sum(Pair.objects.values_list("filled", flat=True)) == 1
