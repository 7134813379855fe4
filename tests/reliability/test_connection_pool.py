"""A web process holds at most its pool's connections however many threads serve it (issue 30): a 40-thread
`manage.py runserver` (a thread per request) under 40 annotators judging at once answers no 503 and opens at most
VIDPREF_DB_POOL_MAX connections, where without the pool every request thread kept its own."""

import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests

from tests.conftest import ROOT, child_env, free_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _connections(app_name: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [app_name])
        return cursor.fetchone()[0]


def test_forty_threads_of_runserver_share_a_pool_and_answer_no_503(make_pairs, make_user, settings):
    from rest_framework.authtoken.models import Token

    from annotate.models import Judgment

    make_pairs(400, overlap=3)
    tokens = [Token.objects.create(user=make_user(f"pooled-{i}")).key for i in range(40)]
    app_name = f"vidpref-pool-{uuid.uuid4().hex[:6]}"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=child_env(PGAPPNAME=app_name, VIDPREF_GOLD_RATE="0", DEBUG="false", LOG_LEVEL="WARNING"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "runserver did not start"
            time.sleep(0.3)

        statuses: list[int] = []
        judged = [0]
        lock = threading.Lock()
        most = [0]
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                most[0] = max(most[0], _connections(app_name))
                time.sleep(0.05)

        def annotator(token: str):
            http = requests.Session()
            http.headers["Authorization"] = f"Token {token}"
            lease = http.post(f"{base}/api/v1/assignments/next/", timeout=60)
            mine = [lease.status_code]
            body = lease.json() if lease.status_code == 200 else None
            done = 0
            for _ in range(8):
                if body is None:
                    break
                answer = http.post(
                    f"{base}/api/v1/assignments/{body['id']}/judgment/",
                    json={"vq": "left", "mq": "tie", "ta": "right"},
                    timeout=60,
                )
                mine.append(answer.status_code)
                if answer.status_code != 201:
                    break
                done += 1
                body = answer.json()["next"]  # one round trip per judgment
            with lock:
                statuses.extend(mine)
                judged[0] += done

        watcher = threading.Thread(target=watch)
        watcher.start()
        threads = [threading.Thread(target=annotator, args=(t,)) for t in tokens]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        stop.set()
        watcher.join()
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)

    assert set(statuses) <= {200, 201}, (sorted(set(statuses)), err.decode()[-2000:])
    assert judged[0] == 40 * 8 == Judgment.objects.count()
    assert 1 <= most[0] <= 8, f"{most[0]} connections for one runserver process (pool max 8)"
