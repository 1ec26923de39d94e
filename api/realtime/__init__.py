"""The realtime feed at the edge (DESIGN §8): what an API process holds for its subscribers.

- ``endpoints``: ``GET /v1/realtime`` (WebSocket) and ``GET /v1/executions/stream`` (SSE), the
  handshake's checks (session, origin) and each subscription's loop;
- ``hub``: ``FeedHub``, one per process, tailing the owners' feed streams and fanning each entry
  out, encoded once, to their subscriptions;
- ``subscription``: one client's bounded queue of shared frames, its history and its close reasons;
- ``websocket``: the RFC 6455 connection behind uvicorn, small per connection, on ``ws_codec``
  (the protocol without I/O) and ``rounds`` (one timer's slices over many connections).

Nothing here writes to the log: the feed is what the projector commits (projections.feed).
"""
