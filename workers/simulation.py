"""Simulated annotators (alignment.toyworld) working through the real HTTP API: next → watch → judgment.

Each one logs in like a person (a session, for the videos) and calls the API with its token; it
downloads both videos of its lease, scores them with the toy world's oracle, judges per its kind, and
submits in screen terms. Pairs whose prompt is not a toy prompt are skipped with that reason.
"""

from __future__ import annotations

import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests

from annotate.services.accounts import annotator_create


@dataclass
class SimulationReport:
    judgments: int = 0
    skipped: int = 0  # leases skipped (an annotator on a pair they cannot judge)
    by_kind: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    target: int = 0
    annotators: int = 0
    ran_out: int = 0  # annotators who found no pair left to lease
    skipped_prompts: Counter = field(default_factory=Counter)  # the prompts of the pairs skipped, with how often

    def summary(self) -> str:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.by_kind.items()))
        return f"{self.judgments} judgments ({kinds or 'none'}), {self.skipped} skipped, {len(self.errors)} errors"

    @property
    def reached(self) -> bool:
        return self.judgments >= self.target

    def shortfall(self) -> str:
        """Why the run stopped before its target ("" when it reached it): what was judged, what ran out, what
        was skipped and what failed, and what to do about it."""
        if self.reached:
            return ""
        reasons = []
        if self.ran_out:
            who = (
                f"these {self.annotators} simulated annotators"
                if self.ran_out == self.annotators
                else f"{self.ran_out} of the {self.annotators} simulated annotators"
            )
            reasons.append(
                f"no pair was left to lease for {who} (each judges a pair once, and a pair closes once "
                "it has its overlap of judgments)"
            )
        if self.skipped_prompts:
            pairs = len(self.skipped_prompts)
            example = next(iter(self.skipped_prompts))
            reasons.append(
                f"{pairs} pair{'s' if pairs != 1 else ''} skipped: not toy-world clips the simulated "
                f"annotators can judge (the prompt is not a toy prompt, e.g. {example[:80]!r})"
            )
        if self.errors:
            failed = len(self.errors)
            reasons.append(
                f"{failed} simulated annotator{'s' if failed != 1 else ''} stopped on an error "
                f"(the first: {self.errors[0][:300]})"
            )
        advice = (
            "import more toy pairs (python -m alignment.toyworld render --help, then import its "
            "manifest.jsonl), add annotators (--annotators), or ask for fewer judgments (--judgments)"
        )
        if self.errors and not self.ran_out:
            advice = "check that the server at --base-url is up and answers, then run it again"
        return (
            f"stopped at {self.judgments} of {self.target} judgments: {'; '.join(reasons) or 'no reason recorded'}."
            f" To go on: {advice}."
        )


class _Client:
    def __init__(self, base_url: str, username: str, password: str, token: str):
        self.base = base_url.rstrip("/")
        self.api = requests.Session()
        self.api.headers["Authorization"] = f"Token {token}"
        self.web = requests.Session()
        login = self.web.get(f"{self.base}/login/", timeout=30)
        login.raise_for_status()
        response = self.web.post(
            f"{self.base}/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": self.web.cookies["csrftoken"]},
            headers={"Referer": f"{self.base}/login/"},
            timeout=30,
        )
        if "sessionid" not in self.web.cookies:
            raise RuntimeError(f"{username}: could not log in at {self.base}/login/ (status {response.status_code})")

    def next(self) -> dict | None:
        response = self.api.post(f"{self.base}/api/v1/assignments/next/", timeout=30)
        if response.status_code == 204:
            return None
        response.raise_for_status()
        return response.json()

    def video(self, url: str, folder: Path, name: str) -> Path:
        path = folder / name
        response = self.web.get(url, timeout=60)
        response.raise_for_status()
        path.write_bytes(response.content)
        return path

    def judge(self, lease_id: int, labels: dict, duration_ms: int) -> None:
        response = self.api.post(
            f"{self.base}/api/v1/assignments/{lease_id}/judgment/",
            json={**labels, "duration_ms": duration_ms},
            timeout=30,
        )
        if response.status_code not in (200, 201):
            raise RuntimeError(f"judgment on assignment {lease_id}: {response.status_code} {response.text[:200]}")

    def skip(self, lease_id: int, reason: str) -> None:
        self.api.post(f"{self.base}/api/v1/assignments/{lease_id}/skip/", json={"reason": reason}, timeout=30)


def simulate_annotators(
    *,
    base_url: str,
    annotators: int,
    judgments: int,
    seed: int = 0,
    mix: dict[str, float] | None = None,
    progress: Callable[[int], None] | None = None,
) -> SimulationReport:
    """Run ``annotators`` simulated people until ``judgments`` are submitted in all, or nothing is left."""
    from alignment.toyworld import ToyPrompt, make_annotator_pool, read_mp4, score_clip

    pool = make_annotator_pool(annotators, mix=mix)
    report = SimulationReport(target=judgments, annotators=len(pool))
    lock = threading.Lock()
    claimed = [0]  # judgments promised to a thread, so the total never overshoots ``judgments``
    password = "simulated-annotator-password"
    accounts = [annotator_create(username=member.name, password=password) for member in pool]

    def work(index: int) -> None:
        member, account = pool[index], accounts[index]
        rng = np.random.default_rng(seed * 1000 + index)
        try:
            client = _Client(base_url, account.username, password, account.token)
        except (requests.RequestException, RuntimeError) as exc:
            with lock:
                report.errors.append(str(exc))
            return
        with tempfile.TemporaryDirectory(prefix="vidpref-sim-") as tmp:
            while True:
                with lock:
                    if claimed[0] >= judgments:
                        return
                    claimed[0] += 1
                try:
                    lease = client.next()
                    if lease is None:
                        with lock:
                            claimed[0] -= 1
                            report.ran_out += 1
                        return
                    try:
                        prompt = ToyPrompt.parse(lease["prompt"])
                    except ValueError:
                        client.skip(lease["id"], "not a toy prompt: a simulated annotator cannot judge it")
                        with lock:
                            report.skipped += 1
                            report.skipped_prompts[lease["prompt"]] += 1
                            claimed[0] -= 1
                        continue
                    left = read_mp4(client.video(lease["left_video_url"], Path(tmp), "left.mp4"), size=32)
                    right = read_mp4(client.video(lease["right_video_url"], Path(tmp), "right.mp4"), size=32)
                    labels = member.judge(score_clip(left, prompt), score_clip(right, prompt), rng)
                    client.judge(lease["id"], labels, duration_ms=int(rng.integers(4_000, 30_000)))
                except (requests.RequestException, RuntimeError) as exc:
                    with lock:
                        report.errors.append(f"{member.name}: {exc}")
                        claimed[0] -= 1
                    return
                with lock:
                    report.judgments += 1
                    report.by_kind[member.kind] += 1
                    if progress:
                        progress(report.judgments)

    threads = [threading.Thread(target=work, args=(i,), name=pool[i].name) for i in range(len(pool))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return report
