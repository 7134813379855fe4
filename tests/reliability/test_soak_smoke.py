"""A short run of bench/soak.py (the 5-minute soak lives only in bench/): 8 clients for 10 s against gunicorn
on the test database; no errors, nothing lost or doubled."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, child_env, database_url_for_children, wait_for_child_sessions_to_end


@pytest.mark.slow
def test_soak_smoke(transactional_db, tmp_path):
    from django.db import connection

    output = tmp_path / "soak.json"
    env = child_env(VIDPREF_VAR_DIR=str(tmp_path))
    result = subprocess.run(
        [
            sys.executable,
            "bench/soak.py",
            "--clients",
            "8",
            "--duration",
            "10",
            "--warmup",
            "3",
            "--pairs",
            "400",
            "--workers",
            "2",
            "--threads",
            "4",
            "--port",
            "8767",
            "--database-url",
            database_url_for_children(connection.settings_dict),
            "--output",
            str(output),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    wait_for_child_sessions_to_end()
    assert output.exists(), result.stdout + result.stderr
    summary = json.loads(output.read_text())
    assert summary["errors"] == 0, summary["error_kinds"]
    assert summary["judgments_acknowledged"] > 0 and summary["requests"] > summary["judgments_acknowledged"]
    assert summary["lost"] == 0 and summary["duplicated"] == 0 and summary["stored_but_not_acknowledged"] == 0
    assert summary["pairs_with_inconsistent_counters"] == 0 and summary["submitted_leases_without_judgment"] == 0
    assert summary["repeated_submissions_answered_with_the_first"] >= 0
    assert "soak:" in result.stdout
