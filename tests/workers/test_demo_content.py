"""What `make demo` serves an annotator: its own judgeable pairs first, before anything the demo generates later
(pairs from the untrained tiny policy that the pipeline samples on a machine without VIDPREF_BASE_POLICY are
pure noise)."""

import numpy as np
import pytest

from alignment.data.video import write_mp4
from alignment.toyworld import ToyPrompt
from annotate.models import Pair
from annotate.services.assignment import ScreenLabels, assignment_next, judgment_submit
from annotate.services.ingest import GeneratedPair, generated_pairs_queue
from workers.demo_content import DEMO_PRIORITY, demo_pairs_load
from workers.services.generation import uncertainty_priority


def _queue_noise_pairs(folder, prompts: list[str], *, job: int) -> list[int]:
    """What the pipeline's generate stage queues with the untrained tiny policy: noise clips, at the highest
    priority generation gives (the reward model cannot tell the two apart)."""
    rng = np.random.default_rng(job)
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for index, prompt in enumerate(prompts):
        clips = [
            write_mp4(rng.integers(0, 256, (9, 32, 32, 3), dtype=np.uint8), folder / f"{job}-{index}-{side}.mp4")
            for side in "ab"
        ]
        pairs.append(
            GeneratedPair(
                prompt=prompt,
                video_a=clips[0],
                video_b=clips[1],
                generator_a=f"flow-dpo-{job}",
                generator_b="base",
                params_a={"seed": index},
                params_b={"seed": index + 1},
                priority=uncertainty_priority(0.0, 0.0),
            )
        )
    report = generated_pairs_queue(pairs=pairs, source=f"generated:job-{job}", name=f"noise (job {job})")
    assert report.pairs_created == len(prompts), report.skipped
    return list(Pair.objects.filter(batch_id=report.batch_id).values_list("pk", flat=True))


@pytest.mark.slow
def test_an_annotator_gets_every_demo_pair_before_a_generated_one(db, make_user, settings, tmp_path):
    settings.VAR_DIR = tmp_path / "var"
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.VIDPREF = {**settings.VIDPREF, "GOLD_RATE": 0.0}
    reports = demo_pairs_load()
    demo = {
        pair.pk: pair
        for pair in Pair.objects.filter(batch_id__in=[r.batch_id for r in reports]).select_related(
            "prompt", "video_a", "video_b"
        )
    }
    assert len(demo) >= 32 + 2 and all(pair.priority == DEMO_PRIORITY for pair in demo.values())
    assert DEMO_PRIORITY > uncertainty_priority(0.0, 0.0)  # above anything generation gives

    # the demo runs; the pipeline (or a Generate pairs job) queues pairs from the untrained tiny policy
    toy_prompts = [pair.prompt.text for pair in demo.values() if _is_toy(pair.prompt.text)][:3]
    generated = _queue_noise_pairs(tmp_path / "gen", toy_prompts, job=1)

    annotator = make_user("annotator1")
    served = []
    for _ in range(len(demo)):
        lease = assignment_next(annotator=annotator)
        served.append(lease.pair_id)
        judgment_submit(
            assignment_id=lease.pk, annotator=annotator, labels=ScreenLabels(vq="left", mq="tie", ta="right")
        )
    assert set(served) == set(demo), "a generated pair was served before a demo pair"
    # the toy pairs (toy-world clips of a toy prompt) come first, then the samples (or ffmpeg's test patterns)
    assert all(_is_toy(demo[pk].prompt.text) for pk in served[:32])
    # only once this annotator has judged every demo pair do the generated ones come
    assert assignment_next(annotator=annotator).pair_id in generated

    # A demo database from before this ordering (demo pairs at priority 0), where the pipeline had queued noise
    # pairs: an annotator got those first. The next `make demo` serves the demo's pairs first again.
    Pair.objects.filter(pk__in=demo).update(priority=0.0)
    assert assignment_next(annotator=make_user("before")).pair_id in generated
    again = demo_pairs_load()
    assert all(report.pairs_created == 0 for report in again)
    assert assignment_next(annotator=make_user("after")).pair_id in demo


def _is_toy(prompt: str) -> bool:
    try:
        ToyPrompt.parse(prompt)
    except ValueError:
        return False
    return True


def test_the_demo_crowd_campaign_has_qualification_pairs_with_oracle_answers(db, settings, tmp_path):
    """``make demo``'s crowd campaign: three qualification pairs whose reference answers are the oracle's (with the
    scores as the reason), nine pairs to judge, all its own; loading it again adds nothing."""
    from annotate.models import Campaign
    from workers.demo_content import DEMO_CAMPAIGN, demo_campaign_load

    settings.VAR_DIR = tmp_path / "var"
    settings.MEDIA_ROOT = tmp_path / "media"
    campaign, reports = demo_campaign_load()
    assert [report.pairs_created for report in reports] == [3, 9]
    assert campaign.slug == DEMO_CAMPAIGN and campaign.external_link and campaign.quota == 6
    qualification = list(campaign.qualification_pairs.all())
    assert len(qualification) == 3 and all(pair.is_gold and pair.gold_labels for pair in qualification)
    assert all("oracle scores" in pair.gold_reason for pair in qualification)
    assert Pair.objects.filter(campaign=campaign, is_gold=False).count() == 9
    again, reports = demo_campaign_load()
    assert again == campaign and [report.pairs_created for report in reports] == [0, 0]
    assert Campaign.objects.filter(slug=DEMO_CAMPAIGN).count() == 1
