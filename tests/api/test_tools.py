"""The tool catalogue: every tool with its provider, params schema and pricing."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from engine.tools import TOOLS
from tests.api.conftest import ApiAccount

pytestmark = pytest.mark.anyio


async def test_catalogue(client: httpx.AsyncClient, alice: ApiAccount) -> None:
    response = await client.get("/v1/tools", headers=alice.key_auth)
    assert response.status_code == 200
    assert response.json()["next_cursor"] is None  # the list shape of every list
    tools = {t["tool_id"]: t for t in response.json()["tools"]}
    assert set(tools) == set(TOOLS)
    llm = tools["llm_prompt"]
    assert llm["provider"] == "llm"
    assert llm["params_schema"] == msgspec.json.schema(TOOLS["llm_prompt"].params_schema)
    units = {u["unit"]: u["coins_per_unit"] for u in llm["pricing"]["units"]}
    assert units == {"prompt_token": 0.000001, "completion_token": 0.000003}
    assert tools["transcribe"]["pricing"]["units"] == [
        {"unit": "audio_second", "coins_per_unit": 0.0001}
    ]
    assert (await client.get("/v1/tools")).status_code == 401
