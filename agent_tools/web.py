"""Web pages: human approvals and a job dashboard, served beside ``/mcp`` (``serve
--http``) or on their own loopback port next to a stdio server.

* ``/approve/<token>``: what a job asks a person, its details as key/value, the
  deadline in the reader's local time and relative ("in 47 hours"); Approve / Reject
  with a name and a comment; afterwards the page restates what was decided. The
  signed token is the credential (the link can be handed to whoever decides); the
  first decision stands; expired, withdrawn, tampered and repeated decisions each
  get a clear page.
* ``/``: counts per status, then the jobs (filtered by status and kind, paged both
  ways, with a total): what each waits for, a "needs a person" marker, relative
  times, progress only while a job runs. The page reloads only when what it shows
  changed (it asks ``/changes`` for a fingerprint while the tab is visible).
* ``/jobs/<id>``: the job's call, who decided what and when, its timeline first, then
  result or error (long values folded), re-run links, and a Cancel button.

Host, Origin and body size are checked by ``agent_tools.http.Guard`` before a request
gets here. With a server token the dashboard pages require it: as a bearer header,
or once as ``?token=``, which sets a same-site, HTTP-only cookie. POSTs carry a
signed form token in their URL, checked before the body is read. Nothing secret is
rendered.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any
from urllib.parse import unquote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from agent_tools import approvals, page_models
from agent_tools.jobs import JobError, JobService
from agent_tools.links import Signer
from agent_tools.present import STATUSES
from promises import Approval

COOKIE = "agent_tools_token"
MAX_COMMENT = 2000
MAX_NAME = 100

_templates = Environment(
    loader=PackageLoader("agent_tools", "templates"), autoescape=select_autoescape()
)
_templates.filters["job_path"] = page_models.job_path


def _render(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    response = HTMLResponse(
        _templates.get_template(template).render(**context), status_code=status_code
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"  # no clickjacking of Approve buttons
    # Approval links stay private (no Referer to other sites), while our own forms keep
    # their Origin header (with "no-referrer" browsers send "Origin: null").
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _message(heading: str, text: str, status_code: int = 200, job_id: str | None = None,
             **extra: Any) -> HTMLResponse:  # fmt: skip
    return _render("message.html", status_code, title=heading, heading=heading, text=text,
                   job_id=job_id, **extra)  # fmt: skip


def _refused() -> HTMLResponse:
    return _message("Request refused", "This form did not come from this server's page.", 403)


class WebPages:
    def __init__(self, service: JobService, signer: Signer, *, token: str | None) -> None:
        self.service = service
        self.store = service.store
        self.signer = signer
        self.token = token

    def routes(self) -> list[Route]:
        return [
            Route("/", self.dashboard, methods=["GET"]),
            Route("/changes", self.changes, methods=["GET"]),
            Route("/job", self.job_by_query, methods=["GET"]),
            Route("/jobs/{rest:path}", self.job_or_cancel, methods=["GET", "POST"]),
            Route("/approve/{token}", self.approval, methods=["GET", "POST"]),
        ]

    # -- guards ---------------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        if self.token is None:
            return True
        expected = self.token.encode()
        header = request.headers.get("authorization", "").removeprefix("Bearer ").encode()
        cookie = request.cookies.get(COOKIE, "").encode()
        return hmac.compare_digest(header, expected) or hmac.compare_digest(cookie, expected)

    def _guard(self, request: Request) -> Response | None:
        """A refusal page, or a redirect that turns ?token= into a cookie, or None."""
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
                "Open this page once with ?token=<the server's token> (as set with "
                "--token-file or AGENT_TOOLS_TOKEN); your browser then keeps it for this site.",
                401,
            )
        return None

    def _form_token_ok(self, request: Request, target: str) -> bool:
        """Checked before the body is read: the form token travels in the URL."""
        return self.signer.check_form_token(target, request.query_params.get("form_token", ""))

    # -- dashboard ------------------------------------------------------------------------

    def _filters(
        self, request: Request
    ) -> tuple[str | None, str | None, str | None, list[str], str | None]:
        """status, kind, cursor, the trail of cursors back, and ``needs=person`` (the
        jobs whose approvals wait for a person)."""
        params = request.query_params
        back = [c for c in (params.get("back") or "").split(",")] if params.get("back") else []
        needs = "person" if params.get("needs") == "person" else None
        return (params.get("status") or None, params.get("kind") or None,
                params.get("cursor") or None, back, needs)  # fmt: skip

    async def dashboard(self, request: Request) -> Response:
        if (refused := self._guard(request)) is not None:
            return refused
        status, kind, cursor, back, needs = self._filters(request)
        try:
            data = await asyncio.to_thread(
                page_models.dashboard, self.service, status, kind, cursor, back, needs
            )
        except JobError as exc:
            return _message("Cannot list these jobs", str(exc), 400)
        return _render(
            "dashboard.html", title="Jobs", statuses=STATUSES, status=None if needs else status,
            kinds=list(self.service.kinds), kind=None if needs else kind, cursor=cursor or "",
            **data,
        )  # fmt: skip

    async def changes(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"error": "this server needs its token"}, 401)
        status, kind, cursor, _, needs = self._filters(request)
        try:
            version = await asyncio.to_thread(
                page_models.changes, self.service, status, kind, cursor, needs
            )
        except JobError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse({"version": version}, headers={"Cache-Control": "no-store"})

    # -- one job --------------------------------------------------------------------------

    async def job_by_query(self, request: Request) -> Response:
        if (refused := self._guard(request)) is not None:
            return refused
        return await self._job(request.query_params.get("id", ""))

    async def job_or_cancel(self, request: Request) -> Response:
        if (refused := self._guard(request)) is not None:
            return refused
        # The id is one encoded path segment: read it from the raw path, so an id like
        # ``a/../b`` is that job and not ``b``.
        raw = request.scope.get("raw_path") or request.url.path.encode()
        segments = raw.decode("latin-1").split("?", 1)[0].split("/")
        if request.method == "POST":
            if len(segments) != 4 or segments[3] != "cancel":
                return _message("Not found", "There is nothing to post to here.", 404)
            return await self._cancel(request, unquote(segments[2]))
        if len(segments) != 3:
            return await self._job(unquote("/".join(segments[2:])))
        return await self._job(unquote(segments[2]))

    async def _job(self, job_id: str) -> Response:
        details = await asyncio.to_thread(page_models.job_page, self.service, job_id)
        if details is None:
            return _message("No such job", f"There is no job with the id {job_id!r}.", 404)
        token = self.signer.form_token(f"cancel:{job_id}") if details["cancellable"] else None
        return _render("job.html", cancel_token=token, **details)

    async def _cancel(self, request: Request, job_id: str) -> Response:
        if not self._form_token_ok(request, f"cancel:{job_id}"):
            return _refused()
        try:
            await asyncio.to_thread(self.service.cancel, job_id)
        except JobError as exc:
            return _message("Not cancelled", str(exc), 409, job_id)
        return RedirectResponse(page_models.job_path(job_id), 303)

    # -- approvals ------------------------------------------------------------------------

    async def approval(self, request: Request) -> Response:
        invalid = _message(
            "This approval link is not valid",
            "The link was changed or is incomplete. Ask for the link again; nothing was decided.",
            404,
        )
        approval_id = self.signer.approval_id(request.path_params["token"])
        if approval_id is None:
            return invalid
        try:
            approval = await asyncio.to_thread(approvals.get, self.store, approval_id)
        except approvals.ApprovalError:
            return invalid
        if request.method == "POST":
            return await self._decide(request, approval)
        if approval.state != "pending":
            return self._closed_page(approval)
        context = await asyncio.to_thread(page_models.approval_page, self.service, approval)
        return _render(
            "approval.html",
            form_token=self.signer.form_token(f"approve:{approval.id}"),
            **context,
        )

    def _closed_page(self, approval: Approval) -> HTMLResponse:
        """Why nobody can decide any more, with times in the reader's zone (as on the
        approval page), not the server's."""
        now = self.store.clock()
        decision = approval.decision
        heading, status = {
            "approved": ("Already decided", 409),
            "rejected": ("Already decided", 409),
            "expired": ("This approval has expired", 410),
        }.get(approval.state, ("Nobody waits for this decision", 410))
        return _render(
            "closed.html", status, title=heading, heading=heading, approval=approval,
            decided_at=page_models.when(decision.at, now) if decision else None,
            deadline=page_models.when(approval.deadline, now),
            job_path=page_models.job_path(approval.job_id) if approval.job_id else None,
        )  # fmt: skip

    async def _decide(self, request: Request, approval: Approval) -> Response:
        if not self._form_token_ok(request, f"approve:{approval.id}"):
            return _refused()
        form = await request.form(max_files=0, max_fields=10)
        decision = str(form.get("decision", ""))
        if decision not in ("approve", "reject"):
            return _message("Choose Approve or Reject", "The form did not say which.", 400)
        comment = str(form.get("comment", "")).strip()[:MAX_COMMENT] or None
        by = str(form.get("by", "")).strip()[:MAX_NAME] or None
        try:
            decided = await asyncio.to_thread(
                approvals.decide, self.store, approval.id,
                approved=decision == "approve", comment=comment, by=by,
            )  # fmt: skip
        except approvals.ApprovalError:
            latest = await asyncio.to_thread(approvals.get, self.store, approval.id)
            return self._closed_page(latest)
        now = self.store.clock()
        made = decided.decision
        return _render(
            "decided.html",
            title="Approved" if made and made.approved else "Rejected",
            approval=approvals.as_dict(decided),
            at=page_models.when(made.at if made else None, now),
            job_path=page_models.job_path(decided.job_id) if decided.job_id else None,
        )
