"""The `raftqueue` commands users run against a cluster: submit, get, list, lease, ack, nack, release, cancel, retry,
dead, stats, watch, cluster status|add|remove, keys, pause, resume, worker.

Every command takes `--url` (repeatable or comma-separated; env RAFTQUEUE_URL) and `--key` (env RAFTQUEUE_KEY),
prints a human table by default and JSON with `--json`. Exit codes scripts can rely on:
0 ok, 1 other API error, 2 usage, 3 not found (or no job to lease), 4 conflict, 5 cluster unavailable or
outcome unknown, 6 unauthorized or forbidden, 7 refused as invalid (400/413).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import orjson

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_CONFLICT, EXIT_UNAVAILABLE, EXIT_AUTH, EXIT_INVALID = range(8)
STATES = ("SCHEDULED", "READY", "RUNNING", "RETRY", "ACKED", "DEAD", "CANCELLED")
_STATE_STYLE = {"READY": "cyan", "RUNNING": "yellow", "ACKED": "green", "DEAD": "red", "RETRY": "magenta",
                "CANCELLED": "bright_black", "SCHEDULED": "blue"}


# ----- output ------------------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """Dataclasses to dicts (unset fields left out), times back to the API's RFC 3339 form."""
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import fields
        out = {f.name: _plain(getattr(value, f.name)) for f in fields(value) if f.name != "extra"}
        return {k: v for k, v in out.items() if v not in (None, {}, [])} | (getattr(value, "extra", None) or {})
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


def emit_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(_plain(value), option=orjson.OPT_INDENT_2 | orjson.OPT_NAIVE_UTC,
                                  default=str).decode() + "\n")


def _console():
    """Rich squeezes tables into 80 columns when stdout is not a terminal (a pipe, a log, `| grep`), which cut
    every cell of `cluster status` to a few letters; there a table takes the width it needs."""
    from rich.console import Console
    return Console() if sys.stdout.isatty() else Console(width=200)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (dict, list)):
        text = orjson.dumps(value).decode()
        return text if len(text) <= 60 else text[:57] + "..."
    return str(value)


def emit_table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.table import Table
    table = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    for row in rows:
        cells = []
        for column, value in zip(columns, row):
            text = _cell(value)
            if column == "state" and text in _STATE_STYLE:
                text = f"[{_STATE_STYLE[text]}]{text}[/]"
            cells.append(text)
        table.add_row(*cells)
    _console().print(table)


def emit_fields(title: str, data: dict) -> None:
    emit_table(title, ["field", "value"], [[k, v] for k, v in data.items() if v not in (None, {}, [])])


# ----- plumbing ----------------------------------------------------------------------------------------------------
def _urls_and_key(args: argparse.Namespace) -> tuple[list[str] | None, Any]:
    """--url/--key, or None/unset so the SDK falls back to RAFTQUEUE_URL/RAFTQUEUE_KEY."""
    from raftqueue.client.async_client import _UNSET
    urls = [u for part in (args.url or []) for u in part.split(",") if u] or None
    return urls, args.key if args.key is not None else _UNSET


def _client(args: argparse.Namespace):
    from raftqueue.client.async_client import AsyncClient
    return AsyncClient(*_urls_and_key(args), timeout=args.timeout)


def _json_arg(text: str, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        print(f"raftqueue: {what} is not valid JSON: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def run(args: argparse.Namespace, body: Callable) -> int:
    """Run an async command body with a client; map SDK errors to exit codes and messages."""
    from raftqueue.client import errors

    async def go():
        client = _client(args)
        try:
            return await body(client)
        finally:
            await client.close()
    try:
        return int(asyncio.run(go()) or 0)
    except errors.NoJobs as exc:
        print(f"raftqueue: {exc.message}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except errors.RaftqueueError as exc:
        print(f"raftqueue: {exc}", file=sys.stderr)
        if isinstance(exc, errors.NotFound):
            return EXIT_NOT_FOUND
        if isinstance(exc, errors.Conflict):
            return EXIT_CONFLICT
        if isinstance(exc, (errors.Unavailable, errors.CommitTimeout, errors.Overloaded)):
            return EXIT_UNAVAILABLE
        if isinstance(exc, (errors.Unauthorized, errors.Forbidden)):
            return EXIT_AUTH
        if isinstance(exc, (errors.ValidationError, errors.PayloadTooLarge)):
            return EXIT_INVALID
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _job_rows(jobs) -> list[list[Any]]:
    return [[j.job_id, j.queue, j.state, j.priority, j.attempts, j.created_at, j.last_error or ""] for j in jobs]


_JOB_COLUMNS = ["job_id", "queue", "state", "priority", "attempts", "created_at", "last_error"]


# ----- commands ----------------------------------------------------------------------------------------------------
def cmd_submit(args: argparse.Namespace) -> int:
    options = dict(queue=args.queue, priority=args.priority, delay_ms=args.delay_ms, run_at=args.run_at,
                   max_retries=args.max_retries, lease_ms=args.lease_ms, idempotency_key=args.idempotency_key,
                   tags=dict(t.split("=", 1) for t in args.tag) if args.tag else None,
                   depends_on=args.depends_on or None)
    if args.file:
        return _submit_file(args, options)
    if args.payload is None:
        print("raftqueue submit: give a JSON payload, or --file jobs.jsonl", file=sys.stderr)
        return EXIT_USAGE
    payload = _json_arg(args.payload, "the payload")

    async def body(client):
        submitted = await client.submit(payload, **options)
        if args.json:
            emit_json(submitted)
        else:
            verb = "submitted" if submitted.created else "already submitted (idempotent repeat)"
            print(f"{verb}: {submitted.job_id} {submitted.state}")
    return run(args, body)


def _submit_file(args: argparse.Namespace, options: dict) -> int:
    """Bulk submit from a JSON array or JSONL file: each line a job body, or a bare payload with --payloads."""
    from raftqueue.client import job_spec
    path = args.file
    raw = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
    text = raw.strip()
    items = _json_arg(text, path) if text.startswith(b"[") else [
        _json_arg(line, f"{path} line {n}") for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    base = {k: v for k, v in job_spec(None, **{k: v for k, v in options.items() if k != "idempotency_key"}).items()
            if k != "payload"}
    jobs = [{**base, "payload": item} if args.payloads or not (isinstance(item, dict) and "payload" in item)
            else {**base, **item} for item in items]

    async def body(client):
        from rich.progress import Progress
        ids: list[str] = []
        with Progress(disable=args.json or not sys.stderr.isatty(), transient=True) as progress:
            task = progress.add_task("submitting", total=len(jobs))
            for start in range(0, len(jobs), args.batch_size):
                chunk = jobs[start:start + args.batch_size]
                ids.extend(await client.submit_batch(chunk))
                progress.advance(task, len(chunk))
        if args.json:
            emit_json({"job_ids": ids})
        else:
            print(f"submitted {len(ids)} jobs in {(len(jobs) + args.batch_size - 1) // args.batch_size} batches")
    return run(args, body)


def cmd_get(args: argparse.Namespace) -> int:
    async def body(client):
        job = await client.get(args.job_id)
        if args.json:
            emit_json(job)
        else:
            emit_fields(f"job {job.job_id}", _plain(job))
    return run(args, body)


def cmd_list(args: argparse.Namespace) -> int:
    async def body(client):
        page = await client.list(state=args.state, queue=args.queue, limit=args.limit, cursor=args.cursor)
        if args.json:
            emit_json({"jobs": page.jobs, "next_cursor": page.next_cursor})
            return
        emit_table(None, _JOB_COLUMNS, _job_rows(page.jobs))
        if page.next_cursor:
            print(f"more: --cursor {page.next_cursor}")
    return run(args, body)


def cmd_lease(args: argparse.Namespace) -> int:
    async def body(client):
        jobs = await client.lease(args.queue or "default", max_jobs=args.max_jobs, lease_ms=args.lease_ms, wait_ms=args.wait_ms)
        if not jobs:
            print("raftqueue: no job to lease", file=sys.stderr)
            return EXIT_NOT_FOUND
        if args.json:
            emit_json(jobs)
        else:
            emit_table(None, ["job_id", "queue", "attempt", "lease_token", "lease_until", "payload"],
                       [[j.job_id, j.queue, j.attempt, j.lease_token, j.lease_until, j.payload] for j in jobs])
    return run(args, body)


def cmd_ack(args: argparse.Namespace) -> int:
    result = _json_arg(args.result, "--result") if args.result is not None else None

    async def body(client):
        state = await client.ack(args.job_id, args.lease_token, result, result_error=args.result_error)
        emit_json({"job_id": args.job_id, "state": state}) if args.json else print(f"{args.job_id} {state}")
    return run(args, body)


def cmd_nack(args: argparse.Namespace) -> int:
    async def body(client):
        answer = await client.nack(args.job_id, args.lease_token, args.error, retry_in_ms=args.retry_in_ms)
        emit_json(answer) if args.json else print(f"{args.job_id} {answer.get('state')} run_at={answer.get('run_at')}")
    return run(args, body)


def _simple(method: str, *names: str, label: Callable[[dict], str] | None = None):
    def command(args: argparse.Namespace) -> int:
        async def body(client):
            answer = await getattr(client, method)(*[getattr(args, n) for n in names])
            if args.json:
                emit_json(answer)
            else:
                print(label(answer) if label else " ".join(f"{k}={v}" for k, v in (answer or {}).items()))
        return run(args, body)
    return command


def cmd_retry(args: argparse.Namespace) -> int:
    async def body(client):
        answer = await client.retry(args.job_id, reset_attempts=args.reset_attempts)
        emit_json(answer) if args.json else print(f"{args.job_id} {answer.get('state', 'READY')}")
    return run(args, body)


def cmd_dead(args: argparse.Namespace) -> int:
    async def body(client):
        if args.redrive:
            count = await client.retry_dead(args.queue)
            emit_json({"count": count}) if args.json else print(f"redrove {count} dead jobs")
            return
        page = await client.list(state="DEAD", queue=args.queue, limit=args.limit)
        if args.json:
            emit_json({"jobs": page.jobs, "next_cursor": page.next_cursor})
        else:
            emit_table("dead letters", _JOB_COLUMNS, _job_rows(page.jobs))
    return run(args, body)


def cmd_stats(args: argparse.Namespace) -> int:
    async def body(client):
        stats = await client.stats()
        if args.json:
            emit_json(stats)
            return
        emit_table("jobs by state", list(STATES), [[stats.by_state.get(s, 0) for s in STATES]])
        queues = stats.by_queue or {}
        rows = []
        for name in sorted(queues):
            entry = queues[name]
            counts = entry.get("by_state", entry) if isinstance(entry, dict) else {"total": entry}
            rows.append([name] + [counts.get(s, 0) for s in STATES])
        if rows:
            emit_table("by queue", ["queue", *STATES], rows)
        print(f"total {stats.total}  runnable {stats.runnable}  submits {stats.total_submits}  "
              f"acks {stats.total_acks}  retries {stats.total_retries}  dead {stats.total_dead}")
    return run(args, body)


def cmd_watch(args: argparse.Namespace) -> int:
    """Print the live event stream (SSE) until Ctrl-C; resumes on another node with Last-Event-ID."""
    import aiohttp

    async def body(client):
        last_id, seen, node = None, 0, 0
        while args.count is None or seen < args.count:
            url = client.urls[node % len(client.urls)] + "/events"
            headers = {"Accept": "text/event-stream"}
            if client.key:
                headers["Authorization"] = f"Bearer {client.key}"
            if last_id:
                headers["Last-Event-ID"] = last_id
            try:
                async with client._get_session().get(url, headers=headers,  # noqa: SLF001
                                                      timeout=aiohttp.ClientTimeout(total=None, sock_read=30)) as resp:
                    if resp.status >= 400:
                        from raftqueue.client.errors import error_for
                        raise error_for(resp.status, _maybe_json(await resp.read()))
                    event, data = "message", []
                    async for raw in resp.content:
                        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                        if line.startswith("id:"):
                            last_id = line[3:].strip()
                        elif line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:"):
                            data.append(line[5:].strip())
                        elif not line and data:
                            if args.all or event != "stats":
                                _print_event(args, event, "\n".join(data))
                                seen += 1
                                if args.count is not None and seen >= args.count:
                                    return
                            event, data = "message", []
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
                print(f"raftqueue watch: {url} went away ({exc.__class__.__name__}); switching node",
                      file=sys.stderr)
                node += 1
                await asyncio.sleep(0.5)
    return run(args, body)


def _maybe_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace")


def _print_event(args: argparse.Namespace, event: str, data: str) -> None:
    if args.json:
        sys.stdout.write(orjson.dumps({"event": event, "data": _maybe_json(data.encode())}).decode() + "\n")
    else:
        parsed = _maybe_json(data.encode())
        if isinstance(parsed, dict) and event == "job":
            print(f"{parsed.get('kind', ''):<10} {parsed.get('job_id', '')}  {parsed.get('queue', '')}  "
                  f"{parsed.get('state', '')}")
        else:
            print(f"{event}: {data}")
    sys.stdout.flush()


def cmd_cluster_status(args: argparse.Namespace) -> int:
    async def body(client):
        nodes = await client.cluster_nodes()
        if args.json:
            emit_json(nodes)
            return
        top = max((n.get("commit_index") or 0 for n in nodes), default=0)
        rows = []
        for node in nodes:
            if "error" in node:
                rows.append([node["node_id"], node.get("http_addr"), "DOWN", "", "", "", "", "", "", node["error"]])
                continue
            rows.append([node["node_id"], node.get("http_addr"), node.get("role"), node.get("leader"), node.get("term"),
                         node.get("commit_index"), node.get("applied_index"), top - (node.get("applied_index") or 0),
                         node.get("pid"), (node.get("state_digest") or "")[:16]])
        emit_table("cluster", ["node", "url", "role", "leader", "term", "commit", "applied", "lag", "pid", "digest"],
                   rows)
        for node in nodes:
            learner = node.get("catching_up")
            if learner:  # a node being added: it receives the log before it gets a vote
                print(f"{learner['id']} ({learner['http_addr']}) is catching up before it is added: it holds up to "
                      f"index {learner['match_index']} of {node.get('last_log_index')}, "
                      f"{learner['snapshot_bytes_sent']:,} snapshot bytes sent, "
                      f"last progress {learner['idle_s']} s ago")
    return run(args, body)


def cmd_cluster_members(args: argparse.Namespace) -> int:
    async def body(client):
        if args.members_command == "add":
            answer = await client.add_member(args.id, args.raft_addr, args.http_addr)
        else:
            answer = await client.remove_member(args.id)
        if args.json:
            emit_json(answer)
            return
        learner = answer.get("catching_up")
        if learner:  # 202: the leader goes on sending it the log, and adds it once it has caught up
            print(f"{args.id} is catching up with the log (it holds up to index {learner['match_index']}, "
                  f"{learner['snapshot_bytes_sent']} snapshot bytes sent); the leader adds it once it has caught up. "
                  "`raftqueue cluster status` shows how far it is")
            return
        if answer.get("was_catching_up"):
            print(f"cancelled adding {args.id}: it was still catching up with the log, and is not a member")
        else:
            print(("added " + args.id) if args.members_command == "add" else f"removed {args.id}")
        emit_table("members", ["id", "raft", "url"],
                   [[m["id"], m["raft_addr"], m["http_addr"]] for m in answer["members"]])
    return run(args, body)


def cmd_keys(args: argparse.Namespace) -> int:
    async def body(client):
        if args.keys_command == "create":
            key = await client.create_key(args.name, args.owner, args.type)
            if args.json:
                emit_json(key)
            else:
                print(f"created {key.type} key {key.key_id} for {key.owner_id}; the secret (shown once):")
                print(key.key)
        elif args.keys_command == "list":
            keys = await client.list_keys(all_keys=args.all)
            if args.json:
                emit_json(keys)
            else:
                emit_table("API keys", ["key_id", "name", "owner", "type", "created", "last used", "revoked"],
                           [[k.key_id, k.name, k.owner_id, k.type, k.created_at, k.last_used_at, k.revoked_at]
                            for k in keys])
        else:
            answer = await client.revoke_key(args.key_id)
            emit_json(answer) if args.json else print(f"revoked {answer.get('key_id')}")
    return run(args, body)


def cmd_worker(args: argparse.Namespace) -> int:
    import logging

    from raftqueue.worker import Worker, load_handler
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        handler = load_handler(args.handler)
    except (ImportError, AttributeError, ValueError) as exc:
        print(f"raftqueue worker: cannot load {args.handler}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    urls, key = _urls_and_key(args)  # the worker makes (and closes) its own client
    worker = Worker(handler, args.queue or ["default"], urls=urls, key=key, concurrency=args.concurrency,
                    lease_ms=args.lease_ms, job_timeout_s=args.job_timeout, shutdown_grace_s=args.grace)
    counts = worker.run()
    print(" ".join(f"{k}={v}" for k, v in counts.items()), file=sys.stderr)
    return EXIT_OK


# ----- parsers -----------------------------------------------------------------------------------------------------
def _common(parser: argparse.ArgumentParser, nested: bool = False) -> None:
    """--url/--key/--json/--timeout; `nested` (a sub-subcommand) leaves unset options to its parent's defaults."""
    default = (lambda value: argparse.SUPPRESS) if nested else (lambda value: value)
    parser.add_argument("--url", action="append", default=default(None),
                        help="node URL (repeat or comma-separate; env RAFTQUEUE_URL)")
    parser.add_argument("--key", default=default(None), help="API key (env RAFTQUEUE_KEY)")
    parser.add_argument("--json", action="store_true", default=default(False), help="JSON output for scripts")
    parser.add_argument("--timeout", type=float, default=default(30.0), help="per-request timeout in seconds")


def add_commands(sub) -> None:
    def cmd(name: str, func: Callable, help_text: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text, description=help_text)
        _common(parser)
        parser.set_defaults(func=func)
        return parser

    p = cmd("submit", cmd_submit, "submit a job (or many from a JSON/JSONL file)")
    p.add_argument("payload", nargs="?", help="the job's payload as JSON, e.g. '{\"to\": \"ada\"}'")
    p.add_argument("--queue", "-q")
    p.add_argument("--priority", type=int)
    p.add_argument("--delay-ms", type=int)
    p.add_argument("--run-at", help="RFC 3339 time")
    p.add_argument("--max-retries", type=int)
    p.add_argument("--lease-ms", type=int)
    p.add_argument("--idempotency-key")
    p.add_argument("--tag", action="append", help="key=value (repeat)")
    p.add_argument("--depends-on", action="append", help="job id that must be ACKED first (repeat)")
    p.add_argument("--file", "-f", help="bulk: a JSON array or JSONL file of job bodies ('-' for stdin)")
    p.add_argument("--payloads", action="store_true", help="bulk: every item is a bare payload")
    p.add_argument("--batch-size", type=int, default=500, help="bulk: jobs per batch request (<= 1000)")

    p = cmd("get", cmd_get, "show one job")
    p.add_argument("job_id")

    p = cmd("list", cmd_list, "list jobs, newest first")
    p.add_argument("--state", choices=STATES)
    p.add_argument("--queue", "-q")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor")

    p = cmd("lease", cmd_lease, "lease jobs by hand (prints the lease tokens)")
    p.add_argument("--queue", "-q", action="append", default=None)
    p.add_argument("--max-jobs", type=int, default=1)
    p.add_argument("--lease-ms", type=int)
    p.add_argument("--wait-ms", type=int, default=0)

    p = cmd("ack", cmd_ack, "finish a leased job")
    p.add_argument("job_id")
    p.add_argument("lease_token")
    p.add_argument("--result", help="the result as JSON")
    p.add_argument("--result-error")

    p = cmd("nack", cmd_nack, "fail a leased job (retry after backoff, or DEAD)")
    p.add_argument("job_id")
    p.add_argument("lease_token")
    p.add_argument("--error", default="nacked from the CLI")
    p.add_argument("--retry-in-ms", type=int)

    p = cmd("release", _simple("release", "job_id", "lease_token",
                               label=lambda a: f"{a.get('job_id')} {a.get('state')} attempts={a.get('attempts')}"),
            "give a leased job back unfinished (READY at once; the attempt is not counted)")
    p.add_argument("job_id")
    p.add_argument("lease_token")

    p = cmd("cancel", _simple("cancel", "job_id", "reason",
                              label=lambda a: f"{a.get('job_id')} {a.get('state', 'CANCELLED')}"), "cancel a job")
    p.add_argument("job_id")
    p.add_argument("--reason")

    p = cmd("retry", cmd_retry, "redrive a DEAD or CANCELLED job")
    p.add_argument("job_id")
    p.add_argument("--reset-attempts", action="store_true")

    p = cmd("dead", cmd_dead, "list dead letters, or redrive them (--redrive)")
    p.add_argument("--queue", "-q")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--redrive", action="store_true", help="put every DEAD job (of --queue) back to READY")

    cmd("stats", cmd_stats, "totals by state and queue")

    p = cmd("watch", cmd_watch, "follow the live event stream")
    p.add_argument("--all", action="store_true", help="also print the periodic stats events")
    p.add_argument("--count", type=int, help="stop after this many events")

    p = cmd("keys", cmd_keys, "create, list and revoke API keys")
    keys_sub = p.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create")
    _common(create, nested=True)
    create.add_argument("name")
    create.add_argument("--owner", required=True)
    create.add_argument("--type", choices=("client", "worker", "admin"), default="client")
    listing = keys_sub.add_parser("list")
    _common(listing, nested=True)
    listing.add_argument("--all", action="store_true", help="every key (admin)")
    revoke = keys_sub.add_parser("revoke")
    _common(revoke, nested=True)
    revoke.add_argument("key_id")

    for name, verb in (("pause", "stop leasing from"), ("resume", "resume leasing from")):
        p = cmd(name, _simple(name, "queue_name"), f"{verb} a queue")
        p.add_argument("queue_name")

    p = cmd("worker", cmd_worker, "run a handler for jobs: raftqueue worker module:function -q queue")
    p.add_argument("handler", help="module:function; sync or async, called with a JobContext")
    p.add_argument("--queue", "-q", action="append")
    p.add_argument("--concurrency", "-c", type=int, default=4)
    p.add_argument("--lease-ms", type=int, default=30_000)
    p.add_argument("--job-timeout", type=float, default=300.0, help="seconds before a handler is abandoned")
    p.add_argument("--grace", type=float, default=30.0, help="seconds in-flight jobs get at SIGTERM")
    p.add_argument("--log-level", default="INFO")


def add_cluster_status(sub) -> None:
    p = sub.add_parser("cluster-status", help="every node's role, term, indexes, lag, digest")
    _common(p)
    p.set_defaults(func=cmd_cluster_status)
    p = sub.add_parser("cluster-add", help="add a started node to the cluster (admin key)",
                       description="raftqueue cluster add ID RAFT_HOST:PORT HTTP_URL. Start the node first, with "
                                   "--peer for every member and itself and an empty data directory.")
    p.add_argument("id")
    p.add_argument("raft_addr", metavar="RAFT_HOST:PORT")
    p.add_argument("http_addr", metavar="HTTP_URL")
    _common(p)
    p.set_defaults(func=cmd_cluster_members, members_command="add")
    p = sub.add_parser("cluster-remove", help="remove a node from the cluster (admin key)",
                       description="raftqueue cluster remove ID. The leader hands over first if it is the one "
                                   "removed. Stop the removed node afterwards.")
    p.add_argument("id")
    _common(p)
    p.set_defaults(func=cmd_cluster_members, members_command="remove")
