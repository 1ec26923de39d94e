"""``GET /docs``: the OpenAPI document rendered for people, as one self-contained HTML page.

Rendered on the server from the same document ``/openapi.json`` serves, with no script and no
external asset (the API may run where there is no internet): one section per operation (method,
path, summary, security, parameters, request body, responses), then every schema, which the
operations link to by anchor.
"""

from __future__ import annotations

import html
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from api.openapi import doc, openapi_document

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
.op{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;margin:1em 0}
.m{display:inline-block;min-width:4.5em;font-weight:bold;font-family:monospace}
.get{color:#0a6}.post{color:#06c}.patch{color:#a60}.put{color:#a60}.delete{color:#c22}
code,pre{font-family:ui-monospace,monospace;font-size:.9em}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _schema_link(schema: dict[str, Any]) -> str:
    """A ``$ref`` as a link to its schema; an inline schema as compact JSON."""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        return f'<a href="#schema-{_e(name)}"><code>{_e(name)}</code></a>'
    return f"<code>{_e(orjson.dumps(schema).decode())}</code>"


def _parameters(params: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td><code>{_e(p['name'])}</code></td><td>{_e(p['in'])}</td>"
        f"<td>{'yes' if p.get('required') else 'no'}</td><td>{_schema_link(p['schema'])}</td></tr>"
        for p in params
    )
    return (
        "<table><tr><th>parameter</th><th>in</th><th>required</th><th>schema</th></tr>"
        f"{rows}</table>"
    )


def _responses(responses: dict[str, Any], shared: dict[str, Any]) -> str:
    items = []
    for status, response in responses.items():
        ref = response.get("$ref")
        if isinstance(ref, str):
            response = shared[ref.rsplit("/", 1)[-1]]
        bodies = response.get("content", {})
        shown = ", ".join(
            f"{_e(media)} {_schema_link(body['schema'])}" for media, body in bodies.items()
        )
        items.append(
            f"<li><b>{_e(status)}</b> {_e(response.get('description', ''))}"
            f"{' — ' + shown if shown else ''}</li>"
        )
    return "<ul>" + "".join(items) + "</ul>"


def _operation(path: str, method: str, op: dict[str, Any], shared: dict[str, Any]) -> str:
    parts = [
        f'<div class="op" id="{_e(op["operationId"])}">',
        f'<div><span class="m {_e(method)}">{_e(method.upper())}</span> <code>{_e(path)}</code>'
        f" — {_e(op.get('summary', ''))}</div>",
    ]
    if op.get("description") and op["description"] != op.get("summary"):
        parts.append(f"<p>{_e(op['description'])}</p>")
    security = [name for option in op.get("security", []) for name in option]
    parts.append(f"<p>Auth: {_e(' or '.join(security) or 'none')}</p>")
    if op.get("parameters"):
        parts.append(_parameters(op["parameters"]))
    body = op.get("requestBody")
    if body:
        schema = body["content"]["application/json"]["schema"]
        required = "required" if body.get("required") else "optional"
        parts.append(f"<p>Body ({required}): {_schema_link(schema)}</p>")
    parts.append(_responses(op["responses"], shared))
    parts.append("</div>")
    return "".join(parts)


def render(document: dict[str, Any]) -> str:
    """The HTML page of an OpenAPI document."""
    info = document["info"]
    components = document.get("components", {})
    shared = components.get("responses", {})
    sections: dict[str, list[str]] = {}
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            tag = (op.get("tags") or ["other"])[0]
            sections.setdefault(tag, []).append(_operation(path, method, op, shared))
    body = [f"<h1>{_e(info['title'])} {_e(info['version'])}</h1>"]
    body.append(f"<p>{_e(info.get('description', ''))}</p>")
    body.append('<p>Machine-readable: <a href="/openapi.json">/openapi.json</a></p>')
    for tag, ops in sections.items():
        body.append(f"<h2>{_e(tag)}</h2>{''.join(ops)}")
    body.append("<h2>Schemas</h2>")
    for name, schema in components.get("schemas", {}).items():
        pretty = orjson.dumps(schema, option=orjson.OPT_INDENT_2).decode()
        body.append(f'<h3 id="schema-{_e(name)}">{_e(name)}</h3><pre>{_e(pretty)}</pre>')
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(info['title'])} API</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>"
    )


@doc(summary="The API reference for people", response=str, tags=["meta"], media_type="text/html")
async def docs(request: Request) -> Response:
    """``GET /docs``: this document as HTML (built once per app)."""
    state = request.app.state
    page: str | None = getattr(state, "docs_html", None)
    if page is None:
        page = render(openapi_document(request.app.routes))
        state.docs_html = page
    return HTMLResponse(page)


ROUTES: list[BaseRoute] = [Route("/docs", docs, methods=["GET"])]
