"""The event log: every execution's events, how they are written, read, leased and encoded.

What this room owns:

    events.py     the events: frozen tagged Structs, one union, the rules for evolving them
    codec.py      the only bytes <-> events code
    keys.py       every Redis key name; ids.py: execution ids and their partitions
    store.py      EventStore: opens the store and hands out its parts, which share context.py
                  (client, settings, key names; running a script, a pipeline of script calls,
                  a write confirmed by replicas):
      event_log.py   store.log: expected-version appends, histories, partition logs by range
      admission.py   store.admission: requests (fee, idempotency, seq 1, the ready list)
      leases.py      store.leases: dispatch, renew, takeover, release, dead letters, and the
                     worker group on the partition logs
      blobs.py       store.blobs: large outputs stored once by content hash
    entries.py    Entry and RawEntry, the stream entries the parts hand out
    batcher.py    AppendBatcher: group commit of many executions' appends

Each part runs its own Lua scripts, kept at the end of its module. Money moves arrive computed, as
data (engine.money.billing makes them): this room knows no prices.

What it may import: engine.connection, engine.settings, engine.clock and engine.errors, and
nothing else of the engine (the import contracts in pyproject.toml keep it so).
"""
