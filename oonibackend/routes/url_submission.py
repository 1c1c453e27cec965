"""Test List Editor routes (docs/api.md §1.2 #29-31, §2.9), for logged-in users:

* GET  /api/_/url-submission/test-list/{cc}  {test_list, changes, state, pr_url}
* POST /api/v1/url-submission/update-url      {country_code, comment, old_entry, new_entry}
                                              -> {"updated_entry": new_entry}
* POST /api/v1/url-submission/submit          -> {"pr_id": <GitHub API URL of the PR>}

Errors are `{"error", "err_str", "err_args"?}` (legacy error helper B). The work happens in
oonibackend/testlists (git worktrees per user, GitHub pull requests). Without a GitHub token
(`[github] token` / `token_file`) the routes answer 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from aiohttp_apispec import docs

from oonibackend import jsonutil
from oonibackend.accounts.auth import require_session
from oonibackend.accounts.ids import is_account_id
from oonibackend.appkeys import CONFIG
from oonibackend.config import Config
from oonibackend.errors import APIError
from oonibackend.routes.body import read_object
from oonibackend.testlists import entries as E
from oonibackend.testlists.git import GitError
from oonibackend.testlists.github import GitHub
from oonibackend.testlists.workflow import Editor

log = logging.getLogger(__name__)
TAGS = ["Test List Editor"]
# Set by editor_ctx below; absent when no GitHub token is configured.
EDITOR = web.AppKey("testlists_editor", Editor)
_MAX_BODY = 64 * 1024
_MAX_COMMENT = 2000
_COMMENT_JUNK = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
T = TypeVar("T")


def _entry_error(e: E.EntryError) -> APIError:
    extra: dict[str, Any] = {"err_str": e.err_str}
    if e.err_args:
        extra["err_args"] = e.err_args
    return APIError(e.message, 400, **extra)


async def _run(op: Awaitable[T]) -> T:
    """An editor operation, with refused entries as 400 and a failing git as 503 (logged by
    the git runner; retrying usually works, and the user's state is left consistent)."""
    try:
        return await op
    except E.EntryError as e:
        raise _entry_error(e) from None
    except GitError:
        err = APIError("The test lists repository is not available, retry later", 503,
                       err_str="err_repository_unavailable")
        err.headers["Retry-After"] = "10"
        raise err from None


def _editor(request: web.Request) -> tuple[Editor, str]:
    """The editor and the caller's account id (401 when not logged in)."""
    session = require_session(request)
    if not is_account_id(session.account_id):
        raise APIError("Invalid account", 403)
    editor = request.app.get(EDITOR)
    if editor is None:
        raise APIError("test-list editing is not configured", 503)
    return editor, session.account_id


async def _json_body(request: web.Request) -> dict[str, Any]:
    return await read_object(request, _MAX_BODY, err_str="err_request_params")


@docs(tags=TAGS, summary="Fetch citizenlab URL list and additional metadata",
      description="`country_code`: two letters or `global`. Answers the list as the user "
                  "sees it (their branch while editing), their changes, their state "
                  "(CLEAN, IN_PROGRESS, PR_OPEN) and the web URL of their open pull request.",
      responses={200: {"description": "{test_list: [...] | null, changes, state, pr_url}"},
                 400: {"description": "err_invalid_country_code"},
                 401: {"description": "Login required"}})
async def get_test_list(request: web.Request) -> web.Response:
    editor, account = _editor(request)
    try:
        cc = E.parse_cc(request.match_info["country_code"])
    except E.EntryError as e:
        raise _entry_error(e) from None
    return jsonutil.response(await _run(editor.get_list(account, cc)), cache=0)


@docs(tags=TAGS, summary="Create/update/delete a Citizenlab URL entry",
      description="Body `{country_code, comment, old_entry, new_entry}`, entries "
                  "`{url, category_code, date_added, source, notes}`. The current value is "
                  "sent back as `old_entry` as a check against races. Empty old_entry: add "
                  "new_entry; empty new_entry: delete old_entry. An open pull request is "
                  "closed (the user submits again).",
      responses={200: {"description": '{"updated_entry": new_entry}'},
                 400: {"description": "err_bad_url, err_bad_category_code, err_bad_date, "
                                      "err_duplicate_url, err_no_proposed_changes, "
                                      "err_cannot_update_list, err_country_not_supported, "
                                      "err_invalid_country_code, err_request_params"},
                 502: {"description": "err_cannot_close_pr"}})
async def update_url(request: web.Request) -> web.Response:
    editor, account = _editor(request)
    body = await _json_body(request)
    unknown = set(body) - {"country_code", "comment", "old_entry", "new_entry"}
    if unknown:
        raise APIError(f"Invalid request: unknown keys {', '.join(sorted(unknown))}", 400,
                       err_str="err_request_params")
    comment = body.get("comment") or ""
    if not isinstance(comment, str) or len(comment) > _MAX_COMMENT:
        raise APIError(f"Invalid comment: a text of at most {_MAX_COMMENT} characters", 400,
                       err_str="err_request_params")
    comment = _COMMENT_JUNK.sub("", comment.replace("\r\n", "\n"))
    try:
        cc = E.parse_cc(body.get("country_code"))
        old_raw, new_raw = E.optional(body.get("old_entry")), E.optional(body.get("new_entry"))
        old = E.old_entry(old_raw) if old_raw is not None else None
        new = E.validate_entry(new_raw) if new_raw is not None else None
    except E.EntryError as e:
        raise _entry_error(e) from None
    if old == new:
        raise APIError("No proposed changes", 400, err_str="err_no_proposed_changes")
    await _run(editor.update(account, cc, old, new, comment))
    # A deletion answers {} like legacy (which echoed the empty new_entry it was sent).
    return jsonutil.response({"updated_entry": new if new is not None else {}}, cache=0)


@docs(tags=TAGS, summary="Propose changes: open a Pull Request on GitHub",
      responses={200: {"description": '{"pr_id": <GitHub API URL of the pull request>}'},
                 400: {"description": "err_no_proposed_changes"},
                 502: {"description": "err_cannot_push, err_cannot_create_pr"}})
async def submit(request: web.Request) -> web.Response:
    editor, account = _editor(request)
    return jsonutil.response({"pr_id": await _run(editor.submit(account))}, cache=0)


def read_token(cfg: Config) -> str:
    """The GitHub token: configured, or read from token_file ('' when neither works)."""
    g = cfg.github
    if g.token:
        return g.token.strip()
    if not g.token_file:
        return ""
    try:
        return cfg.path(g.token_file).read_text().strip()
    except OSError as e:
        log.error("cannot read github.token_file: test-list editing disabled",
                  extra={"file": str(cfg.path(g.token_file)), "error": e.strerror})
        return ""


async def editor_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    token = await asyncio.to_thread(read_token, cfg)
    if not token:
        log.info("test-list editing not configured (no github token)")
        yield
        return
    session = aiohttp.ClientSession()
    github = GitHub(session, cfg.github.api_url, cfg.github.origin_repo, token,
                    cfg.github.timeout)
    editor = Editor(cfg, token, github)
    app[EDITOR] = editor
    task = asyncio.create_task(editor.warm_up())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    await session.close()


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(editor_ctx)
    r = app.router
    r.add_get("/api/_/url-submission/test-list/{country_code}", get_test_list)
    r.add_post("/api/v1/url-submission/update-url", update_url)
    r.add_post("/api/v1/url-submission/submit", submit)
