"""Make the `diagnose` / `trace` fixtures with Hugging Face transformers, independently of gemma_ref.bugs.

Run once by a developer (needs torch and transformers); its output under tests/data/diagnose/ is committed.

    python tests/make_diagnose_fixtures.py

Each candidate is what a broken port would output, made by transformers itself from a tiny fixture
checkpoint, through one of:

* a config change (``hidden_activation: gelu``, ``final_logit_softcapping: null``, a huge window, ...);
* an exactly equivalent weight edit, saved to a copy of the checkpoint (gain ``w`` instead of ``1 + w`` is
  the same as storing ``w - 1``; ``layer_scalar`` or ``per_expert_scale`` stored as ones; a zero PLE gate);
* swapping a module or function of transformers' model for the buggy one (an Identity q/k/v norm, a
  different attention ``scaling``, an interleaved RoPE, an embedding scale of 1).

Written: ``{case}.{bug}.npz`` (``input_ids`` [N, T], ``logits`` [N, T, V]; ``none`` = transformers' own
logits) and ``{case}.hf_trace.safetensors`` (transformers' ``output_hidden_states`` for the first
prompt, named like ``gemma-release trace``'s ``hidden_states.{i}``).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "tests" / "data" / "models"
OUT = ROOT / "tests" / "data" / "diagnose"
N_PROMPTS, T = 2, 10  # longer than the fixtures' sliding window (4)
NORM = re.compile(r"norm(_\d)?\.weight$")  # every RMSNorm gain (layer norms, q/k norms, the final norm)


def prompts(seed: int = 17, vocab: int = 512) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([np.concatenate([[2], rng.integers(4, vocab, size=T - 1)]) for _ in range(N_PROMPTS)]).astype(np.int64)


# --- how each candidate is made ------------------------------------------------------------------


def cfg(**edit) -> dict:
    return {"config": edit}


def weights(fn: Callable[[str, torch.Tensor], torch.Tensor]) -> dict:
    return {"weights": fn}


def modules(fn: Callable[[torch.nn.Module], None]) -> dict:
    return {"modules": fn}


def shift_norms(by: float) -> dict:
    return weights(lambda k, t: t + by if NORM.search(k) else t)


def set_ones(suffix: str) -> dict:
    return weights(lambda k, t: torch.ones_like(t) if k.endswith(suffix) else t)


def zero(suffix: str) -> dict:
    return weights(lambda k, t: torch.zeros_like(t) if k.endswith(suffix) else t)


def embed_scale_one(m: torch.nn.Module) -> None:
    m.model.embed_tokens.embed_scale.fill_(1.0)


def attn_modules(m: torch.nn.Module):
    return [layer.self_attn for layer in m.model.layers]


def qk_norm_identity(m: torch.nn.Module) -> None:
    for a in attn_modules(m):
        a.q_norm, a.k_norm = torch.nn.Identity(), torch.nn.Identity()


def v_norm_identity(m: torch.nn.Module) -> None:
    for a in attn_modules(m):
        a.v_norm = torch.nn.Identity()


def scaling_head_dim(m: torch.nn.Module) -> None:
    for a in attn_modules(m):
        a.scaling = a.head_dim ** -0.5


@contextlib.contextmanager
def interleaved_rope(model_type: str):
    """transformers' apply_rotary_pos_emb swapped for a GPT-J-style one (pairs 2i, 2i+1 share a frequency)."""
    mod = sys.modules[type_module(model_type)]

    def rot(x):
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((-x2, x1), dim=-1).flatten(-2)

    def inter(c):
        return c[..., : c.shape[-1] // 2].repeat_interleave(2, dim=-1)  # the half-split table's angles, per pair

    orig = mod.apply_rotary_pos_emb
    if model_type == "gemma4_text":
        def apply(x, cos, sin, unsqueeze_dim=1):
            cos, sin = inter(cos).unsqueeze(unsqueeze_dim), inter(sin).unsqueeze(unsqueeze_dim)
            return x * cos + rot(x) * sin
    else:
        def apply(q, k, cos, sin, unsqueeze_dim=1):
            cos, sin = inter(cos).unsqueeze(unsqueeze_dim), inter(sin).unsqueeze(unsqueeze_dim)
            return q * cos + rot(q) * sin, k * cos + rot(k) * sin
    mod.apply_rotary_pos_emb = apply
    try:
        yield
    finally:
        mod.apply_rotary_pos_emb = orig


def type_module(model_type: str) -> str:
    name = {"gemma3_text": "gemma3", "gemma4_text": "gemma4"}.get(model_type, model_type)
    return f"transformers.models.{name}.modeling_{name}"


# case -> {bug id (or "a+b", or "none"): recipe}; recipes of a pair are applied together
CANDIDATES: dict[str, dict[str, list[dict]]] = {
    "gemma2_gqa_softcap": {
        "none": [],
        "norm_no_plus_one": [shift_norms(-1.0)],
        "norm_plus_one_twice": [shift_norms(+1.0)],
        "gelu_exact": [cfg(hidden_activation="gelu")],
        "embed_unscaled": [modules(embed_scale_one)],
        "rope_interleaved": [{"context": interleaved_rope}],
        "attn_softcap_missing": [cfg(attn_logit_softcapping=None)],
        "final_softcap_missing": [cfg(final_logit_softcapping=None)],
        "sliding_window_missing": [cfg(sliding_window=4096)],
        "query_scale_head_dim": [cfg(query_pre_attn_scalar=16)],
        "bos_missing": [{"drop_bos": True}],
        "attn_softcap_missing+query_scale_head_dim": [cfg(attn_logit_softcapping=None, query_pre_attn_scalar=16)],
        "norm_no_plus_one+gelu_exact": [shift_norms(-1.0), cfg(hidden_activation="gelu")],
    },
    "gemma3_1b_style": {
        "none": [],
        "qk_norm_missing": [modules(qk_norm_identity)],
        "local_rope_base_global": [cfg(rope_local_base_freq=1000000.0)],
        "gelu_exact": [cfg(hidden_activation="gelu")],
        "sliding_window_missing": [cfg(sliding_window=4096)],
    },
    "gemma3_rope_linear": {
        "rope_scaling_missing": [{"config_fn": lambda c: c["rope_parameters"]["full_attention"].update(
            rope_type="default", factor=None) or c["rope_parameters"]["full_attention"].pop("factor")}],
    },
    "gemma4_31b_style": {
        "none": [],
        "norm_plus_one_added": [shift_norms(+1.0)],
        "attn_scale_head_dim": [modules(scaling_head_dim)],
        "v_norm_missing": [modules(v_norm_identity)],
        "layer_scalar_missing": [set_ones("layer_scalar")],
        "final_softcap_missing": [cfg(final_logit_softcapping=None)],
        "rope_interleaved": [{"context": interleaved_rope}],
        "v_norm_missing+layer_scalar_missing": [modules(v_norm_identity), set_ones("layer_scalar")],
    },
    "gemma4_e2b_style": {
        "ple_missing": [zero("per_layer_input_gate.weight")],
    },
    "gemma4_26b_moe": {
        "per_expert_scale_missing": [set_ones("router.per_expert_scale")],
    },
}
TRACES = ("gemma2_gqa_softcap", "gemma3_1b_style", "gemma4_31b_style")


def prepared(case: str, recipe: list[dict], tmp: Path) -> Path:
    """A copy of the case's checkpoint with the recipe's config and weight edits, in float32."""
    src, dst = MODELS / case, tmp / case
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    c = json.loads((dst / "config.json").read_text())
    tensors = load_file(str(dst / "model.safetensors"))
    for r in recipe:
        c.update(r.get("config", {}))
        if "config_fn" in r:
            r["config_fn"](c)
        if "weights" in r:
            tensors = {k: r["weights"](k, t.float()) for k, t in tensors.items()}
    c.pop("torch_dtype", None)
    c["dtype"] = "float32"
    (dst / "config.json").write_text(json.dumps(c, indent=2))
    save_file({k: t.float().contiguous() for k, t in tensors.items()}, str(dst / "model.safetensors"),
              metadata={"format": "pt"})
    return dst


def run(case: str, recipe: list[dict], ids: np.ndarray, tmp: Path, hidden: bool = False):
    path = prepared(case, recipe, tmp)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    for r in recipe:
        if "modules" in r:
            r["modules"](model)
    drop_bos = any(r.get("drop_bos") for r in recipe)
    with contextlib.ExitStack() as stack:
        for r in recipe:
            if "context" in r:
                stack.enter_context(r["context"](model.config.model_type))
        outs, hs = [], None
        with torch.no_grad():
            for row in ids:
                def logits(x, **kw):
                    t = torch.tensor(x)[None]
                    return model(input_ids=t, attention_mask=torch.ones_like(t), **kw)
                if drop_bos:  # the engine ran the prompt without its BOS; its BOS-position row is a BOS-only run
                    out = torch.cat([logits(row[:1]).logits[0], logits(row[1:]).logits[0]]).numpy()
                else:
                    res = logits(row, output_hidden_states=hidden)
                    out = res.logits[0].numpy()
                    if hidden and hs is None:
                        hs = [h[0].numpy() for h in res.hidden_states]
                outs.append(out)
    return np.stack(outs).astype(np.float32), hs


def main() -> None:
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    ids = prompts()
    with tempfile.TemporaryDirectory() as tmp:
        for case, cands in CANDIDATES.items():
            for bug, recipe in cands.items():
                logits, _ = run(case, recipe, ids, Path(tmp))
                np.savez_compressed(OUT / f"{case}.{bug}.npz", input_ids=ids, logits=logits)
                print(f"{case}.{bug}: logits {list(logits.shape)}")
        for case in TRACES:
            _, hs = run(case, [], ids[:1], Path(tmp), hidden=True)
            tensors = {f"hidden_states.{i}": np.ascontiguousarray(h, dtype=np.float32) for i, h in enumerate(hs)}
            tensors["input_ids"] = ids[0]
            from safetensors.numpy import save_file as save_np
            save_np(tensors, str(OUT / f"{case}.hf_trace.safetensors"), metadata={
                "format": "gemma-release-trace", "producer": f"transformers {transformers.__version__}",
                "convention": "output_hidden_states (the last one after the final norm)"})
            print(f"{case}: {len(hs)} hidden states")


if __name__ == "__main__":
    main()
