"""The read side: folds the event log into views, keeps them current, and answers the API's reads.

    views.py      the view Structs: plain data (times in ms, money in micro-coins)
    fold.py       pure ``apply(view, event) -> view``: a duplicate is a no-op, a gap FoldGap
    progress.py   pure views derived on read: a per-item execution's items, a schedule run
    batch.py      a batch of log entries folded into views, gaps repaired from the streams
    namespace.py  the key names inside a projection version, the live version, transcript pointers
    scripts.py    the projector's Lua (views, indexes, feed entries and checkpoint in one call)
    projector.py  read -> fold -> write views + checkpoint atomically, per partition
    view_cache.py the running executions' views a projector committed, kept between batches
    feed.py       the per-owner realtime feed streams: what an entry holds, written and read
    queries.py    what the API reads: views, pages of views, runs, transcripts, raw histories
    replay.py     rebuild into a new version, compare, switch

It owns the views and every key of a projection namespace, and the feed streams. It may import
the engine's vocabulary (``engine.log``: events, codec, keys, ids, the store's reads; settings,
connection, runtime, language, errors, clock), never what runs or decides (commands, run,
schedules, requests, tools, providers, resources, money) and never ``api`` (import-linter keeps
both). It never shapes a response: how a client sees a view is ``api.render``'s.
"""
