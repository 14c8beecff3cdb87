"""The bench's CPU-per-job meter (real /proc readings of real processes) and its py-spy summary by layer."""
from __future__ import annotations

import math
import subprocess
import sys
import time

from raftqueue.bench import profile
from raftqueue.bench.cpu import CpuMeter, process_cpu_s

SITE = "/venv/lib/python3.11/site-packages"
RAW = "\n".join([
    # the event loop thread writing a response (aiohttp) and running our handler
    f"_run_module_as_main (<frozen runpy>:198);Runner.run ({SITE}/../asyncio/runners.py:118);"
    f"StreamWriter._writelines ({SITE}/aiohttp/http_writer.py:116) 30",
    "Runner.run (/usr/lib/python3.11/asyncio/runners.py:118);submit (/src/raftqueue/api/jobs.py:46) 10",
    # the Raft tick thread applying to the store, and reading from a peer in PySyncObj
    "Thread._bootstrap (/usr/lib/python3.11/threading.py:1002);RaftNode._run (/src/raftqueue/raft/node.py:242);"
    "JobStore._create (/src/raftqueue/store/store.py:200) 40",
    "Thread._bootstrap (/usr/lib/python3.11/threading.py:1002);RaftNode._run (/src/raftqueue/raft/node.py:242);"
    f"TcpConnection.__processRead ({SITE}/pysyncobj/tcp_connection.py:240) 20",
    "",
    "not a sample line",
])


def test_summary_splits_samples_by_layer_thread_and_function():
    summary = profile.summarize(RAW)
    assert summary["samples"] == 100
    assert summary["layers_pct"] == {"store": 40.0, "aiohttp (parse, route, write)": 30.0, "pysyncobj": 20.0,
                                     "API: handlers, forwarding, auth": 10.0}
    assert summary["threads_pct"] == {"raft tick": 60.0, "event loop": 40.0}
    assert list(summary["top_self_pct"])[0] == "JobStore._create (raftqueue/store/store.py)"
    lines = profile.render([summary, {"error": "py-spy failed"}])
    assert "store 40.0%" in lines[0] and "node2 profile: py-spy failed" in lines[-1]


def test_layer_of_prefers_our_packages_and_knows_the_libraries():
    assert profile.layer_of("f (/src/raftqueue/raft/journal.py:10)") == "raft layer (ours)"
    assert profile.layer_of("f (/src/raftqueue/replicated_store.py:10)") == "replica glue"
    assert profile.layer_of("f (/x/site-packages/prometheus_client/values.py:1)") == "metrics"
    assert profile.layer_of("f (/usr/lib/python3.11/asyncio/events.py:80)") == "event loop"
    assert profile.layer_of("f (/usr/lib/python3.11/gc.py)") == "other (stdlib, GC, imports)"
    assert profile.summarize("") == {"samples": 0}


def _child(code: str) -> subprocess.Popen:
    """A Python child running `code`, returned once the interpreter has started: its start-up CPU (20-30 ms)
    must not fall inside the window the meter measures (an "idle" child was charged 6% for it)."""
    child = subprocess.Popen([sys.executable, "-c", "print(flush=True)\n" + code], stdout=subprocess.PIPE)
    assert child.stdout is not None
    child.stdout.readline()
    return child


def test_cpu_meter_charges_a_busy_process_and_not_an_idle_one():
    busy = _child("import time\nend = time.monotonic() + 0.6\nwhile time.monotonic() < end: pass")
    idle = _child("import time; time.sleep(0.6)")
    try:
        meter = CpuMeter([busy.pid, idle.pid])
        meter.start()
        time.sleep(0.5)
        figures = meter.stop(jobs=10)
    finally:
        for child in (busy, idle):
            child.wait(10)
            child.stdout.close()
    busy_pct, idle_pct = figures["nodes_cpu_pct"]
    assert busy_pct >= 30, figures  # a full core unless the machine is very busy
    assert idle_pct <= 5, figures
    assert figures["nodes_cpu_ms_per_job"] > 15  # >= 150 ms of CPU over 10 jobs
    assert 0 <= figures["machine_busy_pct"] <= 100 * 64
    assert math.isnan(process_cpu_s(busy.pid))  # reaped: NaN, not an exception
