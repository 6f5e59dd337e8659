"""``gemma-release publish``: check everything, then upload one commit, then validate the Hub side.

Order of work (the contract in DESIGN.md):

1. read ``release.yaml`` and collect the files its globs name (paths stay inside DIR);
2. run every check offline: card + Terms of Use (:func:`release.card.rules.check_path`),
   variant tables (:func:`release.card.variants.check_variants`), ``verify`` against the
   golden file when one is named; with network allowed, variant links are also
   checked against the Hub listing;
3. on any error: report, upload nothing (exit 1);
4. ``--dry-run``: print the plan (files, sizes, sha256, destination, revision, message), no network;
5. otherwise :func:`release.hub.upload_release`: one commit of the changed files,
   post-upload validation of sizes and hashes at the new commit, optional tag.
"""

from __future__ import annotations

import dataclasses
import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from release import release_yaml
from release.errors import InputError
from release.findings import Finding, Rule, has_errors, register_rules
from release.hub import LocalFile, UploadResult, hash_file

register_rules(
    Rule("PUBLISH001", "error", "a files pattern in release.yaml matches no file"),
    Rule("PUBLISH003", "error", "the golden file named in release.yaml does not exist"),
    Rule("PUBLISH010", "error", "after the upload, a file (or the whole listing) is missing on the Hub"),
    Rule("PUBLISH011", "error", "after the upload, a file's size on the Hub differs from the local file"),
    Rule("PUBLISH012", "error", "after the upload, a file's content (LFS sha256 / git blob id) differs on the Hub"),
    Rule("PUBLISH013", "error", "the release was committed but tagging it failed"),
)

# Files never published, whatever the globs say: tool state and the release description itself.
NEVER_PUBLISH = (".git/*", ".cache/*", "*.tmp", ".DS_Store")


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
            "findings": [f.to_dict() for f in self.findings],
        }


def collect_files(cfg: release_yaml.ReleaseConfig) -> tuple[list[tuple[str, Path]], list[Finding]]:
    """(path_in_repo, local path) for every file the globs name, sorted; a finding per empty pattern."""
    root = cfg.root.resolve()
    chosen: dict[str, Path] = {}
    findings: list[Finding] = []
    for pattern in cfg.files:
        if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            raise InputError(f"files pattern {pattern!r} must be relative to the release directory", path=cfg.path)
        hits = [Path(p) for p in glob.glob(pattern, root_dir=root, recursive=True)]
        hits = [h for h in hits if (root / h).is_file()]
        if not hits:
            findings.append(Finding("PUBLISH001", "error", f"files pattern {pattern!r} matches no file", path=str(cfg.path)))
        for h in hits:
            rel = h.as_posix()
            real = (root / h).resolve()
            if root not in real.parents:
                raise InputError(f"{rel} resolves outside the release directory (symlink?)", path=cfg.path)
            if any(Path(rel).match(x) for x in (*cfg.exclude, *NEVER_PUBLISH)):
                continue
            chosen[rel] = real
    return sorted(chosen.items()), findings


def _verify(cfg: release_yaml.ReleaseConfig) -> list[Finding]:
    """Logit comparison against the golden file named in release.yaml."""
    if cfg.golden is None:
        return []
    if not cfg.golden.is_file():
        return [Finding("PUBLISH003", "error", f"golden file {cfg.golden} named in release.yaml does not exist", path=str(cfg.path))]
    from release.weights.verify import Tolerance, verify_model

    known = {f.name for f in dataclasses.fields(Tolerance)}
    unknown = sorted(set(cfg.tolerances) - known)
    if unknown:
        raise InputError(f"tolerances: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})", path=cfg.path)
    report = verify_model(cfg.root, cfg.golden, tol=Tolerance(**cfg.tolerances))
    return list(report.findings)


def run_checks(cfg: release_yaml.ReleaseConfig, hub: bool) -> list[Finding]:
    """Every check: card, terms, variants (files; Hub listings when ``hub``), verify."""
    from release.card.rules import check_path
    from release.card.variants import check_variants

    findings = check_path(cfg.root)
    findings += check_variants(cfg.root, cfg, hub=True if hub else None)
    findings += _verify(cfg)
    return findings


def plan(release_dir: Path, opts: Options) -> Plan:
    """Load, collect, hash and check; no upload. Network only for Hub variant listings when not a dry run."""
    release_dir = Path(release_dir)
    if not release_dir.is_dir():
        raise InputError("not a directory", path=release_dir)
    cfg = release_yaml.load(release_dir)
    repo = opts.repo or cfg.repo
    if not release_yaml.REPO_ID_RE.match(repo):
        raise InputError(f"repository {repo!r} is not of the form ORG/NAME")
    if opts.tag is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}", opts.tag):
        raise InputError(f"--tag {opts.tag!r} is not a valid tag name")
    pairs, findings = collect_files(cfg)
    files = [hash_file(local, rel) for rel, local in pairs]
    findings = findings + run_checks(cfg, hub=not opts.dry_run)
    revision = opts.revision or cfg.revision
    message = opts.commit_message or cfg.commit_message or f"Release {repo.split('/')[1]} with gemma-release"
    private = cfg.private if opts.private is None else opts.private
    return Plan(repo, revision, message, private, opts.create_pr, opts.tag, files, findings, gated=cfg.gating.gated)


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
    return "\n".join(head + rows)
