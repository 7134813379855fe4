"""Annotation under load: gunicorn + PostgreSQL, concurrent clients looping next → submit over HTTP.

Prints judgments/s, p50/p99 latency, and the next-pair query's p50 with 10k pairs vs 1M pairs in the
database as a ratio (the 10k figure is the baseline measured in the same run). Results also go to
bench/results/annotate_load.json. Uses its own database (vidpref_bench) on the configured server.

    .venv/bin/python bench/annotate_load.py --clients 64 --seconds 30 --big 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scale import percentile, setup_database  # noqa: E402


def run(cmd: list[str], env: dict) -> None:
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)


def seed_pairs(env: dict, count: int, start: int) -> None:
    """Insert ``count`` pairs (with their prompts and videos) straight in SQL."""
    sql = f"""
    INSERT INTO annotate_prompt (id, text, text_sha256, source, created_at)
      SELECT g, 'bench prompt ' || g, md5(g::text) || md5((g+1)::text), 'bench', now()
      FROM generate_series({start}, {start + count - 1}) g;
    INSERT INTO annotate_video (id, prompt_id, file, poster, sha256, generator, origin, generation_params, status, error, created_at, fps)
      SELECT g, (g + 1) / 2, 'videos/bench-' || g || '.mp4', '', md5(g::text) || md5((g*7)::text), 'bench', 'imported', '{{}}', 'ready', '', now(), 24
      FROM generate_series({2 * start - 1}, {2 * (start + count - 1)}) g;
    INSERT INTO annotate_pair (id, prompt_id, video_a_id, video_b_id, overlap, priority, status, is_gold, filled, judgment_count, created_at, campaign_id, gold_reason)
      SELECT g, g, 2 * g - 1, 2 * g, 3, 0, 'open', false, 0, 0, now(), %(campaign)s, ''
      FROM generate_series({start}, {start + count - 1}) g;
    SELECT setval(pg_get_serial_sequence('annotate_prompt', 'id'), {start + count});
    SELECT setval(pg_get_serial_sequence('annotate_video', 'id'), {2 * (start + count)});
    SELECT setval(pg_get_serial_sequence('annotate_pair', 'id'), {start + count});
    ANALYZE;
    """
    run(
        [
            sys.executable,
            "-c",
            "import django;django.setup();from django.db import connection;"
            "from annotate.models import default_campaign_pk;"
            f"connection.cursor().execute({sql!r}, {{'campaign': default_campaign_pk()}})",
        ],
        env,
    )


def make_tokens(env: dict, n: int) -> list[str]:
    code = (
        "import django,json;django.setup();from annotate.services.accounts import annotator_create;"
        f"print(json.dumps([annotator_create(username=f'bench{{i}}', password='x').token for i in range({n})]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def next_pair_p50(env: dict, samples: int) -> float:
    """p50 of assignment_next for fresh annotators (each call takes a new lease), in ms, in-process."""
    code = f"""
import django, json, time, uuid
django.setup()
from django.contrib.auth import get_user_model
from annotate.services.assignment import assignment_next
users = [get_user_model().objects.create_user(username='probe-' + uuid.uuid4().hex[:10]) for _ in range({samples})]
times = []
for user in users:
    t = time.perf_counter(); lease = assignment_next(annotator=user); times.append((time.perf_counter() - t) * 1000)
    assert lease is not None
times.sort()
print(json.dumps(times[len(times) // 2]))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def load(base: str, tokens: list[str], seconds: float) -> dict:
    import requests

    latencies: list[float] = []
    judgments = [0]
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    choices = ["left", "right", "tie"]

    def client(token: str) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"
        rng = random.Random(token)
        mine, done = [], 0
        while time.monotonic() < stop_at:
            t = time.perf_counter()
            r = session.post(f"{base}/api/v1/assignments/next/")
            mine.append(time.perf_counter() - t)
            if r.status_code == 204:
                break
            if r.status_code != 200:
                errors.append(f"next {r.status_code}")
                continue
            lease = r.json()["id"]
            body = {dim: rng.choice(choices) for dim in ("vq", "mq", "ta")}
            t = time.perf_counter()
            r = session.post(f"{base}/api/v1/assignments/{lease}/judgment/", json=body)
            mine.append(time.perf_counter() - t)
            if r.status_code != 201:
                errors.append(f"judgment {r.status_code}")
            else:
                done += 1
        with lock:
            latencies.extend(mine)
            judgments[0] += done

    threads = [threading.Thread(target=client, args=(token,)) for token in tokens]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    return {
        "judgments": judgments[0],
        "seconds": elapsed,
        "judgments_per_s": judgments[0] / elapsed,
        "requests": len(latencies),
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--small", type=int, default=10_000, help="pairs for the baseline and the load test")
    parser.add_argument("--big", type=int, default=1_000_000, help="pairs for the scaling comparison")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--samples", type=int, default=200, help="next-pair calls per size")
    args = parser.parse_args()

    url = setup_database("vidpref_bench")
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DEBUG": "false",
        "VIDPREF_GOLD_RATE": "0",
        "LOG_LEVEL": "WARNING",
    }
    run([sys.executable, "manage.py", "migrate", "-v0"], env)
    print(f"seeding {args.small:,} pairs …", flush=True)
    seed_pairs(env, args.small, start=1)
    small_p50 = next_pair_p50(env, args.samples)
    print(f"next-pair p50 with {args.small:,} pairs: {small_p50:.2f} ms", flush=True)

    tokens = make_tokens(env, args.clients)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi",
            "-b",
            f"127.0.0.1:{args.port}",
            "--workers",
            str(args.workers),
            "--threads",
            "1",
            "--log-level",
            "warning",
            "--backlog",
            "2048",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        import requests

        for _ in range(100):
            try:
                if requests.get(f"http://127.0.0.1:{args.port}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        print(
            f"load: {args.clients} clients for {args.seconds:.0f} s against gunicorn ({args.workers} workers) …",
            flush=True,
        )
        result = load(f"http://127.0.0.1:{args.port}", tokens, args.seconds)
    finally:
        server.terminate()
        server.wait()
    print(
        f"  {result['judgments_per_s']:.0f} judgments/s, p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
        f"{result['errors']} errors",
        flush=True,
    )

    print(f"seeding up to {args.big:,} pairs …", flush=True)
    seed_pairs(env, args.big - args.small, start=args.small + 1)
    big_p50 = next_pair_p50(env, args.samples)
    ratio = big_p50 / small_p50
    print(
        f"next-pair p50 with {args.big:,} pairs: {big_p50:.2f} ms; ratio {args.big // 1000}k/{args.small // 1000}k = {ratio:.2f}"
    )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "load": result,
        "next_pair_p50_ms": {str(args.small): small_p50, str(args.big): big_p50},
        "ratio": ratio,
        "clients": args.clients,
        "workers": args.workers,
    }
    (out / "annotate_load.json").write_text(json.dumps(summary, indent=2))
    print(
        f"annotate_load: {result['judgments_per_s']:.0f} judgments/s, p99 {result['p99_ms']:.0f} ms, "
        f"next-pair 1M/10k ratio {ratio:.2f}"
    )


if __name__ == "__main__":
    main()
