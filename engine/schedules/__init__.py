"""Schedules: running a reporter's schedules (docs/decisions/0003). The schedule records, and the
due index they keep, live in engine.resources.schedules.

Owns:

    scheduler.py  the scheduler role: fire each due tick of each enabled schedule, once
    runs.py       requesting a run (one at a time, marked by the schedule's run marker) and the
                  execution it is: a channel_sync and a schedule_pick step per channel
    pick.py       the schedule_pick tool: read the listing and the seen hash, decide, start one
                  execution per picked video (once, through the seen hash)
    rules.py      pure: what a pick decides for each video of a listing, and the shapes it reads

May import the rooms below it: engine.requests (request builders), engine.resources,
engine.tools (the Tool base the pick step is), engine.log, engine.runtime and the shared
vocabulary (clock, connection, errors, settings). Above it are engine.run (the worker runs the
pick step: engine.run.toolbox) and engine.commands; it imports neither, nor projections or api.
"""
