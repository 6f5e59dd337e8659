"""The base install on a fresh machine: every module imports and every command runs with the declared
dependencies alone (no extras, nothing of the host's Python), exit 0 or 1 as expected, never 3.

The venv is :func:`venvs.declared_venv`: gemma-release from a wheel built from this tree, plus exactly the
distributions pyproject.toml's ``dependencies`` bring in (their own requirements included), linked from
the test environment. An import of something undeclared (scipy, torch, jinja2, ...) fails there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import typer

from conftest import DATA, GOLDENS, MODELS
from quant_fixtures import write_mlx_variant
from release_fixture import CARD, NOTICE
from venvs import build_wheel, clean_env, declared_venv, venv_python

ADAPTERS = DATA / "adapters"
CASE = "gemma2_gqa_softcap"

# Development extras and packages this machine may have: none of them is a base dependency.
NOT_DECLARED = ("pytest", "jinja2", "tokenizers", "hypothesis", "scipy", "torch", "transformers", "peft", "setuptools",
                "matplotlib")  # the optional `chart` extra: `variants chart` says how to install it (exit 2)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    wheel = build_wheel(tmp_path_factory.mktemp("wheel"))
    return declared_venv(tmp_path_factory.mktemp("declared") / "venv", wheel)


def _python(venv: Path, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv_python(venv)), *args], cwd=cwd, env=clean_env(NO_COLOR="1", HF_HUB_OFFLINE="1"),
                          capture_output=True, text=True, timeout=timeout)


def _cli(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    code = "import sys; from release.cli import main; sys.argv[0] = 'gemma-release'; main()"
    return _python(venv, "-c", code, *map(str, args), cwd=cwd)


def test_the_venv_holds_the_declared_dependencies_only(venv, tmp_path):
    code = ("import importlib.util, json, sys\n"
            f"print(json.dumps({{m: importlib.util.find_spec(m) is not None for m in {list(NOT_DECLARED)!r}}}))\n")
    p = _python(venv, "-c", code, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {m: False for m in NOT_DECLARED}
    p = _python(venv, "-c", "import release, numpy, yaml, typer, gguf; print(release.__file__)", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert str(venv) in p.stdout  # the wheel's copy, not the source tree


def test_every_module_imports_from_the_base_install(venv, tmp_path):
    code = ("import importlib, pkgutil, gemma_ref, release\n"
            "names = [m.name for pkg in (gemma_ref, release) for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.')]\n"
            "bad = []\n"
            "for n in names:\n"
            "    try:\n"
            "        importlib.import_module(n)\n"
            "    except Exception as e:\n"
            "        bad.append(f'{n}: {type(e).__name__}: {e}')\n"
            "print(len(names)); print('\\n'.join(bad))\n")
    p = _python(venv, "-c", code, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    count, *bad = p.stdout.strip().split("\n")
    root = MODELS.parents[2]
    in_tree = {".".join(f.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
               for d in ("gemma_ref", "release") for f in (root / d).rglob("*.py")} - {"gemma_ref", "release"}
    assert int(count) == len(in_tree) + 1  # and release.schemas (schemas/ in the tree)
    # The pytest plugin is loaded by pytest itself (entry point pytest11), so pytest is there whenever it is.
    assert [b for b in bad if b and not b.startswith("release.pytest_plugin: ModuleNotFoundError: No module named 'pytest'")] == []


def _commands(group, prefix: str = "") -> list[str]:
    out = []
    for name, cmd in group.commands.items():
        out += _commands(cmd, f"{prefix}{name} ") if hasattr(cmd, "commands") else [f"{prefix}{name}"]
    return out


def _invocations(w: Path) -> dict[str, tuple[list[str], int]]:
    """One run of every command on shipped fixtures: arguments and the exit code it must give."""
    model = w / "model"
    shutil.copytree(MODELS / CASE, model)
    shutil.copy(DATA / "tokenizers" / "gemma3.model", model / "tokenizer.model")
    release = w / "release"
    shutil.copytree(MODELS / CASE, release)
    (release / "README.md").write_text(CARD.format(name="tiny", extra=""))
    (release / "NOTICE").write_text(NOTICE)
    (release / "release.yaml").write_text("repo: me/tiny\nbase_model: google/gemma-2b\nbase_model_relation: finetune\n"
                                          "files: [config.json, model.safetensors, README.md, NOTICE]\n")
    (w / "card.md").write_text("---\nlicense: gemma\nbase_model: google/gemma-2b\n---\n# tiny\n\nA fine-tune of gemma.\n")
    (w / "notice").mkdir()
    shutil.copytree(MODELS / CASE, w / "init")
    diag = DATA / "diagnose" / f"{CASE}.gelu_exact.npz"
    golden = GOLDENS / f"{CASE}.safetensors"
    adapter = w / "adapter"
    shutil.copytree(ADAPTERS / "gemma2_lora_attn", adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(MODELS / CASE)
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    variants = w / "variants"  # a release with a quantized variant of its own weights (MLX 8-bit, written in NumPy)
    shutil.copytree(MODELS / CASE, variants)
    write_mlx_variant(MODELS / CASE, variants / "m-mlx-8bit", 8, 32)
    (variants / "release.yaml").write_text("repo: me/tiny\nfiles: [config.json, model.safetensors]\nvariants:\n"
                                           "  - {format: mlx, quant: 8bit-32g, repo: me/tiny-mlx, revision: main, local_dir: m-mlx-8bit}\n")
    return {
        "inspect": (["inspect", model], 0),
        # an image prompt on the shipped multimodal Gemma 3: Pillow (a declared dependency) reads the image
        "golden": (["golden", MODELS / "gemma3_vision", "-o", w / "g.golden", "--ids",
                    "2,17,509," + "511," * 9 + "510,41", "--image", DATA / "images" / "small_56x40.png"], 0),
        "verify": (["verify", model, "--golden", golden], 0),
        "diagnose": (["diagnose", model, "--candidate", diag], 1),  # names the bug: exit 1
        "trace": (["trace", model, "--ids", "2,17,300", "-o", w / "a.trace"], 0),
        "trace-diff": (["trace-diff", DATA / "diagnose" / f"{CASE}.hf_trace.safetensors",
                        DATA / "diagnose" / f"{CASE}.hf_trace.safetensors"], 0),
        "export": (["export", adapter, "--merge", "-o", w / "merged"], 0),
        "generate": (["generate", model, "Hello", "-n", "3"], 0),
        "tokenize": (["tokenize", model, "Hello world"], 0),
        "card check": (["card", "check", release], 0),
        "card fix": (["card", "fix", w / "card.md"], 0),
        "card rules": (["card", "rules"], 0),
        "notice": (["notice", w / "notice"], 0),
        "init": (["init", w / "init", "--repo", "me/tiny"], 0),
        "publish": (["publish", release, "--dry-run"], 0),
        "variants check": (["variants", "check", release], 0),
        "variants table": (["variants", "table", release], 0),
        "variants fidelity": (["variants", "fidelity", variants, "--ids", "2,17,300,41"], 0),
        "variants chart": (["variants", "chart", variants, "-o", w / "chart.png"], 2),  # no matplotlib in the base install
    }


def test_every_command_runs_from_the_base_install(venv, tmp_path):
    from release.cli import app

    runs = _invocations(tmp_path)
    assert sorted(runs) == sorted(_commands(typer.main.get_command(app)))  # a new command needs a run here
    failures = []
    for name, (args, want) in runs.items():
        p = _cli(venv, *args, cwd=tmp_path)
        if p.returncode != want or "Traceback" in p.stderr:
            failures.append(f"{name}: exit {p.returncode}, expected {want}\n{p.stdout[-1500:]}\n{p.stderr[-3000:]}")
    assert failures == [], "\n\n".join(failures)
