"""The `raftqueue` command: `serve` runs one node, `cluster` runs a local N-node cluster in the foreground,
`drill`/`chaos`/`bench` measure it; the commands users run against a cluster live in `cli_client.py`."""
from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
import time

from raftqueue import __version__
from raftqueue.raft.errors import EXIT_CANNOT_APPLY


def cmd_serve(args: argparse.Namespace) -> int:
    from raftqueue.config import ConfigError, config_from_args
    from raftqueue.server import serve
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"raftqueue serve: {exc}", file=sys.stderr)
        return 2
    return serve(config)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def cmd_cluster(args: argparse.Namespace) -> int:
    from raftqueue.localcluster import LocalCluster

    if not 1 <= args.nodes <= 9:
        print("raftqueue cluster: --nodes must be between 1 and 9", file=sys.stderr)
        return 2
    cluster = LocalCluster(args.data_dir, nodes=args.nodes, base_port=args.base_port, extra_args=args.serve_args)
    busy = [p for p in cluster.http_ports + cluster.raft_ports if not _port_free(p)]
    if busy:
        print(f"raftqueue cluster: ports in use: {busy}; pick another --base-port", file=sys.stderr)
        return 2
    stopping = False

    def on_signal(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"starting {args.nodes} nodes (data in {cluster.data_dir}, logs in {cluster.data_dir / 'logs'}) ...",
          flush=True)
    cluster.start_all()
    try:
        asyncio.run(cluster.wait_ready(timeout=args.ready_timeout))
    except (TimeoutError, RuntimeError) as exc:
        print(f"raftqueue cluster: {exc}", file=sys.stderr)
        cluster.stop_all()
        return 1
    for i, node in enumerate(cluster.nodes):
        print(f"  {cluster.ids[i]}  {cluster.urls[i]}   raft 127.0.0.1:{cluster.raft_ports[i]}   pid {node.pid}   "
              f"log {node.log_path}", flush=True)
    print(f"cluster ready: {' '.join(cluster.urls)}", flush=True)
    if cluster.admin_key_created:
        print(f"admin API key (shown once; kept in {cluster.admin_key_path}, mode 0600):\n  {cluster.admin_key}",
              flush=True)
    else:
        print(f"admin API key: in {cluster.admin_key_path}", flush=True)
    print("any node takes any request; Ctrl-C stops all nodes"
          + ("; a node that dies is restarted after 1 s" if args.restart else ""), flush=True)
    restart_at: dict[int, float] = {}
    while not stopping:
        time.sleep(0.2)
        for i, node in enumerate(cluster.nodes):
            if node.alive() or stopping:
                continue
            if i not in restart_at:
                code = node.proc.returncode if node.proc else None
                how = f"signal {-code}" if code is not None and code < 0 else f"code {code}"
                restart = args.restart and code != EXIT_CANNOT_APPLY  # it would stop again at the same entry
                print(f"{cluster.ids[i]} exited ({how})" + ("; restarting in 1 s" if restart else "")
                      + ("; it cannot apply an entry a newer build wrote (see its log): not restarted"
                         if code == EXIT_CANNOT_APPLY else ""), flush=True)
                restart_at[i] = time.monotonic() + 1.0 if restart else float("inf")
            elif time.monotonic() >= restart_at[i]:
                del restart_at[i]
                node.start()
                print(f"{cluster.ids[i]} restarted (pid {node.pid})", flush=True)
    print("stopping all nodes ...", flush=True)
    cluster.stop_all()
    print("stopped", flush=True)
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    from raftqueue import drill
    return drill.main(args)


def cmd_chaos(args: argparse.Namespace) -> int:
    from raftqueue.chaos import driver
    return driver.main(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from raftqueue.bench import http
    return http.main(args.bench_args)


def build_parser() -> argparse.ArgumentParser:
    from raftqueue.config import add_serve_arguments

    parser = argparse.ArgumentParser(prog="raftqueue", description="A replicated job queue on Raft.")
    parser.add_argument("--version", action="version", version=f"raftqueue {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run one node", description="Run one raftqueue node. Every flag has a "
                           "RAFTQUEUE_* environment variable; flags win.")
    add_serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    cluster = sub.add_parser("cluster", help="run a local N-node cluster in the foreground",
                             description="Start N nodes on 127.0.0.1 as child processes, print their URLs once "
                                         "all are ready, and stop them all on Ctrl-C.")
    cluster.add_argument("--nodes", type=int, default=3)
    cluster.add_argument("--base-port", type=int, default=8081,
                         help="HTTP ports are base-port.., Raft ports base-port+1000.. (default 8081)")
    cluster.add_argument("--data-dir", default="./data")
    cluster.add_argument("--no-restart", dest="restart", action="store_false",
                         help="do not restart a node that dies")
    cluster.add_argument("--ready-timeout", type=float, default=60.0)
    cluster.add_argument("serve_args", nargs=argparse.REMAINDER,
                         help="after --, extra flags for every node's `raftqueue serve`")
    cluster.set_defaults(func=cmd_cluster)

    from raftqueue import drill
    drill_parser = sub.add_parser("drill", help="kill the leader N times and measure failover and loss",
                                  description=drill.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    drill.add_arguments(drill_parser)
    drill_parser.set_defaults(func=cmd_drill)

    from raftqueue.chaos import driver
    chaos_parser = sub.add_parser("chaos", help="faults + clients + a history checker: result OK or FAIL",
                                  description=driver.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    driver.add_arguments(chaos_parser)
    chaos_parser.set_defaults(func=cmd_chaos)

    bench_parser = sub.add_parser("bench", help="the HTTP benchmark (scripts/bench): scenarios, jobs/s, latency",
                                  add_help=False)
    bench_parser.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench_parser.set_defaults(func=cmd_bench)

    from raftqueue import cli_client
    cli_client.add_commands(sub)
    cli_client.add_cluster_status(sub)
    return parser


# Commands whose second positional is a lease token (see _token_after_separator).
_TOKEN_COMMANDS = ("ack", "nack", "release")


def _token_after_separator(argv: list[str]) -> list[str]:
    """`raftqueue ack <job_id> <lease_token> ...` with a token that starts with "-" (tokens of builds before
    2026-11-27 did, 1 in 64): argparse would read it as an option. Move it behind "--", where it can only be
    the positional it is."""
    if len(argv) >= 3 and argv[0] in _TOKEN_COMMANDS and not argv[1].startswith("-") \
            and argv[2].startswith("-") and not argv[2].startswith("--"):
        return [argv[0], argv[1], *argv[3:], "--", argv[2]]
    return argv


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = _token_after_separator(list(sys.argv[1:] if argv is None else argv))
    if argv[:1] == ["cluster"] and argv[1:2] in (["status"], ["add"], ["remove"]):
        argv = [f"cluster-{argv[1]}", *argv[2:]]  # `raftqueue cluster status|add|remove` beside `cluster` (run one)
    args = parser.parse_args(argv)
    if getattr(args, "serve_args", None) and args.serve_args[:1] == ["--"]:
        args.serve_args = args.serve_args[1:]
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
