"""Shared fixtures: the tiny checkpoints, their goldens, and an in-process CLI runner."""

from __future__ import annotations

import os

# Offline, before anything imports huggingface_hub (it reads this once): bitsandbytes and transformers
# otherwise look up optional kernels on the Hub (DNS and HTTPS) at import or first use. The Hub tests run
# their clients in subprocesses against the loopback server, with an environment of their own (hub_env).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes  # noqa: F401  (lets safetensors.numpy read bfloat16)
import pytest
from safetensors.numpy import load_file

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
MODELS = DATA / "models"
GOLDENS = DATA / "goldens"
CASES = sorted(p.name for p in MODELS.iterdir() if (p / "config.json").is_file()) if MODELS.is_dir() else []


def golden_arrays(case: str, suffix: str = "") -> dict:
    """The golden file's tensors read straight with safetensors (not through release.golden)."""
    return load_file(str(GOLDENS / f"{case}{suffix}.safetensors"))


def golden_prompts(case: str) -> list[tuple]:
    """[(ids, logits)] per text-only prompt of a full-storage golden.

    Prompts with images (token_types.{i} recorded; tests/make_goldens_vision.py) are left out: their logits
    need the images too (tests/test_vision.py, tests/test_vision_goldens.py run them).
    """
    t = golden_arrays(case)
    n = sum(1 for k in t if k.startswith("ids."))
    return [(t[f"ids.{i}"], t[f"logits.{i}"]) for i in range(n) if f"token_types.{i}" not in t]


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `gemma-release ARGS...` in-process through the real entry point; returns code, stdout, stderr."""
    from release.cli import main

    def run(*args: str) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["gemma-release", *map(str, args)])
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main()
        captured = capsys.readouterr()
        code = exc.value.code if isinstance(exc.value.code, int) else (0 if exc.value.code is None else 1)
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def model_copy(tmp_path):
    """Copy a tiny model directory into tmp_path so a test may damage it."""

    def copy(case: str) -> Path:
        dst = tmp_path / case
        shutil.copytree(MODELS / case, dst)
        return dst

    return copy
