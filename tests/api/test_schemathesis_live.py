"""Schemathesis with every check against a live ``clipstream serve`` (issue 15 #9): the examples
and fuzzing phases of ``st run --checks all`` as each of two seeded tenants (their own ids in every
path parameter, so requests reach the handlers) and as the admin on ``/admin``. Any rejection left
must be one the document declares; the run fails on anything else (a schema-valid request the
server refuses, a 5xx, an undeclared status or body, a route that ignores its auth …). The
examples phase must have run every request body's example (api.schemas.examples), not skipped
them all for want of examples.

The server runs on the embedded store with the rate limits far above what the run sends. Cases
are derandomized (``--seed``), so a failure reproduces.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.processes import ADMIN_HEADERS, role_env, roles, wait_http
from tests.servers import free_port

EXAMPLES = 8
SEED = 15
VIDEO = "https://youtu.be/dQw4w9WgXcQ"


def _post(base: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    response = httpx.post(base + path, json=body, headers=headers, timeout=10)
    assert response.status_code in (201, 202), (path, response.text)
    return response.json()


def _tenant(base: str, n: int) -> tuple[dict[str, str], dict[str, str]]:
    """A funded tenant with one of everything; its auth header and its ids by path parameter."""
    made = _post(base, "/admin/accounts", {"name": f"tenant {n}", "coins": 1000}, ADMIN_HEADERS)
    auth = {"Authorization": f"Bearer {made['api_key' if n == 0 else 'session_token']}"}
    ids = {"account_id": made["account"]["account_id"]}
    ids["item_id"] = _post(base, "/v1/items", {"source": VIDEO}, auth)["item"]["item_id"]
    run = _post(base, f"/v1/items/{ids['item_id']}/transcript", {"text": "Hello. Bye."}, auth)
    ids["execution_id"] = run["execution"]["execution_id"]
    ids["collection_id"] = _post(base, "/v1/collections", {"name": "c"}, auth)["collection"][
        "collection_id"
    ]
    rid = _post(base, "/v1/reporters", {"name": "r"}, auth)["reporter"]["reporter_id"]
    ids["reporter_id"] = rid
    workflow = _post(
        base,
        f"/v1/reporters/{rid}/workflows",
        {"name": "w", "target_kind": "youtube_video", "steps": [{"tool_id": "transcribe"}]},
        auth,
    )["workflow"]
    ids["workflow_id"] = workflow["workflow_id"]
    ids["step_id"] = workflow["steps"][0]["step_id"]
    ids["schedule_id"] = _post(
        base,
        f"/v1/reporters/{rid}/schedules",
        {"workflow_id": workflow["workflow_id"], "interval_hours": 24},
        auth,
    )["schedule"]["schedule_id"]
    return auth, ids


# What positive_data_acceptance accepts by default, plus 422 where the document declares a
# semantic refusal (``x-semantic``): a request the schemas admit, refused for what it means.
_ACCEPTED = '["2xx", "3xx", "401", "403", "404", "409", "429", "5xx", "422"]'


def semantic_operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(method, path) of every operation whose 422 the document declares semantic."""
    return [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if operation.get("responses", {}).get("422", {}).get("x-semantic")
    ]


def with_examples(document: dict[str, Any], admin: bool) -> int:
    """How many operations under ``/admin`` (or elsewhere) carry a request body example."""
    return sum(
        1
        for path, item in document["paths"].items()
        for operation in item.values()
        if path.startswith("/admin") == admin
        and any(
            "example" in m for m in operation.get("requestBody", {}).get("content", {}).values()
        )
    )


# st's progress line of the examples phase: "✅  Examples (in 0.05s)" then "✅ 17 passed ...".
_EXAMPLES_RAN = re.compile(r"✅\s+Examples \(in [^)]*\)\s*\n\s*✅\s+(\d+) passed")


def examples_passed(stdout: str) -> int:
    """How many operations the examples phase of a run passed (0 when it ran none)."""
    found = _EXAMPLES_RAN.search(stdout)
    return int(found.group(1)) if found else 0


def _config(
    path: Path,
    base: str,
    auth: dict[str, str],
    ids: dict[str, str],
    semantic: list[tuple[str, str]],
) -> Path:
    lines = [
        f'base-url = "{base}"',
        "request-timeout = 10.0",
        "max-stream-events = 1",
        f'headers = {{ Authorization = "{auth["Authorization"]}" }}',
        "",
        "[parameters]",
        *(f'"path.{name}" = "{value}"' for name, value in sorted(ids.items())),
        '"path.step_index" = 0',
    ]
    for method, route in semantic:
        lines += [
            "",
            "[[operations]]",
            f'include-path = "{route}"',
            f'include-method = "{method}"',
            f"checks.positive_data_acceptance.expected-statuses = {_ACCEPTED}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _st(config: Path, base: str, *extra: str) -> subprocess.CompletedProcess[str]:
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
    return subprocess.run(
        [
            st,
            "--config-file",
            str(config),
            "run",
            f"{base}/openapi.json",
            "--checks",
            "all",
            "--phases",
            "examples,fuzzing",
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            str(SEED),
            "--no-color",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.timeout(900)
def test_schemathesis_every_check_against_a_live_serve(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = role_env("")
    env.pop("CLIPSTREAM_REDIS_URL")  # the embedded store
    with roles([["serve", "--port", str(port)]], env, tmp_path) as (serve,):
        wait_http(f"{base}/healthz", role=serve)
        document = httpx.get(f"{base}/openapi.json").json()
        semantic = semantic_operations(document)
        assert ("POST", "/v1/items") in semantic
        runs = []
        for n in range(2):
            auth, ids = _tenant(base, n)
            config = _config(tmp_path / f"tenant{n}.toml", base, auth, ids, semantic)
            runs.append(_st(config, base, "--exclude-path-regex", "^/admin"))
        admin_ids = {"account_id": ids["account_id"]}
        admin = _config(tmp_path / "admin.toml", base, ADMIN_HEADERS, admin_ids, semantic)
        runs.append(_st(admin, base, "--include-path-regex", "^/admin"))
    for run in runs:
        assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    tenants, admin_run = runs[:2], runs[2]
    expected = with_examples(document, admin=False)
    assert expected >= 15  # every request body outside /admin has one
    for run in tenants:
        assert examples_passed(run.stdout) == expected, run.stdout[-20000:]
    assert examples_passed(admin_run.stdout) == with_examples(document, admin=True) > 0
