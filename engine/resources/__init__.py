"""The synchronous resources, owner-scoped records behind the ``/v1`` CRUD routes:

    items.py        sources an owner tracks (type detected from a URL or a handle), by source
    collections.py  named sets of items
    reporters.py    reporters, their workflows and the workflows' steps
    schedules.py    a reporter's schedules, and the due index the scheduler reads
    documents.py    the documents executions publish (once per step, under a derived id)
    records.py      the stored records and their kinds; relations.py, the id lists under a parent
    store.py        the storage they share: records, owner indexes, pages, one-script transactions

Resources know nothing of tools: a workflow's steps are checked by the caller's ``StepCheck``
(engine.tools.catalog.check_step). May import engine.runtime, engine.log (ids, keys) and the shared
vocabulary; not tools, money, run, schedules or commands.
"""
