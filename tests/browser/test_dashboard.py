"""The dashboard in a real browser, over the deployment's real processes.

A private redis-server, ``clipstream api``, ``projector`` and ``worker`` processes (simulated
providers with some latency), and a headless Chromium on ``GET /``. Executions are requested over
the HTTP API; the page must show them progress to their end (status, progress bar, cost, error),
open one's steps, and, after the API process is killed and started again, reconnect by itself
and show what happened while it was away: once by resuming from its cursor, once by taking the
reset the server sends when the feed was trimmed past that cursor meanwhile.

Every intermediate state asserted is held still on purpose rather than caught in passing: no
worker runs while an execution must be seen ``pending``, and the one that must be seen part way
has a step whose simulated provider never answers (``sim.hang``). Waits poll the page until a
condition holds (WebDriverWait); their deadline only bounds how long a broken build takes to fail.

``CLIPSTREAM_DASHBOARD_SCREENSHOT=docs/dashboard.png`` saves the page at the end (how the picture
in docs/ is made).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import pytest
import redis
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from engine.log.keys import Keys
from engine.settings import coins_to_micro
from projections.feed import owner_feed_key, read_entries
from projections.views import FeedSummary
from tests.helpers import micro
from tests.processes import Role, role_env, wait_http
from tests.servers import free_port

pytestmark = [
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.timeout(300),
]

T = TypeVar("T")
Json = dict[str, Any]
FeedEntries = list[tuple[bytes, dict[bytes, bytes]]]

WAIT_S = 60.0
SCREENSHOT_ENV = "CLIPSTREAM_DASHBOARD_SCREENSHOT"
VIDEO = "https://youtu.be/dQw4w9WgXcQ"
TRANSCRIBE = {"tool_id": "transcribe"}
WORKFLOWS = {
    "summary": [TRANSCRIBE, {"tool_id": "llm_prompt", "prompt_text": "Summarise"}],
    # Its second step's provider never answers: the execution stays running with 1 of 2 done.
    "stuck": [
        TRANSCRIBE,
        {"tool_id": "llm_prompt", "prompt_text": "Wait", "params": {"sim": {"hang": True}}},
    ],
    # Its second step is refused for good: the execution ends in error.
    "refused": [
        TRANSCRIBE,
        {"tool_id": "llm_prompt", "prompt_text": "No", "params": {"sim": {"fail": "fatal"}}},
    ],
}

# What one execution's row shows, read in one go (innerText: the text as rendered).
ROW_JS = """
const rows = document.querySelectorAll(`li[data-execution-id="${arguments[0]}"]`);
if (rows.length === 0) return null;
const row = rows[0];
const shown = (name) => row.querySelector("." + name).innerText.trim();
const bar = row.querySelector("progress");
return {
  list: row.parentElement.id,
  copies: rows.length,
  status: shown("status").toLowerCase(),
  done: bar.value,
  total: bar.max,
  steps: shown("steps"),
  cost: shown("cost"),
  failure: shown("failure"),
};
"""


# -- the system under test -----------------------------------------------------------------------


class System:
    """The role processes on one private Redis, and the HTTP calls the test makes."""

    def __init__(self, redis_url: str, log_dir: Path, stack: ExitStack) -> None:
        self.env = role_env(redis_url, CLIPSTREAM_SIM_LATENCY_MS="150")
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.stack = stack
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.api_key = ""
        self.owner = ""
        self.started = 0
        self.api: Role | None = None
        self.worker: Role | None = None

    def start(self, *args: str) -> Role:
        """Start ``clipstream <args>``; it is stopped when the test ends."""
        self.started += 1
        role = Role(list(args), self.env, self.log_dir / f"{self.started}-{args[0]}.log")
        self.stack.callback(role.terminate)
        return role

    def start_api(self) -> None:
        """Start the API process (again: on the same port, as a restarted server would be)."""
        self.api = self.start("api", "--port", str(self.port))
        wait_http(f"{self.base}/healthz", role=self.api)

    def kill_api(self) -> None:
        """SIGKILL the API process: its WebSockets drop with no goodbye."""
        assert self.api is not None
        self.api.kill()

    def start_worker(self) -> None:
        self.worker = self.start("worker")

    def stop_worker(self) -> None:
        assert self.worker is not None
        self.worker.terminate()

    def call(self, method: str, path: str, status: int, **kwargs: Any) -> Json:
        """One request with the account's API key (a fresh connection: the API gets killed)."""
        headers = kwargs.pop("headers", {"Authorization": f"Bearer {self.api_key}"})
        response = httpx.request(method, self.base + path, headers=headers, timeout=10, **kwargs)
        assert response.status_code == status, response.text
        body: Json = response.json()
        return body

    def create_account(self) -> str:
        """A funded account; its API key is kept for the calls, its session token returned."""
        admin = {"Authorization": f"Bearer {self.env['CLIPSTREAM_ADMIN_TOKEN']}"}
        body = self.call(
            "POST", "/admin/accounts", 201, json={"name": "dashboard", "coins": 10}, headers=admin
        )
        self.api_key = body["api_key"]
        self.owner = body["account"]["account_id"]
        token: str = body["session_token"]
        return token

    def reporter(self) -> tuple[str, dict[str, str]]:
        """A reporter with one workflow per entry of :data:`WORKFLOWS` (name -> workflow id)."""
        rid = self.call("POST", "/v1/reporters", 201, json={"name": "watcher"})["reporter"][
            "reporter_id"
        ]
        workflows = {}
        for name, steps in WORKFLOWS.items():
            body = {"name": name, "target_kind": "youtube_video", "steps": steps}
            created = self.call("POST", f"/v1/reporters/{rid}/workflows", 201, json=body)
            workflows[name] = created["workflow"]["workflow_id"]
        return rid, workflows

    def process(self, reporter_id: str, workflow_id: str) -> str:
        body = {"source": VIDEO, "workflow_id": workflow_id}
        accepted = self.call("POST", f"/v1/reporters/{reporter_id}/process", 202, json=body)
        execution_id: str = accepted["execution"]["execution_id"]
        return execution_id

    def execution(self, execution_id: str) -> Json:
        summary: Json = self.call("GET", f"/v1/executions/{execution_id}", 200)["execution"]
        return summary

    def feed_key(self) -> str:
        return owner_feed_key(Keys(partitions=int(self.env["CLIPSTREAM_PARTITIONS"])), self.owner)

    def feed_statuses(self) -> dict[str, str]:
        """Each execution's latest status in the account's feed stream, read from Redis
        directly (what a subscriber would be sent; it works while no API process runs)."""
        with redis.Redis.from_url(self.redis_url) as client:
            entries = cast(FeedEntries, client.xrange(self.feed_key()))
        statuses: dict[str, str] = {}
        for entry_id, fields in entries:
            for event in read_entries(entry_id.decode(), fields):
                assert isinstance(event.summary, FeedSummary)
                statuses[event.execution_id] = event.summary.status
        return statuses

    def trim_feed(self) -> None:
        """Drop all but the newest entry of the account's feed, as retention (``MAXLEN ~``)
        does to old ones."""
        with redis.Redis.from_url(self.redis_url) as client:
            client.xtrim(self.feed_key(), maxlen=1, approximate=False)


# -- the page ------------------------------------------------------------------------------------


class Dashboard:
    """What the test reads from and does on the page."""

    def __init__(self, driver: WebDriver, base: str) -> None:
        self.driver = driver
        self.base = base

    def open(self) -> None:
        self.driver.get(f"{self.base}/")

    def sign_in(self, token: str) -> None:
        field = self.driver.find_element(By.ID, "token")
        field.clear()
        field.send_keys(token)
        self.driver.find_element(By.CSS_SELECTOR, "#sign-in-form button[type=submit]").click()

    def text(self, element_id: str) -> str:
        return self.driver.find_element(By.ID, element_id).text

    def connection(self) -> str:
        return self.driver.find_element(By.ID, "connection").get_attribute("data-state") or ""

    def row(self, execution_id: str) -> Json | None:
        found: Json | None = self.driver.execute_script(ROW_JS, execution_id)
        return found

    def shown(self, execution_id: str) -> Json:
        """The row of an execution the page must be showing now."""
        row = self.row(execution_id)
        assert row is not None, f"{execution_id} is not on the page"
        return row

    def open_detail(self, execution_id: str) -> None:
        selector = f'li[data-execution-id="{execution_id}"] button.open'
        self.driver.find_element(By.CSS_SELECTOR, selector).click()

    def detail_steps(self) -> list[Json]:
        """Each step the detail shows: its heading, input and output as rendered."""
        steps: list[Json] = self.driver.execute_script(
            """
            if (document.getElementById("detail").hidden) return [];
            return [...document.querySelectorAll("#detail-steps > li")].map((li) => ({
              head: li.querySelector(".step-head").innerText,
              input: li.querySelector("pre.input")?.innerText ?? "",
              output: li.querySelector("pre.output")?.innerText ?? "",
            }));
            """
        )
        return steps

    def wait(self, what: str, probe: Callable[[], T], until: Callable[[T], bool]) -> T:
        """Poll ``probe`` until ``until`` holds; AssertionError naming ``what`` and the last
        value seen when the deadline passes first."""
        seen: list[T] = []

        def holds(_: WebDriver) -> bool:
            seen[:] = [probe()]
            return until(seen[0])

        try:
            WebDriverWait(self.driver, WAIT_S, poll_frequency=0.1).until(holds)
        except TimeoutException:
            raise AssertionError(f"{what}: not within {WAIT_S}s; last seen {seen!r}") from None
        return seen[0]

    def wait_row(self, execution_id: str, what: str, until: Callable[[Json], bool]) -> Json:
        row = self.wait(
            f"{execution_id} {what}",
            lambda: self.row(execution_id),
            lambda r: r is not None and until(r),
        )
        assert row is not None
        return row


def coins(shown: str) -> int:
    """The micro-coins of a cost as the page shows it (``0.013081 coins``), exactly."""
    number, unit = shown.split()
    assert unit == "coins", shown
    return coins_to_micro(number)


def settled(page: Dashboard, system: System, execution_id: str, status: str) -> Json:
    """Wait until the row shows ``status`` and the cost the API reports for the execution."""
    page.wait_row(execution_id, f"shows {status}", lambda r: r["status"] == status)
    cost = system.execution(execution_id)["cost_coins"]
    return page.wait_row(
        execution_id, f"shows the cost {cost}", lambda r: coins(r["cost"]) == micro(cost)
    )


def finished_while_cut_off(
    system: System, page: Dashboard, reporter_id: str, workflow_id: str
) -> tuple[str, WebElement]:
    """An execution the page saw pending (no worker ran), that then ran to its end while the
    API process was dead; its row element as it was before."""
    system.stop_worker()
    execution_id = system.process(reporter_id, workflow_id)
    page.wait_row(execution_id, "shows pending", lambda r: r["status"] == "pending")
    row = page.driver.find_element(By.CSS_SELECTOR, f'li[data-execution-id="{execution_id}"]')
    system.kill_api()
    page.wait("the page notices", page.connection, lambda s: s == "reconnecting")
    system.start_worker()
    page.wait(
        f"{execution_id} done in the feed",
        lambda: system.feed_statuses().get(execution_id),
        lambda status: status == "done",
    )
    assert page.shown(execution_id)["status"] == "pending"  # nothing reached the page meanwhile
    return execution_id, row


# -- the test ------------------------------------------------------------------------------------


def test_dashboard_follows_executions_live_and_catches_up_after_restarts(
    browser: WebDriver, private_redis_url: str, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        system = System(private_redis_url, tmp_path, stack)
        system.start_api()
        system.start("projector")
        token = system.create_account()
        reporter_id, workflows = system.reporter()
        page = Dashboard(browser, system.base)

        # Sign in: a wrong token is refused, the session token opens the live feed.
        page.open()
        page.sign_in("not-a-session-token")
        page.wait("the refusal", lambda: page.text("sign-in-error"), lambda t: "refused" in t)
        page.sign_in(token)
        page.wait("the feed is live", page.connection, lambda s: s == "live")
        assert "dashboard" in page.text("account-name")

        # No worker yet: a requested execution is shown pending, nothing done.
        summary = system.process(reporter_id, workflows["summary"])
        row = page.wait_row(summary, "shows pending", lambda r: r["status"] == "pending")
        assert (row["list"], row["done"], row["total"]) == ("active", 0, 2)
        assert row["steps"].startswith("0 of 2 steps")
        assert coins(row["cost"]) == 10_000  # the fee, so far

        # A worker runs it to the end; one more stops half way, one more is refused.
        system.start_worker()
        stuck = system.process(reporter_id, workflows["stuck"])
        refused = system.process(reporter_id, workflows["refused"])

        row = settled(page, system, summary, "done")
        assert (row["list"], row["done"], row["total"]) == ("recent", 2, 2)
        assert row["failure"] == ""
        row = page.wait_row(stuck, "shows step 1 of 2 done", lambda r: r["done"] == 1)
        assert (row["list"], row["status"], row["total"]) == ("active", "running", 2)
        assert "on step 2" in row["steps"]
        assert coins(row["cost"]) > 0.01  # the fee and the transcription so far
        row = settled(page, system, refused, "error")
        assert row["list"] == "recent"
        assert row["failure"].startswith("provider_failed: step 1 (llm_prompt) failed")
        assert page.text("active-count") == "1"
        assert page.text("recent-count") == "2"

        # The detail of the finished one: each step with its input and output.
        page.open_detail(summary)
        steps = page.wait("the detail's steps", page.detail_steps, lambda s: len(s) == 2)
        assert steps[0]["head"].startswith("transcribe · done")
        assert steps[1]["head"].startswith("llm_prompt · done")
        assert VIDEO in steps[0]["input"]
        assert '"kind": "completion"' in steps[1]["output"]
        assert "Summarise" in page.text("detail")

        # The API dies while an execution runs to its end; when it is back, the page reconnects
        # by itself and catches up from its cursor.
        resumed, resumed_row = finished_while_cut_off(
            system, page, reporter_id, workflows["summary"]
        )
        system.start_api()
        page.wait("the feed is live again", page.connection, lambda s: s == "live")
        row = settled(page, system, resumed, "done")
        assert (row["list"], row["done"], row["total"], row["copies"]) == ("recent", 2, 2, 1)
        announced = page.driver.find_element(By.ID, "announce").get_attribute("textContent")
        assert announced == f"Execution {resumed} is done."  # for screen readers
        # Updated in place by the events after its cursor: a reset would have rebuilt the row
        # (the execution is no longer active, so the snapshot drops it).
        try:
            assert resumed_row.get_attribute("data-status") == "done"
        except StaleElementReferenceException:
            raise AssertionError(
                "the row was rebuilt: the page took a reset, not a resume"
            ) from None

        # Again, but the feed is trimmed past the page's cursor meanwhile: the server answers
        # with a reset, and the page rebuilds its state from the snapshot and the REST list.
        reset, reset_row = finished_while_cut_off(system, page, reporter_id, workflows["summary"])
        system.trim_feed()
        system.start_api()
        page.wait("the feed is live again", page.connection, lambda s: s == "live")
        row = settled(page, system, reset, "done")
        assert (row["list"], row["done"], row["total"], row["copies"]) == ("recent", 2, 2, 1)
        with pytest.raises(StaleElementReferenceException):
            reset_row.get_attribute("data-status")  # rebuilt, as a reset must
        row = page.shown(stuck)  # still active: it came back from the snapshot
        assert (row["list"], row["status"], row["done"], row["total"]) == (
            "active",
            "running",
            1,
            2,
        )
        for execution_id in (summary, refused, resumed):
            assert page.shown(execution_id)["copies"] == 1
        assert page.text("recent-count") == "4"

        screenshot = os.environ.get(SCREENSHOT_ENV)
        if screenshot:
            # A livelier picture: a few more executions under way.
            for _ in range(2):
                more = system.process(reporter_id, workflows["stuck"])
                page.wait_row(more, "shows step 1 of 2 done", lambda r: r["done"] == 1)
            # The pointer rests on the header, so no row shows its hover border.
            ActionChains(browser).move_to_element(browser.find_element(By.TAG_NAME, "h1")).perform()
            browser.execute_script("window.scrollTo(0, 0)")
            assert browser.save_screenshot(screenshot), screenshot
