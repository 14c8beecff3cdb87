"""Store benchmark: apply() throughput, lease+ack cost at scale, memory per job, snapshot and restore.

    ./scripts/bench-store            # 1,000 and 1,000,000 queued jobs
    ./scripts/bench-store --sizes 1000 100000

Figures are for `JobStore.apply` alone (no Raft, no HTTP): the ceiling the replica and API sit on.
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import sys
import time

from raftqueue import gctune
from raftqueue.store import JobStore

PAD = "x" * 180
T0 = 1_700_000_000_000


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def payload(i: int) -> str:
    return f'{{"i":{i:09d},"pad":"{PAD}"}}'  # ~200 bytes, a distinct string per job as in a real log


def submit_cmd(i: int, now: int) -> dict:
    return {"kind": "submit", "v": 1, "now": now, "job_id": f"0190{i:028x}", "payload": payload(i),
            "queue": "default", "priority": 0, "max_retries": 3}


def fill(store: JobStore, n: int, start: int = 0) -> None:
    batch = 1000
    for base in range(start, start + n, batch):
        jobs = [{k: v for k, v in submit_cmd(i, T0).items() if k not in ("kind", "v", "now")}
                for i in range(base, min(base + batch, start + n))]
        store.apply({"kind": "submit_batch", "v": 1, "now": T0, "jobs": jobs})


def bench_submits(n: int) -> tuple[float, float]:
    store = JobStore()
    cmds = [submit_cmd(i, T0) for i in range(n)]
    started = time.perf_counter()
    for cmd in cmds:
        store.apply(cmd)
    single = n / (time.perf_counter() - started)
    store = JobStore()
    batches = []
    for base in range(0, n, 100):
        batches.append({"kind": "submit_batch", "v": 1, "now": T0,
                        "jobs": [{"job_id": f"0190{i:028x}", "payload": payload(i), "queue": "default"}
                                 for i in range(base, min(base + 100, n))]})
    started = time.perf_counter()
    for cmd in batches:
        store.apply(cmd)
    batched = n / (time.perf_counter() - started)
    return single, batched


def bench_lease_ack(store: JobStore, cycles: int, next_id: int) -> float:
    """Lease one job and ack it, `cycles` times; a submit after each keeps the queue length constant."""
    spent = 0.0
    now = T0 + 1
    for c in range(cycles):
        lease = {"kind": "lease", "v": 1, "now": now, "queues": ["default"], "max_jobs": 1,
                 "default_lease_ms": 30_000, "token_base": f"b{c}"}
        started = time.perf_counter()
        job = store.apply(lease)["jobs"][0]
        store.apply({"kind": "ack", "v": 1, "now": now, "job_id": job["job_id"], "lease_token": job["lease_token"]})
        spent += time.perf_counter() - started
        store.apply(submit_cmd(next_id + c, now))
    return cycles / spent


def bench_batched_life_cycle(rounds: int = 500) -> float:
    """Jobs/s of CPU time for scenario 3's commands: submit 100, lease 100, ack those 100, over and over."""
    store = JobStore()
    spent = 0.0
    for r in range(rounds):
        now = T0 + r
        jobs = [{"job_id": f"0191{r * 100 + i:028x}", "payload": payload(i), "queue": "default"} for i in range(100)]
        started = time.process_time()
        store.apply({"kind": "submit_batch", "v": 1, "now": now, "jobs": jobs})
        leased = store.apply({"kind": "lease", "v": 1, "now": now, "queues": ["default"], "max_jobs": 100,
                              "default_lease_ms": 30_000, "token_base": f"t{r}", "worker_id": "w1"})["jobs"]
        store.apply({"kind": "ack_batch", "v": 1, "now": now, "acks": [
            {"job_id": j["job_id"], "lease_token": j["lease_token"], "result": "ok"} for j in leased]})
        spent += time.process_time() - started
    return rounds * 100 / spent


def run(sizes: list[int], cycles: int) -> None:
    print(f"command: {' '.join(sys.argv)}")
    print(f"machine: {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
          f"{platform.machine()}")
    gctune.configure()
    print(f"gc: as in a node (thresholds {gctune.THRESHOLDS}, collector paused for snapshot/restore, "
          "long-lived objects frozen)")
    single, batched = bench_submits(100_000)
    print(f"submits applied: {single:,.0f}/s one per command, {batched:,.0f}/s in batches of 100 (100,000 jobs)")
    print(f"batched life cycle (submit 100, lease 100, ack 100): {bench_batched_life_cycle():,.0f} jobs/s "
          "of CPU time")
    results = {}
    for n in sizes:
        gc.collect()
        before = rss_bytes()
        store = JobStore()
        started = time.perf_counter()
        fill(store, n)
        fill_s = time.perf_counter() - started
        gc.collect()
        gctune.freeze()
        payload_bytes = n * len(payload(0))
        per_job = (rss_bytes() - before - payload_bytes) / n
        rate = bench_lease_ack(store, cycles, n)
        with gctune.paused():
            started = time.perf_counter()
            snap = store.snapshot()
            snap_s = time.perf_counter() - started
            started = time.perf_counter()
            digest = store.digest()
            digest_s = time.perf_counter() - started
        del store
        gc.unfreeze()
        gc.collect()
        with gctune.paused():
            started = time.perf_counter()
            restored = JobStore.restore(snap)
            restore_s = time.perf_counter() - started
        assert restored.digest() == digest
        results[n] = rate
        memory = f"{per_job:,.0f} B/job beyond payload" if n >= 100_000 else "n/a (too few jobs to measure)"
        print(f"{n:>10,} queued: fill {n / fill_s:,.0f} jobs/s | lease+ack {rate:,.0f}/s | "
              f"RSS {memory} | snapshot {len(snap) / 1e6:,.1f} MB in {snap_s:.2f} s | "
              f"restore {restore_s:.2f} s | digest {digest_s:.2f} s")
        del restored, snap
    if len(sizes) >= 2:
        small, large = min(sizes), max(sizes)
        print(f"lease+ack cost at {large:,} vs {small:,} queued: {results[small] / results[large]:.2f}x "
              f"(target <= 1.5x)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 1_000_000])
    parser.add_argument("--cycles", type=int, default=20_000)
    args = parser.parse_args(argv)
    run(sorted(args.sizes), args.cycles)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
