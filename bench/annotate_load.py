"""Annotation under load, as docker-compose.yml serves it: gunicorn (4 workers × 4 threads, pooled connections)
+ PostgreSQL, driven by `wrk` (a compiled load generator; bench/wrk/annotators.lua makes each connection an
annotator with its own token and lease).

Phases, all in one run on one machine (the ratios compare them):

1. the next-pair query's p50 with ``--small`` pairs (the baseline of the scaling ratio);
2. ``--baseline-commit`` (optional, e.g. the commit before one round trip): its server, annotators doing
   next → judgment in two requests: the "before";
3. this tree's server, the same two requests (what one statement per step buys alone);
4. this tree's server, one request per judgment (the judgment's answer carries the next lease): the "after";
5. realistic load: ``--annotators`` people with ``--think`` seconds between requests, one request per judgment,
   arriving over the first think time, each on one kept-alive connection (a light asyncio generator: at ≈ 200
   requests/s it takes a fraction of a core, and wrk cannot open a connection without sending at once);
6. the next-pair query's p50 with ``--big`` pairs: the ratio big/small (flat is the goal).

The campaign mixes ``--gold`` gold pairs in, drawn at the product's ``VIDPREF_GOLD_RATE`` (5 %), as a real one does.
Each load phase prints judgments/s, p50/p99 latency and the **server's CPU per judgment** (ms of CPU summed over
gunicorn's and PostgreSQL's processes: the figure that does not depend on the generator, which shares the
cores). Results also go to bench/results/annotate_load.json. Uses its own database (vidpref_bench).

    .venv/bin/python bench/annotate_load.py --baseline-commit 770409f
    .venv/bin/python bench/annotate_load.py --clients 64 --seconds 30 --annotators 2000 --think 5 15
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scale import setup_database  # noqa: E402

from config.processes import WEB_KEEP_ALIVE_S  # noqa: E402

LUA = ROOT / "bench" / "wrk" / "annotators.lua"


def run(cmd: list[str], env: dict) -> None:
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)


def django_child(code: str, env: dict):
    """Run ``code`` (after django.setup()) in a child; the JSON it prints last."""
    script = "import django, json\ndjango.setup()\n" + code
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def seed_pairs(env: dict, count: int, start: int) -> None:
    """Insert ``count`` pairs (with their prompts and videos) straight in SQL, in the default campaign."""
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
    django_child(
        "from annotate.models import default_campaign_pk\nfrom bench.scale import execute_script\n"
        f"execute_script({sql!r}, {{'campaign': default_campaign_pk()}})\nprint('null')",
        env,
    )


def make_gold(env: dict, count: int) -> None:
    """Make the first ``count`` pairs gold (known answers), as a campaign mixes them in. The bench's annotators
    answer at random, so the campaign's gold floor is off: they are checked on every gold answer but, unlike real
    spammers, never paused."""
    django_child(
        "from annotate.models import Campaign, Pair\n"
        f"Pair.objects.filter(pk__lte={count}).update(is_gold=True, gold_labels={{'vq': 'A', 'mq': 'B', 'ta': 'TIE'}})\n"
        "Campaign.objects.filter(slug='default').update(gold_floor=0)\n"
        "print('null')",
        env,
    )


def make_tokens(env: dict, prefix: str, n: int) -> list[str]:
    """``n`` annotator accounts with API tokens, made in bulk (no password hashing: they use tokens only)."""
    return django_child(
        f"""
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from rest_framework.authtoken.models import Token
User = get_user_model()
unusable = make_password(None)
users = User.objects.bulk_create([User(username=f"{prefix}{{i}}", password=unusable) for i in range({n})])
tokens = Token.objects.bulk_create([Token(user=u, key=Token.generate_key()) for u in users])
print(json.dumps([t.key for t in tokens]))
""",
        env,
    )


def next_pair_p50(env: dict, samples: int) -> float:
    """p50 of the product's next-pair call (the default campaign, no gold draw) for fresh annotators (each call
    takes a new lease), in ms, in-process."""
    return django_child(
        f"""
import time, uuid
from django.contrib.auth import get_user_model
from annotate.services.assignment import assignment_next
from annotate.services.campaigns import default_campaign
campaign = default_campaign()
users = [get_user_model().objects.create_user(username='probe-' + uuid.uuid4().hex[:10]) for _ in range({samples})]
times = []
for user in users:
    t = time.perf_counter(); lease = assignment_next(annotator=user, campaign=campaign, gold=False)
    times.append((time.perf_counter() - t) * 1000)
    assert lease is not None
times.sort()
print(json.dumps(times[len(times) // 2]))
""",
        env,
    )


def _cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user + system, with reaped children's) of these processes and their live children."""
    import psutil

    total, seen = 0.0, set()
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            family = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for p in family:
            if p.pid in seen:
                continue
            seen.add(p.pid)
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system + t.children_user + t.children_system
    return total


def postmaster_pid(env: dict) -> int:
    """The PostgreSQL server's main process (the parent of a backend, asked while that backend lives)."""
    return django_child(
        "import psutil\nfrom django.db import connection\nc = connection.cursor(); c.execute('SELECT pg_backend_pid()')\n"
        "print(json.dumps(psutil.Process(c.fetchone()[0]).ppid()))",
        env,
    )


class Server:
    """gunicorn serving ``root`` (this tree, or a baseline commit's worktree) on ``port``."""

    def __init__(self, root: Path, env: dict, port: int, workers: int, threads: int):
        import requests

        command = [sys.executable, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{port}"]
        command += ["--workers", str(workers), "--threads", str(threads), "--env", f"VIDPREF_DB_POOL_MAX={threads}"]
        command += ["--keep-alive", str(WEB_KEEP_ALIVE_S), "--log-level", "warning", "--backlog", "4096"]
        quiet = "ignore:No directory at"  # whitenoise: the bench serves no static files
        self.process = subprocess.Popen(
            command, cwd=root, env={**env, "PYTHONPATH": str(root), "PYTHONWARNINGS": quiet}
        )
        self.base = f"http://127.0.0.1:{port}"
        for _ in range(150):
            try:
                if requests.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"gunicorn in {root} did not answer /healthz")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def wrk(
    server: Server,
    pg_pid: int,
    tokens: list[str],
    *,
    mode: str,
    connections: int,
    seconds: float,
) -> dict:
    """Drive ``server`` with wrk: one annotator per connection (and per wrk thread). Adds judgments/s and the
    server's CPU ms per judgment to the script's own figures."""
    with tempfile.NamedTemporaryFile("w", suffix=".tokens", delete=False) as f:
        f.write("\n".join(tokens[:connections]) + "\n")
    env = {**os.environ, "VIDPREF_TOKENS": f.name, "VIDPREF_MODE": mode}

    command = ["wrk", "-t", str(connections), "-c", str(connections), "-d", f"{seconds:.0f}s", "--timeout", "10s"]
    command += ["-s", str(LUA), server.base]
    web_cpu, db_cpu = _cpu_seconds([server.process.pid]), _cpu_seconds([pg_pid])
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    web_cpu, db_cpu = _cpu_seconds([server.process.pid]) - web_cpu, _cpu_seconds([pg_pid]) - db_cpu
    cpu = web_cpu + db_cpu
    os.unlink(f.name)
    line = next((x for x in out.stdout.splitlines() if x.startswith("VIDPREF_RESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no result:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    result = json.loads(line.split(" ", 1)[1])
    judgments = max(1, result["judgments"])
    result.update(
        mode=mode,
        connections=connections,
        judgments_per_s=result["judgments"] / result["duration_s"],
        requests_per_s=result["requests"] / result["duration_s"],
        server_cpu_s=cpu,
        server_cpu_ms_per_judgment=1000 * cpu / judgments,
        gunicorn_cpu_ms_per_judgment=1000 * web_cpu / judgments,
        postgres_cpu_ms_per_judgment=1000 * db_cpu / judgments,
    )
    return result


async def _annotator(host, port, token, think, stop_at, rng, latencies, counts):
    """One person: connects when they start (as a browser does), then judges with one request each on a kept-alive
    connection, thinking between requests. HTTP/1.1 by hand: the generator must stay light next to the server."""
    import asyncio

    await asyncio.sleep(rng.uniform(0, think[1]))  # people arrive over the first think time, not all at once
    reader, writer = await asyncio.open_connection(host, port)
    head = f"Host: {host}:{port}\r\nAuthorization: Token {token}\r\nContent-Type: application/json\r\n"
    lease = None
    try:
        while time.monotonic() < stop_at:
            if lease is None:
                request = f"POST /api/v1/assignments/next/ HTTP/1.1\r\n{head}Content-Length: 0\r\n\r\n"
            else:
                body = json.dumps({d: rng.choice(("left", "right", "tie")) for d in ("vq", "mq", "ta")})
                request = (
                    f"POST /api/v1/assignments/{lease}/judgment/ HTTP/1.1\r\n{head}"
                    f"Content-Length: {len(body)}\r\n\r\n{body}"
                )
            started = time.perf_counter()
            writer.write(request.encode())
            status_line = await reader.readline()
            length = 0
            while (header := await reader.readline()) not in (b"\r\n", b""):
                if header.lower().startswith(b"content-length:"):
                    length = int(header.split(b":")[1])
            payload = await reader.readexactly(length) if length else b""
            latencies.append((started, time.perf_counter() - started))
            code = int(status_line.split()[1]) if status_line else 0
            judged = lease is not None
            if code == 201 and judged:
                counts["judgments"] += 1
            elif code not in (200, 201, 204):
                counts["errors"] += 1
            data = json.loads(payload) if payload and code in (200, 201) else None
            lease = (data.get("next") or {}).get("id") if judged and data else (data or {}).get("id")
            await asyncio.sleep(rng.uniform(*think))
    finally:
        writer.close()


def realistic(server: Server, pg_pid: int, tokens: list[str], *, think: tuple[float, float], seconds: float) -> dict:
    """``len(tokens)`` people, each thinking ``think`` seconds between judgments, for ``seconds``; latency p50/p99
    and the server's CPU per judgment (the generator's own CPU is reported too)."""
    import asyncio
    import random
    import resource

    from scale import percentile

    latencies: list[float] = []
    counts = {"judgments": 0, "errors": 0}
    host, port = server.base.removeprefix("http://").split(":")

    async def everyone():
        stop_at = time.monotonic() + seconds
        await asyncio.gather(
            *(
                _annotator(host, int(port), t, think, stop_at, random.Random(i), latencies, counts)
                for i, t in enumerate(tokens)
            )
        )

    web_cpu, db_cpu = _cpu_seconds([server.process.pid]), _cpu_seconds([pg_pid])
    own = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    arrived = time.perf_counter() + think[1]  # everyone has made a first request by then (they join the campaign)
    asyncio.run(everyone())
    elapsed = time.monotonic() - started
    web_cpu, db_cpu = _cpu_seconds([server.process.pid]) - web_cpu, _cpu_seconds([pg_pid]) - db_cpu
    mine = resource.getrusage(resource.RUSAGE_SELF)
    generator_cpu = (mine.ru_utime - own.ru_utime) + (mine.ru_stime - own.ru_stime)
    judgments = max(1, counts["judgments"])
    steady = [latency for at, latency in latencies if at >= arrived]
    latencies = [latency for _, latency in latencies]
    return {
        "annotators": len(tokens),
        "think_s": list(think),
        "judgments": counts["judgments"],
        "requests": len(latencies),
        "duration_s": elapsed,
        "judgments_per_s": counts["judgments"] / elapsed,
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * percentile(latencies, 0.5),
        "p90_ms": 1000 * percentile(latencies, 0.9),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "max_ms": 1000 * max(latencies, default=0.0),
        # after the arrivals: every person has joined (a first request makes their membership), the steady state
        "steady_requests": len(steady),
        "steady_p50_ms": 1000 * percentile(steady, 0.5),
        "steady_p99_ms": 1000 * percentile(steady, 0.99),
        "socket_errors": 0,
        "timeouts": 0,
        "non_2xx": counts["errors"],
        "refused": 0,
        "server_cpu_ms_per_judgment": 1000 * (web_cpu + db_cpu) / judgments,
        "gunicorn_cpu_ms_per_judgment": 1000 * web_cpu / judgments,
        "postgres_cpu_ms_per_judgment": 1000 * db_cpu / judgments,
        "generator_cpu_share": generator_cpu / elapsed,
    }


def line(name: str, r: dict) -> str:
    return (
        f"  {name:<44} {r['judgments_per_s']:7.0f} judgments/s  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  "
        f"server CPU {r['server_cpu_ms_per_judgment']:5.2f} ms/judgment (gunicorn {r['gunicorn_cpu_ms_per_judgment']:.2f}, "
        f"PostgreSQL {r['postgres_cpu_ms_per_judgment']:.2f})  "
        f"errors {r['socket_errors'] + r['timeouts'] + r['non_2xx'] + r['refused']}"
    )


def baseline_tree(commit: str) -> Path:
    """A worktree of ``commit`` (its code only; it shares this venv and database)."""
    path = Path(tempfile.mkdtemp(prefix="vidpref-baseline-"))
    subprocess.run(
        ["git", "worktree", "add", "--detach", "--force", str(path), commit], cwd=ROOT, check=True, capture_output=True
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64, help="annotators without think time (throughput)")
    parser.add_argument("--seconds", type=float, default=30, help="length of each throughput phase")
    parser.add_argument("--annotators", type=int, default=2000, help="annotators of the realistic load (0: skip)")
    parser.add_argument(
        "--think",
        type=float,
        nargs=2,
        default=(5, 15),
        metavar=("MIN", "MAX"),
        help="their think time between requests, seconds",
    )
    parser.add_argument("--realistic-seconds", type=float, default=90, help="length of the realistic phase")
    parser.add_argument(
        "--baseline-commit",
        default=None,
        help="also serve this commit's code (two requests per judgment) as the 'before'",
    )
    parser.add_argument("--small", type=int, default=10_000, help="pairs for the next-pair baseline")
    parser.add_argument(
        "--gold",
        type=int,
        default=40,
        help="gold pairs among them (the product's gold draw, VIDPREF_GOLD_RATE, stays at its default)",
    )
    parser.add_argument("--load-pairs", type=int, default=150_000, help="pairs added for the load phases")
    parser.add_argument("--big", type=int, default=1_000_000, help="pairs for the scaling comparison")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker (= its pool size)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--samples", type=int, default=200, help="next-pair calls per size")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `apt-get install -y wrk` (Debian's package; .ci/run installs it)")

    url = setup_database("vidpref_bench")
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
    }
    run([sys.executable, "manage.py", "migrate", "-v0"], env)
    print(f"seeding {args.small:,} pairs, {args.gold} of them gold …", flush=True)
    seed_pairs(env, args.small, start=1)
    make_gold(env, args.gold)
    small_p50 = next_pair_p50(env, args.samples)
    print(f"next-pair p50 with {args.small:,} pairs: {small_p50:.2f} ms", flush=True)
    print(f"seeding {args.load_pairs:,} more pairs and {args.clients + args.annotators:,} annotators …", flush=True)
    seed_pairs(env, args.load_pairs, start=args.small + 1)
    tokens = make_tokens(env, "bench", args.clients * 3 + args.annotators)
    fast, base_tokens, people = (
        tokens[: args.clients],
        tokens[args.clients : 3 * args.clients],
        tokens[3 * args.clients :],
    )
    pg_pid = postmaster_pid(env)

    phases: dict[str, dict] = {}
    print(
        f"load: {args.clients} annotators, no think time, {args.seconds:.0f} s per phase, gunicorn "
        f"{args.workers} workers × {args.threads} threads, wrk",
        flush=True,
    )
    if args.baseline_commit:
        tree = baseline_tree(args.baseline_commit)
        try:
            server = Server(tree, env, args.port, args.workers, args.threads)
            try:
                phases["before"] = wrk(
                    server, pg_pid, base_tokens, mode="two", connections=args.clients, seconds=args.seconds
                )
                print(line(f"before ({args.baseline_commit}, two requests)", phases["before"]), flush=True)
            finally:
                server.stop()
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    server = Server(ROOT, env, args.port, args.workers, args.threads)
    try:
        phases["two_requests"] = wrk(
            server, pg_pid, base_tokens[args.clients :], mode="two", connections=args.clients, seconds=args.seconds
        )
        print(line("this tree, two requests per judgment", phases["two_requests"]), flush=True)
        phases["one_request"] = wrk(server, pg_pid, fast, mode="one", connections=args.clients, seconds=args.seconds)
        print(line("this tree, one request per judgment", phases["one_request"]), flush=True)
        if args.annotators:
            offered = args.annotators / (sum(args.think) / 2)
            print(
                f"realistic: {args.annotators:,} annotators, {args.think[0]:g}–{args.think[1]:g} s think time "
                f"(≈ {offered:.0f} judgments/s offered), {args.realistic_seconds:.0f} s …",
                flush=True,
            )
            phases["realistic"] = realistic(
                server, pg_pid, people, think=tuple(args.think), seconds=args.realistic_seconds
            )
            print(line("realistic load", phases["realistic"]), flush=True)
            print(
                f"  after everyone has arrived (joined the campaign): p50 {phases['realistic']['steady_p50_ms']:.1f} ms, "
                f"p99 {phases['realistic']['steady_p99_ms']:.1f} ms over {phases['realistic']['steady_requests']:,} "
                "requests",
                flush=True,
            )
            print(
                f"  (the realistic generator: Python asyncio, {100 * phases['realistic']['generator_cpu_share']:.0f} % "
                "of a core; at this rate it is not the bottleneck)",
                flush=True,
            )
    finally:
        server.stop()

    print(f"seeding up to {args.big:,} pairs …", flush=True)
    seed_pairs(env, args.big - args.small - args.load_pairs, start=args.small + args.load_pairs + 1)
    big_p50 = next_pair_p50(env, args.samples)
    ratio = big_p50 / small_p50
    print(
        f"next-pair p50 with {args.big:,} pairs: {big_p50:.2f} ms; ratio {args.big // 1000}k/{args.small // 1000}k "
        f"= {ratio:.2f}"
    )
    summary: dict = {
        "phases": phases,
        "next_pair_p50_ms": {str(args.small): small_p50, str(args.big): big_p50},
        "next_pair_ratio": ratio,
        "clients": args.clients,
        "workers": args.workers,
        "threads": args.threads,
    }
    after = phases["one_request"]
    if "before" in phases:
        before = phases["before"]
        summary["ratios"] = {
            "judgments_per_s_after_over_before": after["judgments_per_s"] / before["judgments_per_s"],
            "p99_after_over_before": after["p99_ms"] / before["p99_ms"],
            "cpu_per_judgment_after_over_before": after["server_cpu_ms_per_judgment"]
            / before["server_cpu_ms_per_judgment"],
        }
        r = summary["ratios"]
        print(
            f"after/before: {r['judgments_per_s_after_over_before']:.2f}× judgments/s, p99 × "
            f"{r['p99_after_over_before']:.2f}, server CPU per judgment × {r['cpu_per_judgment_after_over_before']:.2f}"
        )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "annotate_load.json").write_text(json.dumps(summary, indent=2))
    print(
        f"annotate_load: {after['judgments_per_s']:.0f} judgments/s, p99 {after['p99_ms']:.0f} ms, "
        f"{after['server_cpu_ms_per_judgment']:.2f} ms server CPU per judgment, next-pair "
        f"{args.big // 1000}k/{args.small // 1000}k ratio {ratio:.2f}"
    )


if __name__ == "__main__":
    main()
