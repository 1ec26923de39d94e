"""Running executions: everything between a lease and its execution's terminal event.

Owns the decisions, pure (no Redis, no clock of their own: the time and the randomness come in):
``plan`` folds an execution's history and says what happens next, ``decide`` which events that
takes and how they are rewritten when the store answers. Around them the I/O shell: ``drive`` is
one execution's (with ``call``, one attempt's tool call), ``worker`` is the loop (with ``lanes``,
``heartbeat`` and ``claims``); ``job`` holds what the worker hands a drive, and ``toolbox`` what a
drive may run.

Inside: the worker imports the drive, the drive sees only its ``job.DriveContext``, never the
worker; ``plan`` and ``decide`` import no sibling but ``plan``, and no clock (a contract in
pyproject.toml holds them to it). Below: any room of the engine but ``commands`` (engine.tools,
engine.schedules for the internal pick step, engine.resources, engine.money, engine.log, ...);
nothing outside the engine.
"""
