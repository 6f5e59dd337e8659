"""``gemma-release publish``: check everything, then upload one commit, then validate the Hub side.

Order of work (the contract in DESIGN.md):

1. resolve the release set once (:func:`release.releaseset.resolve`): the exact files
   ``release.yaml`` selects, paths inside DIR;
2. run every check on that set, offline: card + Terms of Use (NOTICE and the terms copy
   must be *in the set*), variant tables, ``verify`` against the golden file on a staged
   view holding only the set's files; with network allowed, variant links are also
   checked against the Hub listing;
3. on any error: report, upload nothing (exit 1);
4. ``--dry-run``: print the plan (files, sizes, sha256, destination, revision, message), no network;
5. otherwise :func:`release.hub.upload_release`: refuse a ``--tag`` that points elsewhere,
   one commit of exactly the set's changed files, post-upload validation of sizes and
   hashes at the new commit, then the tag.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from release import release_yaml
from release.errors import InputError
from release.findings import Finding, Rule, has_errors, register_rules
from release.hub import LocalFile, UploadResult
from release.releaseset import ReleaseSet, resolve

register_rules(
    Rule("PUBLISH003", "error", "the golden file named in release.yaml does not exist"),
    Rule("PUBLISH010", "error", "after the upload, a file (or the whole listing) is missing on the Hub"),
    Rule("PUBLISH011", "error", "after the upload, a file's size on the Hub differs from the local file"),
    Rule("PUBLISH012", "error", "after the upload, a file's content (LFS sha256 / git blob id) differs on the Hub"),
    Rule("PUBLISH013", "error", "the release was committed but tagging it failed"),
)


@dataclass(frozen=True)
class Options:
    """What the command line adds to (or overrides in) release.yaml."""

    repo: str | None = None
    revision: str | None = None
    private: bool | None = None
    create_pr: bool = False
    commit_message: str | None = None
    tag: str | None = None
    token: str | None = None
    dry_run: bool = False
    allow_secrets: tuple[str, ...] = ()  # --allow-secret: repo paths whose secret findings are deliberate


@dataclass
class Plan:
    repo: str
    revision: str
    commit_message: str
    private: bool
    create_pr: bool
    tag: str | None
    files: list[LocalFile]
    findings: list[Finding] = field(default_factory=list)
    gated: bool | str = False  # turn on access requests ("auto" / "manual")
    left_out: list[tuple[str, str]] = field(default_factory=list)  # directory files not uploaded, with why

    @property
    def ok(self) -> bool:
        return not has_errors(self.findings)

    def to_dict(self) -> dict[str, object]:
        return {
            "repo": self.repo,
            "revision": self.revision,
            "commit_message": self.commit_message,
            "private": self.private,
            "create_pr": self.create_pr,
            "tag": self.tag,
            "gated": self.gated,
            "files": [{"path": f.path_in_repo, "size": f.size, "sha256": f.sha256} for f in self.files],
            "left_out": [{"path": p, "why": why} for p, why in self.left_out],
            "findings": [f.to_dict() for f in self.findings],
        }


def _verify(rs: ReleaseSet) -> list[Finding]:
    """Logit comparison against the golden file named in release.yaml, on exactly the set's files."""
    cfg = rs.config
    if cfg is None or cfg.golden is None:
        return []
    if not cfg.golden.is_file():
        return [Finding("PUBLISH003", "error", f"golden file {cfg.golden} named in release.yaml does not exist", path=str(cfg.path))]
    from release.weights.verify import Tolerance, verify_model

    known = {f.name for f in dataclasses.fields(Tolerance)}
    unknown = sorted(set(cfg.tolerances) - known)
    if unknown:
        raise InputError(f"tolerances: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})", path=cfg.path)
    with rs.staged() as staged:  # only what will be uploaded: a weight file left out of `files` is missing here too
        report = verify_model(staged, cfg.golden, tol=Tolerance(**cfg.tolerances))
        prefix = str(staged)
        return [dataclasses.replace(f, path=str(rs.root) + f.path[len(prefix):]) if f.path and f.path.startswith(prefix) else f
                for f in report.findings]


def run_checks(rs: ReleaseSet, hub: bool, allow_secrets: tuple[str, ...] = ()) -> list[Finding]:
    """Every check on the release set: secrets, card, terms, variants (files; Hub listings when ``hub``), verify."""
    from release.card.rules import check_release_set
    from release.card.variants import check_variants

    findings = list(rs.findings)
    findings += check_release_set(rs, allow_secrets=allow_secrets)  # also the secret scan (PUBLISH004), once
    if (rs.root / "README.md").is_file():  # without a card there is no variant table (check_release_set says so)
        findings += check_variants(rs.root, rs.config, hub=True if hub else None, release_set=rs)
    findings += _verify(rs)
    return findings


def plan(release_dir: Path, opts: Options) -> Plan:
    """Resolve the release set, hash it and check it; no upload. Network only for Hub listings when not a dry run."""
    release_dir = Path(release_dir)
    if not release_dir.is_dir():
        raise InputError("not a directory", path=release_dir)
    if not (release_dir / release_yaml.FILENAME).exists():
        raise InputError("no release.yaml here", path=release_dir / release_yaml.FILENAME, hint="create one with `gemma-release init DIR`")
    rs = resolve(release_dir)
    cfg = rs.config
    repo = opts.repo or cfg.repo
    if not release_yaml.REPO_ID_RE.match(repo):
        raise InputError(f"repository {repo!r} is not of the form ORG/NAME")
    if opts.tag is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}", opts.tag):
        raise InputError(f"--tag {opts.tag!r} is not a valid tag name")
    findings = run_checks(rs, hub=not opts.dry_run, allow_secrets=opts.allow_secrets)
    files = rs.hashed()
    revision = opts.revision or cfg.revision
    message = opts.commit_message or cfg.commit_message or f"Release {repo.split('/')[1]} with gemma-release"
    private = cfg.private if opts.private is None else opts.private
    return Plan(repo, revision, message, private, opts.create_pr, opts.tag, files, findings, gated=cfg.gating.gated,
                left_out=list(rs.left_out))


def execute(p: Plan, token: str | None, say: Callable[[str], None]) -> UploadResult:
    """Upload the plan (must be ok) and validate it on the Hub."""
    from release.hub import upload_release

    if not p.ok:
        raise RuntimeError("refusing to upload a plan with errors")  # guarded by the caller
    return upload_release(
        p.files,
        p.repo,
        revision=p.revision,
        commit_message=p.commit_message,
        private=p.private,
        create_pr=p.create_pr,
        tag=p.tag,
        gated=p.gated,
        token=token,
        say=say,
    )


def render_plan(p: Plan) -> str:
    """The dry-run plan as text: destination, message, then one line per file."""
    total = sum(f.size for f in p.files)
    head = [
        f"destination: {p.repo}@{p.revision}" + (" (as a pull request)" if p.create_pr else "") + (" (private)" if p.private else ""),
        f"commit message: {p.commit_message}",
        *([f"tag: {p.tag}"] if p.tag else []),
        *([f"gated: {p.gated} (access requests)"] if p.gated else []),
        f"{len(p.files)} files, {total} bytes:",
    ]
    width = max((len(f.path_in_repo) for f in p.files), default=0)
    rows = [f"  {f.path_in_repo:<{width}}  {f.size:>12}  sha256:{f.sha256}" for f in p.files]
    if p.left_out:
        rows.append(f"not uploaded ({len(p.left_out)}):")
        rows += [f"  {path}  ({why})" for path, why in p.left_out]
    return "\n".join(head + rows)
