"""Everything that talks to the Hugging Face Hub, through huggingface_hub only.

The endpoint and credentials are huggingface_hub's own settings: ``HF_ENDPOINT``
(read when huggingface_hub is imported), ``HF_TOKEN`` or the token file under
``HF_HOME``; ``HF_HUB_DISABLE_XET=1`` selects classic LFS uploads instead of Xet.
An explicit ``token`` argument overrides them.

Timeouts: no network operation (connect, each read, each write) waits longer than
``GEMMA_RELEASE_HUB_TIMEOUT`` seconds (default 30; the CLI's ``--hub-timeout``
sets it). huggingface_hub's shared client has no timeout of its own and many
HfApi calls pass ``timeout=None``, so the bound is enforced in the client's
transport (installed with ``huggingface_hub.set_client_factory``); shorter
per-request timeouts (``HF_HUB_ETAG_TIMEOUT``, ``HF_HUB_DOWNLOAD_TIMEOUT``) still apply.
A timeout or a refused connection is final (:class:`HubUnreachable`): huggingface_hub
would otherwise retry it five times with back-off (about half a minute of sleeping)
or fall back to a stale cached snapshot. Xet-backed files (every new Hub repo) travel
through hf_xet's own client, which reads its bounds from the environment: its connect
and read timeouts and its total retry time are set to the same bound (``HF_XET_CLIENT_*``;
values the user set are kept), instead of hf_xet's 60 s / 300 s / 360 s.

Token hygiene: the token is handed to huggingface_hub and nowhere else. Every
error leaving this module goes through :func:`scrub`, which removes the token
(and anything shaped like a Hub token) from its text, and exceptions are
re-raised ``from None`` so no chained traceback carries request objects.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from release.errors import InputError
from release.findings import Finding

VERIFY_PATTERNS = (
    "config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "adapter_config.json",  # a PEFT adapter repo (its adapter_model.safetensors matches *.safetensors)
)
_TOKEN_SHAPE = re.compile(r"\b(hf_|api_org_)[A-Za-z0-9_-]{6,}")
_CHUNK = 8 * 1024 * 1024


class HubError(Exception):
    """The Hub (or the network) failed: not the user's input, not a failed check. The CLI exits 2 with this message."""


class HubUnreachable(OSError):
    """A request timed out or could not connect. Deliberately not an httpx error, so nothing retries it."""

    def __init__(self, kind: str, url: str, seconds: float):
        self.kind, self.url, self.seconds = kind, url, seconds  # kind: "timeout" | "connect"
        super().__init__(f"{kind} after {seconds:g} s: {url}" if kind == "timeout" else f"cannot connect: {url}")


# --- timeouts ---------------------------------------------------------------------------------

DEFAULT_TIMEOUT = 30.0
TIMEOUT_ENV = "GEMMA_RELEASE_HUB_TIMEOUT"
_timeout_installed: list[float] = []  # the bound currently installed in huggingface_hub's client factory
_timeout_override: list[float] = []  # set by the CLI's --hub-timeout for this run


def set_timeout(seconds: float | None) -> None:
    """Override ``GEMMA_RELEASE_HUB_TIMEOUT`` for this process (None: back to the environment)."""
    _timeout_override[:] = [] if seconds is None else [float(seconds)]


def hub_timeout() -> float:
    """Seconds any single network operation may take: ``--hub-timeout``, else ``GEMMA_RELEASE_HUB_TIMEOUT``, else 30."""
    import math
    import os

    if _timeout_override:
        return _timeout_override[0]
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds")
    return value


def install_timeout(seconds: float | None = None) -> float:
    """Make every request huggingface_hub sends give up after ``seconds`` (default :func:`hub_timeout`)."""
    import httpx2
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    quiet_progress_bars()  # every Hub path comes through here: no tqdm bars in non-terminal logs
    seconds = hub_timeout() if seconds is None else float(seconds)
    if _timeout_installed == [seconds]:
        return seconds

    class BoundedTransport(httpx2.BaseTransport):
        """Fills every missing per-request timeout with ``seconds`` and caps the others at it."""

        def __init__(self, inner: httpx2.BaseTransport):
            self.inner = inner

        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            given = dict(request.extensions.get("timeout") or {})
            request.extensions["timeout"] = {
                k: seconds if given.get(k) is None else min(float(given[k]), seconds)
                for k in ("connect", "read", "write", "pool")
            }
            url = f"{request.url.scheme}://{request.url.netloc.decode('ascii', 'replace')}{request.url.path}"
            try:
                return self.inner.handle_request(request)
            except httpx2.TimeoutException:
                raise HubUnreachable("timeout", url, seconds) from None
            except httpx2.ConnectError as e:
                raise HubUnreachable("connect", url, seconds) from e

        def close(self) -> None:
            self.inner.close()

    def factory() -> httpx2.Client:
        client = default_client_factory()
        client.timeout = httpx2.Timeout(seconds)
        client._transport = BoundedTransport(client._transport)  # noqa: SLF001 - httpx has no public setter
        client._mounts = {k: (BoundedTransport(t) if t is not None else None) for k, t in client._mounts.items()}  # noqa: SLF001 - proxies
        return client

    set_client_factory(factory)
    _bound_xet(seconds)
    _timeout_installed[:] = [seconds]
    return seconds


#: hf_xet's client settings, read from the environment when its client starts (defaults 60 s, 300 s, 360 s)
XET_BOUNDS = ("HF_XET_CLIENT_CONNECT_TIMEOUT", "HF_XET_CLIENT_READ_TIMEOUT", "HF_XET_CLIENT_RETRY_MAX_DURATION")
_xet_set_by_us: dict[str, str] = {}  # what install_timeout wrote, to tell it from a value the user set


def _bound_xet(seconds: float) -> None:
    """hf_xet's connect / read timeouts and total retry time: ``seconds``, unless the user set them."""
    for key in XET_BOUNDS:
        if key in os.environ and os.environ[key] != _xet_set_by_us.get(key):
            continue  # the user's own setting
        os.environ[key] = _xet_set_by_us[key] = f"{max(1, round(seconds * 1000))}ms"


def scrub(text: str, token: str | None = None) -> str:
    """``text`` with the token (given, or huggingface_hub's resolved one) and token-shaped strings masked."""
    for t in {token, _resolved_token()}:
        if t:
            text = text.replace(t, "***")
    return _TOKEN_SHAPE.sub(r"\1***", text)


def _resolved_token() -> str | None:
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # noqa: BLE001 - token lookup must never break error reporting
        return None


# --- local files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalFile:
    """A file to publish: where it is, where it goes, and its identity."""

    path_in_repo: str
    local: Path
    size: int
    sha256: str
    git_sha1: str  # git blob id, what the Hub reports for non-LFS files


def hash_file(local: Path, path_in_repo: str) -> LocalFile:
    """Size, sha256 and git blob sha1 in one streaming pass."""
    from release.files import require_regular

    size = require_regular(local, "release file").st_size  # a FIFO would block the read, a device never end
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % size)
    with open(local, "rb") as f:
        for _ in range(size // _CHUNK + 2):  # bounded: the file is read exactly once
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            sha256.update(chunk)
            sha1.update(chunk)
    return LocalFile(path_in_repo, local, size, sha256.hexdigest(), sha1.hexdigest())


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    blob_id: str
    lfs_sha256: str | None


def same_content(local: LocalFile, remote: RemoteFile | None) -> bool:
    """Whether the remote file is byte-for-byte the local one (sha256 for LFS, git blob id otherwise)."""
    if remote is None or remote.size != local.size:
        return False
    if remote.lfs_sha256 is not None:
        return remote.lfs_sha256 == local.sha256
    return remote.blob_id == local.git_sha1


# --- errors -----------------------------------------------------------------------------------


_WRITES = ("creating", "uploading", "tagging")  # actions that need a token with write access


@contextlib.contextmanager
def translate_errors(action: str, repo_id: str, token: str | None = None, revision: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub/httpx errors into InputError (credentials, missing repo or revision) or HubError.

    Each message names what failed: the revision when it is the revision that is missing, and for a refused
    token what the action needed (reading a private or gated repo is not a question of write access).
    """
    from huggingface_hub import errors as hf_errors

    where = f"{repo_id}@{revision}" if revision else repo_id
    try:
        yield
    except InputError:
        raise
    except hf_errors.GatedRepoError:  # a RepositoryNotFoundError too: checked first
        raise InputError(f"{action}: {repo_id} is gated and this token has not been granted access",
                         hint="accept the repository's conditions on the Hub with the account of your token "
                              "(HF_TOKEN or `hf auth login`), then run again") from None
    except hf_errors.RevisionNotFoundError:
        rev = f"revision {revision!r}" if revision else "the revision"
        raise InputError(f"{action}: {rev} not found in {repo_id} on the Hub",
                         hint="check the branch, tag or commit name (ORG/NAME@REVISION)") from None
    except hf_errors.RepositoryNotFoundError:
        raise InputError(f"{action}: repository not found on the Hub ({repo_id})",
                         hint="check the name; a private repository needs a token that can read it (HF_TOKEN)") from None
    except hf_errors.HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        first = scrub(str(e), token).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if status in (401, 403):
            if action.startswith(_WRITES):
                raise InputError(f"{action}: the Hub refused the credentials for {where} (HTTP {status})",
                                 hint=f"set HF_TOKEN (or run `hf auth login`) with a token that has write access to "
                                      f"{repo_id}; nothing was uploaded") from None
            raise InputError(f"{action}: the Hub refused to let this token read {where} (HTTP {status}): the token is "
                             "invalid, or the repository is private or gated and the token's account has no access",
                             hint=f"set HF_TOKEN (or run `hf auth login`) with a token that can read {repo_id}") from None
        raise HubError(f"{action} failed for {where}: {first}") from None
    except (OSError, RuntimeError, ValueError) as e:
        # httpx network errors are OSError-like; huggingface_hub wraps LFS failures in RuntimeError.
        raise HubError(f"{action} failed for {where}: {_network_detail(e, token)}") from None
    except Exception as e:  # noqa: BLE001 - e.g. httpx.HTTPError, which is not an OSError
        raise HubError(f"{action} failed for {where}: {_network_detail(e, token)}") from None


def _network_detail(e: BaseException, token: str | None) -> str:
    """One line: what went wrong at the bottom of the chain (a timeout, a refused connection), scrubbed."""
    chain, seen = [], set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen and len(chain) < 8:  # bounded: chains can loop
        seen.add(id(cur))
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    names = " ".join(type(c).__name__ for c in chain).lower()
    unreachable = next((c for c in chain if isinstance(c, HubUnreachable)), None)
    if (unreachable is not None and unreachable.kind == "timeout") or (unreachable is None and "timeout" in names):
        what = f"no answer within {_timeout_installed[0] if _timeout_installed else hub_timeout():g} s (timed out)"
        hint = f"the endpoint accepted the connection but did not respond; raise the bound with --hub-timeout or {TIMEOUT_ENV}"
    elif unreachable is not None or "connecterror" in names or any(isinstance(c, ConnectionRefusedError) for c in chain):
        what = "cannot connect to the Hub endpoint (connection refused or unreachable)"
        hint = "check HF_ENDPOINT and the network"
    else:
        first = next((str(c) for c in chain if str(c).strip()), type(e).__name__)
        what, hint = f"{type(e).__name__}: {first}", None
    from huggingface_hub import constants

    text = f"{what} [{constants.ENDPOINT}]" + (f"; {hint}" if hint else "")
    return scrub(" ".join(text.split()), token)


def _api(token: str | None):  # -> HfApi
    from huggingface_hub import HfApi

    install_timeout()
    return HfApi(token=token)


def quiet_progress_bars(force: bool | None = None) -> bool:
    """Turn huggingface_hub's tqdm bars off when stderr is not a terminal (CI logs); return whether they are off.

    ``force`` True/False overrides the terminal test. The user's own ``HF_HUB_DISABLE_PROGRESS_BARS`` still wins
    when it asks for bars explicitly (huggingface_hub warns and keeps them).
    """
    import os
    import sys

    off = (not _isatty(sys.stderr)) if force is None else force
    if off and os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").strip().upper() not in ("0", "FALSE", "NO", "OFF"):
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
        return True
    return False


def _isatty(stream) -> bool:  # noqa: ANN001 - any file-like
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # closed or replaced streams count as "not a terminal"
        return False


# --- listings ---------------------------------------------------------------------------------


def remote_files(repo_id: str, revision: str, token: str | None = None) -> dict[str, RemoteFile] | None:
    """Files at ``revision`` with sizes and LFS sha256; None when the repo or revision does not exist."""
    from huggingface_hub import errors as hf_errors
    from huggingface_hub.hf_api import RepoFile

    api = _api(token)
    with translate_errors("listing files", repo_id, token, revision):
        try:
            entries = list(api.list_repo_tree(repo_id, revision=revision, recursive=True))
        except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError):
            return None
    return {
        f.path: RemoteFile(f.path, int(f.size), f.blob_id, f.lfs.sha256 if f.lfs else None)
        for f in entries
        if isinstance(f, RepoFile)
    }


def variant_listing(token: str | None = None) -> Callable[[str, str], dict[str, int] | None]:
    """A cached ``(repo, revision) -> {path: size} | None`` for the variant checks."""
    cache: dict[tuple[str, str], dict[str, int] | None] = {}

    def listing(repo_id: str, revision: str) -> dict[str, int] | None:
        key = (repo_id, revision)
        if key not in cache:
            files = remote_files(repo_id, revision, token)
            cache[key] = None if files is None else {p: f.size for p, f in files.items()}
        return cache[key]

    return listing


# --- publishing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadResult:
    repo_id: str
    commit_oid: str
    commit_url: str
    pr_url: str | None
    uploaded: tuple[str, ...]  # paths that changed in this commit ((): nothing to upload)
    findings: tuple[Finding, ...]  # post-upload validation


def upload_release(
    files: list[LocalFile],
    repo_id: str,
    *,
    revision: str = "main",
    commit_message: str,
    private: bool = False,
    create_pr: bool = False,
    tag: str | None = None,
    gated: bool | str = False,
    token: str | None = None,
    say: Callable[[str], None] = lambda s: None,
) -> UploadResult:
    """Create the repo if needed, commit the changed files in ONE commit, validate, tag.

    ``gated`` ("auto"/"manual") turns on access requests before anything is uploaded.
    Unchanged files (same sha256 / git blob id as on the Hub) are left out; when
    nothing changed no commit is made. The commit names the head it was based on
    (``parent_commit``) so a concurrent push fails instead of being overwritten.
    """
    from huggingface_hub import CommitOperationAdd

    api = _api(token)
    with translate_errors("creating the repository", repo_id, token):
        api.create_repo(repo_id, private=private, exist_ok=True)
        if gated:  # only ever switched on: a repo gated by hand is not un-gated by a release
            api.update_repo_settings(repo_id, gated=gated)
        if revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
    with translate_errors("reading the repository", repo_id, token, revision):
        head = api.repo_info(repo_id, revision=revision).sha
    remote = remote_files(repo_id, revision, token) or {}
    changed = [f for f in files if not same_content(f, remote.get(f.path_in_repo))]
    if tag:  # before any commit: a tag that already names another commit would fail only after the push
        with translate_errors("reading the tags", repo_id, token):
            existing = {t.name: t.target_commit for t in api.list_repo_refs(repo_id).tags}
        if tag in existing and (changed or existing[tag] != head):
            raise InputError(f"tag {tag!r} already exists on {repo_id} at commit {existing[tag]}, and this release would be "
                             f"{'a new commit' if changed else f'commit {head}'}; nothing was uploaded",
                             hint="choose a new tag, or delete the old one on the Hub first")
    pr_url = None
    if not changed:
        say(f"nothing to upload: the {len(files)} files already match {repo_id}@{revision} ({head})")
        oid = head
    else:
        say(f"uploading {len(changed)} of {len(files)} files to {repo_id}@{revision} in one commit")
        ops = [CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=str(f.local)) for f in changed]
        with translate_errors("uploading", repo_id, token):
            info = api.create_commit(
                repo_id,
                operations=ops,
                commit_message=commit_message,
                revision=revision,
                create_pr=create_pr,
                parent_commit=head,
            )
        oid, pr_url = info.oid, info.pr_url
    commit_url = _commit_url(api.endpoint, repo_id, oid)
    findings = validate_remote(files, repo_id, oid, token)
    if tag and not any(f.severity == "error" for f in findings):
        try:
            _tag(api, repo_id, tag, oid, token)
        except (HubError, InputError) as e:  # the commit has landed: report, do not pretend nothing happened
            findings.append(Finding("PUBLISH013", "error", f"the release was committed ({oid}) but tagging failed: {e}", path=repo_id))
    return UploadResult(repo_id, oid, commit_url, pr_url, tuple(f.path_in_repo for f in changed), tuple(findings))


def _commit_url(endpoint: str, repo_id: str, oid: str) -> str:
    return f"{endpoint.rstrip('/')}/{repo_id}/commit/{oid}"


def _tag(api, repo_id: str, tag: str, oid: str, token: str | None) -> None:  # noqa: ANN001
    """Tag ``oid``; an existing tag is fine only when it already points there."""
    from huggingface_hub import errors as hf_errors

    with translate_errors(f"tagging {tag}", repo_id, token):
        try:
            api.create_tag(repo_id, tag=tag, revision=oid)
        except hf_errors.HfHubHTTPError as e:
            if getattr(e.response, "status_code", None) != 409:
                raise
            existing = {t.name: t.target_commit for t in api.list_repo_refs(repo_id).tags}
            if existing.get(tag) != oid:
                raise InputError(f"tag {tag!r} already exists on {repo_id} at another commit ({existing.get(tag)})") from None


def validate_remote(files: list[LocalFile], repo_id: str, revision: str, token: str | None = None) -> list[Finding]:
    """Compare the Hub's listing at ``revision`` (sizes, LFS sha256, blob ids) with the local files."""
    remote = remote_files(repo_id, revision, token)
    if remote is None:
        return [Finding("PUBLISH010", "error", f"{repo_id}@{revision} cannot be listed after the upload", path=repo_id)]
    out: list[Finding] = []
    for f in files:
        r = remote.get(f.path_in_repo)
        where = f"{repo_id}@{revision[:12]}"
        if r is None:
            out.append(Finding("PUBLISH010", "error", f"{f.path_in_repo} is missing on {where}", path=f.path_in_repo))
        elif r.size != f.size:
            out.append(Finding("PUBLISH011", "error", f"{f.path_in_repo} is {r.size} bytes on {where}, {f.size} locally", path=f.path_in_repo))
        elif not same_content(f, r):
            what = f"sha256 {r.lfs_sha256}" if r.lfs_sha256 else f"git blob {r.blob_id}"
            out.append(Finding("PUBLISH012", "error", f"{f.path_in_repo} differs on {where} ({what}, local sha256 {f.sha256})", path=f.path_in_repo))
    return out


# --- downloading for verify -------------------------------------------------------------------


def parse_repo_ref(ref: str) -> tuple[str, str | None]:
    """``ORG/NAME[@REVISION]`` -> (repo_id, revision or None)."""
    repo_id, _, revision = ref.partition("@")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*", repo_id) or (revision == "" and "@" in ref):
        raise InputError(f"--repo {ref!r} is not of the form ORG/NAME[@REVISION]")
    return repo_id, revision or None


# --- reading a published repo without its weights (card check --repo, variants check --repo) ---------

PUBLISHED_TEXT_LIMIT = 2 * 1024 * 1024  # cards, NOTICE, terms copies and configs are small; nothing bigger is downloaded
_TEXT_NAME = re.compile(r"\.(?:md|txt|html?)$|^(?:readme|notice|licen[cs]e|terms|gemma|copying|use[_-]?policy)(?:[\w.-]*)$"
                        r"|^(?:config|adapter_config|generation_config)\.json$", re.IGNORECASE)


@dataclass(frozen=True)
class PublishedRepo:
    """A Hub repo as published, seen without its weights.

    ``root`` holds the small text files the card rules read (top-level README, NOTICE, terms
    copies, configs; never an LFS file, never above :data:`PUBLISHED_TEXT_LIMIT`); ``files`` is
    the whole listing with sizes (what a downloader would get); ``commit`` the commit both came from.
    """

    repo_id: str
    revision: str  # as asked (branch, tag or commit)
    commit: str
    root: Path
    files: dict[str, RemoteFile]
    downloaded: tuple[str, ...]

    @property
    def label(self) -> str:
        """``hf://ORG/NAME@REV``, huggingface_hub's file-system notation, for finding paths."""
        return f"hf://{self.repo_id}@{self.revision}"


def small_text_files(files: dict[str, RemoteFile]) -> list[str]:
    """The top-level files worth downloading for the card and Terms of Use rules (small, not LFS, text-like names)."""
    return sorted(p for p, f in files.items()
                  if "/" not in p and f.lfs_sha256 is None and f.size <= PUBLISHED_TEXT_LIMIT and _TEXT_NAME.search(p))


def fetch_published(repo_id: str, revision: str | None, dest: Path, token: str | None = None,
                    say: Callable[[str], None] = lambda s: None) -> PublishedRepo:
    """List ``repo_id@revision`` (sizes, LFS ids) and download only its small text files into ``dest``.

    The revision is resolved to one commit first, so the listing and the downloads agree even if
    someone pushes meanwhile. Weights are listed (``list_repo_tree``), never downloaded.
    """
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import hf_hub_download

    rev = revision or "main"
    api = _api(token)
    with translate_errors("reading the repository", repo_id, token, rev):
        try:
            commit = api.repo_info(repo_id, revision=rev).sha
        except hf_errors.RevisionNotFoundError:
            raise InputError(f"revision {rev!r} not found on the Hub ({repo_id})",
                             hint="check the branch, tag or commit name") from None
    files = remote_files(repo_id, commit, token)
    if files is None:
        raise InputError(f"{repo_id}@{rev} cannot be listed on the Hub", hint="check the name, and that your token can read it")
    say(f"listed {repo_id}@{rev} ({commit[:12]}): {len(files)} files")
    wanted = small_text_files(files)
    dest.mkdir(parents=True, exist_ok=True)
    with translate_errors("downloading the card and licence files", repo_id, token, rev):
        for name in wanted:
            hf_hub_download(repo_id, name, revision=commit, token=token, local_dir=dest)
    say(f"downloaded {len(wanted)} small text files: {', '.join(wanted) or 'none'}")
    return PublishedRepo(repo_id, rev, commit, dest, files, tuple(wanted))


def download_for_verify(repo_id: str, revision: str | None = None, token: str | None = None) -> Path:
    """Download what ``verify`` needs (config, safetensors, tokenizer) into the HF cache; return the snapshot dir."""
    from huggingface_hub import snapshot_download

    install_timeout()
    with translate_errors("downloading for verify", repo_id, token, revision):
        path = snapshot_download(repo_id, revision=revision, allow_patterns=list(VERIFY_PATTERNS), token=token)
    p = Path(path)
    if not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
        raise InputError(f"{repo_id}@{revision or 'main'} has no config.json (nor adapter_config.json); is it a model repository?")
    return p
