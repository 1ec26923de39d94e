"""clipstream's write side and the vocabulary every side shares. One room per concern, each with a
docstring saying what it owns and what it may import; the rooms below import none above them
(import-linter's contracts in pyproject.toml keep it so; docs/architecture.md draws it):

    commands.py   what the API calls: request a transcript, a process, a collection; cancel
    run/          running executions: pure plan and decisions, the drive and the worker loop
    schedules/    the scheduler, schedule runs and their pick step
    requests.py   pure builders of each kind's ExecutionRequested, and idempotency fingerprints
    tools/        the steps' vocabulary: one module per tool, the catalogue, retry policies
    resources/    the synchronous resources: items, collections, reporters, workflows, schedules,
                  documents
    money/        accounts and balances, billing arithmetic (pure), read fees, the ledger audit
    providers/    what tools call: simulated and HTTP transcriber, LLM and YouTube
    runtime.py    what every role shares: settings, the Redis client, the store, the secrets
    log/          the event log: events, codec, keys, ids, the event store and its scripts
    connection.py opening a Redis client (a server, a cluster, the embedded store); reply text
    settings.py clock.py language.py errors.py   configuration, the clock, the language rule,
                  the error tree

Nothing here imports ``projections`` or ``api``.
"""
