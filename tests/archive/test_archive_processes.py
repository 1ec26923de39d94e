"""The archive tier across real processes on a real Redis: api, worker, projector and archiver as
separate ``clipstream`` processes, the faults injected for real.

    - end to end over HTTP and the CLI: archived, trimmed, and every reader still whole
    - archivers SIGKILLed mid-segment (and at random) and restarted, two of them at once
    - the S3 server stopped under the archiver, then started again
    - the archive's disk full (a small tmpfs), then grown

Each checks afterwards, from ``clipstream archive export`` (archive, then hot tail), that every
execution's events are there once each, seq 1..n with no gap, and ``archive verify`` passes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import pytest

from tests.archive.conftest import S3Server
from tests.processes import ADMIN_HEADERS, ROOT, Role, role_env, wait_http
from tests.servers import RedisServer, free_port

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def archive_env(server: RedisServer, url: str, **extra: str) -> dict[str, str]:
    return role_env(
        server.url,
        CLIPSTREAM_ARCHIVE_URL=url,
        CLIPSTREAM_HOT_SECONDS="0",
        CLIPSTREAM_ARCHIVE_SEGMENT_ENTRIES="20",
        CLIPSTREAM_ARCHIVE_SEGMENT_MS="0",
        **extra,
    )


class Deployment:
    """api, worker and projector processes, an account with an item, and archivers on demand."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.roles = [
            Role(["api", "--port", str(self.port)], env, logs / "api.log"),
            Role(["worker"], env, logs / "worker.log"),
            Role(["projector"], env, logs / "projector.log"),
        ]
        self.archivers: list[Role] = []
        self.http = httpx.Client(base_url=self.base, timeout=30)
        wait_http(f"{self.base}/healthz", role=self.roles[0])
        made = self.http.post(
            "/admin/accounts", json={"name": "a", "coins": 1000}, headers=ADMIN_HEADERS
        )
        assert made.status_code == 201, made.text
        self.account = made.json()["account"]["account_id"]
        self.auth = {"Authorization": f"Bearer {made.json()['api_key']}"}
        item = self.http.post(
            "/v1/items", json={"source": "https://youtu.be/dQw4w9WgXcQ"}, headers=self.auth
        )
        self.item = item.json()["item"]["item_id"]
        self.executions: list[str] = []

    def archiver(self) -> Role:
        n = len(self.archivers)
        role = Role(["archiver"], self.env, self.logs / f"archiver-{n}.log")
        self.archivers.append(role)
        return role

    def transcripts(self, n: int) -> None:
        for _ in range(n):
            got = self.http.post(f"/v1/items/{self.item}/transcript", json={}, headers=self.auth)
            assert got.status_code == 202, got.text
            self.executions.append(got.json()["execution"]["execution_id"])

    def wait_done(self) -> None:
        end = time.monotonic() + 90
        while self.http.get("/v1/executions/me?active=1", headers=self.auth).json()["executions"]:
            assert time.monotonic() < end, "executions still active after 90 s"
            time.sleep(0.1)

    def close(self) -> None:
        self.http.close()
        for role in [*self.roles, *self.archivers]:
            role.terminate()


@contextmanager
def deployment(env: dict[str, str], logs: Path) -> Iterator[Deployment]:
    d = Deployment(env, logs)
    try:
        yield d
    finally:
        d.close()


def status_rows(stdout: str) -> list[list[str]]:
    """The partition rows of ``archive status``: part, position, archived, MiB, segments, in
    Redis, lag entries, lag s, trim floor, (held by)."""
    return [line.split() for line in stdout.splitlines()[2:] if line[:4].strip().isdigit()]


def wait_archived(d: Deployment, deadline_s: float = 90) -> str:
    """Until ``archive status`` shows every log archived and trimmed, no lag and no error."""
    end = time.monotonic() + deadline_s
    while True:
        status = cli(d.env, "archive", "status")
        rows = [
            line.split() for line in status.stdout.splitlines()[2:] if line[:4].strip().isdigit()
        ]
        if status.returncode == 0 and rows and all(r[5] == "0" and r[6] == "0" for r in rows):
            return status.stdout
        assert time.monotonic() < end, status.stdout + status.stderr
        time.sleep(0.3)


def check_whole(d: Deployment) -> None:
    """Every execution's events exactly once, seq 1..n, across archive and hot tail; verify ok."""
    verify = cli(d.env, "archive", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    exported = cli(d.env, "archive", "export")
    assert exported.returncode == 0, exported.stderr
    seqs: dict[str, list[int]] = defaultdict(list)
    ids: list[str] = []
    for line in exported.stdout.splitlines():
        row = orjson.loads(line)
        ids.append(f"{row['partition']}/{row['id']}")
        seqs[row["event"]["execution_id"]].append(row["event"]["seq"])
    assert len(ids) == len(set(ids))  # no entry twice
    for xid in d.executions:
        view = d.http.get(f"/v1/executions/{xid}", headers=d.auth).json()["execution"]
        assert view["status"] == "done", view
        assert seqs[xid] == list(range(1, len(seqs[xid]) + 1)), (xid, seqs[xid])
        assert seqs[xid][-1] >= 5


def test_archived_trimmed_and_still_whole_over_http_and_the_cli(
    real_redis_server: RedisServer, tmp_path: Path
) -> None:
    real_redis_server_flush(real_redis_server)
    env = archive_env(real_redis_server, f"file://{tmp_path / 'archive'}")
    with deployment(env, tmp_path) as d:
        d.archiver()
        d.transcripts(12)
        d.wait_done()
        status = wait_archived(d)
        assert f"archive: file://{tmp_path / 'archive'}" in status
        check_whole(d)
        # The streams expired (hot window 0), the views and events still answer.
        xid = d.executions[0]
        events = d.http.get(f"/v1/executions/{xid}/events", headers=d.auth)
        assert events.status_code == 200, events.text
        history = cli(env, "history", xid)
        assert history.returncode == 0, history.stderr
        assert len(history.stdout.splitlines()) == len(events.json()["events"])
        # The ledger pages on into the archive, and the audit reads it there.
        pages, params = [], {"limit": 7}
        while True:
            page = d.http.get("/v1/me/ledger", params=params, headers=d.auth).json()
            pages += page["entries"]
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        assert pages[-1]["kind"] == "credit"
        assert {e["kind"] for e in pages} >= {"fee", "reserve", "release", "settle", "credit"}
        audit = cli(env, "accounts", "audit", d.account)
        assert audit.returncode == 0, audit.stdout + audit.stderr
        assert f"ledger_entries:  {len(pages)}" in audit.stdout or "status: ok" in audit.stdout


def test_archivers_killed_mid_segment_and_restarted_lose_nothing(
    real_redis_server: RedisServer, tmp_path: Path
) -> None:
    real_redis_server_flush(real_redis_server)
    archive = tmp_path / "archive"
    env = archive_env(real_redis_server, f"file://{archive}", CLIPSTREAM_PARTITIONS="2")
    # Manifests cannot be written (each partition's manifest folder is a file): an archiver
    # writes its segment, then fails before the manifest that would list it. Killed there.
    for p in (0, 1):
        (archive / f"p{p:04d}").mkdir(parents=True)
        (archive / f"p{p:04d}" / "manifest").write_text("in the way")
    with deployment(env, tmp_path) as d:
        d.transcripts(8)
        d.wait_done()
        first = d.archiver()
        end = time.monotonic() + 60
        while not list(archive.glob("p*/log/*.jsonl.zst")):
            assert time.monotonic() < end, first.output()
            time.sleep(0.1)
        status = cli(env, "archive", "status")
        assert status.returncode == 1, status.stdout
        assert "ERROR" in status.stdout
        first.kill()
        orphans = {p: p.read_bytes() for p in archive.glob("p*/log/*.jsonl.zst")}
        for p in (0, 1):
            (archive / f"p{p:04d}" / "manifest").unlink()
        # Restarted, two at once, killed again at random while more work runs.
        for round_ in range(3):
            d.archiver()
            d.archiver()
            d.transcripts(6)
            time.sleep(0.3 + 0.4 * round_)
            for role in d.archivers[-2:]:
                role.kill()
        d.archiver()
        d.wait_done()
        wait_archived(d)
        for path, data in orphans.items():
            assert path.read_bytes() == data  # written again byte-identical, now listed
        check_whole(d)


def test_the_s3_server_stopped_then_started_again(
    real_redis_server: RedisServer, tmp_path: Path, s3_server: S3Server
) -> None:
    real_redis_server_flush(real_redis_server)
    bucket = s3_server.bucket()
    env = archive_env(real_redis_server, f"s3://{bucket}/cs", **s3_server.env)
    with deployment(env, tmp_path) as d:
        d.archiver()
        d.transcripts(6)
        d.wait_done()
        wait_archived(d)
        s3_server.stop()
        try:
            d.transcripts(6)
            d.wait_done()
            end = time.monotonic() + 60
            while True:
                status = cli(env, "archive", "status")
                if status.returncode == 1 and "ERROR: archive" in status.stdout:
                    break
                assert time.monotonic() < end, status.stdout
                time.sleep(0.3)
            in_redis = sum(int(r[5]) for r in status_rows(status.stdout))
            assert in_redis > 0  # nothing trimmed that the archive does not hold
        finally:
            s3_server.start()
        wait_archived(d)
        check_whole(d)


def test_a_full_archive_disk_stops_trimming_until_it_has_room(
    real_redis_server: RedisServer, tmp_path: Path
) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    try:
        real_redis_server_flush(real_redis_server)
        (mount / "filler").write_bytes(os.urandom(60 * 1024))  # all but a few KiB taken
        env = archive_env(real_redis_server, f"file://{mount / 'archive'}")
        with deployment(env, tmp_path) as d:
            d.archiver()
            d.transcripts(20)
            d.wait_done()
            end = time.monotonic() + 60
            while True:
                status = cli(env, "archive", "status")
                if status.returncode == 1 and "No space left" in status.stdout:
                    break
                assert time.monotonic() < end, status.stdout
                time.sleep(0.3)
            assert any(int(r[5]) > 0 for r in status_rows(status.stdout))
            (mount / "filler").unlink()  # room again
            wait_archived(d)
            check_whole(d)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def real_redis_server_flush(server: RedisServer) -> None:
    import redis

    client = redis.Redis.from_url(server.url)
    client.flushall()
    client.close()


def test_without_an_archive_nothing_replay_needs_is_trimmed(
    real_redis_server: RedisServer, tmp_path: Path
) -> None:
    import redis

    real_redis_server_flush(real_redis_server)
    env = role_env(real_redis_server.url, CLIPSTREAM_HOT_SECONDS="0")
    with deployment(env, tmp_path) as d:
        archiver = d.archiver()
        d.transcripts(4)
        d.wait_done()
        status = cli(env, "archive", "status")
        assert status.returncode == 0, status.stderr
        assert "archive: NONE" in status.stdout
        assert "nothing replay needs is trimmed" in status.stdout
        time.sleep(1.5)  # a few archiver passes (one a second)
        assert archiver.proc.poll() is None, archiver.output()
        assert "archive none" in archiver.output()
        with redis.Redis.from_url(real_redis_server.url) as client:
            total = sum(client.xlen(f"cs:{{p{p}}}:log") for p in range(4))
            info = sum(client.xinfo_stream(f"cs:{{p{p}}}:log")["entries-added"] for p in range(4))
        assert total == info == 4 * 5  # every entry ever appended (five per transcript) is there
        replay = cli(env, "replay")
        assert "identical" in replay.stdout, replay.stdout + replay.stderr


def test_serve_on_the_embedded_store_archives_in_memory(tmp_path: Path) -> None:
    port = free_port()
    env = role_env(
        "redis://unused",
        CLIPSTREAM_HOT_SECONDS="0",
        CLIPSTREAM_ARCHIVE_SEGMENT_ENTRIES="1",
        CLIPSTREAM_ARCHIVE_SEGMENT_MS="0",
    )
    del env["CLIPSTREAM_REDIS_URL"]
    serve = Role(["serve", "--port", str(port)], env, tmp_path / "serve.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz", role=serve)
        banner = serve.output()
        assert "archive:      in this process's memory (lost when it stops)" in banner
        key = next(line.split()[-1] for line in banner.splitlines() if "api key:" in line)
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, timeout=30) as http:
            item = http.post("/v1/items", json={"source": "https://youtu.be/dQw4w9WgXcQ"},
                             headers=auth).json()["item"]["item_id"]  # fmt: skip
            xid = http.post(f"/v1/items/{item}/transcript", json={}, headers=auth).json()[
                "execution"
            ]["execution_id"]
            end = time.monotonic() + 60
            while (
                http.get(f"/v1/executions/{xid}", headers=auth).json()["execution"]["status"]
                != "done"
            ):
                assert time.monotonic() < end
                time.sleep(0.1)
            time.sleep(1.5)  # the archiver's next passes: archived, stream expired, log trimmed
            events = http.get(f"/v1/executions/{xid}/events", headers=auth)
            assert events.status_code == 200, events.text
            assert [e["seq"] for e in events.json()["events"]] == list(range(1, 6))
            ledger = http.get("/v1/me/ledger", headers=auth).json()["entries"]
            assert {e["kind"] for e in ledger} >= {"credit", "fee", "settle"}
    finally:
        serve.terminate()
