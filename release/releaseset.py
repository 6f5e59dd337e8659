"""The release set: the exact files a release uploads, resolved once; every check judges these.

A compliance check that reads the directory while the upload takes another list
of files can pass a release whose NOTICE never reaches the Hub. So a release
directory is resolved once into a :class:`ReleaseSet`, the files (path in the
repo, local file, size; sha256 on demand) that ``publish`` would upload, and
every check takes that set:

* the card and Terms of Use rules look for NOTICE and the terms copy *in the set*,
  and a file the card links to relatively must be in it (CARD011);
* the variant-table rules list the release's own files from it;
* ``verify`` runs on a staged view holding only the set's files (:meth:`ReleaseSet.staged`);
* ``publish`` uploads exactly :meth:`ReleaseSet.hashed`.

With a ``release.yaml`` the set is what its ``files`` patterns select, less
``exclude``, the never-published files (``.git``, caches, temp files, release.yaml
itself) and golden files picked up by a wildcard (a golden is uploaded only when
named exactly). Without one it is every regular file of the directory less those.
Files of the directory left out are listed with the reason (:attr:`ReleaseSet.left_out`).
"""

from __future__ import annotations

import glob
import os
import stat
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator

from release import release_yaml
from release.errors import InputError
from release.files import read_text_file
from release.findings import Finding, Rule, register_rules

register_rules(
    Rule("PUBLISH001", "error", "a files pattern in release.yaml matches no file"),
    Rule("PUBLISH002", "info", "files of the release directory that are not in the release set (not uploaded, not checked)"),
)

# Never published, whatever the patterns say: tool state, temporary files, the release description.
NEVER_PUBLISH = (".git/*", ".cache/*", ".huggingface/*", "__pycache__/*", "*.tmp", "*.lock", ".DS_Store", "*.pyc")
MAX_FILES = 100_000  # a release with more files than this is not a model release
GOLDEN_HEADER_LIMIT = 1 << 20  # a golden file's safetensors header is small; weights' headers are not read past this


@dataclass(frozen=True)
class ReleaseFile:
    """One file of the release: where it goes in the repo and where it is on disk."""

    path: str  # path in the repo (POSIX, relative)
    local: Path  # the resolved file on disk (inside the release directory)
    size: int


@dataclass
class ReleaseSet:
    """The files a release uploads (sorted by repo path), and what the directory holds besides."""

    root: Path
    files: dict[str, ReleaseFile]
    config: release_yaml.ReleaseConfig | None = None  # None: no release.yaml; the set is the directory
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (path, why) for directory files not in the set
    findings: list[Finding] = field(default_factory=list)  # PUBLISH001 per pattern that matched nothing
    _hashed: list | None = field(default=None, repr=False)

    def __contains__(self, path: str) -> bool:
        return path in self.files

    def __len__(self) -> int:
        return len(self.files)

    def get(self, path: str) -> ReleaseFile | None:
        return self.files.get(path)

    def names(self) -> list[str]:
        return list(self.files)

    def top_level(self) -> list[ReleaseFile]:
        """Files at the root of the repo (where the Hub and the terms expect NOTICE, LICENSE, README.md)."""
        return [f for p, f in self.files.items() if "/" not in p]

    def with_suffix(self, *suffixes: str) -> list[ReleaseFile]:
        return [f for p, f in self.files.items() if p.lower().endswith(suffixes)]

    def read_text(self, path: str, max_bytes: int = 2 << 20) -> str | None:
        """A small text file of the set (None when absent, too big, not UTF-8 or unreadable)."""
        f = self.files.get(path)
        if f is None or f.size > max_bytes:
            return None
        try:
            return read_text_file(f.local, max_bytes)
        except InputError:
            return None

    def listing(self) -> dict[str, int]:
        """{path: size}, as the Hub would list the release."""
        return {p: f.size for p, f in self.files.items()}

    def hashed(self) -> list:
        """The files with size, sha256 and git blob id (``release.hub.LocalFile``), hashed once."""
        if self._hashed is None:
            from release.hub import hash_file

            self._hashed = [hash_file(f.local, f.path) for f in self.files.values()]
        return self._hashed

    @contextmanager
    def staged(self) -> Iterator[Path]:
        """A temporary directory holding (as symlinks) exactly the set's files: what a downloader would get."""
        with tempfile.TemporaryDirectory(prefix="gemma-release-set-") as tmp:
            for p, f in self.files.items():
                target = Path(tmp, *PurePosixPath(p).parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(f.local, target)
            yield Path(tmp)

    def left_out_finding(self) -> Finding | None:
        """PUBLISH002 (info) naming the directory's files that are not in the set, with why."""
        if not self.left_out:
            return None
        shown = "; ".join(f"{p} ({why})" for p, why in self.left_out[:12])
        more = f"; and {len(self.left_out) - 12} more" if len(self.left_out) > 12 else ""
        return Finding("PUBLISH002", "info", f"{len(self.left_out)} file(s) of the directory are not in the release: {shown}{more}",
                       path=str(self.root))


# --- resolving ---------------------------------------------------------------------------------


def _never(rel: str) -> bool:
    return any(PurePosixPath(rel).match(x) for x in NEVER_PUBLISH) or any(
        part.startswith(".") for part in PurePosixPath(rel).parts[:-1])


def directory_files(root: Path) -> list[str]:
    """Every regular file under ``root`` (POSIX relative paths, sorted), .git and hidden folders skipped.

    Non-regular files (FIFOs, sockets, devices) are skipped here; a pattern that names one is refused.
    """
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        for name in sorted(filenames):
            full = Path(dirpath, name)
            try:
                if not stat.S_ISREG(full.stat().st_mode):
                    continue
            except OSError:
                continue
            out.append(full.relative_to(root).as_posix())
            if len(out) > MAX_FILES:
                raise InputError(f"more than {MAX_FILES} files in the release directory; is it the right one?", root)
    return out


def is_golden_file(path: Path) -> bool:
    """Whether a file is a gemma-release golden file, by its contents (the safetensors header's format)."""
    from release.weights.golden import sniff_golden

    return sniff_golden(path, GOLDEN_HEADER_LIMIT)


def _regular(root: Path, rel: str, where: Path) -> tuple[Path, int]:
    """(resolved path, size) of a selected file, which must be a regular file inside the release directory."""
    full = root / rel
    real = full.resolve()
    if root not in real.parents:
        raise InputError(f"{rel} resolves outside the release directory (a symlink?)", path=where)
    try:
        st = real.stat()
    except OSError as e:
        raise InputError(f"{rel}: cannot read ({e.strerror or e})", path=where) from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{rel} is not a regular file (a FIFO, socket or device); it cannot be published", path=where)
    return real, st.st_size


def resolve(directory: Path | str, config: release_yaml.ReleaseConfig | None = None) -> ReleaseSet:
    """The release set of a directory: from its release.yaml (or ``config``), else every file it holds."""
    root = Path(directory)
    if not root.is_dir():
        raise InputError("not a directory", path=root)
    if config is None and (root / release_yaml.FILENAME).exists():
        config = release_yaml.load(root)
    root = root.resolve()
    present = directory_files(root)
    if config is None:
        return _from_directory(root, present)
    return _from_config(root, config, present)


def from_listing(root: Path, sizes: dict[str, int]) -> ReleaseSet:
    """A release set standing for files already published (``card check --repo``): the Hub's listing.

    ``sizes`` is every file of the repo with its size; ``root`` holds the ones that were downloaded
    (the small text files the rules read). The others are size-only: their ``local`` path under
    ``root`` does not exist, so :meth:`ReleaseSet.read_text` gives None for them and nothing hashes
    or stages them. No release.yaml: the set is the repo as it is.
    """
    root = Path(root).resolve()
    files = {p: ReleaseFile(p, root.joinpath(*PurePosixPath(p).parts), int(size)) for p, size in sorted(sizes.items())}
    return ReleaseSet(root, files, None, [])


def _from_directory(root: Path, present: list[str]) -> ReleaseSet:
    files: dict[str, ReleaseFile] = {}
    left: list[tuple[str, str]] = []
    for rel in present:
        if _never(rel):
            left.append((rel, "never published (tool state or temporary file)"))
        elif is_golden_file(root / rel):
            left.append((rel, "a golden-logits file, not weights"))
        else:
            real, size = _regular(root, rel, root)
            files[rel] = ReleaseFile(rel, real, size)
    return ReleaseSet(root, files, None, left)


def _from_config(root: Path, cfg: release_yaml.ReleaseConfig, present: list[str]) -> ReleaseSet:
    where = cfg.path
    chosen: dict[str, ReleaseFile] = {}
    findings: list[Finding] = []
    why_out: dict[str, str] = {}
    exact = {p for p in cfg.files if not glob.has_magic(p)}
    for pattern in cfg.files:
        if Path(pattern).is_absolute() or ".." in PurePosixPath(pattern).parts:
            raise InputError(f"files pattern {pattern!r} must be relative to the release directory", path=where)
        hits = sorted(PurePosixPath(h).as_posix() for h in glob.glob(pattern, root_dir=root, recursive=True))
        hits = [h for h in hits if not (root / h).is_dir()]
        if not hits:
            findings.append(Finding("PUBLISH001", "error", f"files pattern {pattern!r} matches no file", path=str(where)))
        for rel in hits:
            if rel in chosen or rel in why_out:
                continue
            if rel == release_yaml.FILENAME and rel not in exact:
                why_out[rel] = "the release description itself"
                continue
            excluded = next((x for x in cfg.exclude if PurePosixPath(rel).match(x)), None)
            if excluded is not None:
                why_out[rel] = f"excluded by {excluded!r}"
                continue
            if _never(rel) and rel not in exact:
                why_out[rel] = "never published (tool state or temporary file)"
                continue
            real, size = _regular(root, rel, where)
            is_golden = (cfg.golden is not None and real == cfg.golden.resolve()) or (
                is_golden_file(real))
            if is_golden and rel not in exact:
                why_out[rel] = "a golden-logits file (name it exactly in files to upload it)"
                continue
            chosen[rel] = ReleaseFile(rel, real, size)
    left = [(rel, why_out.get(rel, "matched by no files pattern")) for rel in present if rel not in chosen]
    return ReleaseSet(root, dict(sorted(chosen.items())), cfg, left, findings)
