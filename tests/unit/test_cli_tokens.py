"""Lease tokens on the command line: a token may start with "-" (builds before 2026-11-27 made 1 in 64 so),
and the leader now stamps hex tokens that never do."""
from __future__ import annotations

import pytest

from raftqueue.cli import build_parser, main
from raftqueue.ids import IdGenerator
from raftqueue.stamping import stamp


@pytest.mark.parametrize("argv", [
    ["release", "job-1", "-_k23Zcwj98Cs3YD.0", "--json"],
    ["ack", "job-1", "-x.1", "--result", '"ok"'],
    ["nack", "job-1", "--", "-x.1"],
])
def test_a_token_that_starts_with_a_dash_is_the_token(argv):
    from raftqueue.cli import _token_after_separator
    args = build_parser().parse_args(_token_after_separator(argv))
    assert args.job_id == "job-1" and args.lease_token.startswith("-")


def test_control_argparse_alone_reads_it_as_an_option():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["release", "job-1", "-_k23Zcwj98Cs3YD.0", "--json"])


def test_help_still_works_before_the_job_id(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["ack", "-h"])
    assert exited.value.code == 0 and "lease_token" in capsys.readouterr().out


def test_stamped_tokens_never_start_with_a_dash():
    ids = IdGenerator()
    for _ in range(2_000):
        base = stamp({"kind": "lease"}, 1_700_000_000_000, ids)["token_base"]
        assert not base.startswith("-") and len(base) == 24
