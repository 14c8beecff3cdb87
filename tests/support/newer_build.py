"""Run `raftqueue serve` as a newer build would: one whose store knows a command this build does not.

    python tests/support/newer_build.py serve --node-id n1 ...

The newer build's command, `newer_build_note`, adds to a counter (so it shows in the state digest). Its leader
proposes one such command whenever the file named by RAFTQUEUE_TEST_NOTE_TRIGGER appears (and removes the
file), through the same housekeeping path the node uses for expire and purge. test_mixed_builds runs nodes of
this build beside nodes of the real one, the situation a rolling upgrade done in the wrong order creates.
"""
from __future__ import annotations

import os
import sys

import orjson

from raftqueue.replicated_store import ReplicatedStore
from raftqueue.store.commands import COMMAND_VERSION
from raftqueue.store.store import JobStore

KIND = "newer_build_note"
COUNTER = "newer_build_notes"


def _install() -> None:
    original_init = JobStore.__init__
    original_housekeeping = ReplicatedStore._housekeeping

    def init(self, *args, **kwargs) -> None:
        original_init(self, *args, **kwargs)

        def note(command: dict, events: list) -> dict:
            self.counters[COUNTER] = self.counters.get(COUNTER, 0) + 1
            return {"notes": self.counters[COUNTER]}
        self._handlers[KIND] = note

    def housekeeping(self) -> list[bytes]:
        commands = original_housekeeping(self)
        trigger = os.environ.get("RAFTQUEUE_TEST_NOTE_TRIGGER")
        if trigger and os.path.exists(trigger):
            os.unlink(trigger)
            now = max(self.clock.now_ms(), self.store.clock)
            commands.append(orjson.dumps({"kind": KIND, "v": COMMAND_VERSION, "now": now}))
        return commands

    JobStore.__init__ = init
    ReplicatedStore._housekeeping = housekeeping


if __name__ == "__main__":
    _install()
    from raftqueue.cli import main
    sys.exit(main(sys.argv[1:]))
