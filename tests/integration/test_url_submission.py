"""Test List Editor end to end: the real server (`oonibackend run`), real git against local bare
repositories standing in for citizenlab/test-lists (upstream) and ooni-bot/test-lists (fork),
and a loopback aiohttp stand-in for GitHub's three pull-request calls."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aiohttp import web

from oonibackend.accounts.tokens import session_token
from oonibackend.jobs.citizenlab.lists import CATEGORIES
from oonibackend.testlists.git import Git, GitError, basic_auth_header
from tests.conftest import FIXTURES, Backend, free_port

SECRET = "t" * 32
TOKEN = "test-token-not-a-secret"
ORIGIN, PUSH = "citizenlab/test-lists", "ooni-bot/test-lists"
HEADER = "url,category_code,category_description,date_added,source,notes\n"
IT_ROWS = [
    ("http://www.casinoit.it/", "GMB", "2017-04-12", "", ""),
    ("https://www.leggo.it/", "NEWS", "2017-04-12", "", ""),
    ("http://www.uaar.it/", "REL", "2017-04-12", "", "Unione degli Atei e degli Agnostici"),
    ("https://www.repubblica.it/", "NEWS", "2017-04-12", "citizenlab", ""),
    ("https://www.arcigay.it/", "LGBT", "2018-02-01", "OONI", 'Associazione "Arcigay", Bologna'),
    ("http://www.sisal.it/", "GMB", "2017-04-12", "", ""),
]
GIT_ENV = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, check=True,
                          capture_output=True, text=True, timeout=30).stdout


def csv_line(url, cc, date, source, notes) -> str:
    import csv
    import io
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([url, cc, CATEGORIES[cc], date, source, notes])
    return out.getvalue()


def entry(url, cc="NEWS", date="2024-05-01", source="", notes=""):
    return {"url": url, "category_code": cc, "date_added": date, "source": source,
            "notes": notes}


IT_ENTRIES = [entry(u, c, d, s, n) for u, c, d, s, n in IT_ROWS]


class GitHubStandIn:
    """POST /repos/<origin>/pulls, GET and PATCH /repos/<origin>/pulls/<n>; records requests."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[dict] = []
        self.prs: dict[int, str] = {}
        self.fail_create = False
        self.fail_close = False
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> GitHubStandIn:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/repos/{owner}/{repo}/pulls", self.create)
        app.router.add_route("*", "/repos/{owner}/{repo}/pulls/{n}", self.pr)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _record(self, request: web.Request) -> dict:
        body = await request.read()
        rec = {"method": request.method, "path": request.path,
               "auth": request.headers.get("Authorization"),
               "json": json.loads(body) if body else None}
        self.requests.append(rec)
        return rec

    def calls(self, method: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method]

    async def create(self, request: web.Request) -> web.Response:
        await self._record(request)
        if self.fail_create:
            return web.json_response({"message": "Server Error"}, status=500)
        n = len(self.prs) + 1
        self.prs[n] = "open"
        path = f"/repos/{request.match_info['owner']}/{request.match_info['repo']}/pulls/{n}"
        return web.json_response({"url": self.url + path, "number": n, "state": "open",
                                  "html_url": f"https://github.example/{ORIGIN}/pull/{n}"},
                                 status=201)

    async def pr(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        n = int(request.match_info["n"])
        if n not in self.prs:
            return web.json_response({"message": "Not Found"}, status=404)
        if request.method == "PATCH":
            if self.fail_close:
                return web.json_response({"message": "Server Error"}, status=500)
            self.prs[n] = rec["json"]["state"]
        return web.json_response({"url": self.url + request.path, "number": n,
                                  "state": self.prs[n]})


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> dict[str, Path]:
    """upstream.git and fork.git (bare), both at one commit of lists/global.csv and it.csv."""
    root = tmp_path_factory.mktemp("repos")
    work = root / "work"
    (work / "lists").mkdir(parents=True)
    rows = json.loads((FIXTURES / "citizenlab.json").read_text())[:400]
    global_csv = HEADER + "".join(
        csv_line(r["url"], r["category_code"], "2014-04-15", "citizenlab", "") for r in rows)
    (work / "lists" / "global.csv").write_text(global_csv)
    (work / "lists" / "it.csv").write_text(HEADER + "".join(csv_line(*r) for r in IT_ROWS))
    git(work, "init", "-q", "-b", "master")
    git(work, "add", "lists")
    git(work, "commit", "-q", "-m", "Initial lists")
    git(root, "clone", "-q", "--bare", str(work), "upstream.git")
    git(root, "clone", "-q", "--bare", str(work), "fork.git")
    return {"root": root, "upstream": root / "upstream.git", "fork": root / "fork.git",
            "global": rows}


@pytest.fixture(scope="module")
def gh():
    s = GitHubStandIn().start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def api(tmp_path_factory, repos, gh):
    b = Backend(tmp_path_factory.mktemp("tle"), {
        "fastpath": {"enabled": False}, "quotas": {"enabled": False},
        "probe": {"jwt_secret": SECRET},
        "github": {"api_url": gh.url, "token": TOKEN, "origin_url": str(repos["upstream"]),
                   "push_url": str(repos["fork"]), "timeout": 20.0, "pull_interval": 0.5},
    })
    b.start()
    yield b
    b.stop()


def new_account() -> str:
    return uuid.uuid4().hex


def call(api, method, path, body=None, account: str | None = None):
    headers = {"Content-Type": "application/json"}
    if account:
        now = int(time.time())
        headers["Authorization"] = "Bearer " + session_token(account, "user", now, SECRET,
                                                             now, 1, 1)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(api.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def read(api, account, cc="it"):
    status, body, headers = call(api, "GET", f"/api/_/url-submission/test-list/{cc}",
                                 account=account)
    assert status == 200, body
    assert headers["Cache-Control"] == "max-age=0, no-cache"
    return body


def update(api, account, old=None, new=None, cc="it", comment="a change"):
    return call(api, "POST", "/api/v1/url-submission/update-url",
                {"country_code": cc, "comment": comment, "old_entry": old or {},
                 "new_entry": new or {}}, account=account)[:2]


def ok_update(api, account, old=None, new=None, cc="it", comment="a change"):
    status, body = update(api, account, old, new, cc, comment)
    assert status == 200, body
    assert body == {"updated_entry": new or {}}


def submit(api, account):
    return call(api, "POST", "/api/v1/url-submission/submit", {}, account=account)[:2]


def user_dir(api, account) -> Path:
    return api.data_dir / "testlists" / "users" / account


# --- tests --------------------------------------------------------------------------------------

def test_login_required(api):
    for method, path in (("GET", "/api/_/url-submission/test-list/global"),
                         ("POST", "/api/v1/url-submission/update-url"),
                         ("POST", "/api/v1/url-submission/submit")):
        status, body, _ = call(api, method, path, {} if method == "POST" else None)
        assert status == 401 and body["error"] == "Authentication required"


def test_clean_state_reads_the_upstream_lists(api, repos):
    me = new_account()
    body = read(api, me, "it")
    assert body == {"test_list": IT_ENTRIES, "changes": {}, "state": "CLEAN", "pr_url": None}
    assert read(api, me, "IT") == body
    glob = read(api, me, "Global")["test_list"]
    assert len(glob) == 400
    assert glob[0] == entry(repos["global"][0]["url"], repos["global"][0]["category_code"],
                            "2014-04-15", "citizenlab")
    assert read(api, me, "xy")["test_list"] is None  # no such country list
    for bad in ("ita", "i", "x1", "x.", "%2E%2E"):
        status, body, _ = call(api, "GET", f"/api/_/url-submission/test-list/{bad}",
                               account=me)
        assert status == 400 and body["err_str"] == "err_invalid_country_code", bad


def test_refused_edits(api):
    me = new_account()
    leggo = IT_ENTRIES[1]
    cases = [
        ({"new": entry("https://www.corriere.it")}, "err_bad_url"),
        ({"new": entry("ftp://www.corriere.it/")}, "err_bad_url"),
        ({"new": entry("https://www.corriere.it/", cc="NOPE")}, "err_bad_category_code"),
        ({"new": entry("https://www.corriere.it/", date="01/05/2024")}, "err_bad_date"),
        ({"new": {**entry("https://www.corriere.it/"), "user": "x"}}, "err_request_params"),
        ({"new": entry("https://www.corriere.it/"), "cc": "ita"}, "err_invalid_country_code"),
        ({"new": entry("https://www.corriere.it/"), "cc": "xy"}, "err_country_not_supported"),
        ({}, "err_no_proposed_changes"),
        ({"old": leggo, "new": leggo}, "err_no_proposed_changes"),
        ({"old": {**leggo, "notes": "stale"}, "new": {**leggo, "notes": "new"}},
         "err_cannot_update_list"),
        ({"new": entry("https://www.leggo.it/")}, "err_duplicate_url"),  # in it.csv
        ({"new": entry("https://www.reddit.com/")}, "err_duplicate_url"),  # in global.csv
    ]
    for case, code in cases:
        status, body = update(api, me, case.get("old"), case.get("new"), case.get("cc", "it"))
        assert status == 400 and body["err_str"] == code, (case, body)
        assert isinstance(body["error"], str) and body["error"]
    status, body = update(api, me, None, entry("https://www.reddit.com/"))
    assert body["err_args"] == {"url": "https://www.reddit.com/"}
    status, body, _ = call(api, "POST", "/api/v1/url-submission/update-url", ["x"], account=me)
    assert status == 400 and body["err_str"] == "err_request_params"
    # Nothing happened: still CLEAN, no worktree.
    assert read(api, me)["state"] == "CLEAN"
    assert not (user_dir(api, me) / "test-lists").exists()
    assert submit(api, me) == (400, {"error": "No proposed changes",
                                     "err_str": "err_no_proposed_changes"})


def test_edit_submit_reopen_and_merge(api, repos, gh):
    me = new_account()
    branch = f"user-contribution/{me}"
    corriere = entry("https://www.corriere.it/", notes="Quotidiano, Milano", source="OONI")
    leggo, uaar, sisal = IT_ENTRIES[1], IT_ENTRIES[2], IT_ENTRIES[5]
    leggo2 = {**leggo, "notes": "Free daily"}

    ok_update(api, me, None, corriere, comment="Add Corriere")
    body = read(api, me)
    assert body["state"] == "IN_PROGRESS" and body["pr_url"] is None
    assert body["test_list"] == IT_ENTRIES + [corriere]
    assert body["changes"] == {"it": [{**corriere, "action": "add"}]}
    ok_update(api, me, leggo, leggo2, comment="Describe Leggo")
    ok_update(api, me, uaar, None, comment="Remove UAAR")
    body = read(api, me)
    assert body["changes"] == {"it": [{**corriere, "action": "add"},
                                      {**leggo, "action": "delete"},
                                      {**leggo2, "action": "add"},
                                      {**uaar, "action": "delete"}]}
    want = [IT_ENTRIES[0], leggo2, *IT_ENTRIES[3:], corriere]
    assert body["test_list"] == want
    # The user's file: only the edited rows changed, new rows in CitizenLab's format.
    text = (user_dir(api, me) / "test-lists" / "lists" / "it.csv").read_text()
    assert text == HEADER + "".join(csv_line(*r) for r in [
        IT_ROWS[0], (*IT_ROWS[1][:4], "Free daily"), *IT_ROWS[3:]]) + \
        'https://www.corriere.it/,NEWS,News Media,2024-05-01,OONI,"Quotidiano, Milano"\n'
    # Other users still see the upstream list.
    assert read(api, new_account())["test_list"] == IT_ENTRIES

    status, body = submit(api, me)
    assert status == 200
    pr1 = f"{gh.url}/repos/{ORIGIN}/pulls/1"
    assert body == {"pr_id": pr1}
    created = gh.calls("POST")[-1]
    assert created["path"] == f"/repos/{ORIGIN}/pulls"
    assert created["auth"] == f"Bearer {TOKEN}"
    assert created["json"]["head"] == f"ooni-bot:{branch}"
    assert created["json"]["base"] == "master"
    assert created["json"]["title"] == "Contribution from test-lists.ooni.org"
    assert "https://www.corriere.it/" in created["json"]["body"]
    # The fork got the branch with the three commits.
    log = git(repos["fork"], "log", "--format=%s", f"master..{branch}").split("\n")[:-1]
    assert log == ["Remove UAAR", "Describe Leggo", "Add Corriere"]
    assert git(repos["fork"], "show", f"{branch}:lists/it.csv") == text
    body = read(api, me)
    assert body["state"] == "PR_OPEN"
    assert body["pr_url"] == f"https://github.example/{ORIGIN}/pull/1"
    assert gh.calls("GET")[-1]["path"] == f"/repos/{ORIGIN}/pulls/1"  # state was checked
    # Submitting again answers the same PR without opening another.
    n_created = len(gh.calls("POST"))
    assert submit(api, me) == (200, {"pr_id": pr1})
    assert len(gh.calls("POST")) == n_created

    # A refused edit does not touch the open PR.
    n_patch = len(gh.calls("PATCH"))
    status, body = update(api, me, None, entry("https://www.reddit.com/"))
    assert status == 400 and body["err_str"] == "err_duplicate_url"
    assert len(gh.calls("PATCH")) == n_patch and read(api, me)["state"] == "PR_OPEN"
    # GitHub failing to close the PR: the edit is refused, the PR stays.
    gh.fail_close = True
    status, body = update(api, me, sisal, None)
    gh.fail_close = False
    assert status == 502 and body["err_str"] == "err_cannot_close_pr"
    assert read(api, me)["state"] == "PR_OPEN" and gh.prs[1] == "open"
    # An edit while the PR is open closes it: back to IN_PROGRESS.
    ok_update(api, me, sisal, None, comment="Remove Sisal")
    patch = gh.calls("PATCH")[-1]
    assert patch["path"] == f"/repos/{ORIGIN}/pulls/1" and patch["json"] == {"state": "closed"}
    assert patch["auth"] == f"Bearer {TOKEN}"
    body = read(api, me)
    assert body["state"] == "IN_PROGRESS" and body["pr_url"] is None
    assert {**sisal, "action": "delete"} in body["changes"]["it"]
    status, body = submit(api, me)
    assert (status, body) == (200, {"pr_id": f"{gh.url}/repos/{ORIGIN}/pulls/2"})
    assert read(api, me)["state"] == "PR_OPEN"

    # Upstream merges the PR: next read is CLEAN, and the list shows the merged change.
    git(repos["root"], "--git-dir", str(repos["fork"]), "push", "-q",
        str(repos["upstream"]), f"{branch}:master")
    gh.prs[2] = "closed"
    body = read(api, me)
    assert body["state"] == "CLEAN" and body["changes"] == {} and body["pr_url"] is None
    assert body["test_list"] == [IT_ENTRIES[0], leggo2, IT_ENTRIES[3], IT_ENTRIES[4], corriere]
    assert not (user_dir(api, me) / "test-lists").exists()
    clone = api.data_dir / "testlists" / "test-lists"
    assert git(clone, "branch", "--list", branch) == ""
    # Editing again starts a fresh branch from the new upstream.
    ok_update(api, me, None, entry("https://www.ilfattoquotidiano.it/"))
    log = git(clone, "log", "--format=%s", f"master..{branch}").split("\n")[:-1]
    assert log == ["a change"]


def upstream_list(api) -> list[dict]:
    """The it list as a fresh user sees it (earlier tests merge changes upstream)."""
    return read(api, new_account())["test_list"]


def test_undoing_every_change_returns_to_clean(api):
    me = new_account()
    baseline = upstream_list(api)
    new = entry("https://www.ansa.it/")
    ok_update(api, me, None, new)
    assert read(api, me)["state"] == "IN_PROGRESS"
    ok_update(api, me, new, None)
    assert read(api, me) == {"test_list": baseline, "changes": {}, "state": "CLEAN",
                             "pr_url": None}


def test_two_users_editing_at_once(api):
    alice, bob = new_account(), new_account()
    baseline = upstream_list(api)
    mine = {alice: [entry(f"https://alice{i}.example.org/") for i in range(4)],
            bob: [entry(f"https://bob{i}.example.org/", cc="HUMR") for i in range(4)]}
    jobs = [(who, e) for i in range(4) for who in (alice, bob) for e in [mine[who][i]]]
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda j: update(api, j[0], None, j[1]), jobs))
    assert all(status == 200 for status, _ in results), results
    for who, others in ((alice, bob), (bob, alice)):
        body = read(api, who)
        assert body["state"] == "IN_PROGRESS"
        assert sorted(c["url"] for c in body["changes"]["it"]) == \
            sorted(e["url"] for e in mine[who])
        urls = {e["url"] for e in body["test_list"]}
        assert {e["url"] for e in mine[who]} <= urls
        assert not urls & {e["url"] for e in mine[others]}
        assert body["test_list"] == baseline + mine[who] or \
            len(body["test_list"]) == len(baseline) + 4


def test_one_users_concurrent_edits_are_serialised(api):
    me = new_account()
    baseline = upstream_list(api)
    news = [entry(f"https://n{i}.example.org/") for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda e: update(api, me, None, e, comment=e["url"]), news))
    assert all(status == 200 for status, _ in results), results
    body = read(api, me)
    assert sorted(c["url"] for c in body["changes"]["it"]) == sorted(e["url"] for e in news)
    assert body["test_list"][:len(baseline)] == baseline
    assert sorted(e["url"] for e in body["test_list"][len(baseline):]) == \
        sorted(e["url"] for e in news)
    clone = api.data_dir / "testlists" / "test-lists"
    assert git(clone, "rev-list", "--count", f"master..user-contribution/{me}").strip() == "6"
    # The same URL sent four times at once is added once.
    same = entry("https://same.example.org/")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: update(api, me, None, same), range(4)))
    assert sorted(s for s, _ in results) == [200, 400, 400, 400]
    assert {b["err_str"] for s, b in results if s == 400} == {"err_duplicate_url"}


def test_github_failure_on_create_leaves_the_state_unchanged(api, gh):
    me = new_account()
    ok_update(api, me, None, entry("https://www.ilpost.it/"))
    before = read(api, me)
    gh.fail_create = True
    try:
        status, body = submit(api, me)
    finally:
        gh.fail_create = False
    assert status == 502 and body["err_str"] == "err_cannot_create_pr"
    assert "500" in body["error"]
    assert read(api, me) == before
    status, body = submit(api, me)
    assert status == 200 and read(api, me)["state"] == "PR_OPEN"


def test_credentials_are_not_written_to_disk(api):
    workdir = api.data_dir / "testlists"
    for path in workdir.rglob("*"):
        if path.is_file() and path.stat().st_size < 1 << 20:
            assert TOKEN.encode() not in path.read_bytes(), path


def test_push_credentials_go_in_a_header_only(repos):
    """Pushing over HTTP(S): the token travels as an Authorization header given to git
    through its environment (not argv, not a config file), and never appears in errors."""
    seen: list[tuple[str, str | None]] = []

    async def anything(request: web.Request) -> web.Response:
        seen.append((request.path, request.headers.get("Authorization")))
        return web.Response(status=403, text="no")

    async def main() -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", anything)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            g = Git(10.0, "ooni-bot", "ooni-bot@users.noreply.github.com")
            with pytest.raises(GitError) as e:
                await g.push(repos["root"] / "work", f"http://127.0.0.1:{port}/ooni-bot/t.git",
                             "user-contribution/x", basic_auth_header("ooni-bot", TOKEN))
            return str(e.value)
        finally:
            await runner.cleanup()

    error = asyncio.run(main())
    assert TOKEN not in error
    want = "Basic " + base64.b64encode(f"ooni-bot:{TOKEN}".encode()).decode()
    assert seen and seen[0][0] == "/ooni-bot/t.git/info/refs"
    assert all(auth == want for _, auth in seen)


def test_not_configured_answers_503(tmp_path):
    """No GitHub token: the routes answer 503 (after the login check), the API runs."""
    b = Backend(tmp_path / "data", {"fastpath": {"enabled": False},
                                    "quotas": {"enabled": False},
                                    "probe": {"jwt_secret": SECRET}}, command="serve")
    b.start()
    try:
        me = new_account()
        for method, path in (("GET", "/api/_/url-submission/test-list/it"),
                             ("POST", "/api/v1/url-submission/update-url"),
                             ("POST", "/api/v1/url-submission/submit")):
            body = {} if method == "POST" else None
            assert call(b, method, path, body)[0] == 401
            status, got, _ = call(b, method, path, body, account=me)
            assert (status, got) == (503, {"error": "test-list editing is not configured"})
    finally:
        b.stop()


def test_two_editors_on_one_workdir_serialise_by_file_locks(tmp_path, repos, gh):
    """Two Editor instances (as in two API processes: separate asyncio locks) editing one
    user's list at once: the file locks serialise them, no edit is lost."""
    import aiohttp

    from oonibackend import config
    from oonibackend.testlists.github import GitHub
    from oonibackend.testlists.workflow import Editor

    cfg = config.load(None, data_dir=str(tmp_path), **{
        "github.api_url": gh.url, "github.token": TOKEN,
        "github.origin_url": str(repos["upstream"]), "github.push_url": str(repos["fork"])})
    me = new_account()

    async def main():
        async with aiohttp.ClientSession() as session:
            eds = [Editor(cfg, TOKEN, GitHub(session, gh.url, ORIGIN, TOKEN, 10.0))
                   for _ in range(2)]
            news = [entry(f"https://p{i}.example.org/") for i in range(6)]
            await asyncio.gather(*(eds[i % 2].update(me, "it", None, e, "c")
                                   for i, e in enumerate(news)))
            return news, await eds[0].get_list(me, "it"), await eds[1].get_list(me, "it")

    news, a, b = asyncio.run(main())
    assert a == b and a["state"] == "IN_PROGRESS"
    assert sorted(c["url"] for c in a["changes"]["it"]) == sorted(e["url"] for e in news)
    clone = tmp_path / "testlists" / "test-lists"
    assert git(clone, "rev-list", "--count", f"master..user-contribution/{me}").strip() == "6"
