"""A small Hugging Face Hub-compatible HTTP server for tests (standard library only).

It implements the endpoints huggingface_hub (2.x, classic LFS, i.e. with
``HF_HUB_DISABLE_XET=1``) calls when creating repos, committing, listing and
downloading, so the real client can talk to it through ``HF_ENDPOINT``:

API origin (``server.url``)
    ``POST /api/repos/create``, ``POST /api/validate-yaml``, ``GET /api/whoami-v2``,
    ``GET /api/models/{repo}[/revision/{rev}]`` (repo info),
    ``GET /api/models/{repo}/tree/{rev}[/{path}]``, ``POST /api/models/{repo}/paths-info/{rev}``,
    ``GET /api/models/{repo}/refs``, ``POST /api/models/{repo}/tag/{rev}``,
    ``POST /api/models/{repo}/branch/{branch}``, ``POST /api/models/{repo}/preupload/{rev}``,
    ``POST /api/models/{repo}/commit/{rev}`` (NDJSON), ``PUT /api/models/{repo}/settings`` (gating),
    ``POST /{repo}.git/info/lfs/objects/batch`` and ``.../verify`` (LFS, basic transfer),
    ``HEAD|GET /{repo}/resolve/{rev}/{path}`` (LFS files redirect to the storage origin).

Storage origin (``server.storage_url``, another port, like S3/CDN)
    ``PUT /upload/{oid}`` (LFS basic upload), ``GET /lfs/{oid}`` (download).

Test switches: ``token`` (the only accepted bearer token), ``fail`` (inject
failures: ``{"lfs_upload": (after_n_ok, status), "commit": (0, status), "resolve": (0, status)}``),
``corrupt_after_commit`` (path whose content the server silently alters right
after the next commit, to exercise post-upload validation), ``storage_saw_auth``
(set when an Authorization header reaches the storage origin).

Every loop is bounded (body sizes, redirects, chunk counts); threads are daemons.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

MAX_BODY = 64 * 1024 * 1024  # refuse bodies above 64 MiB (tests use tiny files)
MAX_CHUNKS = 100_000
LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub stores files above 10 MB in LFS
GITATTRIBUTES = (
    "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    "*.bin filter=lfs diff=lfs merge=lfs -text\n"
    "*.gguf filter=lfs diff=lfs merge=lfs -text\n"
    "*.model filter=lfs diff=lfs merge=lfs -text\n"
    "*.pt filter=lfs diff=lfs merge=lfs -text\n"
).encode()


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as ``oid`` for regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class Entry:
    """One file in a commit: inline content (regular) or an LFS object id."""

    size: int
    content: bytes | None = None  # regular file
    lfs_oid: str | None = None  # sha256 of an LFS object

    @property
    def blob_id(self) -> str:
        if self.lfs_oid is not None:
            return git_blob_sha1(lfs_pointer(self.lfs_oid, self.size))
        assert self.content is not None
        return git_blob_sha1(self.content)

    def tree_json(self, path: str) -> dict[str, Any]:
        d: dict[str, Any] = {"type": "file", "path": path, "size": self.size, "oid": self.blob_id}
        if self.lfs_oid is not None:
            d["lfs"] = {"oid": self.lfs_oid, "size": self.size, "pointerSize": len(lfs_pointer(self.lfs_oid, self.size))}
        return d


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, Entry]


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    prs: dict[int, str] = field(default_factory=dict)
    gated: bool | str = False


class HttpError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


class HubState:
    """Everything the server knows, guarded by one lock."""

    def __init__(self, token: str):
        self.token = token
        self.lock = threading.RLock()
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}  # sha256 -> content (verified on upload)
        self.fail: dict[str, tuple[int, int]] = {}
        self.counters: dict[str, int] = {}
        self.corrupt_after_commit: str | None = None
        self.storage_saw_auth = False
        self.requests: list[tuple[str, str]] = []
        self._seq = itertools.count(1)

    # -- helpers used by handlers and tests ----------------------------------------------------

    def new_oid(self, *parts: str) -> str:
        return hashlib.sha1("\0".join((*parts, str(next(self._seq)))).encode()).hexdigest()

    def repo(self, repo_id: str) -> Repo:
        r = self.repos.get(repo_id)
        if r is None:
            raise HttpError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return r

    def resolve(self, repo: Repo, rev: str) -> Commit:
        """Branch, tag, ``refs/pr/N`` or commit id -> the commit."""
        oid = repo.branches.get(rev) or repo.tags.get(rev)
        m = re.fullmatch(r"refs/pr/(\d+)", rev)
        if m:
            oid = repo.prs.get(int(m.group(1)))
        if oid is None and rev in repo.commits:
            oid = rev
        if oid is None:
            raise HttpError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return repo.commits[oid]

    def head(self, repo_id: str, rev: str = "main") -> str:
        with self.lock:
            return self.resolve(self.repo(repo_id), rev).oid

    def file_bytes(self, repo_id: str, path: str, rev: str = "main") -> bytes:
        with self.lock:
            e = self.resolve(self.repo(repo_id), rev).files[path]
            return e.content if e.content is not None else self.lfs[e.lfs_oid]  # type: ignore[index]

    def should_fail(self, kind: str) -> int | None:
        """Status to inject for this request kind, or None (``fail[kind] = (ok_before, status)``)."""
        with self.lock:
            if kind not in self.fail:
                return None
            n = self.counters.get(kind, 0)
            self.counters[kind] = n + 1
            ok_before, status = self.fail[kind]
            return status if n >= ok_before else None


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """Content-Length or chunked request body, bounded."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        out = bytearray()
        for _ in range(MAX_CHUNKS):
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                handler.rfile.readline()
                return bytes(out)
            out += handler.rfile.read(size)
            handler.rfile.readline()
            if len(out) > MAX_BODY:
                raise HttpError(413, "body too large")
        raise HttpError(400, "too many chunks")
    n = int(handler.headers.get("Content-Length") or 0)
    if n > MAX_BODY:
        raise HttpError(413, "body too large")
    return handler.rfile.read(n) if n else b""


class _Base(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState  # set on the subclass per server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr logging
        pass

    def send(self, status: int, body: bytes = b"", ctype: str = "application/json", headers: dict[str, str] | None = None, head_only: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body and not head_only:
            self.wfile.write(body)

    def send_json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.send(status, json.dumps(obj).encode(), headers=headers)

    def send_error_json(self, e: HttpError) -> None:
        headers = {"X-Error-Message": e.message}
        if e.code:
            headers["X-Error-Code"] = e.code
        self.send(e.status, json.dumps({"error": e.message, **e.extra}).encode(), headers=headers, head_only=self.command == "HEAD")

    def dispatch(self) -> None:
        try:
            with self.state.lock:
                self.state.requests.append((self.command, self.path))
            self.route()
        except HttpError as e:
            self.send_error_json(e)
        except (ConnectionError, BrokenPipeError):
            pass

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = lambda self: self.dispatch()  # noqa: E731

    def route(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class StorageHandler(_Base):
    """The storage origin: LFS uploads and downloads, never authenticated."""

    def route(self) -> None:
        if self.headers.get("Authorization"):
            self.state.storage_saw_auth = True
        parts = urlsplit(self.path).path.strip("/").split("/")
        if self.command == "PUT" and len(parts) == 2 and parts[0] == "upload":
            body = _read_body(self)
            status = self.state.should_fail("lfs_upload")
            if status is not None:
                raise HttpError(status, "injected storage failure")
            if hashlib.sha256(body).hexdigest() != parts[1]:
                raise HttpError(400, "content does not match the announced sha256")
            with self.state.lock:
                self.state.lfs[parts[1]] = body
            self.send(200, b"")
            return
        if self.command in ("GET", "HEAD") and len(parts) == 2 and parts[0] == "lfs":
            with self.state.lock:
                data = self.state.lfs.get(parts[1])
            if data is None:
                raise HttpError(404, "no such object")
            self.send(200, data, ctype="application/octet-stream", head_only=self.command == "HEAD")
            return
        raise HttpError(404, "not found")


class ApiHandler(_Base):
    """The Hub API origin."""

    storage_url: str
    api_url: str

    # -- auth -----------------------------------------------------------------------------------

    def auth(self, required: bool) -> bool:
        """True when a valid token was sent; 401 for a wrong token, or for none when required."""
        h = self.headers.get("Authorization")
        if h is None:
            if required:
                raise HttpError(401, "Authorization header is required for this endpoint")
            return False
        if h != f"Bearer {self.state.token}":
            raise HttpError(401, "Invalid credentials in Authorization header")
        return True

    def readable_repo(self, repo_id: str) -> Repo:
        authed = self.auth(required=False)
        repo = self.state.repo(repo_id)
        if repo.private and not authed:
            raise HttpError(401, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    # -- routing --------------------------------------------------------------------------------

    def route(self) -> None:
        url = urlsplit(self.path)
        raw = url.path.strip("/").split("/")  # segments still quoted: revisions may contain %2F
        seg = [unquote(s) for s in raw]
        q = parse_qs(url.query)
        m, n = self.command, len(seg)
        with self.state.lock:
            if seg[:1] == ["api"]:
                return self.route_api(m, seg[1:], q)
            if n >= 3 and seg[1].endswith(".git") and seg[2:5] == ["info", "lfs", "objects"]:
                return self.lfs_api(f"{seg[0]}/{seg[1][:-4]}", seg[5] if n > 5 else "")
            if n >= 5 and seg[2] == "resolve":
                return self.resolve_file(f"{seg[0]}/{seg[1]}", seg[3], "/".join(seg[4:]))
        raise HttpError(404, "not found")

    def route_api(self, m: str, seg: list[str], q: dict[str, list[str]]) -> None:
        if m == "POST" and seg == ["repos", "create"]:
            return self.create_repo()
        if m == "POST" and seg == ["validate-yaml"]:
            _read_body(self)
            return self.send_json({"errors": [], "warnings": []})
        if m == "GET" and seg == ["whoami-v2"]:
            self.auth(required=True)
            return self.send_json({"type": "user", "name": "tester", "auth": {"type": "access_token"}})
        if len(seg) < 3 or seg[0] != "models":
            raise HttpError(404, "not found")
        repo_id, rest = f"{seg[1]}/{seg[2]}", seg[3:]
        if m == "GET" and not rest:
            return self.repo_info(repo_id, "main", q)
        if m == "GET" and len(rest) == 2 and rest[0] == "revision":
            return self.repo_info(repo_id, rest[1], q)
        if m == "GET" and len(rest) >= 2 and rest[0] == "tree":
            return self.tree(repo_id, rest[1], "/".join(rest[2:]), q)
        if m == "POST" and len(rest) == 2 and rest[0] == "paths-info":
            return self.paths_info(repo_id, rest[1])
        if m == "GET" and rest == ["refs"]:
            return self.refs(repo_id, q)
        if m == "POST" and len(rest) == 2 and rest[0] == "tag":
            return self.tag(repo_id, rest[1])
        if m == "POST" and len(rest) == 2 and rest[0] == "branch":
            return self.branch(repo_id, rest[1])
        if m == "POST" and len(rest) == 2 and rest[0] == "preupload":
            return self.preupload(repo_id, rest[1])
        if m == "POST" and len(rest) == 2 and rest[0] == "commit":
            return self.commit(repo_id, rest[1], q)
        if m == "PUT" and rest == ["settings"]:
            return self.settings(repo_id)
        raise HttpError(404, "not found")

    # -- repos ----------------------------------------------------------------------------------

    def create_repo(self) -> None:
        self.auth(required=True)
        body = json.loads(_read_body(self) or b"{}")
        if body.get("type", "model") != "model":
            raise HttpError(400, "this test server only hosts model repos")
        ns, name = body.get("organization") or "tester", body.get("name") or ""
        if not re.fullmatch(r"[\w.-]{1,96}", name):
            raise HttpError(400, "invalid repo name")
        repo_id = f"{ns}/{name}"
        if repo_id in self.state.repos:
            raise HttpError(409, "You already created this model repo", extra={"url": f"{self.api_url}/{repo_id}"})
        repo = Repo(repo_id, bool(body.get("private")) or body.get("visibility") == "private")
        first = Commit(self.state.new_oid(repo_id, "initial"), None, "initial commit", {".gitattributes": Entry(len(GITATTRIBUTES), content=GITATTRIBUTES)})
        repo.commits[first.oid] = first
        repo.branches["main"] = first.oid
        self.state.repos[repo_id] = repo
        self.send_json({"url": f"{self.api_url}/{repo_id}", "name": repo_id, "id": repo_id})

    def repo_info(self, repo_id: str, rev: str, q: dict[str, list[str]]) -> None:
        repo = self.readable_repo(repo_id)
        c = self.state.resolve(repo, rev)
        blobs = q.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for p, e in sorted(c.files.items()):
            s: dict[str, Any] = {"rfilename": p}
            if blobs:
                t = e.tree_json(p)
                s.update(size=e.size, blobId=t["oid"])
                if "lfs" in t:  # siblings spell the LFS fields differently from the tree listing
                    s["lfs"] = {"sha256": t["lfs"]["oid"], "size": e.size, "pointerSize": t["lfs"]["pointerSize"]}
            siblings.append(s)
        self.send_json({"id": repo_id, "modelId": repo_id, "sha": c.oid, "private": repo.private, "gated": repo.gated,
                        "disabled": False, "tags": [], "siblings": siblings, "lastModified": "2024-01-01T00:00:00.000Z"})

    def tree(self, repo_id: str, rev: str, prefix: str, q: dict[str, list[str]]) -> None:
        repo = self.readable_repo(repo_id)
        c = self.state.resolve(repo, rev)
        recursive = q.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = prefix.strip("/")
        base = prefix + "/" if prefix else ""
        if prefix and not any(p.startswith(base) for p in c.files):
            raise HttpError(404, f"{prefix} does not exist", "EntryNotFound")
        items: dict[str, dict[str, Any]] = {}
        for p, e in sorted(c.files.items()):
            if not p.startswith(base):
                continue
            rel = p[len(base):]
            if "/" in rel and not recursive:
                d = base + rel.split("/")[0]
                items[d] = {"type": "directory", "path": d, "oid": git_blob_sha1(d.encode())}
                continue
            if recursive:
                parts = rel.split("/")
                for i in range(1, len(parts)):
                    d = base + "/".join(parts[:i])
                    items[d] = {"type": "directory", "path": d, "oid": git_blob_sha1(d.encode())}
            items[p] = e.tree_json(p)
        self.send_json(list(items.values()))

    def paths_info(self, repo_id: str, rev: str) -> None:
        repo = self.readable_repo(repo_id)
        c = self.state.resolve(repo, rev)
        form = parse_qs(_read_body(self).decode())
        out = [c.files[p].tree_json(p) for p in form.get("paths", []) if p in c.files]
        self.send_json(out)

    def refs(self, repo_id: str, q: dict[str, list[str]]) -> None:
        repo = self.readable_repo(repo_id)

        def ref(name: str, full: str, oid: str) -> dict[str, str]:
            return {"name": name, "ref": full, "targetCommit": oid}

        data: dict[str, Any] = {
            "branches": [ref(b, f"refs/heads/{b}", o) for b, o in repo.branches.items()],
            "converts": [],
            "tags": [ref(t, f"refs/tags/{t}", o) for t, o in repo.tags.items()],
        }
        if q.get("include_prs"):
            data["pullRequests"] = [ref(f"refs/pr/{n}", f"refs/pr/{n}", o) for n, o in repo.prs.items()]
        self.send_json(data)

    def tag(self, repo_id: str, rev: str) -> None:
        self.auth(required=True)
        repo = self.state.repo(repo_id)
        body = json.loads(_read_body(self) or b"{}")
        c = self.state.resolve(repo, rev)
        tag = body.get("tag", "")
        if tag in repo.tags:
            raise HttpError(409, f"Tag {tag} already exists")
        repo.tags[tag] = c.oid
        self.send_json({})

    def settings(self, repo_id: str) -> None:
        self.auth(required=True)
        repo = self.state.repo(repo_id)
        body = json.loads(_read_body(self) or b"{}")
        if "gated" in body:
            if body["gated"] not in ("auto", "manual", False):
                raise HttpError(400, "gated must be auto, manual or false")
            repo.gated = body["gated"]
        if "visibility" in body:
            repo.private = body["visibility"] == "private"
        self.send_json({})

    def branch(self, repo_id: str, name: str) -> None:
        self.auth(required=True)
        repo = self.state.repo(repo_id)
        body = json.loads(_read_body(self) or b"{}")
        if name in repo.branches:
            raise HttpError(409, f"Branch {name} already exists")
        repo.branches[name] = self.state.resolve(repo, body.get("startingPoint") or "main").oid
        self.send_json({})

    # -- uploads --------------------------------------------------------------------------------

    def preupload(self, repo_id: str, rev: str) -> None:
        self.auth(required=True)
        repo = self.state.repo(repo_id)
        body = json.loads(_read_body(self))
        try:
            c: Commit | None = self.state.resolve(repo, rev)
        except HttpError:
            c = None
        attrs = c.files.get(".gitattributes") if c else None
        patterns = [ln.split()[0] for ln in (attrs.content or b"").decode().splitlines() if "filter=lfs" in ln] if attrs else []
        files = []
        for f in body.get("files", []):
            path, size = f["path"], int(f["size"])
            sample = base64.b64decode(f.get("sample", ""))
            lfs = size > LFS_THRESHOLD or b"\0" in sample or any(fnmatch(path.split("/")[-1], p) for p in patterns)
            remote = c.files.get(path) if c else None
            oid = None
            if remote is not None:
                oid = remote.lfs_oid if remote.lfs_oid is not None else remote.blob_id
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self.send_json({"files": files, "commitOid": c.oid if c else None})

    def lfs_api(self, repo_id: str, action: str) -> None:
        self.auth(required=True)
        self.state.repo(repo_id)
        body = json.loads(_read_body(self))
        if action == "batch":
            objects = []
            for o in body.get("objects", []):
                obj: dict[str, Any] = {"oid": o["oid"], "size": int(o["size"]), "authenticated": True}
                if o["oid"] not in self.state.lfs:
                    obj["actions"] = {
                        "upload": {"href": f"{self.storage_url}/upload/{o['oid']}"},
                        "verify": {"href": f"{self.api_url}/{repo_id}.git/info/lfs/objects/verify"},
                    }
                objects.append(obj)
            return self.send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(), ctype="application/vnd.git-lfs+json")
        if action == "verify":
            data = self.state.lfs.get(body.get("oid", ""))
            if data is None or len(data) != int(body.get("size", -1)):
                raise HttpError(404, "object not uploaded")
            return self.send_json({})
        raise HttpError(404, "not found")

    def commit(self, repo_id: str, rev: str, q: dict[str, list[str]]) -> None:
        self.auth(required=True)
        repo = self.state.repo(repo_id)
        lines = [json.loads(ln) for ln in _read_body(self).splitlines() if ln.strip()]
        status = self.state.should_fail("commit")
        if status is not None:
            raise HttpError(status, "injected commit failure")
        parent = self.state.resolve(repo, rev)
        header = next((ln["value"] for ln in lines if ln.get("key") == "header"), {})
        if header.get("parentCommit") and header["parentCommit"] != parent.oid:
            raise HttpError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(parent.files)
        for ln in lines:
            key, v = ln.get("key"), ln.get("value", {})
            if key == "file":
                data = base64.b64decode(v["content"])
                files[v["path"]] = Entry(len(data), content=data)
            elif key == "lfsFile":
                if v["oid"] not in self.state.lfs:
                    raise HttpError(422, f"LFS object {v['oid']} for {v['path']} was never uploaded")
                files[v["path"]] = Entry(len(self.state.lfs[v["oid"]]), lfs_oid=v["oid"])
            elif key == "deletedFile":
                files.pop(v["path"], None)
            elif key == "deletedFolder":
                files = {p: e for p, e in files.items() if not p.startswith(v["path"].rstrip("/") + "/")}
        new = Commit(self.state.new_oid(repo_id, parent.oid, header.get("summary", "")), parent.oid, header.get("summary", ""), files)
        self.corrupt(new)
        repo.commits[new.oid] = new
        pr_url = None
        if q.get("create_pr"):
            num = max(repo.prs, default=0) + 1
            repo.prs[num] = new.oid
            pr_url = f"{self.api_url}/{repo_id}/discussions/{num}"
        else:
            branch = rev if rev in repo.branches else None
            if branch is None:
                raise HttpError(400, f"cannot commit to {rev}: not a branch")
            repo.branches[branch] = new.oid
        self.send_json({"commitUrl": f"{self.api_url}/{repo_id}/commit/{new.oid}", "commitOid": new.oid, "pullRequestUrl": pr_url, "success": True})

    def corrupt(self, c: Commit) -> None:
        """Test switch: silently alter one file of the new commit (post-upload validation must notice)."""
        path, self.state.corrupt_after_commit = self.state.corrupt_after_commit, None
        if path and path in c.files:
            data = b"tampered by the test server\n"
            c.files[path] = Entry(len(data), content=data)

    # -- downloads ------------------------------------------------------------------------------

    def resolve_file(self, repo_id: str, rev: str, path: str) -> None:
        repo = self.readable_repo(repo_id)
        status = self.state.should_fail("resolve")
        if status is not None:
            raise HttpError(status, "injected download failure")
        c = self.state.resolve(repo, rev)
        e = c.files.get(path)
        if e is None:
            raise HttpError(404, f"Entry not found: {path}", "EntryNotFound")
        head = self.command == "HEAD"
        base = {"X-Repo-Commit": c.oid, "Accept-Ranges": "bytes"}
        if e.lfs_oid is not None:
            loc = f"{self.storage_url}/lfs/{e.lfs_oid}"
            hdrs = {**base, "Location": loc, "ETag": f'"{e.blob_id}"', "X-Linked-Etag": f'"{e.lfs_oid}"', "X-Linked-Size": str(e.size)}
            return self.send(302, b"", headers=hdrs, head_only=head)
        assert e.content is not None
        self.send(200, e.content, ctype="application/octet-stream", headers={**base, "ETag": f'"{e.blob_id}"'}, head_only=head)


class HubServer:
    """Both origins on 127.0.0.1, each served by a daemon thread."""

    def __init__(self, token: str = "hf_test_token"):
        self.state = HubState(token)
        storage_cls = type("Storage", (StorageHandler,), {"state": self.state})
        self._storage = ThreadingHTTPServer(("127.0.0.1", 0), storage_cls)
        self.storage_url = f"http://127.0.0.1:{self._storage.server_address[1]}"
        api_cls = type("Api", (ApiHandler,), {"state": self.state, "storage_url": self.storage_url})
        self._api = ThreadingHTTPServer(("127.0.0.1", 0), api_cls)
        self.url = f"http://127.0.0.1:{self._api.server_address[1]}"
        api_cls.api_url = self.url
        self._threads: list[threading.Thread] = []
        for srv in (self._storage, self._api):
            srv.daemon_threads = True

    def start(self) -> "HubServer":
        for srv in (self._storage, self._api):
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        for srv in (self._api, self._storage):
            srv.shutdown()
            srv.server_close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def repo_url(self, repo_id: str) -> str:
        return f"{self.url}/{quote(repo_id)}"


if __name__ == "__main__":  # manual use: python tests/hubserver.py
    import time

    with HubServer() as s:
        print(f"api {s.url} storage {s.storage_url} token {s.state.token}", flush=True)
        for _ in range(3600):
            time.sleep(1)
