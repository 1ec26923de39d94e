"""The OpenAPI document: valid 3.1 (schemathesis's loader checks it against the meta-schema),
complete (every route and method of the app, every path parameter, every $ref resolves), and the
same document served at /openapi.json and rendered at /docs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.core.result import Err
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api.app import routes
from api.openapi import ID_PARAMS, endpoints, openapi_document, operation_of, undocumented
from engine.ids import new_execution_id, new_id

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
                body = resolve(document, response["$ref"])
                schema = body["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, method)
    error = document["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"error", "erro"}


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
