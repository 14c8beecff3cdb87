"""Request validation (bodies -> store commands) and node configuration parsing."""
from __future__ import annotations

import argparse

import orjson
import pytest

from raftqueue.api import validation as v
from raftqueue.api.errors import ApiError
from raftqueue.config import ConfigError, add_serve_arguments, config_from_args, parse_duration_ms, parse_peer
from raftqueue.timefmt import parse_rfc3339, to_rfc3339

L, D = v.Limits(), v.Defaults()


def test_submit_defaults_are_filled_on_the_leader():
    command = v.submit_command({"payload": {"a": [1, 2]}}, L, D)
    assert command == {"kind": "submit", "payload": '{"a":[1,2]}', "queue": "default", "priority": 0,
                       "run_at": None, "delay_ms": None, "max_retries": 3, "lease_ms": None,
                       "backoff": {"base_ms": 1000, "max_ms": 300000}, "idempotency_key": None, "tags": {},
                       "depends_on": []}


def test_null_payload_is_a_payload():
    assert v.submit_command({"payload": None}, L, D)["payload"] == "null"


def test_run_at_is_parsed_to_ms():
    command = v.submit_command({"payload": 1, "run_at": "2026-11-23T10:30:00.123Z"}, L, D)
    assert command["run_at"] == parse_rfc3339("2026-11-23T10:30:00.123Z")
    assert to_rfc3339(command["run_at"]) == "2026-11-23T10:30:00.123Z"


@pytest.mark.parametrize("body,field", [
    ({}, "payload"),
    ({"payload": 1, "queue": ""}, "queue"),
    ({"payload": 1, "queue": "a" * 129}, "queue"),
    ({"payload": 1, "priority": True}, "priority"),
    ({"payload": 1, "priority": 2 ** 40}, "priority"),
    ({"payload": 1, "run_at": "2026-01-01T00:00:00"}, "run_at"),
    ({"payload": 1, "run_at": "x", "delay_ms": 1}, "run_at"),
    ({"payload": 1, "delay_ms": 10 ** 15}, "delay_ms"),
    ({"payload": 1, "lease_ms": 5}, "lease_ms"),
    ({"payload": 1, "backoff": {"base_ms": 10, "max_ms": 5}}, "backoff.max_ms"),
    ({"payload": 1, "backoff": {"factor": 2}}, "backoff.factor"),
    ({"payload": 1, "idempotency_key": ""}, "idempotency_key"),
    ({"payload": 1, "tags": {"k": "v" * 300}}, "tags.k"),
    ({"payload": 1, "tags": {f"k{i}": "v" for i in range(40)}}, "tags"),
    ({"payload": 1, "depends_on": ["../../x"]}, "depends_on[0]"),
    ({"payload": 1, "extra": 1}, "extra"),
])
def test_submit_rejections_name_the_field(body, field):
    with pytest.raises(ApiError) as err:
        v.submit_command(body, L, D)
    assert err.value.status == 400 and err.value.message.startswith(field + ":")


def test_oversize_payload_is_413():
    with pytest.raises(ApiError) as err:
        v.submit_command({"payload": "x" * (L.max_payload_bytes + 1)}, L, D)
    assert err.value.status == 413


def test_invalid_json_and_bad_utf8_are_400():
    for raw in (b"{", b'{"payload": "\xff"}', b"[" * 2000 + b"]" * 2000):
        with pytest.raises(ApiError) as err:
            v.parse_json(raw)
        assert err.value.code == "invalid_json"


def test_lease_forms():
    command, wait, list_form = v.lease_command({}, L, D)
    assert command["queues"] == ["default"] and command["max_jobs"] == 1 and wait == 0 and not list_form
    assert command["default_lease_ms"] == 30_000 and command["lease_ms"] is None
    command, wait, list_form = v.lease_command({"queues": ["b", "a"], "queue": "a", "max_jobs": 10,
                                                "wait_ms": 500}, L, D)
    assert command["queues"] == ["a", "b"] and list_form and wait == 500
    for bad in ({"max_jobs": 0}, {"max_jobs": 101}, {"wait_ms": 30_001}, {"queues": "a"}):
        with pytest.raises(ApiError):
            v.lease_command(bad, L, D)


def test_ack_forms():
    assert v.ack_command("j1", {}, L) == {"kind": "ack", "job_id": "j1", "lease_token": None, "result": None,
                                          "result_error": None}
    assert v.ack_command("j1", {"result": {"ok": 1}, "lease_token": "t"}, L)["result"] == '{"ok":1}'
    with pytest.raises(ApiError):
        v.ack_command("j1", {"result": 1, "result_error": "e"}, L)
    batch = v.ack_batch_command({"acks": [{"job_id": "a", "lease_token": "t", "result_error": "bad"}]}, L)
    assert batch["acks"][0]["result_error"] == "bad"
    with pytest.raises(ApiError) as err:
        v.ack_batch_command({"acks": [{"job_id": "a"}] * (L.max_batch_acks + 1)}, L)
    assert err.value.status == 413


def test_config_from_flags_and_env(monkeypatch, tmp_path):
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    peers = [f"n{i}=127.0.0.1:{9080 + i}=http://127.0.0.1:{8080 + i}" for i in (1, 2, 3)]
    args = parser.parse_args(["--node-id", "n2", "--data-dir", str(tmp_path), *sum((["--peer", p] for p in peers), []),
                              "--lease", "45s", "--retention", "2h"])
    monkeypatch.setenv("RAFTQUEUE_CLUSTER_SECRET", "s")
    monkeypatch.setenv("RAFTQUEUE_ADMIN_KEY", "k" * 32)
    config = config_from_args(args)
    assert config.raft_addr == "127.0.0.1:9082" and (config.http_host, config.http_port) == ("127.0.0.1", 8082)
    assert config.lease_ms == 45_000 and config.retention_ms == 7_200_000 and config.cluster_secret == "s"
    assert [m.id for m in config.members] == ["n1", "n2", "n3"]
    monkeypatch.setenv("RAFTQUEUE_PEERS", ",".join(peers))
    monkeypatch.setenv("RAFTQUEUE_NODE_ID", "n3")
    monkeypatch.setenv("RAFTQUEUE_DATA_DIR", str(tmp_path))
    config = config_from_args(parser.parse_args([]))
    assert config.node_id == "n3" and config.http_port == 8083


@pytest.mark.parametrize("argv,needle", [
    ([], "--node-id"),
    (["--node-id", "n1"], "--raft-addr"),
    (["--node-id", "n1", "--peer", "bad"], "peer"),
    (["--node-id", "n1", "--raft-addr", "h:1", "--http-addr", "h:2"], "--data-dir"),
    (["--node-id", "n1", "--raft-addr", "h:1", "--http-addr", "h:2", "--data-dir", "d", "--lease", "soon"], "--lease"),
])
def test_config_errors_say_what_to_fix(argv, needle, monkeypatch):
    for name in ("RAFTQUEUE_NODE_ID", "RAFTQUEUE_PEERS", "RAFTQUEUE_DATA_DIR", "RAFTQUEUE_RAFT_ADDR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAFTQUEUE_ADMIN_KEY", "k" * 32)
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    with pytest.raises(ConfigError) as err:
        config_from_args(parser.parse_args(argv))
    assert needle in str(err.value)


def _serve_parser(tmp_path, monkeypatch) -> tuple[argparse.ArgumentParser, list[str]]:
    """`raftqueue serve`'s parser and the flags one node needs, to add the flag under test to."""
    monkeypatch.setenv("RAFTQUEUE_ADMIN_KEY", "k" * 32)
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser, ["--node-id", "n1", "--raft-addr", "127.0.0.1:9081", "--http-addr", "127.0.0.1:8081",
                    "--data-dir", str(tmp_path), "--insecure-raft"]


def test_stall_grace_reaches_the_raft_settings_and_is_bounded(tmp_path, monkeypatch):
    from raftqueue.server import replica_config, validate
    parser, base = _serve_parser(tmp_path, monkeypatch)
    default = config_from_args(parser.parse_args(base))
    assert replica_config(default).raft["stall_grace_s"] == 1.0
    quick = config_from_args(parser.parse_args([*base, "--stall-grace", "0"]))
    validate(quick)
    assert replica_config(quick).raft["stall_grace_s"] == 0.0
    monkeypatch.setenv("RAFTQUEUE_STALL_GRACE", "250ms")
    assert replica_config(config_from_args(parser.parse_args(base))).raft["stall_grace_s"] == 0.25
    too_long = config_from_args(parser.parse_args([*base, "--stall-grace", "2s"]))
    with pytest.raises(ConfigError) as err:
        validate(too_long)  # past a cut-off leader's own step-down (1.2 s) it would only leave the cluster leaderless
    assert "--stall-grace" in str(err.value)


def test_catch_up_wait_reaches_the_api_settings_and_is_bounded(tmp_path, monkeypatch):
    from raftqueue.server import api_settings, validate
    parser, base = _serve_parser(tmp_path, monkeypatch)
    assert api_settings(config_from_args(parser.parse_args(base))).catch_up_wait_s == 20.0
    longer = config_from_args(parser.parse_args([*base, "--catch-up-wait", "2m"]))
    validate(longer)
    assert api_settings(longer).catch_up_wait_s == 120.0
    monkeypatch.setenv("RAFTQUEUE_CATCH_UP_WAIT", "1500ms")
    assert api_settings(config_from_args(parser.parse_args(base))).catch_up_wait_s == 1.5
    for bad in ("0", "11m"):
        with pytest.raises(ConfigError) as err:
            validate(config_from_args(parser.parse_args([*base, "--catch-up-wait", bad])))
        assert "--catch-up-wait" in str(err.value)


def test_durations_and_peers():
    assert parse_duration_ms("250ms", "x") == 250 and parse_duration_ms("7d", "x") == 7 * 86_400_000
    assert parse_duration_ms("1500", "x") == 1500
    assert parse_peer("n1=node1:9081=http://node1:8081/").http_addr == "http://node1:8081"
    with pytest.raises(ConfigError):
        parse_peer("n1=node1=http://x")


def test_json_text_keeps_what_it_was_given():
    value = {"z": 1, "a": [1.5, None, "é"]}
    assert orjson.loads(v.json_text(value, "payload", 1000)) == value


@pytest.mark.parametrize("check,good", [(v.queue_name, "emails.high:eu-1"), (v.job_id, "01a21fa2-6e9d-7000")])
def test_names_and_ids_are_matched_whole(check, good):
    """A final newline must not pass: `$` matches before one, and "abc\\n" became a queue no route could pause."""
    assert check(good) == good
    for bad in (good + "\n", "\n" + good, good + " ", good + "/x", ""):
        with pytest.raises(ApiError):
            check(bad)


def test_query_numbers_are_digits_only():
    assert v.query_int("50", "limit", 1, 500) == 50
    for bad in ("5_0", " +5", "-1", "1e2", "٥", "", "0", "501", "9" * 19):
        with pytest.raises(ApiError) as err:
            v.query_int(bad, "limit", 1, 500)
        assert err.value.message.startswith("limit")


def test_a_cursor_must_look_like_one_this_api_returned():
    assert v.CURSOR_RE.fullmatch("1764290000000.01a21fa2-6e9d-7000")
    for bad in ("1.", "-5.x", ".x", "12", "1.x/y", "1.x\n"):
        assert not v.CURSOR_RE.fullmatch(bad), bad


def test_times_are_rfc3339_only():
    assert parse_rfc3339("2026-11-23T10:30:00Z") == parse_rfc3339("2026-11-23 11:30:00.000+01:00")
    for bad in ("2026-W01-1T00:00Z", "2026-327T10:30:00Z", "2026-11-23", "2026-11-23T10:30Z", "20261123T103000Z",
                "2026-11-23T10:30:00", "2026-11-23T10:30:00+0100"):
        with pytest.raises(ValueError):
            parse_rfc3339(bad)
