"""Fixtures shared by the unit tests of the Raft layer."""
from __future__ import annotations

import pytest

from tests.support.idle_node import close_idle_node, idle_node


@pytest.fixture
def node(tmp_path):
    """A real RaftNode of a 3-node cluster whose peers do not exist, ticked by hand (tests/support/idle_node)."""
    raft = idle_node(tmp_path)
    yield raft
    close_idle_node(raft)
