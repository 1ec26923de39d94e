"""clipstream's write side and shared vocabulary: events, codec, keys, settings, store, worker."""
