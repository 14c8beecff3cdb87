"""`python -m raftqueue ...` is the `raftqueue` command."""
from raftqueue.cli import main

raise SystemExit(main())
