"""The read side: pure folds of the event log into views, the projector that keeps them current,
the queries the API reads, and replay (rebuild, compare, switch)."""
