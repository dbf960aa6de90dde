"""The web pages in a real browser: Debian's headless Chromium driven by Playwright
(no browser download), against a real server subprocess, at a desktop width (1280 px)
and a phone's (390 px). Screenshots are saved in artifacts/screenshots/ (git-ignored)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_tools import approvals, builtin_jobs
from agent_tools.links import Signer
from promises import Context, Runtime, SqlStore, durable, open_store
from tests import durable_jobs as jobs
from tests import people_jobs
from tests.servers import listening_port
from tests.waiting import until

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).parent.parent
AGENT_TOOLS = str(Path(sys.executable).parent / "agent-tools")  # the installed command
SHOTS = ROOT / "artifacts" / "screenshots"
SECRET = "test-secret-for-links"
TOKEN = "page-token-for-tests"
DESKTOP, PHONE = 1280, 390

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    ),
]


class Server:
    def __init__(self, db: Path, *extra: str) -> None:
        self.db = db
        self.log = db.with_suffix(".stderr")
        logged_before = self.log.read_text() if self.log.exists() else ""
        command = [AGENT_TOOLS, "serve", "--http", "--port", "0",
                   "--db", str(db), "--jobs", "tests.durable_jobs", "--jobs", "tests.people_jobs", *extra]  # fmt: skip
        env = {**os.environ, "AGENT_TOOLS_SECRET": SECRET}
        with self.log.open("ab") as errors:
            self.proc = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=errors
            )
        self.port = listening_port(self.proc, self.log, logged_before)
        self.base = f"http://127.0.0.1:{self.port}"

        def answering() -> bool:
            try:
                httpx.get(self.base + "/approve/x", timeout=1)
                return True
            except httpx.TransportError:
                assert self.proc.poll() is None, f"server did not start: {self.log.read_text()}"
                return False

        until(answering, what=f"the server answers at {self.base}")

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


def open_page(browser: Any, width: int) -> Any:
    context = browser.new_context(
        viewport={"width": width, "height": 900},
        is_mobile=width < 600,
        has_touch=width < 600,
        timezone_id="America/New_York",
    )
    return context.new_page()


@pytest.fixture(params=[DESKTOP, PHONE], ids=["desktop", "phone"])
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    opened = open_page(browser, request.param)
    yield opened
    shoot(opened, request.node.name)
    opened.context.close()


def shoot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    safe = name.replace("[", "-").replace("]", "").replace("/", "_")
    page.screenshot(path=str(SHOTS / f"{safe}.png"), full_page=True)


def width_of(page: Any) -> int:
    return int(page.viewport_size["width"])


def assert_fits(page: Any) -> None:
    """Nothing runs off the side: no horizontal scrolling, every element within the page,
    and within its card (or the header, or the counts bar) — a badge that spills past
    its card's edge but not the screen's is caught too."""
    overflow = page.evaluate(
        """() => {
            const width = document.documentElement.clientWidth;
            const name = e => e.tagName + "." + (e.className || "") + " " + JSON.stringify(
                (e.innerText || "").slice(0, 30));
            const wide = [], spilled = [];
            for (const e of document.querySelectorAll("body *")) {
                const r = e.getBoundingClientRect();
                if (r.width === 0 || e.closest("pre, details:not([open])")) continue;
                if (r.right > width + 1 || r.left < -1) wide.push(name(e) + " " + Math.round(r.right));
                const box = e.parentElement.closest(".card, header, nav");
                if (box === null) continue;
                const b = box.getBoundingClientRect();
                if (r.right > b.right + 0.5 || r.left < b.left - 0.5)
                    spilled.push(`${name(e)} x ${Math.round(r.left)}–${Math.round(r.right)} in ` +
                                 `${box.tagName}.${box.className} ${Math.round(b.left)}–${Math.round(b.right)}`);
            }
            return {scroll: document.documentElement.scrollWidth, width,
                    wide: wide.slice(0, 5), spilled: spilled.slice(0, 5)};
        }"""
    )
    assert overflow["scroll"] <= overflow["width"], overflow
    assert overflow["wide"] == [] and overflow["spilled"] == [], overflow


def assert_whole(page: Any, selector: str) -> None:
    """Each element matching ``selector`` shows all its text: not cut with an ellipsis
    or clipped, wrapped onto more lines if need be."""
    clipped = page.evaluate(
        """selector => [...document.querySelectorAll(selector)]
            .filter(e => e.scrollWidth > e.clientWidth + 1 || e.scrollHeight > e.clientHeight + 1)
            .map(e => e.innerText)""",
        selector,
    )
    assert clipped == [], f"cut short: {clipped}"


def assert_kept_together(page: Any, selector: str, phrase: str | None = None) -> None:
    """Each element matching ``selector`` sits on one line, not split over two (a
    legend's colour square and its word); with ``phrase`` (a regular expression), each
    match of it in their text does ("1 attempt", "2 ms")."""
    split = page.evaluate(
        """([selector, phrase]) => {
            const split = [];
            for (const e of document.querySelectorAll(selector)) {
                if (phrase === null) {
                    const lines = e.getBoundingClientRect().height / parseFloat(getComputedStyle(e).lineHeight);
                    if (e.getClientRects().length > 1 || lines > 1.6) split.push(e.innerText);
                    continue;
                }
                const walk = document.createTreeWalker(e, NodeFilter.SHOW_TEXT);
                for (let node = walk.nextNode(); node; node = walk.nextNode()) {
                    for (const m of node.data.matchAll(new RegExp(phrase, "g"))) {
                        const range = document.createRange();
                        range.setStart(node, m.index);
                        range.setEnd(node, m.index + m[0].length);
                        const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
                        if (tops.size > 1) split.push(m[0]);
                    }
                }
            }
            return split;
        }""",
        [selector, phrase],
    )
    assert split == [], f"split over lines: {split}"


def at_narrow_widths(page: Any, check: Any) -> None:
    """Run ``check`` at phone widths from 320 px to 430 px, then return to 390 px: a
    wrap that happens at one width only is found wherever it happens."""
    if width_of(page) >= 600:
        check()
        return
    for width in range(320, 431, 10):
        page.set_viewport_size({"width": width, "height": 900})
        check()
    page.set_viewport_size({"width": PHONE, "height": 900})


def waiting_approval(store: SqlStore, job_id: str) -> str:
    tasks = Runtime(store).tasks
    until(lambda: (t := tasks.get(job_id)) is not None and t.waiting_on is not None)
    task = tasks.get(job_id)
    assert task is not None and task.waiting_on is not None
    return task.waiting_on


def reload_until(page: Any, selector: str, text: str) -> None:
    def shown() -> bool:
        if page.inner_text(selector) == text:
            return True
        page.reload()
        return False

    until(shown, what=f"{selector} shows {text!r}")


@durable(name="web.unserved")
async def unserved(ctx: Context) -> None:
    """Registered in the test process only: the server's worker cannot run it."""


# -- approvals ----------------------------------------------------------------------------


def test_an_approval_read_and_approved_on_the_page_completes_the_job(
    server: Server, store: SqlStore, page: Any
) -> None:
    Runtime(store).start(people_jobs.refund, "B-2", 250.0, id="refund")
    page.goto(server.link(waiting_approval(store, "refund")))
    assert page.inner_text("#question") == "Refund 250.00 EUR for order B-2?"
    details = page.inner_text("#details")
    assert "order_id\nB-2" in details and "amount_eur\n250.0" in details  # key / value, not JSON
    assert "{" not in details.split("history")[0]
    assert page.inner_text("#deadline-relative") == "in 47 hours"
    # the deadline in the reader's own time zone, not UTC with milliseconds
    deadline = page.locator("time").first.inner_text()
    assert deadline.endswith(("EST", "EDT")) and ".000" not in deadline
    assert_fits(page)
    comment = page.locator("textarea[name=comment]").bounding_box()
    assert comment["x"] >= 0 and comment["x"] + comment["width"] <= width_of(page)
    page.fill("input[name=by]", "Ana")
    page.fill("textarea[name=comment]", "fine by me")
    page.click("button.approve")
    assert page.inner_text("#message h1") == "Approved — thank you"
    restated = page.inner_text("#message")
    assert "You approved: Refund 250.00 EUR for order B-2?" in restated
    assert "Ana" in restated and "fine by me" in restated
    assert_fits(page)
    page.click("text=See the job")
    reload_until(page, "#status", "completed")
    decision = page.inner_text(".decision")
    assert "Approved by Ana" in decision and "fine by me" in decision
    assert "Refund 250.00 EUR for order B-2?" in decision
    assert_fits(page)


def test_a_rejection_then_a_second_decision_is_answered_in_a_persons_words(
    server: Server, store: SqlStore, browser: Any
) -> None:
    Runtime(store).start(builtin_jobs.approval, "Delete the archive?", id="del")
    link = server.link(waiting_approval(store, "del"))
    first, second = open_page(browser, PHONE), open_page(browser, DESKTOP)  # two people
    first.goto(link)
    second.goto(link)
    first.fill("textarea[name=comment]", "we still need it")
    first.click("button.reject")
    assert first.inner_text("#message h1") == "Rejected — thank you"
    assert "You rejected: Delete the archive?" in first.inner_text("#restated")
    second.click("button.approve")  # too late: the first decision stands
    assert second.inner_text("#message h2") == "Already decided"
    said = second.inner_text("#message")
    assert "This was already rejected" in said and "we still need it" in said
    assert "The first decision stands" in said and "idempotency" not in said
    # when, in the reader's own time zone as on the approval page, not the server's UTC
    assert "UTC" not in said
    assert second.locator("#message time").inner_text().endswith(("EST", "EDT"))
    shoot(second, "test_a_second_decision-desktop")
    first.context.close()
    second.context.close()
    until(lambda: not store.get("del").pending)
    assert Runtime.result(store.get("del"))["approved"] is False


def test_an_expired_and_a_tampered_link_get_clear_pages(
    server: Server, store: SqlStore, page: Any
) -> None:
    Runtime(store).start(builtin_jobs.approval, "Quick?", None, 0.5 / 3600, id="late")
    link = server.link(waiting_approval(store, "late"))
    until(lambda: not store.get("late").pending)
    page.goto(link)
    assert page.inner_text("#message h2") == "This approval has expired"
    assert "without a decision; the job went on without it" in page.inner_text("#message")
    assert "UTC" not in page.inner_text("#message")
    assert page.locator("#message time").inner_text().endswith(("EST", "EDT"))
    tampered = link[:-1] + ("0" if link[-1] != "0" else "1")
    page.goto(tampered)
    assert page.inner_text("#message h2") == "This approval link is not valid"
    page.goto(link.replace(link.split("/")[-1].split(".")[0], "bm90LWEtam9i"))  # another id
    assert page.inner_text("#message h2") == "This approval link is not valid"
    assert_fits(page)


def test_decisions_from_another_site_or_without_the_form_token_are_refused(
    server: Server, store: SqlStore
) -> None:
    Runtime(store).start(builtin_jobs.approval, "Pay 900 EUR?", id="pay")
    link = server.link(waiting_approval(store, "pay"))
    forged = httpx.post(link + "?form_token=guess", data={"decision": "approve"})
    assert forged.status_code == 403 and "Request refused" in forged.text
    no_token = httpx.post(link, data={"decision": "approve"})
    assert no_token.status_code == 403
    page_html = httpx.get(link).text
    action = page_html.split('id="decide"')[0].rsplit('action="', 1)[1].split('"')[0]
    cross_site = httpx.post(
        link + action, data={"decision": "approve"}, headers={"Origin": "http://evil.example"}
    )
    assert cross_site.status_code == 403
    assert store.get("pay").pending and store.get("pay.0").pending  # nothing was decided


# -- the dashboard ------------------------------------------------------------------------


def test_the_dashboard_counts_pages_both_ways_and_filters_1000_jobs(
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
    until(lambda: all(not store.get(f"sq-{i}").pending for i in range(10)))
    page.goto(server.base + "/")
    counts = {
        a.get_attribute("data-status"): a.inner_text().split("\n")[0]
        for a in page.locator("#counts a").all()
    }
    assert counts["waiting"] == "990" and counts["completed"] == "10" and counts["failed"] == "0"
    rows = page.locator("tr.job")
    assert rows.count() == 50 and page.inner_text("#range") == "1–50 of 1000"
    assert page.locator("#prev").count() == 0
    first_page = set(page.locator("td.job").all_inner_texts())
    page.click("#next")
    assert page.inner_text("#range") == "51–100 of 1000"
    assert rows.count() == 50 and not first_page & set(page.locator("td.job").all_inner_texts())
    page.click("#next")
    assert page.inner_text("#range") == "101–150 of 1000"
    page.click("#prev")
    page.click("#prev")
    assert page.inner_text("#range") == "1–50 of 1000"
    assert set(page.locator("td.job").all_inner_texts()) == first_page
    assert_fits(page)
    page.select_option("select[name=status]", "completed")
    page.wait_for_url("**status=completed**")
    assert rows.count() == 10 and page.inner_text("#range") == "1–10 of 10"
    assert set(page.locator("td.status .badge").all_inner_texts()) == {"completed"}
    page.select_option("select[name=kind]", "sleep")
    page.wait_for_url("**kind=sleep**")
    assert "No jobs match these filters" in page.inner_text("#jobs")
    page.goto(server.base + "/?status=waiting&kind=sleep")
    assert rows.count() == 50 and page.inner_text("#range") == "1–50 of 990"
    assert "scheduled start, in 60 min" in page.inner_text("tr.job >> nth=0")


def test_the_dashboard_shows_what_each_job_waits_for_and_who_needs_a_person(
    server: Server, store: SqlStore, page: Any
) -> None:
    runtime = Runtime(store)
    runtime.start(people_jobs.refund, "C-3", 90.0, id="needs-ana")
    runtime.start(people_jobs.nap, 7200, id="long-nap")
    runtime.start(people_jobs.report, "Lisbon", ["2025-01", "2025-02"], id="report")
    runtime.start(people_jobs.fails, "quota exceeded", id="broken")
    runtime.start(unserved, id="orphan")  # a kind the server's worker does not have
    runtime.start(people_jobs.busy, 600, id="busy")  # one 600 s step
    waiting_approval(store, "needs-ana")
    waiting_approval(store, "long-nap")
    until(lambda: not store.get("report").pending and not store.get("broken").pending)
    until(lambda: (t := Runtime(store).tasks.get("busy")) is not None and t.state == "claimed")
    page.goto(server.base + "/")
    row = {r.locator("td.job").inner_text(): r for r in page.locator("tr.job").all()}
    assert "needs a person" in row["needs-ana"].inner_text()
    assert "Refund 90.00 EUR for order C-3?" in row["needs-ana"].locator("td.waiting").inner_text()
    assert row["long-nap"].locator("td.waiting").inner_text().endswith("in 2 hours")
    assert "needs a person" not in row["long-nap"].inner_text()
    assert row["report"].locator(".bar").count() == 0  # finished: no stale progress
    assert "fetching" not in row["report"].inner_text()
    assert "Broken: the upstream said no: quota exceeded" in row["broken"].inner_text()
    assert row["report"].locator("td.started").inner_text().endswith(("ago", "just now"))
    assert "a worker with kind web.unserved (none has run)" in row["orphan"].inner_text()
    # only a finished job "took" its time; the others are still going
    took = {job: r.locator("td.took").inner_text() for job, r in row.items()}
    assert took["report"].startswith("took ") and took["broken"].startswith("took ")
    assert took["busy"].startswith("running for ")
    for waiting in ("needs-ana", "long-nap", "orphan"):
        assert took[waiting].startswith("waiting for "), took
    assert_fits(page)  # the "needs a person" badge stays inside its card on a phone


def test_approvals_past_the_first_page_are_counted_at_the_top_and_listed_by_a_filter(
    server: Server, store: SqlStore, page: Any
) -> None:
    runtime = Runtime(store)
    runtime.start(people_jobs.refund, "E-1", 40.0, id="refund-1")
    runtime.start(people_jobs.refund, "E-2", 60.0, id="refund-2")
    waiting_approval(store, "refund-1")
    waiting_approval(store, "refund-2")
    later = store.clock() + 3_600_000
    naps = [
        runtime.prepare(builtin_jobs.sleep, [60], {}, id=f"newer-{i:02d}", start_at=later)
        for i in range(60)
    ]
    store.db.write(lambda tx: [runtime.start_tx(tx, nap) for nap in naps])
    page.goto(server.base + "/")
    assert page.locator("tr.job .needs-person").count() == 0  # both are on page 2
    banner = page.locator("#needs-person")
    assert banner.inner_text().startswith("2 approvals need a person")
    assert_fits(page)
    banner.locator("a").click()
    page.wait_for_url("**needs=person**")
    shown = set(page.locator("td.job").all_inner_texts())
    assert shown == {"refund-1", "refund-2"} and page.inner_text("#range") == "1–2 of 2"
    assert page.locator("tr.job .needs-person").count() == 2
    assert_fits(page)
    shoot(page, f"the_needs_a_person_filter-{width_of(page)}")
    approvals.decide(store, waiting_approval(store, "refund-1"), approved=True)
    until(lambda: not store.get("refund-1").pending)
    page.goto(server.base + "/")
    assert banner.inner_text().startswith("1 approval needs a person")


def test_the_dashboard_reloads_only_when_what_it_shows_changed(
    server: Server, store: SqlStore, page: Any
) -> None:
    runtime = Runtime(store)
    runtime.start(people_jobs.nap, 3600, id="asleep")
    waiting_approval(store, "asleep")
    page.goto(server.base + "/")
    assert page.locator("meta[http-equiv=refresh]").count() == 0
    page.evaluate("window.stillTheSamePage = true")
    page.evaluate("window.agentToolsCheck()")  # what the page does every 5 s while visible
    assert page.evaluate("window.stillTheSamePage") is True  # nothing changed: no reload
    with page.expect_navigation():
        runtime.cancel("asleep")
        page.evaluate("window.agentToolsCheck()")
    assert page.evaluate("window.stillTheSamePage") is None
    assert "cancelled" in page.inner_text("tr.job")


# -- one job ------------------------------------------------------------------------------


def test_a_job_page_puts_the_timeline_first_folds_long_results_and_shows_the_call(
    server: Server, store: SqlStore, page: Any
) -> None:
    Runtime(store).start(people_jobs.report, "Lisbon", ["2025-01", "2025-02", "2025-03"], id="rep")
    until(lambda: not store.get("rep").pending)
    page.goto(server.base + "/jobs/rep")
    assert page.inner_text("#status") == "completed"
    assert (
        page.inner_text("#call")
        == 'people.report(city="Lisbon", months=["2025-01", "2025-02", "2025-03"])'
    )
    assert '"args"' not in page.content() and '"kwargs"' not in page.content()
    lanes = page.locator("#timeline .lane")
    assert lanes.count() == 3 and ".0 fetch_month" in lanes.nth(0).inner_text()
    assert "1 attempt" in lanes.nth(0).inner_text()
    # the month that tells the steps apart is shown, even on a phone
    assert '.2 fetch_month("Lisbon", "2025-03")' in lanes.nth(2).inner_text()

    def tidy() -> None:
        assert_whole(page, "#timeline .name")
        assert_kept_together(page, ".legend span")
        assert_kept_together(page, "#timeline .lane", r"\d+(\.\d+)? (ms|s|min|attempts?)")
        assert_fits(page)

    at_narrow_widths(page, tidy)
    timeline_y = page.locator("#timeline").bounding_box()["y"]
    assert timeline_y < page.locator("#result-fold").bounding_box()["y"]
    assert timeline_y < 900  # on the first screen
    assert page.locator("#result-fold").get_attribute("open") is None  # long: folded
    assert not page.locator("#result").is_visible()
    assert "Show the whole result" in page.inner_text("#result-fold summary")
    assert page.locator("#progress").count() == 0  # finished: no stale progress
    assert_fits(page)


def test_a_waiting_job_page_links_to_its_approval_and_cancels(
    server: Server, store: SqlStore, page: Any
) -> None:
    runtime = Runtime(store)
    runtime.start(people_jobs.refund, "D-4", 300.0, id="r4")
    approval_id = waiting_approval(store, "r4")
    page.goto(server.base + "/jobs/r4")
    assert "Waiting for a person: Refund 300.00 EUR for order D-4?" in page.inner_text(
        "#needs-person"
    )
    assert page.get_attribute("#needs-person a", "href") == server.link(approval_id)
    assert "Waiting since" in page.inner_text("#facts")  # not "Running for"
    assert_fits(page)
    runtime.start(jobs.sleeper, 600, id="long-nap")
    until(lambda: store.search("long-nap.1").promises != [])
    page.goto(server.base + "/jobs/long-nap")
    assert page.locator("#timeline .seg.sleep.pending").count() == 1  # drawn as still going
    assert "sleep until" in page.inner_text("#timeline")
    assert "UTC" not in page.inner_text("#timeline")
    assert page.locator("#timeline time").inner_text().endswith(("EST", "EDT"))
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button.cancel")
    assert page.inner_text("#status") == "cancelled"
    assert page.locator("#timeline .seg.pending").count() == 0  # over: nothing still going
    assert "(cut short)" in page.inner_text("#timeline")


def test_a_running_job_page_shows_the_step_in_progress(
    server: Server, store: SqlStore, page: Any
) -> None:
    Runtime(store).start(people_jobs.busy, 600, id="busy")  # one 600 s step
    until(lambda: (t := Runtime(store).tasks.get("busy")) is not None and t.state == "claimed")
    page.goto(server.base + "/jobs/busy")
    assert page.inner_text("#status") == "running"
    timeline = page.inner_text("#timeline")
    assert "No steps yet" not in timeline
    lanes = page.locator("#timeline .lane")
    assert lanes.count() == 1 and lanes.nth(0).inner_text().startswith(".0 ")
    assert "in progress" in timeline and "so far" in timeline
    assert page.locator("#timeline .seg.step.pending").count() == 1  # drawn as still going
    assert "Running for" in page.inner_text("#facts")
    assert_fits(page)


def test_an_id_with_slashes_and_dots_opens_its_own_job_not_another(
    server: Server, store: SqlStore, page: Any
) -> None:
    runtime = Runtime(store)
    runtime.start(jobs.squares, 1, id="a/../b")
    runtime.start(jobs.squares, 2, id="b")
    runtime.start(jobs.squares, 3, id="..")
    until(lambda: all(not store.get(i).pending for i in ("a/../b", "b", "..")))
    page.goto(server.base + "/")
    page.click("td.job >> text='a/../b'")
    assert (
        page.inner_text("#job-id") == "a/../b" and page.inner_text("#call") == "tests.squares(n=1)"
    )
    page.goto(server.base + "/")
    page.click("td.job >> text='..'")
    assert page.inner_text("#job-id") == ".." and page.inner_text("#call") == "tests.squares(n=3)"


# -- a token ------------------------------------------------------------------------------


def test_with_a_server_token_the_dashboard_needs_it_and_approval_links_still_work(
    tmp_path: Path, browser: Any
) -> None:
    db = tmp_path / "token.db"
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    page = open_page(browser, PHONE)
    with open_store(f"sqlite:///{db}") as store:
        server = Server(db, "--token-file", str(token_file))
        try:
            page.goto(server.base + "/")
            assert page.inner_text("#message h2") == "This server needs its token"
            page.goto(server.base + "/?token=wrong")
            assert page.inner_text("#message h2") == "Wrong token"
            page.goto(server.base + f"/?token={TOKEN}")
            assert page.url == server.base + "/" and page.locator("#jobs").count() == 1
            Runtime(store).start(builtin_jobs.approval, "With a token?", id="tok")
            fresh = open_page(browser, PHONE)  # someone without the token
            fresh.goto(server.link(waiting_approval(store, "tok")))
            assert fresh.inner_text("#question") == "With a token?"
            assert TOKEN not in fresh.content()
            fresh.context.close()
        finally:
            server.stop()
            page.context.close()
