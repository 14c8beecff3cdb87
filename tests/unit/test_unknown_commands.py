"""A command this build does not know (a newer build's) is not answered like a malformed one: the replica
stops before changing anything (CannotApply), while a malformed command of a known kind is still rejected alike
by every replica. The end-to-end case, with real nodes of two builds, is tests/integration/test_mixed_builds.py."""
from __future__ import annotations

import orjson
import pytest

from raftqueue.clock import Clock
from raftqueue.raft.errors import CannotApply
from raftqueue.replicated_store import ReplicatedStore
from raftqueue.store import COMMAND_VERSION, JobStore

NOW = 1_700_000_000_000


def _submit(job_id: str) -> dict:
    return {"kind": "submit", "v": COMMAND_VERSION, "now": NOW, "job_id": job_id, "payload": "1", "queue": "q"}


def test_the_store_names_what_its_build_does_not_know():
    store = JobStore()
    assert store.unknown_to_this_build(_submit("a")) is None
    assert store.unknown_to_this_build({"kind": "submit", "now": NOW}) is None  # malformed, but a known kind
    assert store.unknown_to_this_build({"kind": 7}) is None                     # malformed alike everywhere
    assert store.unknown_to_this_build("not a command") is None
    assert store.unknown_to_this_build({"kind": "frobnicate"}) == "unknown command kind 'frobnicate'"
    assert store.unknown_to_this_build({**_submit("a"), "v": 2}) == "unsupported command version 2"


def test_an_entry_with_an_unknown_command_changes_nothing_and_stops_the_replica():
    state = ReplicatedStore(Clock(), retention_ms=60_000)
    state.apply_entry(orjson.dumps([_submit("a")]), 1)
    digest = state.store.digest()
    entry = orjson.dumps([_submit("b"), {"kind": "frobnicate", "v": COMMAND_VERSION, "now": NOW + 5}])
    with pytest.raises(CannotApply) as raised:
        state.apply_entry(entry, 2)
    assert raised.value.index == 2 and "frobnicate" in raised.value.reason
    assert state.store.digest() == digest and state.state_index == 1  # not even the known command before it
    assert "b" not in state.store.jobs
    assert state.unknown_command([_submit("c"), {"kind": "frobnicate"}]) == "unknown command kind 'frobnicate'"
    assert state.unknown_command([_submit("c")]) is None


def test_a_malformed_command_of_a_known_kind_is_still_rejected_and_the_log_goes_on():
    state = ReplicatedStore(Clock(), retention_ms=60_000)
    results = state.apply_entry(orjson.dumps([{"kind": "submit", "v": COMMAND_VERSION, "now": NOW},
                                              _submit("a")]), 1)
    assert results[0]["error"]["code"] == "validation_error" and results[1]["job_id"] == "a"
    assert state.state_index == 1
