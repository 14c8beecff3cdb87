import raftqueue


def test_version_is_declared() -> None:
    assert raftqueue.__version__.count(".") == 2
