"""The only code that knows PySyncObj: a hardened Raft node, its durable journal, snapshots and transport."""
