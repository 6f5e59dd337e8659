"""Tiny release directories and a CLI runner for the publish / hub tests.

A release here is what a real one looks like, only small: config.json, a
safetensors file (a few KB, stored through LFS), a compliant card and NOTICE,
and a release.yaml. The CLI always runs in a subprocess because huggingface_hub
reads HF_ENDPOINT when it is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

NOTICE = "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms\n"

CARD = """---
license: gemma
base_model: google/gemma-2b
base_model_relation: finetune
library_name: transformers
pipeline_tag: text-generation
---
# {name}

A fine-tune of google/gemma-2b. We modified the weights by fine-tuning them.

Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms.
Use of this model is subject to the [Gemma Prohibited Use Policy](https://ai.google.dev/gemma/prohibited_use_policy),
which is incorporated into the terms; you must pass these use restrictions on to anyone you distribute it to.
A copy of the [Gemma Terms of Use](https://ai.google.dev/gemma/terms) accompanies this release.
{extra}"""

CONFIG = {
    "model_type": "gemma", "architectures": ["GemmaForCausalLM"], "hidden_size": 8, "intermediate_size": 16,
    "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4, "vocab_size": 32,
    "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 64,
}


def make_release(root: Path, repo: str, *, seed: int = 0, extra_card: str = "", shards: int = 1) -> Path:
    """Write a small compliant release into ``root`` (created) and return it."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    (root / "config.json").write_text(json.dumps(CONFIG, indent=2))
    for i in range(shards):
        name = "model.safetensors" if shards == 1 else f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({f"w{i}": rng.standard_normal((64, 16)).astype(np.float32)}, str(root / name))
    (root / "README.md").write_text(CARD.format(name=root.name, extra=extra_card))
    (root / "NOTICE").write_text(NOTICE)
    (root / "release.yaml").write_text(
        f"repo: {repo}\nbase_model: google/gemma-2b\nbase_model_relation: finetune\n"
        "files: ['*.safetensors', config.json, README.md, NOTICE]\n"
    )
    return root


def hub_env(endpoint: str, home: Path, token: str | None, **extra: str) -> dict[str, str]:
    """Environment for a client subprocess: our endpoint, classic LFS, private HF_HOME, given token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=endpoint, HF_HUB_DISABLE_XET="1", HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_ETAG_TIMEOUT="10", HF_HUB_DOWNLOAD_TIMEOUT="10", NO_COLOR="1", COLUMNS="200")
    if token is not None:
        env["HF_TOKEN"] = token
    env.update(extra)
    return env


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "release.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def run_py(code: str, env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
