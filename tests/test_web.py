"""The web pages in a real browser: Debian's headless Chromium driven by Playwright
(no browser download), against a real server subprocess. Screenshots are saved in
artifacts/screenshots/ (git-ignored)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_tools import builtin_jobs
from agent_tools.links import Signer
from promises import Runtime, SqlStore, open_store
from tests import durable_jobs as jobs
from tests.test_mcp_transports import free_port

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).parent.parent
SHOTS = ROOT / "artifacts" / "screenshots"
SECRET = "test-secret-for-links"
TOKEN = "page-token-for-tests"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    ),
]


class Server:
    def __init__(self, db: Path, token: str | None = None) -> None:
        self.db, self.port, self.token = db, free_port(), token
        self.base = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "agent_tools.cli", "serve", "--http", "--port", str(self.port),
                   "--db", str(db), "--jobs", "tests.durable_jobs"] + (["--token", token] if token else [])  # fmt: skip
        env = {**os.environ, "AGENT_TOOLS_SECRET": SECRET}
        self.proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.base + "/approve/x", timeout=1)
                return
            except httpx.TransportError:
                assert self.proc.poll() is None and time.monotonic() < deadline, (
                    "server did not start"
                )
                time.sleep(0.1)

    def link(self, approval_id: str) -> str:
        return f"{self.base}/approve/{Signer(SECRET.encode()).approval_token(approval_id)}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    with open_store(f"sqlite:///{tmp_path}/web.db") as s:
        yield s


@pytest.fixture
def server(tmp_path: Path, store: SqlStore) -> Iterator[Server]:
    running = Server(tmp_path / "web.db")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update"],
        )  # fmt: skip
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context()
    opened = context.new_page()
    yield opened
    SHOTS.mkdir(parents=True, exist_ok=True)
    opened.screenshot(path=str(SHOTS / f"{request.node.name}.png"), full_page=True)
    context.close()


def wait_until(condition: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def waiting_approval(store: SqlStore, job_id: str) -> str:
    tasks = Runtime(store).tasks
    wait_until(lambda: (t := tasks.get(job_id)) is not None and t.waiting_on is not None)
    task = tasks.get(job_id)
    assert task is not None and task.waiting_on is not None
    return task.waiting_on


def test_approving_from_the_link_completes_the_job(
    server: Server, store: SqlStore, page: Any
) -> None:
    Runtime(store).start(
        builtin_jobs.approval,
        "Refund 250 EUR to Ana?",
        {"order": "B-2", "reason": "lost"},
        id="ask",
    )
    approval_id = waiting_approval(store, "ask")
    page.goto(server.link(approval_id))
    assert page.inner_text("#question") == "Refund 250 EUR to Ana?"
    assert '"reason": "lost"' in page.inner_text("#details")
    page.fill("textarea[name=comment]", "fine by me")
    page.click("button.approve")
    assert "Approved" in page.inner_text("#message h2")
    page.click("text=See the job")
    for _ in range(100):
        if page.inner_text("#status") == "completed":
            break
        time.sleep(0.1)
        page.reload()
    assert page.inner_text("#status") == "completed"
    assert '"comment": "fine by me"' in page.inner_text("#result")


def test_rejecting_from_the_link_and_a_second_decision_is_refused(
    server: Server, store: SqlStore, page: Any, browser: Any
) -> None:
    Runtime(store).start(builtin_jobs.approval, "Delete the archive?", id="del")
    approval_id = waiting_approval(store, "del")
    other = browser.new_page()  # the same link opened twice (two people, or two tabs)
    other.goto(server.link(approval_id))
    page.goto(server.link(approval_id))
    page.click("button.reject")
    assert "Rejected" in page.inner_text("#message h2")
    other.click("button.approve")  # too late: the first decision stands
    assert other.inner_text("#message h2") == "Already decided"
    assert "It was rejected" in other.inner_text(
        "#message"
    ) and "The first decision stands" in other.inner_text("#message")
    other.close()
    wait_until(lambda: not store.get("del").pending)
    assert Runtime.result(store.get("del"))["approved"] is False


def test_an_expired_and_a_tampered_link_get_clear_pages(
    server: Server, store: SqlStore, page: Any
) -> None:
    Runtime(store).start(builtin_jobs.approval, "Quick?", None, 0.5 / 3600, id="late")
    approval_id = waiting_approval(store, "late")
    link = server.link(approval_id)
    wait_until(lambda: not store.get("late").pending)
    page.goto(link)
    assert page.inner_text("#message h2") == "This approval has expired"
    tampered = link[:-1] + ("0" if link[-1] != "0" else "1")
    page.goto(tampered)
    assert page.inner_text("#message h2") == "This approval link is not valid"
    page.goto(
        link.replace(link.split("/")[-1].split(".")[0], "bm90LWEtam9i")
    )  # another id, same signature
    assert page.inner_text("#message h2") == "This approval link is not valid"


def test_decisions_from_another_site_are_refused(server: Server, store: SqlStore) -> None:
    Runtime(store).start(builtin_jobs.approval, "Pay 900 EUR?", id="pay")
    link = server.link(waiting_approval(store, "pay"))
    forged = httpx.post(link, data={"decision": "approve", "form_token": "guess"})
    assert forged.status_code == 403 and "Request refused" in forged.text
    page_html = httpx.get(link).text
    form_token = page_html.split('name="form_token" value="')[1].split('"')[0]
    cross_site = httpx.post(
        link,
        data={"decision": "approve", "form_token": form_token},
        headers={"Origin": "http://evil.example"},
    )
    assert cross_site.status_code == 403
    assert store.get("pay").pending and store.get("pay.0").pending  # nothing was decided


def test_the_dashboard_lists_filters_and_pages_1000_jobs(
    server: Server, store: SqlStore, page: Any
) -> None:
    runtime = Runtime(store)
    later = store.clock() + 3_600_000
    naps = [
        runtime.prepare(builtin_jobs.sleep, [60], {}, id=f"nap-{i:04d}", start_at=later)
        for i in range(990)
    ]
    store.db.write(lambda tx: [runtime.start_tx(tx, nap) for nap in naps])  # one transaction
    for i in range(10):
        runtime.start(jobs.squares, 3, id=f"sq-{i}")
    wait_until(lambda: all(not store.get(f"sq-{i}").pending for i in range(10)))
    page.goto(server.base + "/")
    rows = page.locator("tr.job")
    assert rows.count() == 50
    first_page = set(page.locator("tr.job td:first-child").all_inner_texts())
    page.click("#next")
    assert rows.count() == 50 and not first_page & set(
        page.locator("tr.job td:first-child").all_inner_texts()
    )
    page.goto(server.base + "/")
    page.select_option("select[name=status]", "completed")
    page.wait_for_url("**status=completed**")
    assert rows.count() == 10 and set(page.locator("td.status").all_inner_texts()) == {"completed"}
    page.select_option("select[name=kind]", "sleep")
    page.wait_for_url("**kind=sleep**")
    assert "No jobs match these filters" in page.inner_text("#jobs")
    page.goto(server.base + "/?status=waiting&kind=sleep")
    assert rows.count() == 50 and set(page.locator("td.status").all_inner_texts()) == {"waiting"}


def test_a_job_page_shows_its_timeline_and_cancels(
    server: Server, store: SqlStore, page: Any
) -> None:
    runtime = Runtime(store)
    runtime.start(jobs.squares, 4, 0.05, id="steps")
    wait_until(lambda: not store.get("steps").pending)
    page.goto(server.base + "/jobs/steps")
    assert page.inner_text("#status") == "completed"
    lanes = page.locator("#timeline .lane")
    assert lanes.count() == 4
    assert "square" in lanes.nth(0).inner_text() and "1 attempt" in lanes.nth(0).inner_text()
    assert '"args": [\n    4,\n    0.05\n  ]' in page.inner_text("#arguments")
    runtime.start(jobs.sleeper, 600, id="long-nap")
    wait_until(lambda: store.search("long-nap.1").promises != [])
    page.goto(server.base + "/jobs/long-nap")
    assert (
        page.locator("#timeline .seg.sleep.pending").count() == 1
    )  # where it waits, drawn as still going
    page.click("button.cancel")
    assert page.inner_text("#status") == "cancelled"
    assert (
        page.locator("#timeline .seg.pending").count() == 0
    )  # the job is over: nothing still going
    assert "(cut short)" in page.inner_text("#timeline")


def test_with_a_server_token_the_dashboard_needs_it_and_approval_links_still_work(
    tmp_path: Path, page: Any
) -> None:
    db = tmp_path / "token.db"
    with open_store(f"sqlite:///{db}") as store:
        server = Server(db, token=TOKEN)
        try:
            page.goto(server.base + "/")
            assert page.inner_text("#message h2") == "This server needs its token"
            page.goto(server.base + "/?token=wrong")
            assert page.inner_text("#message h2") == "Wrong token"
            page.goto(server.base + f"/?token={TOKEN}")
            assert page.url == server.base + "/" and page.locator("#jobs").count() == 1
            Runtime(store).start(builtin_jobs.approval, "With a token?", id="tok")
            page.goto(server.link(waiting_approval(store, "tok")))
            assert page.inner_text("#question") == "With a token?"
            assert TOKEN not in page.content()
        finally:
            server.stop()


def test_in_stdio_mode_the_pages_are_served_on_the_ui_port(tmp_path: Path) -> None:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "agent_tools.cli",
        "serve",
        "--ui-port",
        str(port),
        "--db",
        str(tmp_path / "s.db"),
    ]
    proc = subprocess.Popen(
        command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, (
                    "the pages did not come up"
                )
                time.sleep(0.1)
        assert response.status_code == 200 and '<table id="jobs">' in response.text
    finally:
        proc.terminate()
        proc.wait(20)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
