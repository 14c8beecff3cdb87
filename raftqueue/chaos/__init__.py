"""The chaos harness: seeded faults against a live cluster, a recorded history, and a checker."""
