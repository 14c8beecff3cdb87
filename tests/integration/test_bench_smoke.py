"""`scripts/bench --quick` end to end: it starts a real 3-node cluster, runs every scenario for a moment and
writes its table as JSON. This keeps the benchmark working; it asserts that each scenario moved jobs, never
how fast (speed is for the benchmark to print, not for a test to judge)."""
from __future__ import annotations

import re
import subprocess
import sys

import orjson
import pytest

from tests.support.procs import REPO


@pytest.mark.timeout(400)
def test_quick_bench_runs_every_scenario(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "raftqueue.bench.http", "--quick", "--json", str(out),
                           "--data-dir", str(tmp_path / "data")], cwd=REPO, capture_output=True, text=True,
                          timeout=380)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = orjson.loads(out.read_bytes())["rows"]
    names = [row["scenario"] for row in rows]

    def first(prefix: str) -> dict:
        return next(row for row in rows if row["scenario"].startswith(prefix))
    for number in "12345":
        timed = [row for row in rows if row["scenario"].startswith(number + " ")]
        assert timed and all(row["jobs_per_s"] > 0 for row in timed), (number, names)
    assert first("disk fdatasync probe")["calls"] > 0
    for number in "1234":  # the CPU each job cost the nodes and the load generator, read from /proc
        cpu = first(number + " ")["cpu"]
        assert cpu["nodes_cpu_ms_per_job"] > 0 and cpu["load_generator_cpu_ms_per_job"] > 0, cpu
        assert len(cpu["nodes_cpu_pct"]) == 3 and sum(cpu["nodes_cpu_pct"]) > 0, cpu
    fixed = first("4 ")
    assert isinstance(fixed["e2e_p50_ms"], float), "no job of scenario 4 was acked"  # NaN (JSON null) when none
    assert first("drain after 5")["jobs"] >= 500  # scenario 5 keeps up to 100 and 1,000 queued; 6 starts without them
    resources = first("6 resources")
    assert resources["jobs_through"] >= 2_000 and not resources["submit_failures"]
    assert all(mb > 0 for mb in resources["after_through"]["rss_mb"] + resources["after_through"]["disk_mb"])
    live = first("6 RSS with")
    assert live["live_jobs"] >= 1_000
    assert all(peak >= rss > 0 for peak, rss in zip(live["peak_rss_mb"], live["rss_mb"]))
    assert "disk: fdatasync" in proc.stdout and "1 submit, 64 clients" in proc.stdout
    for row in rows[1:]:  # when each ran (UTC HH:MM:SS), to match with the nodes' logs
        assert re.fullmatch(r"\d\d:\d\d:\d\d", row["started_at"]) and re.fullmatch(r"\d\d:\d\d:\d\d", row["ended_at"]), row
