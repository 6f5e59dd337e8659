"""Scratch virtual environments for tests, made from the test environment, never from the base interpreter.

``python -m venv`` run from inside a venv makes a venv of the *base* interpreter, so a venv made with
``--system-site-packages`` sees whatever happens to be installed in the machine's Python (an old
setuptools without ``bdist_wheel``, a scipy nobody declared) and not the environment the tests run in.
Two kinds are made here, both offline:

* :func:`overlay_venv`: an empty venv that sees the running environment's packages (a ``.pth`` file
  naming its site-packages): what the project declares for its tests, nothing of the host.
* :func:`declared_venv`: a venv holding only the base install: the distributions ``gemma-release``
  requires (no extras), and theirs, found through their installed metadata and linked in, plus
  gemma-release itself from a freshly built wheel. An import this project makes without declaring
  it fails there, as it would on a fresh machine after ``pip install gemma-release``.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
DIST = "gemma-release"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python: nothing that would put other packages on its path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE")}
    env.update(PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


def _make_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(path)], check=True, timeout=120,
                   env=clean_env())
    return site_packages(path)


def site_packages(venv: Path) -> Path:
    """The venv's purelib directory (the venv's layout for this interpreter's version)."""
    rel = Path(sysconfig.get_path("purelib", vars={"base": "", "platbase": ""}).lstrip(os.sep))
    return venv / rel


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / ("python.exe" if os.name == "nt" else "python")


def overlay_venv(path: Path) -> Path:
    """A venv whose own site-packages is empty and which sees the running environment's packages."""
    site = _make_venv(path)
    paths = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site / "_test_environment.pth").write_text("".join(f"{p}\n" for p in paths))
    return path


def requirement_closure(root: str = DIST) -> list[md.Distribution]:
    """`root` and every distribution it requires without extras, transitively, as installed here."""
    seen: dict[str, md.Distribution] = {}
    walked: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if (key, extras) in walked:
            continue
        walked.add((key, extras))
        dist = seen.get(key) or md.distribution(name)  # PackageNotFoundError: a declared dependency is not installed
        seen[key] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not any(
                    req.marker.evaluate({**default_environment(), "extra": e}) for e in (extras or {""})):
                continue
            todo.append((req.name, frozenset(req.extras)))
    return list(seen.values())


def build_wheel(out: Path) -> Path:
    """This source tree built as a wheel, offline, with the environment's setuptools."""
    out.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                        "-w", str(out)], capture_output=True, text=True, env=clean_env(PIP_NO_INDEX="1"),
                       cwd=out, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    (whl,) = out.glob("gemma_release-*.whl")
    return whl


def declared_venv(path: Path, wheel: Path) -> Path:
    """A venv holding gemma-release from `wheel` and exactly the distributions it declares (no extras)."""
    site = _make_venv(path)
    linked: dict[str, str] = {}  # top-level entry of site-packages -> distribution that brought it
    for dist in requirement_closure():
        if canonicalize_name(dist.metadata["Name"]) == DIST:
            continue  # the project itself comes from the wheel, not from this (editable) install
        for f in dist.files or []:
            top = f.parts[0]
            if top in ("..", "__pycache__") or top.endswith(".pth") or top in linked:
                continue  # scripts live outside site-packages; .pth files would put other paths on sys.path
            src = Path(dist.locate_file(top))
            if src.exists():
                (site / top).symlink_to(src, target_is_directory=src.is_dir())
                linked[top] = dist.metadata["Name"]
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    return path
