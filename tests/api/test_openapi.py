"""The OpenAPI document: valid 3.1 (schemathesis's loader checks it against the meta-schema),
complete (every route and method of the app, every path parameter, every $ref resolves), and the
same document served at /openapi.json and rendered at /docs."""

from __future__ import annotations

import copy
import datetime
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jsonschema
import msgspec
import orjson
import pytest
import schemathesis
from schemathesis.core.result import Err
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api.app import routes
from api.openapi import ID_PARAMS, endpoints, openapi_document, operation_of, undocumented
from engine.log.ids import new_execution_id, new_id
from engine.resources.documents import create_document
from engine.runtime import Runtime
from engine.tools import TOOLS
from tests.api.conftest import ApiAccount

# The synchronous resources' routes, every one of which the conformance walk calls.
RESOURCE_PATHS = ("/v1/collections", "/v1/reporters", "/v1/documents", "/v1/tools")
ERROR_STATUSES = {"400", "401", "402", "404", "409", "413", "422", "429", "500", "503"}


@pytest.fixture(scope="module")
def app_routes() -> list[BaseRoute]:
    return routes()


@pytest.fixture(scope="module")
def document(app_routes: list[BaseRoute]) -> dict[str, Any]:
    return openapi_document(app_routes)


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            yield path, method, op


def refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` anywhere in ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        assert isinstance(node, dict), f"{ref} does not resolve"
        assert part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def test_schemathesis_loads_it_as_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    schema = schemathesis.openapi.from_dict(document)
    schema.validate()  # the OpenAPI 3.1 meta-schema
    results = list(schema.get_all_operations())
    errors = [result.err() for result in results if isinstance(result, Err)]
    assert errors == []
    assert len(results) == sum(1 for _ in operations(document))


def test_the_meta_schema_check_can_fail(document: dict[str, Any]) -> None:
    broken = {**document, "paths": {"/x": {"get": {"responses": "nothing"}}}}
    with pytest.raises(Exception, match=r"responses|nothing"):
        schemathesis.openapi.from_dict(broken).validate()


def test_every_route_and_method_is_in_the_document(
    app_routes: list[BaseRoute], document: dict[str, Any]
) -> None:
    expected = {(ep.path, ep.method.lower()) for ep in endpoints(app_routes)}
    found = {(path, method) for path, method, _ in operations(document)}
    assert found == expected
    assert ("/openapi.json", "get") in found
    assert ("/docs", "get") in found


def test_every_operation_has_an_id_responses_and_its_path_parameters(
    document: dict[str, Any],
) -> None:
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids))
    for path, method, op in operations(document):
        assert op["responses"], (path, method)
        assert op["summary"], (path, method)
        assert "security" in op, (path, method)
        in_path = set(re.findall(r"{([^}]+)}", path))
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert declared == in_path, (path, method)
        for param in op.get("parameters", []):
            if param["in"] == "path" and param["name"] in ID_PARAMS:
                assert "pattern" in param["schema"], (path, param)


def test_path_id_patterns_accept_real_ids_and_refuse_others(document: dict[str, Any]) -> None:
    samples = {kind: new_id(kind) for kind in set(ID_PARAMS.values()) - {"exc"}}
    samples["exc"] = new_execution_id(3)
    for _, _, op in operations(document):
        for param in op.get("parameters", []):
            kind = ID_PARAMS.get(param["name"])
            if param["in"] != "path" or kind is None:
                continue
            pattern = re.compile(param["schema"]["pattern"])
            assert pattern.match(samples[kind])
            other = next(v for k, v in samples.items() if k != kind)
            assert not pattern.match(other)


def test_every_ref_resolves(document: dict[str, Any]) -> None:
    found = list(refs(document))
    assert found
    for ref in found:
        resolve(document, ref)


def test_every_error_response_is_the_standard_error_body(document: dict[str, Any]) -> None:
    for path, method, op in operations(document):
        for status, response in op["responses"].items():
            if status in ERROR_STATUSES:
                # A semantic 422 is written in place (its description says when it happens).
                body = resolve(document, response["$ref"]) if "$ref" in response else response
                schema = body["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, method)
    error = document["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"error", "erro"}


def test_semantic_refusals_are_declared_where_they_happen(document: dict[str, Any]) -> None:
    """A request the schemas admit but the server refuses for what it means (issue 15 #9) is a
    422 the operation declares, saying when."""
    semantic = {
        (method, path): op["responses"]["422"]["description"]
        for path, method, op in operations(document)
        if op["responses"].get("422", {}).get("x-semantic")
    }
    assert "none of the known kinds" in semantic[("post", "/v1/items")]
    assert "invalid_target" in semantic[("post", "/v1/items/{item_id}/transcript")]
    assert "default workflow" in semantic[("post", "/v1/reporters/{reporter_id}/process")]


def test_the_document_states_what_the_server_enforces(document: dict[str, Any]) -> None:
    """Enums, integers, cursor forms and path integers, as the server checks them."""
    schemas = document["components"]["schemas"]
    step = schemas["StepBody"]["properties"]["tool_id"]
    assert set(step["enum"]) == set(TOOLS)
    assert schemas["CreateSchedule"]["properties"]["interval_hours"]["type"] == "integer"
    params = {
        (path, method): {p["name"]: p["schema"] for p in op.get("parameters", [])}
        for path, method, op in operations(document)
    }
    ledger = params[("/v1/me/ledger", "get")]["cursor"]
    assert "pattern" in str(ledger)
    assert "pattern" in str(params[("/v1/items", "get")]["cursor"])
    assert "pattern" in str(params[("/v1/executions/me", "get")]["cursor"])
    assert "pattern" in str(params[("/v1/executions/{execution_id}/events", "get")]["cursor"])
    detail = params[("/v1/executions/{execution_id}/steps/{step_index}", "get")]
    assert detail["step_index"]["type"] == "integer"


def test_authentication_and_status_codes_are_declared(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert {"apiKey", "session", "adminToken"} <= set(schemes)
    me = document["paths"]["/v1/me"]["get"]
    assert {"apiKey", "session"} == {name for option in me["security"] for name in option}
    assert "401" in me["responses"]
    create = document["paths"]["/admin/accounts"]["post"]
    assert create["security"] == [{"adminToken": []}]
    assert "201" in create["responses"]
    transcript = document["paths"]["/v1/items/{item_id}/transcript"]["post"]
    assert {"202", "402", "404", "422", "413"} <= set(transcript["responses"])
    assert transcript["requestBody"]["required"] is False
    deleted = document["paths"]["/v1/items/{item_id}"]["delete"]
    assert "content" not in deleted["responses"]["204"]
    assert document["paths"]["/healthz"]["get"]["security"] == []


def test_request_bodies_are_the_structs_that_validate_them(document: dict[str, Any]) -> None:
    body = document["paths"]["/v1/items"]["post"]["requestBody"]["content"]["application/json"]
    schema = resolve(document, body["schema"]["$ref"])
    assert schema["required"] == ["source"]
    # forbid_unknown_fields on the Struct: the document says unknown fields are refused too.
    assert schema.get("additionalProperties") is False


def test_every_route_is_documented(app_routes: list[BaseRoute]) -> None:
    """Every endpoint carries doc(): no operation is left with an undescribed ``default``."""
    assert undocumented(app_routes) == []
    for ep in endpoints(app_routes):
        assert operation_of(ep.endpoint) is not None, (ep.method, ep.path)


def test_an_undocumented_route_is_reported(app_routes: list[BaseRoute]) -> None:
    async def bare(request: Request) -> Response:
        """A route nobody described."""
        return Response()

    extra = [*app_routes, Route("/v1/bare/{item_id}", bare, methods=["GET", "POST"])]
    assert undocumented(extra) == ["GET /v1/bare/{item_id}", "POST /v1/bare/{item_id}"]
    responses = openapi_document(extra)["paths"]["/v1/bare/{item_id}"]["get"]["responses"]
    assert "default" in responses


@pytest.mark.anyio
async def test_served_document_and_docs_page(client: httpx.AsyncClient) -> None:
    served = await client.get("/openapi.json")
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("application/json")
    document = served.json()
    assert document == openapi_document(routes())
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    for path, _, op in operations(document):
        assert path in html
        assert op["operationId"] in html
    for name in document["components"]["schemas"]:
        assert f'id="schema-{name}"' in html
    # Self-contained: nothing is loaded from elsewhere.
    assert "<script" not in html
    assert "<link" not in html
    assert not re.search(r"(src|href)=\"https?:", html)


# -- the resource routes answer what the document says -------------------------------------------


def strict(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with every described object closed (``additionalProperties: false``), so a
    field a handler returns but the document does not name is a violation too."""
    closed = copy.deepcopy(document)
    for schema in closed["components"]["schemas"].values():
        if "properties" in schema:
            schema.setdefault("additionalProperties", False)
    return closed


@dataclass
class Conformance:
    """Calls made by template; each answer checked against the strict document."""

    client: httpx.AsyncClient
    auth: dict[str, str]
    document: dict[str, Any]
    schema: Any = field(init=False)
    checked: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.schema = schemathesis.openapi.from_dict(strict(self.document))

    async def __call__(
        self, method: str, template: str, body: Any = None, **ids: str
    ) -> dict[str, Any]:
        op = self.document["paths"][template][method.lower()]
        [success] = [status for status in op["responses"] if status.startswith("2")]
        response = await self.client.request(
            method, template.format(**ids), json=body, headers=self.auth
        )
        assert str(response.status_code) == success, (method, template, response.text)
        self.checked.add((template, method.lower()))
        if success == "204":
            assert response.content == b""
            return {}
        self.schema[template][method.upper()].validate_response(response)
        answer: dict[str, Any] = response.json()
        return answer


@pytest.mark.anyio
async def test_resource_answers_match_the_document(
    client: httpx.AsyncClient, runtime: Runtime, alice: ApiAccount
) -> None:
    """Every resource route, called for real with ids that exist, answers its documented
    success status with a body the (closed) documented schema accepts."""
    call = Conformance(client, alice.key_auth, openapi_document(routes()))
    item = (await call("POST", "/v1/items", {"source": "@veritasium"}))["item"]["item_id"]

    col = "/v1/collections/{collection_id}"
    made = await call("POST", "/v1/collections", {"name": "news", "language": "en"})
    cid = made["collection"]["collection_id"]
    other = (await call("POST", "/v1/collections", {"name": "other"}))["collection"]
    await call("GET", "/v1/collections")
    await call("GET", col, collection_id=cid)
    await call("PATCH", col, {"description": "d", "visibility": "public"}, collection_id=cid)
    await call("POST", col + "/items", {"item_id": item}, collection_id=cid)
    listed = await call("GET", col + "/items", collection_id=cid)
    assert [i["item_id"] for i in listed["items"]] == [item]

    rep = "/v1/reporters/{reporter_id}"
    rid = (await call("POST", "/v1/reporters", {"name": "r"}))["reporter"]["reporter_id"]
    await call("GET", "/v1/reporters")
    await call("GET", rep, reporter_id=rid)
    wf = rep + "/workflows/{workflow_id}"
    step = {"tool_id": "llm_prompt", "prompt_text": "Summarise", "params": {"max_tokens": 64}}
    created = await call(
        "POST",
        rep + "/workflows",
        {"name": "wf", "target_kind": "youtube_video", "steps": [{"tool_id": "transcribe"}]},
        reporter_id=rid,
    )
    wid = created["workflow"]["workflow_id"]
    await call("PATCH", rep, {"default_workflow_id": wid}, reporter_id=rid)
    video = {"source": "https://youtu.be/dQw4w9WgXcQ"}
    vid = (await call("POST", "/v1/items", video))["item"]["item_id"]
    await call("POST", col + "/items", {"item_id": vid}, collection_id=cid)
    await call("POST", rep + "/process", video, reporter_id=rid)
    run = await call("POST", rep + "/process-collection", {"collection_id": cid}, reporter_id=rid)
    await call("GET", rep + "/executions", reporter_id=rid)
    xid = run["execution"]["execution_id"]
    detail = await call("GET", "/v1/executions/{execution_id}", execution_id=xid)
    assert [i["item_id"] for i in detail["items"]] == [vid]
    await call("GET", rep + "/workflows", reporter_id=rid)
    await call("GET", wf, reporter_id=rid, workflow_id=wid)
    await call("PATCH", wf, {"name": "renamed"}, reporter_id=rid, workflow_id=wid)
    added = await call("POST", wf + "/steps", step, reporter_id=rid, workflow_id=wid)
    await call("PUT", wf + "/steps", {"steps": [step, step]}, reporter_id=rid, workflow_id=wid)
    sid = (await call("GET", wf, reporter_id=rid, workflow_id=wid))["workflow"]["steps"][0]
    assert sid["step_id"] != added["step"]["step_id"]  # replaced: fresh step ids
    await call(
        "DELETE", wf + "/steps/{step_id}", reporter_id=rid, workflow_id=wid, step_id=sid["step_id"]
    )

    sch = rep + "/schedules/{schedule_id}"
    schedule = {"workflow_id": wid, "interval_hours": 6, "collection_ids": [cid]}
    made = await call("POST", rep + "/schedules", schedule, reporter_id=rid)
    sched = made["schedule"]["schedule_id"]
    triggered = await call("POST", sch + "/run", {}, reporter_id=rid, schedule_id=sched)
    assert triggered["status"] == "dispatched"
    await call("GET", rep + "/schedule/runs", reporter_id=rid)
    one_run = await call(
        "GET", rep + "/schedule/runs/{run_id}", reporter_id=rid, run_id=triggered["run_id"]
    )
    assert one_run["run"]["status"] == "pending"
    await call("GET", rep + "/schedules", reporter_id=rid)
    await call("GET", sch, reporter_id=rid, schedule_id=sched)
    await call("PATCH", sch, {"enabled": False}, reporter_id=rid, schedule_id=sched)
    attached = await call(
        "POST",
        sch + "/collections",
        {"collection_id": other["collection_id"]},
        reporter_id=rid,
        schedule_id=sched,
    )
    assert attached["schedule"]["collection_ids"] == [cid, other["collection_id"]]
    await call(
        "DELETE",
        sch + "/collections/{collection_id}",
        reporter_id=rid,
        schedule_id=sched,
        collection_id=cid,
    )

    content = orjson.dumps({"text": "a summary"})
    stored = await create_document(
        runtime, alice.account_id, kind="summary", content=content, item_id=item, reporter_id=rid
    )
    found = await call("GET", "/v1/documents", None)
    assert [d["document_id"] for d in found["documents"]] == [stored.document_id]
    one = await call("GET", "/v1/documents/{document_id}", document_id=stored.document_id)
    assert one["document"]["content"] == {"text": "a summary"}
    await call("GET", "/v1/tools")

    await call("DELETE", sch, reporter_id=rid, schedule_id=sched)
    await call("DELETE", col + "/items/{item_id}", collection_id=cid, item_id=item)
    await call("DELETE", col, collection_id=cid)
    await call("DELETE", wf, reporter_id=rid, workflow_id=wid)
    await call("DELETE", rep, reporter_id=rid)

    resource_ops = {
        (path, method)
        for path, method, _ in operations(call.document)
        if path.startswith(RESOURCE_PATHS)
    }
    assert resource_ops - call.checked == set()


def test_a_field_the_document_does_not_name_is_a_violation(document: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_dict(strict(document))["/v1/tools"]["GET"]
    tool = {
        "tool_id": "t",
        "description": "d",
        "provider": "llm",
        "params_schema": {},
        "pricing": {"currency": "coins", "units": [], "estimate": "0"},
    }
    request = httpx.Request("GET", "http://testserver/v1/tools")
    good = httpx.Response(200, json={"tools": [tool], "next_cursor": None}, request=request)
    bad = httpx.Response(
        200, json={"tools": [{**tool, "secret": 1}], "next_cursor": None}, request=request
    )
    for response in (good, bad):
        response.elapsed = datetime.timedelta(0)  # what a client's send would have set
    schema.validate_response(good)
    with pytest.raises(Exception, match="secret"):
        schema.validate_response(bad)


# The responses an integrator reads most, each with an example in the document.
MAIN_RESPONSES = {
    ("post", "/v1/items/{item_id}/transcript"),
    ("get", "/v1/items/{item_id}/transcript"),
    ("get", "/v1/executions/{execution_id}"),
    ("get", "/v1/executions/{execution_id}/steps/{step_index}"),
    ("get", "/v1/executions/me"),
    ("post", "/v1/items"),
    ("post", "/v1/collections"),
    ("post", "/v1/reporters"),
    ("post", "/v1/reporters/{reporter_id}/workflows"),
    ("post", "/v1/reporters/{reporter_id}/schedules"),
    ("post", "/v1/reporters/{reporter_id}/process"),
    ("get", "/v1/documents/{document_id}"),
    ("get", "/v1/me"),
}


def test_every_request_body_and_main_response_has_an_example_valid_against_its_schema(
    document: dict[str, Any], app_routes: list[BaseRoute]
) -> None:
    """Examples for schemathesis' examples phase and for readers: one on every request body and
    on the main responses, each valid against the schema beside it (the document's JSON Schema)
    and decoding into the Struct the server uses (what the server itself would accept)."""
    structs: dict[tuple[str, str, str], type | None] = {}
    for ep in endpoints(app_routes):
        declared = operation_of(ep.endpoint)
        if declared is not None:
            structs[(ep.method.lower(), ep.path, "request")] = declared.request
            structs[(ep.method.lower(), ep.path, "response")] = declared.response
    checked: set[tuple[str, str, str]] = set()
    for path, method, op in operations(document):
        media = [("request", op.get("requestBody", {}).get("content", {}))]
        media += [("response", r.get("content", {})) for r in op["responses"].values()]
        for where, content in media:
            for body in content.values():
                if "example" not in body:
                    continue
                root = {**body["schema"], "components": document["components"]}
                jsonschema.Draft202012Validator(root).validate(body["example"])
                kind = structs[(method, path, where)]
                assert kind is not None
                msgspec.convert(body["example"], kind)  # the server's own Struct takes it
                checked.add((method, path, where))
    bodies = {(m, p, "request") for p, m, op in operations(document) if "requestBody" in op}
    assert bodies - checked == set(), "request bodies without an example"
    assert {(m, p, "response") for m, p in MAIN_RESPONSES} - checked == set()
