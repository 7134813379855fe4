"""Soak: many annotators for minutes against gunicorn + PostgreSQL; nothing lost, nothing doubled, no leak.

Each client is one annotator working through the real HTTP API as the page does: next pair → a byte range
of the left video (as <video> asks) → sometimes a heartbeat, a skip, or a repeated submission (a double
click) → the judgment. Afterwards every judgment a client was told was stored (201) is looked up in the
database, and the database is checked for doubles (a pair judged twice by one person, counters that
disagree with the rows, a pair over k). The web server's memory (gunicorn master + workers, RSS) is
sampled after a warm-up and at the end.

Prints a summary and writes bench/results/soak.json. Uses its own database (vidpref_soak) on the configured
server, or --database-url as it is (already migrated; the smoke test passes the test database).

    .venv/bin/python bench/soak.py --clients 64 --duration 300
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scale import percentile, setup_database  # noqa: E402

from config.processes import WEB_KEEP_ALIVE_S  # noqa: E402

CHOICES = ("left", "right", "tie")


def django_code(env: dict, code: str) -> str:
    """Run ``code`` after django.setup() in a child with ``env``; return its last line of output."""
    out = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + code],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def seed(env: dict, *, pairs: int, clients: int, tag: str, media_root: Path) -> list[str]:
    """``pairs`` open pairs (k = 3) whose videos share one small real file, and ``clients`` annotators with
    tokens. Returns the tokens."""
    ffmpeg = shutil.which("ffmpeg") or __import__("imageio_ffmpeg").get_ffmpeg_exe()
    clip = media_root / "videos" / "soak.mp4"
    clip.parent.mkdir(parents=True, exist_ok=True)
    (media_root / "posters").mkdir(parents=True, exist_ok=True)
    if not clip.exists():
        subprocess.run(
            [
                ffmpeg,
                "-nostdin",
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=24",
                "-t",
                "4",
                "-pix_fmt",
                "yuv420p",
                "-movflags",
                "+faststart",
                str(clip),
            ],
            check=True,
        )
        subprocess.run(
            [
                ffmpeg,
                "-nostdin",
                "-v",
                "error",
                "-y",
                "-i",
                str(clip),
                "-frames:v",
                "1",
                str(media_root / "posters" / "soak.jpg"),
            ],
            check=True,
        )
    sql = f"""
    CREATE TEMP TABLE soak_base AS SELECT
      (SELECT coalesce(max(id), 0) FROM annotate_prompt) AS prompts,
      (SELECT coalesce(max(id), 0) FROM annotate_video) AS videos,
      (SELECT coalesce(max(id), 0) FROM annotate_pair) AS pairs;
    INSERT INTO annotate_prompt (id, text, text_sha256, source, created_at)
      SELECT b.prompts + g, 'soak prompt {tag} ' || g, encode(sha256(convert_to('soak {tag} ' || g, 'UTF8')), 'hex'),
             'soak', now()
      FROM soak_base b, generate_series(1, {pairs}) g;
    INSERT INTO annotate_video (id, prompt_id, file, poster, sha256, generator, origin, generation_params, status, error,
                                created_at, fps, num_frames, width, height, duration_s)
      SELECT b.videos + g, b.prompts + (g + 1) / 2, 'videos/soak.mp4', 'posters/soak.jpg',
             encode(sha256(convert_to('soak video {tag} ' || g, 'UTF8')), 'hex'), 'soak-' || (g %% 2), 'imported', '{{}}',
             'ready', '', now(), 24, 96, 320, 240, 4
      FROM soak_base b, generate_series(1, 2 * {pairs}) g;
    INSERT INTO annotate_pair (id, prompt_id, video_a_id, video_b_id, overlap, priority, status, is_gold, filled,
                               judgment_count, created_at, campaign_id, gold_reason)
      SELECT b.pairs + g, b.prompts + g, b.videos + 2 * g - 1, b.videos + 2 * g, 3, 0, 'open', false, 0, 0, now(),
             %(campaign)s, ''
      FROM soak_base b, generate_series(1, {pairs}) g;
    DROP TABLE soak_base;
    SELECT setval(pg_get_serial_sequence('annotate_prompt', 'id'), (SELECT max(id) FROM annotate_prompt));
    SELECT setval(pg_get_serial_sequence('annotate_video', 'id'), (SELECT max(id) FROM annotate_video));
    SELECT setval(pg_get_serial_sequence('annotate_pair', 'id'), (SELECT max(id) FROM annotate_pair));
    ANALYZE;
    """
    django_code(
        env,
        "from annotate.models import default_campaign_pk\nfrom bench.scale import execute_script\n"  # made if flushed
        f"execute_script({sql!r}, {{'campaign': default_campaign_pk()}})\nprint('seeded')",
    )
    code = (
        "import json\nfrom annotate.services.accounts import annotator_create\n"
        f"print(json.dumps([annotator_create(username=f'soak-{tag}-{{i}}', password='soak-pw-1').token "
        f"for i in range({clients})]))"
    )
    return json.loads(django_code(env, code))


class Results:
    def __init__(self):
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.errors: Counter = Counter()
        self.acknowledged: dict[int, int] = {}  # judgment id → assignment id, from 201 answers
        self.repeats_ok = 0
        self.skips = 0
        self.exhausted = 0


def client_loop(base: str, token: str, stop_at: float, results: Results, seed_value: int) -> None:
    import requests

    rng = random.Random(seed_value)
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    latencies: list[float] = []
    errors: Counter = Counter()
    acknowledged: dict[int, int] = {}
    repeats = skips = 0

    def call(method: str, path: str, expect: tuple[int, ...], label: str, **kwargs):
        started = time.perf_counter()
        try:
            response = session.request(method, path if path.startswith("http") else base + path, timeout=60, **kwargs)
        except requests.RequestException as exc:
            errors[f"{label}: {type(exc).__name__}"] += 1
            return None
        latencies.append(time.perf_counter() - started)
        if response.status_code not in expect:
            errors[f"{label}: HTTP {response.status_code}"] += 1
            return None
        return response

    following = None  # the next lease a judgment's answer carried (one round trip per judgment)
    while time.monotonic() < stop_at:
        if following is not None:
            lease, following = following, None
        else:
            answer = call("POST", "/api/v1/assignments/next/", (200, 204), "next")
            if answer is None:
                continue
            if answer.status_code == 204:
                with results.lock:
                    results.exhausted += 1
                break
            lease = answer.json()
        lease_id = lease["id"]
        video = call("GET", lease["left_video_url"], (206,), "video range", headers={"Range": "bytes=0-65535"})
        if video is not None:
            video.content  # noqa: B018  (read the bytes, as the player does)
        if rng.random() < 0.1:
            call("POST", f"/api/v1/assignments/{lease_id}/heartbeat/", (200,), "heartbeat")
        if rng.random() < 0.03:
            if call("POST", f"/api/v1/assignments/{lease_id}/skip/", (200,), "skip", json={"reason": "soak"}):
                skips += 1
            continue
        body = {dim: rng.choice(CHOICES) for dim in ("vq", "mq", "ta")}
        body["duration_ms"] = rng.randint(3000, 20000)
        stored = call("POST", f"/api/v1/assignments/{lease_id}/judgment/", (201,), "judgment", json=body)
        if stored is None:
            continue
        judgment_id = stored.json()["id"]
        acknowledged[judgment_id] = lease_id
        # half the time the answer's next lease is followed, else POST /next/ is asked (both paths stay in the soak)
        following = stored.json()["next"] if rng.random() < 0.5 else None
        if rng.random() < 0.05:  # a double click: the same judgment comes back, nothing new is stored
            again = call("POST", f"/api/v1/assignments/{lease_id}/judgment/", (200,), "repeat", json=body)
            if again is not None:
                if again.json()["id"] == judgment_id:
                    repeats += 1
                else:
                    errors["repeat: a different judgment"] += 1
    with results.lock:
        results.latencies.extend(latencies)
        results.errors.update(errors)
        duplicated_ids = set(results.acknowledged) & set(acknowledged)
        if duplicated_ids:
            results.errors["the same judgment id acknowledged to two clients"] += len(duplicated_ids)
        results.acknowledged.update(acknowledged)
        results.repeats_ok += repeats
        results.skips += skips


def server_rss(pid: int) -> int:
    import psutil

    master = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [master, *master.children(recursive=True)])


def verify(env: dict, tag: str, acknowledged: dict[int, int]) -> dict:
    """Compare what clients were told with what the database holds."""
    code = f"""
import json
from django.db import connection
with connection.cursor() as c:
    c.execute("SELECT j.id, j.assignment_id FROM annotate_judgment j JOIN auth_user u ON u.id = j.annotator_id "
              "WHERE u.username LIKE %s", ['soak-{tag}-%'])
    stored = dict(c.fetchall())
    c.execute("SELECT count(*) FROM (SELECT 1 FROM annotate_judgment GROUP BY pair_id, annotator_id HAVING count(*) > 1) d")
    doubled = c.fetchone()[0]
    c.execute("SELECT count(*) FROM annotate_pair p WHERE p.judgment_count <> (SELECT count(*) FROM annotate_judgment j "
              "WHERE j.pair_id = p.id) OR (NOT p.is_gold AND p.judgment_count > p.overlap) "
              "OR p.filled <> p.judgment_count + (SELECT count(*) FROM annotate_assignment a WHERE a.pair_id = p.id "
              "AND a.state = 'active')")
    inconsistent = c.fetchone()[0]
    c.execute("SELECT count(*) FROM annotate_assignment a WHERE a.state = 'submitted' AND NOT EXISTS "
              "(SELECT 1 FROM annotate_judgment j WHERE j.assignment_id = a.id)")
    submitted_without = c.fetchone()[0]
print(json.dumps({{"stored": stored, "doubled": doubled, "inconsistent": inconsistent,
                  "submitted_without": submitted_without}}))
"""
    facts = json.loads(django_code(env, code))
    stored = {int(k): v for k, v in facts["stored"].items()}
    lost = sorted(set(acknowledged) - set(stored))
    unacknowledged = sorted(set(stored) - set(acknowledged))
    return {
        "judgments_acknowledged": len(acknowledged),
        "judgments_stored": len(stored),
        "lost": len(lost),
        "lost_ids": lost[:20],
        "stored_but_not_acknowledged": len(unacknowledged),
        "duplicated": facts["doubled"],
        "pairs_with_inconsistent_counters": facts["inconsistent"],
        "submitted_leases_without_judgment": facts["submitted_without"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64, help="concurrent annotators (default 64)")
    parser.add_argument("--duration", type=float, default=300, help="seconds of load (default 300)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds before the memory baseline is taken (default: a tenth of the duration, ≤ 30)",
    )
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes (default 4)")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker (default 4)")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument(
        "--pairs", type=int, default=None, help="open pairs to seed (default: enough that nobody runs out)"
    )
    parser.add_argument(
        "--database-url", default="", help="use this (migrated) database as it is instead of creating vidpref_soak"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = parser.parse_args(argv)

    tag = f"{int(time.time())}"
    warmup = args.warmup if args.warmup is not None else min(30.0, args.duration / 10)
    url = args.database_url or setup_database("vidpref_soak")
    media_root = Path(os.environ.get("VIDPREF_VAR_DIR", ROOT / "var")) / "soak" / "media"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DEBUG": "false",
        "VIDPREF_GOLD_RATE": "0",
        "LOG_LEVEL": "WARNING",
        "MEDIA_ROOT": str(media_root),
    }
    if not args.database_url:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    pairs = args.pairs or max(2000, int(args.clients * args.duration))
    print(f"soak: seeding {pairs:,} pairs and {args.clients} annotators …", flush=True)
    tokens = seed(env, pairs=pairs, clients=args.clients, tag=tag, media_root=media_root)

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
            str(args.threads),
            "--worker-class",
            "gthread",
            "--env",  # the pool and keep-alive as config.processes.web_command serves
            f"VIDPREF_DB_POOL_MAX={args.threads}",
            "--keep-alive",
            str(WEB_KEEP_ALIVE_S),
            "--log-level",
            "warning",
            "--backlog",
            "2048",
            "--timeout",
            "120",
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{args.port}"
    results = Results()
    try:
        import requests

        for _ in range(300):
            try:
                if requests.get(f"{base}/healthz", timeout=2).status_code in (200, 503):
                    break
            except requests.RequestException:
                time.sleep(0.2)
        print(
            f"soak: {args.clients} clients for {args.duration:.0f} s against gunicorn "
            f"({args.workers} workers × {args.threads} threads) …",
            flush=True,
        )
        started = time.monotonic()
        stop_at = started + args.duration
        threads = [
            threading.Thread(target=client_loop, args=(base, token, stop_at, results, index), daemon=True)
            for index, token in enumerate(tokens)
        ]
        for thread in threads:
            thread.start()
        time.sleep(min(warmup, args.duration))
        rss_start = server_rss(server.pid)
        rss_peak = rss_start
        while any(thread.is_alive() for thread in threads):
            time.sleep(1.0)
            rss_peak = max(rss_peak, server_rss(server.pid))
        elapsed = time.monotonic() - started
        rss_end = server_rss(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)

    integrity = verify(env, tag, results.acknowledged)
    errors = sum(results.errors.values())
    summary = {
        "clients": args.clients,
        "duration_s": round(elapsed, 1),
        "workers": args.workers,
        "threads": args.threads,
        "pairs_seeded": pairs,
        "requests": len(results.latencies),
        "requests_per_s": round(len(results.latencies) / elapsed, 1),
        "judgments_per_s": round(len(results.acknowledged) / elapsed, 1),
        "p50_ms": round(percentile(results.latencies, 0.50) * 1000, 1),
        "p95_ms": round(percentile(results.latencies, 0.95) * 1000, 1),
        "p99_ms": round(percentile(results.latencies, 0.99) * 1000, 1),
        "errors": errors,
        "error_kinds": dict(results.errors.most_common(10)),
        "repeated_submissions_answered_with_the_first": results.repeats_ok,
        "skips": results.skips,
        "clients_that_ran_out_of_pairs": results.exhausted,
        **integrity,
        "server_rss_mb": {
            "after_warmup": round(rss_start / 2**20, 1),
            "end": round(rss_end / 2**20, 1),
            "peak": round(rss_peak / 2**20, 1),
        },
        "memory_growth_pct": round((rss_end - rss_start) / rss_start * 100, 2),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2))
    ok = (
        errors == 0
        and integrity["lost"] == 0
        and integrity["duplicated"] == 0
        and integrity["pairs_with_inconsistent_counters"] == 0
        and summary["memory_growth_pct"] < 10
    )
    print(
        f"soak: {summary['requests']:,} requests ({summary['requests_per_s']}/s), "
        f"{integrity['judgments_acknowledged']:,} judgments ({summary['judgments_per_s']}/s); "
        f"p50 {summary['p50_ms']} ms, p95 {summary['p95_ms']} ms, p99 {summary['p99_ms']} ms; "
        f"{errors} errors; {integrity['lost']} lost, {integrity['duplicated']} duplicated; "
        f"server memory {summary['server_rss_mb']['after_warmup']} → {summary['server_rss_mb']['end']} MB "
        f"({summary['memory_growth_pct']:+.1f} %) — {'OK' if ok else 'FAILED'}; written to {args.output}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
