"""A non-editable install finds its schemas: build the wheel, import from it alone, run the CLI from it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from venvs import build_wheel

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory):
    whl = build_wheel(tmp_path_factory.mktemp("wheel"))  # offline, with the test environment's setuptools
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        z.extractall(site)
    return whl, site, names


def test_wheel_ships_packages_schemas_and_entry_point(wheel_dir):
    whl, site, names = wheel_dir
    for schema in (ROOT / "schemas").glob("*.json"):
        assert f"release/schemas/{schema.name}" in names
    assert any(n.startswith("gemma_ref/model.py") for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "gemma-release = release.cli:main" in (site / entry).read_text()
    assert not any(n.startswith("tests/") for n in names)


def test_installed_wheel_runs_without_the_source_tree(wheel_dir, tmp_path):
    _, site, _ = wheel_dir
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = (
        "import release, gemma_ref, sys\n"
        f"assert release.__file__.startswith({str(site)!r}), release.__file__\n"
        "from release.resources import schema_path, load_schema\n"
        f"assert str(schema_path('golden.schema.json')).startswith({str(site)!r})\n"
        "assert load_schema('golden.schema.json')['title']\n"
        "from release.cli import main\n"
        "sys.argv = ['gemma-release', 'verify', sys.argv[1], '--golden', sys.argv[2]]\n"
        "main()\n"
    )
    case = "gemma2_gqa_softcap"
    p = subprocess.run([sys.executable, "-c", code, str(ROOT / "tests/data/models" / case),
                        str(ROOT / "tests/data/goldens" / f"{case}.safetensors")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "PASS" in p.stdout
