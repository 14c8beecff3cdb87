"""The chaos harness end to end: a real cluster, kills, pauses, partitions (network namespaces when the
machine allows, else in-process), clock skew and a whole-cluster kill, then the history checker's verdict."""
from __future__ import annotations

import subprocess
import sys
import time

import orjson
import pytest

from tests.support.procs import REPO


def _chaos(tmp_path, duration: float, gap: float, seed: int, timeout: float) -> tuple[str, dict]:
    out = tmp_path / "chaos"
    proc = subprocess.run([sys.executable, "-m", "raftqueue", "chaos", "--duration", str(duration), "--seed", str(seed),
                           "--fault-gap", str(gap), "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    report = orjson.loads((out / "report.json").read_bytes()) if (out / "report.json").exists() else {}
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return proc.stdout, report


@pytest.mark.timeout(600)
def test_short_chaos_run_is_ok(tmp_path):
    seed = int(time.time()) % 100_000
    stdout, report = _chaos(tmp_path, duration=50, gap=2.5, seed=seed, timeout=550)
    assert stdout.rstrip().splitlines()[-1] == "result: OK"
    injected = {f["fault"] for f in report["faults"]}
    assert {"kill", "pause", "partition", "clock_skew", "kill_all"} <= injected, injected
    assert report["ops"]["submit"]["ok"] > 100 and report["ops"]["ack"]["ok"] > 100


@pytest.mark.long
@pytest.mark.timeout(3600)
def test_ten_minute_chaos_run_is_ok(tmp_path):
    stdout, report = _chaos(tmp_path, duration=600, gap=3.0, seed=int(time.time()) % 100_000, timeout=3000)
    assert stdout.rstrip().splitlines()[-1] == "result: OK"
