"""Web pages: human approvals and a job dashboard, served beside ``/mcp`` (or alone
with ``serve --ui-port`` in stdio mode).

* ``/approve/<token>``: what a job asks and the context it gave; Approve / Reject
  with a comment. The signed token is the credential (so the link can be handed to
  whoever decides); the first decision stands; expired, tampered and repeated
  decisions each get a clear page.
* ``/``: the jobs, filtered by status and kind, paged, refreshing while jobs run.
* ``/jobs/<id>``: arguments, result or error, the timeline of steps, sleeps and
  approvals, and a Cancel button.

When the server has a token, the dashboard pages require it: as a bearer header, or
once as ``?token=`` which sets a same-site, HTTP-only cookie. POSTs carry a signed
form token and are refused from a foreign ``Origin``. Nothing secret is rendered.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any
from urllib.parse import urlencode, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from agent_tools.jobs import JobError, JobService, iso
from agent_tools.links import Signer
from promises import JOB_TAG, STEP_TAG, PromiseError, PromiseNotFound, Value

COOKIE = "agent_tools_token"
PAGE_SIZE = 50
STATUSES = ("running", "waiting", "completed", "failed", "cancelled", "timed_out")

_templates = Environment(
    loader=PackageLoader("agent_tools", "templates"), autoescape=select_autoescape()
)


def _render(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(
        _templates.get_template(template).render(**context), status_code=status_code
    )


def _message(
    heading: str, text: str, status_code: int = 200, job_id: str | None = None
) -> HTMLResponse:
    return _render(
        "message.html", status_code, title=heading, heading=heading, text=text, job_id=job_id
    )


def _duration(ms: float) -> str:
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _ms(iso_time: str | None) -> int | None:
    if iso_time is None:
        return None
    from datetime import datetime

    return int(datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp() * 1000)


class WebPages:
    def __init__(
        self, service: JobService, signer: Signer, *, token: str | None, allowed_hosts: set[str]
    ) -> None:
        self.service = service
        self.store = service.store
        self.signer = signer
        self.token = token
        self.allowed_hosts = allowed_hosts

    def routes(self) -> list[Route]:
        return [
            Route("/", self.dashboard, methods=["GET"]),
            Route("/jobs/{job_id:path}/cancel", self.cancel, methods=["POST"]),
            Route("/jobs/{job_id:path}", self.job, methods=["GET"]),
            Route("/approve/{token}", self.approval, methods=["GET", "POST"]),
        ]

    # -- guards ---------------------------------------------------------------------------

    def _host_ok(self, request: Request) -> bool:
        return request.headers.get("host", "") in self.allowed_hosts

    def _origin_ok(self, request: Request) -> bool:
        origin = request.headers.get("origin")
        return origin is None or urlsplit(origin).netloc == request.headers.get("host")

    def _authorized(self, request: Request) -> bool:
        if self.token is None:
            return True
        expected = self.token.encode()
        header = request.headers.get("authorization", "").removeprefix("Bearer ").encode()
        cookie = request.cookies.get(COOKIE, "").encode()
        return hmac.compare_digest(header, expected) or hmac.compare_digest(cookie, expected)

    def _guard(self, request: Request) -> Response | None:
        """A refusal page, or a redirect that turns ?token= into a cookie, or None."""
        if not self._host_ok(request):
            return _message("Wrong host", "This server does not answer to that host name.", 421)
        given = request.query_params.get("token")
        if self.token is not None and given is not None:
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return _message("Wrong token", "That token is not this server's token.", 401)
            query = {k: v for k, v in request.query_params.items() if k != "token"}
            redirect = RedirectResponse(
                request.url.path + ("?" + urlencode(query) if query else ""), 303
            )
            redirect.set_cookie(COOKIE, given, httponly=True, samesite="strict")
            return redirect
        if not self._authorized(request):
            return _message(
                "This server needs its token",
                "Open this page once with ?token=<the server's token> (as set with --token "
                "or AGENT_TOOLS_TOKEN); your browser then keeps it for this site.",
                401,
            )
        return None

    # -- dashboard ------------------------------------------------------------------------

    async def dashboard(self, request: Request) -> Response:
        if (refused := self._guard(request)) is not None:
            return refused
        status = request.query_params.get("status") or None
        kind = request.query_params.get("kind") or None
        cursor = request.query_params.get("cursor") or None
        try:
            page = await asyncio.to_thread(self.service.list_jobs, status, kind, PAGE_SIZE, cursor)
        except JobError as exc:
            return _message("Cannot list these jobs", str(exc), 400)
        now = self.store.clock()
        for job in page["jobs"]:
            end = _ms(job.get("finished_at")) or now
            job["duration"] = _duration(end - (_ms(job["created_at"]) or now))
        next_url = None
        if page["next_cursor"]:
            query = {k: v for k, v in (("status", status), ("kind", kind)) if v}
            next_url = "/?" + urlencode({**query, "cursor": page["next_cursor"]})
        busy = any(j["status"] in ("running", "waiting") for j in page["jobs"])
        return _render(
            "dashboard.html",
            title="Jobs",
            jobs=page["jobs"],
            statuses=STATUSES,
            status=status,
            kinds=list(self.service.kinds),
            kind=kind,
            next_url=next_url,
            refresh=3 if busy else None,
        )

    # -- one job --------------------------------------------------------------------------

    async def job(self, request: Request) -> Response:
        if (refused := self._guard(request)) is not None:
            return refused
        job_id = request.path_params["job_id"]
        details = await asyncio.to_thread(self._job_details, job_id)
        if details is None:
            return _message("No such job", f"There is no job with the id {job_id!r}.", 404)
        return _render("job.html", **details)

    def _job_details(self, job_id: str) -> dict[str, Any] | None:
        job = self.service.probe([job_id])[0]
        if job["status"] == "unknown":
            return None
        promise = self.store.get(job_id)
        spec = json.loads(promise.param.data) if promise.param.data else {}
        arguments = (
            {"args": spec.get("args", []), "kwargs": spec.get("kwargs", {})}
            if "fn" in spec
            else spec
        )
        now = self.store.clock()
        start, end = promise.created_at, promise.settled_at or now
        span = max(end - start, 1)
        timeline = []
        for child in self._children(job_id):
            # A child still pending when its job settled was cut short, not still going.
            still_going = child.pending and promise.pending
            child_end = min(child.settled_at or end, end)
            name = child.param.headers.get(STEP_TAG, "")
            kind = "sleep" if child.timer else "approval" if name == "promise" else "step"
            label = {"sleep": "sleep", "approval": "waiting for a decision"}.get(
                kind, name.split(":")[-1]
            )
            left = round(min(100 * (child.created_at - start) / span, 99.6), 2)
            timeline.append(
                {
                    "id": child.id,
                    "label": f"{child.id.removeprefix(job_id)} {label}",
                    "kind": kind,
                    "left": left,
                    "width": round(
                        min(max(100 * (child_end - child.created_at) / span, 0.4), 100 - left), 2
                    ),
                    "duration": _duration(child_end - child.created_at)
                    + (" so far" if still_going else " (cut short)" if child.pending else ""),
                    "attempts": child.value.headers.get("attempts"),
                    "pending": still_going,
                    "failed": child.state.startswith("rejected"),
                }
            )
        return {
            "title": job_id,
            "job": job,
            "arguments": json.dumps(arguments, indent=2),
            "result": json.dumps(job.get("result"), indent=2),
            "timeline": timeline,
            "total": _duration(end - start),
            "cancel_token": self.signer.form_token(f"cancel:{job_id}") if promise.pending else None,
        }

    def _children(self, job_id: str) -> list[Any]:
        found, cursor = [], None
        while True:
            page = self.store.search(f"{job_id}.*", limit=1000, cursor=cursor)
            found += page.promises
            if page.cursor is None or len(found) >= 5000:
                return sorted(found, key=lambda p: (p.created_at, p.id))
            cursor = page.cursor

    async def cancel(self, request: Request) -> Response:
        if (refused := self._guard(request)) is not None:
            return refused
        job_id = request.path_params["job_id"]
        form = await request.form()
        if not self._origin_ok(request) or not self.signer.check_form_token(
            f"cancel:{job_id}", str(form.get("form_token", ""))
        ):
            return _message(
                "Request refused", "This form did not come from this server's page.", 403
            )
        try:
            await asyncio.to_thread(self.service.cancel, job_id)
        except JobError as exc:
            return _message("Not cancelled", str(exc), 409, job_id)
        return RedirectResponse(f"/jobs/{job_id}", 303)

    # -- approvals ------------------------------------------------------------------------

    def _job_of(self, approval_id: str) -> str:
        prefix = approval_id
        while "." in prefix:
            prefix = prefix.rsplit(".", 1)[0]
            try:
                if JOB_TAG in self.store.get(prefix).tags:
                    return prefix
            except PromiseError:
                continue
        return approval_id

    async def approval(self, request: Request) -> Response:
        if not self._host_ok(request):
            return _message("Wrong host", "This server does not answer to that host name.", 421)
        invalid = _message(
            "This approval link is not valid",
            "The link was changed or is incomplete. Ask for the link again; nothing was decided.",
            404,
        )
        approval_id = self.signer.approval_id(request.path_params["token"])
        if approval_id is None:
            return invalid
        try:
            promise = await asyncio.to_thread(self.store.get, approval_id)
        except PromiseNotFound:
            return invalid
        job_id = await asyncio.to_thread(self._job_of, approval_id)
        if request.method == "POST":
            return await self._decide(request, approval_id, job_id)
        if not promise.pending:
            return self._settled_page(promise, job_id)
        request_data = json.loads(promise.param.data) if promise.param.data else {}
        question = request_data.get("question") if isinstance(request_data, dict) else None
        details = request_data.get("details") if isinstance(request_data, dict) else request_data
        return _render(
            "approval.html",
            title="Decision needed",
            question=question or f"Job {job_id} asks for a decision",
            details=json.dumps(details, indent=2) if details else None,
            job_id=job_id,
            deadline=iso(promise.timeout_at),
            form_token=self.signer.form_token(f"approve:{approval_id}"),
        )

    def _settled_page(self, promise: Any, job_id: str) -> HTMLResponse:
        if promise.state == "rejected_timedout":
            return _message(
                "This approval has expired",
                f"No decision was made by {iso(promise.timeout_at)}; the job went on without it.",
                410,
                job_id,
            )
        decision = json.loads(promise.value.data) if promise.value.data else {}
        verdict = (
            "approved" if isinstance(decision, dict) and decision.get("approved") else "rejected"
        )
        comment = decision.get("comment") if isinstance(decision, dict) else None
        text = (
            f"It was {verdict} at {iso(promise.settled_at)}"
            + (f" ({comment})" if comment else "")
            + "."
        )
        return _message("Already decided", text + " The first decision stands.", 409, job_id)

    async def _decide(self, request: Request, approval_id: str, job_id: str) -> Response:
        form = await request.form()
        if not self._origin_ok(request) or not self.signer.check_form_token(
            f"approve:{approval_id}", str(form.get("form_token", ""))
        ):
            return _message(
                "Request refused", "This form did not come from this server's page.", 403
            )
        decision = str(form.get("decision", ""))
        if decision not in ("approve", "reject"):
            return _message("Choose Approve or Reject", "The form did not say which.", 400)
        comment = str(form.get("comment", "")).strip()[:2000] or None
        value = {"approved": decision == "approve", "comment": comment, "at": self.store.clock()}
        try:
            transition = await asyncio.to_thread(
                self.store.resolve,
                approval_id,
                value=Value(json.dumps(value)),
                ikey=f"decision:{approval_id}",
            )
        except PromiseError:
            transition = None
        if transition is None or not transition.fresh:
            return self._settled_page(await asyncio.to_thread(self.store.get, approval_id), job_id)
        verdict = "Approved" if value["approved"] else "Rejected"
        return _message(
            f"{verdict} — thank you", "Your decision is recorded; the job goes on.", 200, job_id
        )
