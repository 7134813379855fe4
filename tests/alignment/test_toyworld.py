"""The toy world: prompts, rendering, oracle scores, MP4 round trips, simulated annotators, pairs, CLI.

Its validation tables (oracle against defects, annotators against the oracle) are studies: tests/studies."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from alignment.toyworld import (
    ANNOTATOR_PROFILES,
    COLOURS,
    DEFECTS_BY_DIMENSION,
    DIMENSIONS,
    LABELS,
    DefectSpec,
    SimulatedAnnotator,
    ToyPrompt,
    all_prompts,
    export_pairs,
    make_annotator_pool,
    make_pairs,
    oracle_labels,
    oracle_scores,
    read_mp4,
    render_clip,
    score_clip,
    write_mp4,
)
from alignment.toyworld.__main__ import main
from alignment.toyworld.render import background_gradient

ALL_KINDS = [kind for dim in DIMENSIONS for kind in DEFECTS_BY_DIMENSION[dim]]


# --- prompts ---------------------------------------------------------------------------------------


def test_grammar_has_at_least_48_distinct_prompts_in_a_fixed_order():
    prompts = all_prompts()
    texts = [str(p) for p in prompts]
    assert len(set(texts)) == len(texts) >= 48
    assert prompts == all_prompts()
    assert texts[0] == "a red square moving left slowly"


def test_parse_and_format_are_inverse_for_every_prompt():
    for prompt in all_prompts():
        assert ToyPrompt.parse(str(prompt)) == prompt
    assert ToyPrompt.parse("  A Blue  Circle moving UP quickly ") == ToyPrompt("blue", "circle", "up", "quickly")


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("a purple square moving left slowly", "colour 'purple'"),
        ("a red square sliding left", "not a toy-world prompt"),
    ],
)
def test_parse_names_what_is_wrong(text, complaint):
    with pytest.raises(ValueError, match=complaint):
        ToyPrompt.parse(text)


# --- rendering -------------------------------------------------------------------------------------


def test_render_is_deterministic_uint8_and_sized_as_asked():
    prompt = ToyPrompt.parse("a green triangle moving down quickly")
    clip = render_clip(prompt, DefectSpec(noise=0.5, jitter=0.5), seed=3)
    assert clip.shape == (9, 32, 32, 3) and clip.dtype == np.uint8
    assert np.array_equal(clip, render_clip(prompt, DefectSpec(noise=0.5, jitter=0.5), seed=3))
    assert not np.array_equal(clip, render_clip(prompt, DefectSpec(noise=0.5, jitter=0.5), seed=4))
    assert render_clip(prompt, size=16, frames=5).shape == (5, 16, 16, 3)
    assert render_clip(prompt, size=(24, 40)).shape == (9, 24, 40, 3)


def test_crisp_rendering_uses_only_background_and_shape_colours():
    prompt = ToyPrompt.parse("a red circle moving left slowly")
    crisp = render_clip(prompt, anti_alias=False).astype(int)
    smooth = render_clip(prompt).astype(int)
    background = np.rint(background_gradient(32, 32)).astype(int)
    is_background = (crisp == background).all(-1)
    assert ((crisp == COLOURS["red"]).all(-1) | is_background).all()
    mixed = ~(smooth == background).all(-1) & ~(smooth == COLOURS["red"]).all(-1)
    assert mixed.any()  # anti-aliased edges blend the two


@pytest.mark.parametrize("direction", ["left", "right", "up", "down"])
def test_the_shape_travels_the_prompted_way(direction):
    prompt = ToyPrompt("yellow", "square", direction, "quickly")
    clip = render_clip(prompt, seed=1).astype(int)
    on_shape = (clip == COLOURS["yellow"]).all(-1)  # (T, H, W)
    ys, xs = np.indices(on_shape.shape[1:])
    first, last = on_shape[0], on_shape[-1]
    moved = np.array([(xs[last].mean() - xs[first].mean()), (ys[last].mean() - ys[first].mean())])
    np.testing.assert_allclose(moved / 32, np.array(prompt.direction_vector) * 0.44, atol=0.03)


def test_defect_strengths_are_validated_and_one_strength_changes_only_its_defect():
    with pytest.raises(ValueError, match="blur has strength 1.5"):
        DefectSpec(blur=1.5)
    prompt = ToyPrompt.parse("a cyan square moving right slowly")
    clean = render_clip(prompt, seed=7).astype(int)
    frozen = render_clip(prompt, DefectSpec(freeze=1.0), seed=7).astype(int)
    held = [t for t in range(1, 9) if np.array_equal(frozen[t], frozen[t - 1])]
    assert len(held) == 6 and np.array_equal(frozen[-1], clean[-1])
    recoloured = render_clip(prompt, DefectSpec(wrong_colour=1.0), seed=7)
    assert not (recoloured.astype(int) == COLOURS["cyan"]).all(-1).any()


def test_random_defects_pick_at_most_one_kind_per_dimension():
    rng = np.random.default_rng(0)
    specs = [DefectSpec.random(rng) for _ in range(400)]
    for spec in specs:
        for dim in DIMENSIONS:
            assert sum(getattr(spec, kind) > 0 for kind in DEFECTS_BY_DIMENSION[dim]) <= 1
    clean_share = np.mean([spec.severity("vq") == 0 for spec in specs])
    assert 0.18 < clean_share < 0.32  # p_clean = 0.25
    assert {spec.generator_name() for spec in specs} >= {"toy-noise", "toy-wrong-shape", "toy-freeze"}


# --- oracle ----------------------------------------------------------------------------------------


def test_clean_clips_score_near_one():
    prompts = all_prompts()[::9]
    scores = oracle_scores(np.stack([render_clip(p, seed=i) for i, p in enumerate(prompts)]), prompts)
    assert scores.vq.min() > 0.9 and scores.mq.min() > 0.95 and scores.ta.min() > 0.95


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_each_oracle_falls_with_its_own_defect_on_average(kind):
    own = next(dim for dim in DIMENSIONS if kind in DEFECTS_BY_DIMENSION[dim])
    prompts = [all_prompts()[(7 * seed) % 144] for seed in range(12)]
    means = []
    for strength in (0.0, 0.25, 0.5, 0.75, 1.0):
        clips = np.stack([render_clip(p, DefectSpec(**{kind: strength}), seed) for seed, p in enumerate(prompts)])
        means.append(getattr(oracle_scores(clips, prompts), own).mean())
    assert all(later < earlier for earlier, later in itertools.pairwise(means)), means
    assert means[-1] < 0.7 * means[0]


def _measured(defects: DefectSpec, prompts=None) -> dict[str, np.ndarray]:
    prompts = prompts or all_prompts()[::7]
    scores = oracle_scores(np.stack([render_clip(p, defects, seed) for seed, p in enumerate(prompts)]), prompts)
    return {"vq": scores.vq, "mq": scores.mq, "ta": scores.ta, **scores.measurements}


def test_measurements_recover_the_physical_defects():
    for strength in (0.25, 0.5, 1.0):
        noise_sigma = _measured(DefectSpec(noise=strength))["noise_sigma"].mean()
        assert noise_sigma == pytest.approx(32 * strength, rel=0.08)
        blur_sigma = _measured(DefectSpec(blur=strength))["blur_sigma"].mean()
        assert strength < 0.5 or blur_sigma == pytest.approx(0.06 * 32 * strength, rel=0.2)
    assert _measured(DefectSpec(freeze=1.0))["held_fraction"] == pytest.approx(6 / 8)
    jitter_jerk = _measured(DefectSpec(jitter=0.5))["jerk_px"].mean()
    assert jitter_jerk == pytest.approx(np.sqrt(12) * 0.03 * 32 * 0.5, rel=0.2)  # √(2 axes · 6) · σ
    assert _measured(DefectSpec(banding=1.0))["banding_rms"].mean() > 10 > _measured(DefectSpec())["banding_rms"].max()
    slow, quick = ToyPrompt.parse("a red circle moving up slowly"), ToyPrompt.parse("a red circle moving up quickly")
    assert _measured(DefectSpec(), [slow] * 4)["travel"] == pytest.approx(0.24, abs=0.01)
    assert _measured(DefectSpec(), [quick] * 4)["travel"] == pytest.approx(0.44, abs=0.01)
    for strength in (0.25, 0.5, 1.0):
        cosine = _measured(DefectSpec(wrong_direction=strength))["direction_cos"]
        np.testing.assert_allclose(cosine, np.cos(strength * np.pi), atol=0.03)


def test_scores_follow_the_documented_formulas():
    rng = np.random.default_rng(5)
    prompts = all_prompts()[::11]
    clips = np.stack([render_clip(p, DefectSpec.random(rng), i) for i, p in enumerate(prompts)])
    scores = oracle_scores(clips, prompts)
    m = scores.measurements
    vq = np.exp(-(m["noise_sigma"] / 16 + np.maximum(0, m["banding_rms"] - 0.3) / 4 + m["blur_sigma"] / 32 / 0.02))
    mq = np.exp(-(np.maximum(0, m["jerk_px"] - 0.3) / (0.03 * 32) + m["held_fraction"] / 0.25))
    colour = np.exp(-((m["colour_angle_deg"] / 25) ** 2))
    np.testing.assert_allclose(scores.vq, vq, rtol=1e-5)
    np.testing.assert_allclose(scores.mq, mq, rtol=1e-5)
    np.testing.assert_allclose(m["colour_match"], colour, rtol=1e-4)
    np.testing.assert_allclose(scores.ta, (m["colour_match"] + m["shape_match"] + m["motion_match"]) / 3, rtol=1e-6)


def test_vq_and_mq_ignore_the_prompt_and_ta_catches_each_mismatch():
    clip = render_clip("a blue circle moving up slowly", seed=2)
    right = score_clip(clip, "a blue circle moving up slowly")
    for wrong in (
        "a cyan circle moving up slowly",
        "a blue square moving up slowly",
        "a blue circle moving down slowly",
        "a blue circle moving up quickly",
    ):
        scores = score_clip(clip, wrong)
        assert scores["vq"] == right["vq"] and scores["mq"] == right["mq"]
        assert scores["ta"] < right["ta"] - 0.1, wrong


def test_oracle_scores_hundreds_of_clips_per_second():
    rng = np.random.default_rng(0)
    prompts = [all_prompts()[i % 144] for i in range(256)]
    clips = np.stack([render_clip(p, DefectSpec.random(rng), i) for i, p in enumerate(prompts)])
    started = time.perf_counter()
    scores = oracle_scores(clips, prompts)
    assert time.perf_counter() - started < 5.0  # measured ≈ 0.25 s on two cores
    assert len(scores) == 256 and np.isfinite(scores.as_array()).all()


def test_oracle_rejects_malformed_input():
    with pytest.raises(ValueError, match="one prompt per clip"):
        oracle_scores(np.zeros((2, 9, 32, 32, 3), np.uint8), ["a red square moving left slowly"])
    with pytest.raises(ValueError, match=r"\(N, T, H, W, 3\)"):
        oracle_scores(np.zeros((9, 32, 32, 3), np.uint8), ["a red square moving left slowly"])


# --- MP4 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size, factor", [(32, 2), (16, 4)])
def test_mp4_round_trip_keeps_frames_size_and_pixels(tmp_path, size, factor):
    clip = render_clip("a magenta triangle moving right quickly", DefectSpec(jitter=0.3), seed=5, size=size)
    path = write_mp4(clip, tmp_path / "clip.mp4", fps=8)
    enlarged = read_mp4(path)
    assert enlarged.shape == (9, size * factor, size * factor, 3) and enlarged.dtype == np.uint8
    back = read_mp4(path, size=size)
    assert back.shape == clip.shape
    assert np.abs(back.astype(int) - clip).mean() < 3.0
    assert not list(tmp_path.glob(".*partial"))


def test_mp4_round_trip_keeps_the_oracle_ordering(tmp_path):
    prompt = ToyPrompt.parse("a red square moving left quickly")
    worse = {"vq": DefectSpec(noise=0.5), "mq": DefectSpec(jitter=0.6), "ta": DefectSpec(wrong_shape=0.8)}
    for dim, defects in worse.items():
        for seed in range(3):
            good, bad = render_clip(prompt, seed=seed), render_clip(prompt, defects, seed=seed)
            decoded = [
                read_mp4(write_mp4(c, tmp_path / f"{dim}{seed}{i}.mp4"), size=32) for i, c in enumerate((good, bad))
            ]
            before = oracle_scores(np.stack([good, bad]), [prompt] * 2)
            after = oracle_scores(np.stack(decoded), [prompt] * 2)
            assert getattr(before, dim)[0] > getattr(before, dim)[1] + 0.2
            assert getattr(after, dim)[0] > getattr(after, dim)[1] + 0.2, (dim, seed)


def test_read_mp4_names_a_file_that_is_not_a_video(tmp_path):
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("not a video")
    with pytest.raises(ValueError, match="notes.mp4"):
        read_mp4(bogus)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_mp4(tmp_path / "missing.mp4")


# --- simulated annotators --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deltas():
    return np.random.default_rng(0).uniform(-1, 1, size=60_000)


@pytest.mark.parametrize("kind", ["careful", "noisy"])
def test_annotators_agree_with_the_oracle_at_their_configured_rate(kind, deltas):
    profile = ANNOTATOR_PROFILES[kind]
    codes = SimulatedAnnotator(kind, profile).judge_codes(deltas, np.random.default_rng(1))
    clear = np.abs(np.abs(deltas) - profile.tie_band) > profile.clear_margin()
    agreement = (codes == oracle_labels(deltas, profile.tie_band))[clear].mean()
    assert abs(agreement - profile.agreement) < 0.01


def test_spammer_is_at_chance(deltas):
    profile = ANNOTATOR_PROFILES["spammer"]
    codes = SimulatedAnnotator("s", profile).judge_codes(deltas, np.random.default_rng(2))
    truth = oracle_labels(deltas, profile.tie_band)
    assert abs((codes == truth).mean() - 1 / 3) < 0.01  # over the three labels
    decisive = (codes != 0) & (truth != 0)
    assert abs((codes == truth)[decisive].mean() - 1 / 2) < 0.01  # ignoring ties
    assert all(abs((codes == c).mean() - 1 / 3) < 0.01 for c in (-1, 0, 1))


def test_left_biased_annotator_picks_left_at_its_rate(deltas):
    profile = ANNOTATOR_PROFILES["left_biased"]
    codes = SimulatedAnnotator("l", profile).judge_codes(deltas, np.random.default_rng(3))
    clearly_right = deltas < -(profile.tie_band + profile.clear_margin())
    expected = profile.left_bias + (1 - profile.left_bias) * profile.lapse / 3
    assert abs((codes[clearly_right] == 1).mean() - expected) < 0.015
    careful = SimulatedAnnotator("c", ANNOTATOR_PROFILES["careful"]).judge_codes(deltas, np.random.default_rng(3))
    assert (codes == 1).mean() > (careful == 1).mean() + 0.25


def test_judge_answers_every_dimension_in_screen_terms():
    annotator = SimulatedAnnotator("careful", ANNOTATOR_PROFILES["careful"])
    rng = np.random.default_rng(0)
    answers = [
        annotator.judge({"vq": 0.9, "mq": 0.5, "ta": 0.1}, {"vq": 0.1, "mq": 0.5, "ta": 0.9}, rng) for _ in range(300)
    ]
    assert all(set(a) == set(DIMENSIONS) and set(a.values()) <= set(LABELS) for a in answers)
    for dim, expected in (("vq", "left"), ("mq", "tie"), ("ta", "right")):
        assert np.mean([a[dim] == expected for a in answers]) > 0.85


def test_annotator_pool_follows_the_mix_exactly():
    pool = make_annotator_pool(10)
    kinds = [a.kind for a in pool]
    assert (kinds.count("careful"), kinds.count("noisy"), kinds.count("spammer"), kinds.count("left_biased")) == (
        5,
        3,
        1,
        1,
    )
    assert len({a.name for a in pool}) == 10
    assert [a.kind for a in make_annotator_pool(3, mix={"spammer": 1, "careful": 2})] == [
        "spammer",
        "careful",
        "careful",
    ]
    with pytest.raises(ValueError, match="unknown annotator kinds"):
        make_annotator_pool(3, mix={"lazy": 1})


# --- pairs, export and the command line ------------------------------------------------------------


@pytest.fixture(scope="module")
def pairs():
    return make_pairs(48, 4, seed=0)


def test_make_pairs_gives_distinct_prompts_and_independent_defects(pairs):
    assert len(pairs) == 192 and len({p.prompt for p in pairs}) == 48
    assert all(p.a.pixels.shape == (9, 32, 32, 3) and set(p.a.scores) == set(DIMENSIONS) for p in pairs)
    again = make_pairs(48, 4, seed=0)
    assert all(np.array_equal(x.b.pixels, y.b.pixels) for x, y in zip(pairs, again, strict=True))
    differences = np.array([[p.a.scores[d] - p.b.scores[d] for d in DIMENSIONS] for p in pairs])
    assert (np.abs(differences) > 0.2).mean(axis=0).min() > 0.2  # every dimension varies across pairs
    assert abs(np.corrcoef(differences.T)[np.triu_indices(3, 1)]).max() < 0.25  # …independently


def test_policy_vs_base_pairs_put_the_better_generator_on_either_side():
    pairs = make_pairs(24, 4, seed=1, policy_p_clean=1.0)  # the policy leaves every dimension clean
    clean = np.array([[pair.a.defects.dominant() is None, pair.b.defects.dominant() is None] for pair in pairs])
    assert clean.any(axis=1).all()
    policy_left = clean[:, 0] & ~clean[:, 1]
    policy_right = clean[:, 1] & ~clean[:, 0]
    assert 0.3 < policy_left.mean() < 0.7 and policy_left.sum() + policy_right.sum() > 0.9 * len(pairs)
    margin = np.array([[pair.a.scores[d] - pair.b.scores[d] for d in DIMENSIONS] for pair in pairs])
    policy_margin = np.concatenate([margin[policy_left], -margin[policy_right]])  # the policy's score minus the base's
    wins, losses = (policy_margin > 0).sum(axis=0), (policy_margin < 0).sum(axis=0)
    assert (wins > 4 * losses).all()  # a base clip ties a dimension it leaves clean, and a faint defect can lose
    # The two-seed pool draws as it did before policy pairs existed (render seeds recorded then), so earlier
    # studies' pools render again: each seed follows the clip's defect draws from the same generator.
    two_seeds = make_pairs(3, 1, seed=1, size=16, frames=5)
    assert [clip.seed for pair in two_seeds for clip in (pair.a, pair.b)] == [
        733998580,
        1638806044,
        1803208955,
        674597404,
        1970729116,
        1685957828,
    ]
    with pytest.raises(ValueError, match="policy_p_clean=1.5"):
        make_pairs(2, 1, policy_p_clean=1.5)


def test_export_writes_mp4s_and_a_manifest_the_importer_can_read(tmp_path, pairs):
    progress = []
    manifest = export_pairs(pairs[:5], tmp_path / "out", on_progress=lambda done, total: progress.append((done, total)))
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert manifest == tmp_path / "out" / "manifest.jsonl" and len(rows) == 5
    assert progress[-1] == (10, 10)
    for row, pair in zip(rows, pairs[:5], strict=True):
        assert set(row) == {"prompt", "video_a", "video_b", "generator_a", "generator_b"}
        assert row["prompt"] == str(pair.prompt) and row["generator_a"] == pair.a.generator
        for side in ("video_a", "video_b"):
            assert not row[side].startswith("/") and (manifest.parent / row[side]).stat().st_size > 0
    oracle_rows = [json.loads(line) for line in (manifest.parent / "oracle.jsonl").read_text().splitlines()]
    assert len(oracle_rows) == 10 and oracle_rows[0]["vq"] == pytest.approx(pairs[0].a.scores["vq"])


def test_cli_render_writes_pairs_and_a_summary(tmp_path, capsys):
    assert main(["render", "--out", str(tmp_path), "--prompts", "2", "--pairs-per-prompt", "2", "--size", "16"]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("wrote 4 pairs (8 videos") and str(tmp_path / "manifest.jsonl") in summary
    assert len((tmp_path / "manifest.jsonl").read_text().splitlines()) == 4
    assert (
        main(
            [
                "score",
                "--prompt",
                "a red square moving left slowly",
                str(tmp_path / "videos" / "00000_a.mp4"),
                "--size",
                "16",
            ]
        )
        == 0
    )
    assert "vq=" in capsys.readouterr().out


def test_cli_reports_bad_input_without_a_traceback(capsys):
    assert main(["render", "--out", "/tmp/unused-toyworld", "--prompts", "500"]) == 1
    assert "the toy grammar has 144 prompts" in capsys.readouterr().err


def test_module_entry_point_and_import_hygiene():
    help_text = subprocess.run(
        [sys.executable, "-m", "alignment.toyworld", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "render" in help_text and "score" in help_text
    assert "oracle-table" not in help_text and "annotator-table" not in help_text  # studies: python -m studies
    forbidden = "{'torch', 'django', 'celery', 'annotate', 'workers'}"
    probe = f"import sys, alignment.toyworld; print(sorted({forbidden} & set(sys.modules)))"
    leaked = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert leaked == "[]"
