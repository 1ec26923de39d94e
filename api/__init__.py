"""clipstream's doors: the HTTP/WebSocket shell and the ``clipstream`` command.

    app.py             the Starlette app: the routes list, the lifespan, middleware, handlers
    routes/            one module per resource family: thin endpoints (parse, call, render)
    parse.py           reading a request: its body as a request Struct, path ids, paging
    schemas/           the request and response Structs (the OpenAPI document's one source)
    render.py          views and engine records -> response Structs: the one place a body's
                       shape, its dates and its coin amounts are written
    openapi.py         ``doc(...)`` on endpoints; the OpenAPI 3.1 document; docs_page.py draws it
    auth.py            API keys, session JWTs, the admin token; ``account_route``/``admin_route``
    read_charging.py   which requests are charged reads, and settling their charge
    errors.py          exceptions -> the one error body; the edge middleware
    realtime/          the feed over WebSocket and SSE: the endpoints, the process's hub (tails
                       the owners' feeds, fans out, renders once), one client's subscription,
                       and our WebSocket server side behind uvicorn
    dashboard/         the live dashboard's static page
    cli/               ``clipstream serve | api | worker | projector | …``: composes the roles

It owns HTTP: status codes, headers, bodies, authentication. It may import ``engine`` (commands,
resources, money, the log's vocabulary) and ``projections`` (queries, views, the feed); nothing
imports it but the CLI's entry point and ``bench``.
"""
