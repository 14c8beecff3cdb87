"""`scripts/bench --profile DIR`: where the nodes spend their time during a scenario, by layer.

py-spy samples each node from outside (no change to the node, `--nonblocking` so it is never paused) and only
while a thread holds the GIL (`--gil`): on a machine where the nodes share two cores, GIL time is what limits
throughput. The raw stacks are kept in DIR for flame graphs; the bench prints, per node, the share of samples
by the layer of the innermost frame (our API code, aiohttp, the event loop, PySyncObj, our Raft layer, the
store, ...), by thread (event loop or Raft tick), and the functions with the most samples of their own.
Socket writes show up in the layer that made them: uvloop writes to a socket holding the GIL, so the kernel's
loopback work for a response is counted to aiohttp's `_writelines`.
"""
from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

# (layer, pattern on the innermost frame's file name); the first match wins
LAYERS: list[tuple[str, str]] = [
    ("store", "/raftqueue/store/"),
    ("raft layer (ours)", "/raftqueue/raft/"),
    ("replica glue", "/raftqueue/replica"),
    ("API: handlers, forwarding, auth", "/raftqueue/"),
    ("aiohttp (parse, route, write)", "/(aiohttp|multidict|yarl|propcache)/"),
    ("pysyncobj", "/pysyncobj/"),
    ("event loop", "(/asyncio/|uvloop)"),
    ("metrics", "/prometheus_client/"),
    ("json, hashing, crypto", "/(hmac|hashlib|cryptography|orjson|json)"),
]
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
TICK_THREAD_FRAME = "RaftNode._run"


def available() -> str | None:
    """The py-spy executable next to this Python, or on PATH; None when it is not installed."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def layer_of(frame: str) -> str:
    match = _FRAME.match(frame)
    path = match.group("file") if match else frame
    for name, pattern in LAYERS:
        if re.search(pattern, path):
            return name
    return "other (stdlib, GC, imports)"


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = re.sub(r"^.*/(site-packages|lib/python3\.\d+)/", "", match.group("file"))
    path = re.sub(r"^.*/raftqueue/", "raftqueue/", path)
    return f"{match.group('func')} ({path})"


def summarize(raw: str, top: int = 8) -> dict:
    """Shares (per cent of samples) by layer and by thread, and the functions with the most self samples, from
    py-spy's raw output (one `frame;frame;... count` line per distinct stack)."""
    layers: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        layers[layer_of(frames[-1])] += n
        threads["raft tick" if TICK_THREAD_FRAME in stack else "event loop"] += n
        own[_short(frames[-1])] += n
    if not total:
        return {"samples": 0}

    def shares(counter: collections.Counter[str], limit: int | None = None) -> dict[str, float]:
        return {k: round(100 * v / total, 1) for k, v in counter.most_common(limit)}
    return {"samples": total, "layers_pct": shares(layers), "threads_pct": shares(threads),
            "top_self_pct": shares(own, top)}


class NodeProfiler:
    """py-spy on every node for one scenario window; `finish()` waits for the recordings and summarizes them."""

    def __init__(self, executable: str, out_dir: Path, tag: str, pids: list[int], seconds: float,
                 rate: int = 100) -> None:
        self.paths = [out_dir / f"{tag}-node{i + 1}.txt" for i in range(len(pids))]
        out_dir.mkdir(parents=True, exist_ok=True)
        duration = str(max(1, int(seconds)))
        self.procs = [subprocess.Popen([executable, "record", "--pid", str(pid), "--duration", duration,
                                        "--rate", str(rate), "--gil", "--nonblocking", "--full-filenames",
                                        "--format", "raw", "--output", str(path)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                      for pid, path in zip(pids, self.paths)]
        self.seconds = seconds

    def finish(self) -> list[dict]:
        out = []
        for proc, path in zip(self.procs, self.paths):
            try:
                _, err = proc.communicate(timeout=self.seconds + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if proc.returncode != 0 or not path.exists():
                out.append({"error": (err or b"").decode(errors="replace").strip()[-300:] or "py-spy failed"})
                continue
            out.append({"file": str(path), **summarize(path.read_text())})
        return out


def render(profiles: list[dict]) -> list[str]:
    lines = []
    for i, prof in enumerate(profiles, start=1):
        if "error" in prof or not prof.get("samples"):
            lines.append(f"    node{i} profile: {prof.get('error', 'no samples')}")
            continue
        layers = ", ".join(f"{k} {v}%" for k, v in prof["layers_pct"].items())
        threads = ", ".join(f"{k} {v}%" for k, v in prof["threads_pct"].items())
        top = "; ".join(f"{k} {v}%" for k, v in prof["top_self_pct"].items())
        lines.append(f"    node{i} GIL samples {prof['samples']:,} ({threads}): {layers}")
        lines.append(f"      most self time: {top}")
    return lines
