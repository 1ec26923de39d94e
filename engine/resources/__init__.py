"""The synchronous resources (collections, reporters, workflows, steps, schedules, documents) on
one shared storage layer (``engine.resources.store``); items live in ``engine.resources.items`` on
the same layer."""
