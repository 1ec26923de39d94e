"""The operator console in a real browser, over the deployment's real processes.

A private redis-server, ``clipstream api`` and ``projector`` processes, and a headless Chromium on
``GET /admin/console``. One execution is dead-lettered first (its lease delivered more than
``max_deliveries`` times, in this test's own process, as a crashing worker leaves it). Then, with
no worker running, executions are requested over the HTTP API: the page must show its partition's
queue depth move; the dead letter is retried with its button; a worker process starts and the
depth goes back to zero; the retried execution's history, opened by its id, shows the retry and
its end.

Waits poll the page until a condition holds (WebDriverWait); their deadline only bounds how long
a broken build takes to fail. ``CLIPSTREAM_CONSOLE_SCREENSHOT=docs/console.png`` saves the page
before the retry, the dead letter and its history on screen (how the picture in docs/ is made).
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from engine.connection import connect
from engine.log.keys import Keys
from engine.runtime import Runtime
from engine.settings import Settings
from tests.browser.test_dashboard import Dashboard
from tests.integration.test_dead_letter_retry import dead_lettered
from tests.processes import Role, role_env, wait_http
from tests.servers import free_port

pytestmark = [
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.timeout(300),
]

SCREENSHOT_ENV = "CLIPSTREAM_CONSOLE_SCREENSHOT"
VIDEO = "https://youtu.be/dQw4w9WgXcQ"
PARTITIONS = 4

# What a partition's row shows, read in one go.
PARTITION_JS = """
const row = document.querySelector(`#partitions tr[data-partition="${arguments[0]}"]`);
if (row === null) return null;
const shown = (name) => row.querySelector("td." + name).innerText.trim();
return {queued: shown("queued"), leased: shown("leased"), dead: shown("dead"),
        lag: shown("lag"), checkpoint: shown("checkpoint")};
"""


def dead_letter(redis_url: str) -> tuple[str, str]:
    """Dead-letter one execution in this process: (its id, its owner)."""
    settings = replace(
        Settings(),
        redis_url=redis_url,
        partitions=PARTITIONS,
        sim_latency_ms=0,
        lease_ms=1_500,
        heartbeat_ms=300,
        claim_interval_ms=200,
    )

    async def make() -> tuple[str, str]:
        runtime = await Runtime.open(settings, connect(settings))
        try:
            req = await dead_lettered(runtime)
        finally:
            await runtime.close()
        return req.execution_id, req.owner

    return anyio.run(make)


class Console(Dashboard):
    """The console page (the dashboard test's waiting and sign-in, other elements)."""

    def open(self) -> None:
        self.driver.get(f"{self.base}/admin/console")

    def partition(self, p: int) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.driver.execute_script(PARTITION_JS, p)
        return found

    def dead_rows(self) -> list[str]:
        rows: list[str] = self.driver.execute_script(
            "return [...document.querySelectorAll('#dead tbody tr')]"
            ".map((r) => r.dataset.executionId);"
        )
        return rows

    def history(self) -> list[str]:
        types: list[str] = self.driver.execute_script(
            "if (document.getElementById('history').hidden) return [];"
            "return [...document.querySelectorAll('#history-events > li')]"
            ".map((li) => li.dataset.type);"
        )
        return types


def test_console_shows_queues_retries_a_dead_letter_and_opens_its_history(
    browser: WebDriver, private_redis_url: str, tmp_path: Path
) -> None:
    dead_xid, dead_owner = dead_letter(private_redis_url)
    keys = Keys(partitions=PARTITIONS)
    with ExitStack() as stack:
        env = role_env(private_redis_url, CLIPSTREAM_SIM_LATENCY_MS="100")
        started: list[Role] = []

        def start(*args: str) -> Role:
            role = Role(list(args), env, tmp_path / f"{len(started)}-{args[0]}.log")
            started.append(role)
            stack.callback(role.terminate)
            return role

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        api = start("api", "--port", str(port))
        wait_http(f"{base}/healthz", role=api)
        start("projector")
        admin = {"Authorization": f"Bearer {env['CLIPSTREAM_ADMIN_TOKEN']}"}

        page = Console(browser, base)
        page.open()
        page.sign_in(env["CLIPSTREAM_ADMIN_TOKEN"])
        page.wait("the console is live", page.connection, lambda s: s == "live")
        page.wait("the dead letter is listed", page.dead_rows, lambda rows: dead_xid in rows)

        # Executions requested while no worker runs: the owner's partition's depth moves to 3.
        account = httpx.post(
            f"{base}/admin/accounts", json={"name": "ops", "coins": 5}, headers=admin, timeout=10
        ).json()
        auth = {"Authorization": f"Bearer {account['api_key']}"}
        owner_p = keys.partition(account["account"]["account_id"])
        item = httpx.post(f"{base}/v1/items", json={"source": VIDEO}, headers=auth, timeout=10)
        item_id = item.json()["item"]["item_id"]
        before = page.wait("partition shown", lambda: page.partition(owner_p), bool)
        assert before is not None
        assert before["queued"] == "0"
        for lang in ("en", "pt", "es"):
            accepted = httpx.post(
                f"{base}/v1/items/{item_id}/transcript",
                json={"lang": lang},
                headers=auth,
                timeout=10,
            )
            assert accepted.status_code == 202, accepted.text
        page.wait(
            f"partition {owner_p} shows 3 queued",
            lambda: page.partition(owner_p),
            lambda row: row is not None and row["queued"] == "3",
        )

        # The dead letter's execution opened from its row: its history ends in the dead letter.
        browser.find_element(
            By.CSS_SELECTOR, f'#dead tr[data-execution-id="{dead_xid}"] button.link'
        ).click()
        types = page.wait(
            "the dead letter's history is shown", page.history, lambda t: "ExecutionFailed" in t
        )
        assert types[-1] == "ExecutionFailed"
        screenshot = os.environ.get(SCREENSHOT_ENV)
        if screenshot:  # queues, the dead letter with its button, its history
            height = browser.execute_script("return document.documentElement.scrollHeight")
            browser.set_window_size(1280, min(int(height) + 120, 2600))
            browser.execute_script("window.scrollTo(0, 0)")
            assert browser.save_screenshot(screenshot), screenshot

        # Retry the dead letter with its button: it leaves the list, and is queued again.
        dead_p = keys.partition(dead_owner)
        queued_before = 3 if dead_p == owner_p else 0
        browser.find_element(
            By.CSS_SELECTOR, f'#dead tr[data-execution-id="{dead_xid}"] button.retry'
        ).click()
        page.wait(
            "the retry is confirmed", lambda: page.text("dead-status"), lambda t: "retried" in t
        )
        page.wait(
            "the dead letter left the list", page.dead_rows, lambda rows: dead_xid not in rows
        )
        page.wait(
            f"partition {dead_p} shows the retried execution queued",
            lambda: page.partition(dead_p),
            lambda row: row is not None and row["queued"] == str(queued_before + 1),
        )

        # A worker drains every queue; the depths go back to 0.
        start("worker")
        for p in {owner_p, dead_p}:
            page.wait(
                f"partition {p} drained",
                lambda p=p: page.partition(p),  # type: ignore[misc]
                lambda row: row is not None and row["queued"] == "0" and row["leased"] == "0",
            )

        def status() -> str:
            body = httpx.get(f"{base}/admin/executions/{dead_xid}", headers=admin, timeout=10)
            found: str = body.json()["detail"]["execution"]["status"]
            return found

        page.wait("the retried execution is done", status, lambda s: s == "done")
        field = browser.find_element(By.ID, "search-id")
        field.clear()
        field.send_keys(dead_xid)
        browser.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
        types = page.wait(
            "its whole history is shown", page.history, lambda t: "ExecutionCompleted" in t
        )
        assert types[0] == "ExecutionRequested"
        assert types.count("ExecutionRetried") == 1
        assert types.index("ExecutionFailed") < types.index("ExecutionRetried")
        assert types[-1] == "ExecutionCompleted"
        summary = browser.find_element(By.ID, "history-summary").text
        assert dead_owner in summary
        assert "done" in summary

        # Four accepted (the dead-lettered one too), four done, one error (its dead letter).
        page.wait(
            "the chart counted the executions",
            lambda: browser.find_element(By.ID, "chart").get_attribute("aria-label") or "",
            lambda label: label.endswith("4 accepted, 4 done, 1 in error"),
        )
