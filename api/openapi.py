"""The OpenAPI 3.1 document, built from the routes and the same msgspec Structs that validate the
requests and shape the responses (one source: the spec cannot drift from what the code accepts).

Describe an endpoint with :func:`doc`, applied outermost (it also works inside
``account_route``/``admin_route``: ``functools.wraps`` copies the attribute onto the wrapper)::

    @doc(
        summary="Create a collection",
        request=CreateCollection,
        response=CollectionResponse,
        status=201,
        errors=[409],
        tags=["collections"],
    )
    @account_route("write")
    async def create_collection(request: Request, caller: Caller) -> Response: ...

    @doc(summary="List collections", response=CollectionList, query=PageQuery)
    @account_route("read")
    async def list_collections(request: Request, caller: Caller) -> Response: ...

What is derived rather than declared:

- the method and the path (with its parameters) from the Starlette ``Route``; a path parameter
  named like an id (``item_id``, ``collection_id`` …, see :data:`ID_PARAMS`) gets its id pattern;
- the security from the wrapper: ``account_route`` endpoints take an API key or a session JWT,
  ``admin_route`` endpoints the admin token, the others none;
- the examples of request and response Structs (:func:`example`, api.schemas.examples);
- the error responses every such endpoint can give: 401 when authenticated, 402 when it is a
  charged read (``account_route("read")``), 404 when it has path parameters, 400/413/415/422
  when it takes a body, 422 when it takes a query, 429 on every route but the probes (the rate
  limits), 500 and 503 always; ``errors`` adds the rest (402, 403, 409 …). Every error
  response is the body of DESIGN §7 (:class:`ErrorBody`).

:func:`openapi_document` builds the document; ``GET /openapi.json`` serves it (:data:`ROUTES`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

OPENAPI_VERSION = "3.1.0"
TITLE = "clipstream"
API_VERSION = "0.1.0"
REF = "#/components/schemas/{name}"

E = TypeVar("E", bound=Callable[..., Any])
K = TypeVar("K", bound=type)

# Path parameter name -> id prefix; the pattern mirrors engine.log.ids (executions carry a
# partition).
ID_PARAMS = {
    "account_id": "acc",
    "item_id": "itm",
    "collection_id": "col",
    "reporter_id": "rep",
    "workflow_id": "wf",
    "step_id": "stp",
    "schedule_id": "sch",
    "execution_id": "exc",
    "document_id": "doc",
    "run_id": "run",
}
_ID_BODY = "[0-9a-hjkmnp-tv-z]{20}"
# Path parameters that are whole numbers (Starlette's ``:int``), with their largest value.
INT_PARAMS = {"step_index": 10_000}

STATUS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted: the work runs asynchronously",
    204: "No Content",
    400: "Malformed request (bad JSON, bad header)",
    401: "Missing or invalid credentials",
    402: "Insufficient balance",
    403: "Forbidden",
    404: "Not found (or another owner's)",
    405: "Method not allowed",
    406: "Not acceptable: the endpoint cannot answer in a media type the request accepts",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid request: the message names the field",
    429: "Rate limited",
    500: "Internal error",
    503: "The store is unavailable; retry",
}


class ErrorDetail(msgspec.Struct, kw_only=True):
    """What went wrong: a stable ``code``, a human ``message`` and the request's id."""

    code: str
    message: str
    request_id: str


class ErrorBody(msgspec.Struct, kw_only=True):
    """Every error response (DESIGN §7); ``erro`` repeats the message for older clients."""

    error: ErrorDetail
    erro: str


@dataclass(frozen=True, slots=True)
class Operation:
    """What :func:`doc` records on an endpoint (``endpoint.openapi``)."""

    summary: str
    request: type | None = None
    response: type | None = None
    status: int = 200
    query: type | None = None
    errors: tuple[int, ...] = ()
    tags: tuple[str, ...] = ()
    body_required: bool = True
    description: str | None = None
    media_type: str = "application/json"
    semantic: str | None = None


def doc(
    *,
    summary: str,
    request: type | None = None,
    response: type | None = None,
    status: int = 200,
    query: type | None = None,
    errors: Sequence[int] = (),
    tags: Sequence[str] = (),
    body_required: bool = True,
    description: str | None = None,
    media_type: str = "application/json",
    semantic: str | None = None,
) -> Callable[[E], E]:
    """Attach OpenAPI metadata to an endpoint (see the module docstring).

    ``request``/``response``/``query`` are msgspec Struct types (``response`` None with status
    204 means no body); ``query``'s fields become query parameters; ``body_required=False`` for
    endpoints whose body may be empty. The description defaults to the endpoint's docstring.
    ``semantic`` says when a request the schemas admit is still refused (422) for what it means
    (a source that is no known kind, a workflow of another reporter …): its 422 response says so
    and is marked ``x-semantic: true``.
    """
    operation = Operation(
        summary=summary,
        request=request,
        response=response,
        status=status,
        query=query,
        errors=tuple(errors),
        tags=tuple(tags),
        body_required=body_required,
        description=description,
        media_type=media_type,
        semantic=semantic,
    )

    def attach(endpoint: E) -> E:
        endpoint.openapi = operation  # type: ignore[attr-defined]
        return endpoint

    return attach


def example(value: Any) -> Callable[[K], K]:
    """Attach a realistic example (a JSON value that validates against it) to a request or
    response Struct: the document shows it on every operation that sends or answers it
    (api.schemas.examples holds them), and schemathesis' examples phase sends the requests'."""

    def attach(kind: K) -> K:
        setattr(kind, _EXAMPLE, value)
        return kind

    return attach


def example_of(kind: type) -> Any:
    """The example :func:`example` attached to ``kind`` itself (not to a base class), or None."""
    return vars(kind).get(_EXAMPLE)


_EXAMPLE = "openapi_example"


def _media(kind: type, schema: dict[str, Any]) -> dict[str, Any]:
    """A media type object: the schema, and the example of ``kind`` when it has one."""
    found = example_of(kind) if isinstance(kind, type) else None
    return {"schema": schema} if found is None else {"schema": schema, "example": found}


def operation_of(endpoint: Callable[..., Any]) -> Operation | None:
    """The :class:`Operation` :func:`doc` attached to ``endpoint``, if any."""
    found = getattr(endpoint, "openapi", None)
    return found if isinstance(found, Operation) else None


# -- walking the routes --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One (method, path) of the app."""

    method: str
    path: str
    params: tuple[str, ...]
    endpoint: Callable[..., Any]


def endpoints(routes: Iterable[BaseRoute], prefix: str = "") -> list[Endpoint]:
    """Every (method, path) of ``routes`` (mounts followed), HEAD left out (it mirrors GET)."""
    found: list[Endpoint] = []
    for route in routes:
        if isinstance(route, Mount):
            found.extend(endpoints(route.routes, prefix + route.path))
        elif isinstance(route, Route):
            path = prefix + route.path_format
            params = tuple(route.param_convertors)
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    found.append(Endpoint(method, path, params, route.endpoint))
    return found


def id_pattern(param: str) -> str | None:
    """The regular expression a path parameter named ``param`` must match, if it is an id."""
    kind = ID_PARAMS.get(param)
    if kind is None:
        return None
    if kind == "exc":
        return rf"^exc_p\d{{1,4}}_{_ID_BODY}$"
    return rf"^{kind}_{_ID_BODY}$"


def security_of(endpoint: Callable[..., Any]) -> str | None:
    """``"account"``, ``"admin"`` or None (public), read from the auth wrapper's markers."""
    if getattr(endpoint, "admin", False):
        return "admin"
    if getattr(endpoint, "access", None) is not None:
        return "account"
    return None


# -- the document --------------------------------------------------------------------------------


def _error_statuses(
    op: Operation, auth: str | None, has_ids: bool, read: bool, limited: bool
) -> list[int]:
    statuses = set(op.errors) | {500, 503}
    if limited:  # api.rate_limits: every route but the probes
        statuses.add(429)
    if auth is not None:
        statuses.add(401)
    if read:
        statuses.add(402)
    if has_ids:
        statuses.add(404)
    if op.request is not None:
        statuses |= {400, 413, 415, 422}
    if op.query is not None:
        statuses.add(422)
    return sorted(statuses)


def _query_parameters(
    query: type, components: dict[str, Any], schemas: dict[type, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The fields of a query Struct as ``in: query`` parameters (schemas inlined)."""
    ref = schemas[query]["$ref"].rsplit("/", 1)[-1]
    struct_schema = components[ref]
    required = set(struct_schema.get("required", ()))
    params = []
    for name, schema in struct_schema.get("properties", {}).items():
        params.append({"name": name, "in": "query", "required": name in required, "schema": schema})
    return params


def _operation(
    ep: Endpoint, op: Operation, components: dict[str, Any], schemas: dict[type, dict[str, Any]]
) -> dict[str, Any]:
    auth = security_of(ep.endpoint)
    has_ids = bool(ep.params)  # any path parameter can name something that is not there
    description = op.description or inspect.getdoc(ep.endpoint) or op.summary
    out: dict[str, Any] = {
        "operationId": f"{ep.method.lower()}_{_slug(ep.path)}",
        "summary": op.summary,
        "description": description,
    }
    if op.tags:
        out["tags"] = list(op.tags)
    parameters: list[dict[str, Any]] = []
    for param in ep.params:
        schema: dict[str, Any] = {"type": "string"}
        pattern = id_pattern(param)
        if pattern is not None:
            schema["pattern"] = pattern
        if param in INT_PARAMS:
            schema = {"type": "integer", "minimum": 0, "maximum": INT_PARAMS[param]}
        parameters.append({"name": param, "in": "path", "required": True, "schema": schema})
    if op.query is not None:
        parameters.extend(_query_parameters(op.query, components, schemas))
    if parameters:
        out["parameters"] = parameters
    if op.request is not None:
        out["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": _media(op.request, schemas[op.request])},
        }
    responses: dict[str, Any] = {}
    success: dict[str, Any] = {"description": STATUS_TEXT.get(op.status, "Not described yet")}
    if op.response is not None and op.status != 204:
        success["content"] = {op.media_type: _media(op.response, schemas[op.response])}
    # status 0: a route without doc(); "default" promises nothing about its answer.
    responses[str(op.status) if op.status else "default"] = success
    read = getattr(ep.endpoint, "access", None) == "read"  # refused at a balance of 0
    limited = ep.path not in ("/healthz", "/readyz", "/metrics")
    for status in _error_statuses(op, auth, has_ids, read, limited):
        responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    if op.semantic is not None:
        responses["422"] = {
            "description": f"{STATUS_TEXT[422]}; also refused for what it means: {op.semantic}",
            "content": {"application/json": {"schema": {"$ref": REF.format(name="ErrorBody")}}},
            "x-semantic": True,
        }
    out["responses"] = responses
    if auth == "account":
        out["security"] = [{"apiKey": []}, {"session": []}]
    elif auth == "admin":
        out["security"] = [{"adminToken": []}]
    else:
        out["security"] = []
    return out


def _slug(path: str) -> str:
    cleaned = path.strip("/").replace("{", "").replace("}", "")
    return "".join(c if c.isalnum() else "_" for c in cleaned) or "root"


def _undocumented(ep: Endpoint) -> Operation:
    """A route without :func:`doc` still appears (its docstring's first line, an undescribed
    ``default`` answer), so the document always covers every route; :func:`undocumented` lists
    such routes for the tests."""
    first_line = (inspect.getdoc(ep.endpoint) or f"{ep.method} {ep.path}").splitlines()[0]
    return Operation(summary=first_line[:120], status=0)


def undocumented(routes: Iterable[BaseRoute]) -> list[str]:
    """``METHOD path`` of every route without :func:`doc` metadata."""
    return [
        f"{ep.method} {ep.path}" for ep in endpoints(routes) if operation_of(ep.endpoint) is None
    ]


def openapi_document(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """The complete OpenAPI 3.1 document of ``routes`` (see the module docstring)."""
    eps = endpoints(routes)
    ops = [(ep, operation_of(ep.endpoint) or _undocumented(ep)) for ep in eps]
    types: list[type] = [ErrorBody]
    for _, op in ops:
        for kind in (op.request, op.response, op.query):
            if kind is not None and kind not in types:
                types.append(kind)
    refs, components = msgspec.json.schema_components(types, ref_template=REF)
    schemas = dict(zip(types, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for ep, op in ops:
        paths.setdefault(ep.path, {})[ep.method.lower()] = _operation(ep, op, components, schemas)
    error_ref = schemas[ErrorBody]
    responses = {
        f"E{status}": {
            "description": text,
            "content": {"application/json": {"schema": error_ref}},
        }
        for status, text in STATUS_TEXT.items()
        if status >= 400
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": TITLE,
            "version": API_VERSION,
            "description": (
                "The clipping platform's API: synchronous resources, and executions that run "
                "asynchronously (202, then poll GET /v1/executions/{execution_id})."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": responses,
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: `Authorization: Bearer ck_live_…`.",
                },
                "session": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A session JWT (HS256) minted by an operator.",
                },
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The operator's admin token (`CLIPSTREAM_ADMIN_TOKEN`).",
                },
            },
        },
    }


@doc(
    summary="This document",
    response=dict[str, Any],
    tags=["meta"],
)
async def openapi_json(request: Request) -> Response:
    """``GET /openapi.json``: the document of the app serving the request (built once)."""
    state = request.app.state
    body: bytes | None = getattr(state, "openapi_json", None)
    if body is None:
        body = msgspec.json.encode(openapi_document(request.app.routes))
        state.openapi_json = body
    return Response(body, media_type="application/json")


ROUTES: list[BaseRoute] = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
]
