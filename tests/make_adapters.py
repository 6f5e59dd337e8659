"""Make tiny LoRA adapters with PEFT on the tiny test checkpoints, and their golden logits.

Run once by a developer (needs the `reference` extra: torch, transformers, peft); the output under
tests/data/adapters/ is committed, and CI compares gemma_ref against it without torch.

    python tests/make_adapters.py            # rewrite every case
    python tests/make_adapters.py gemma2_lora_attn

Each case wraps a base from tests/data/models/ with ``peft.get_peft_model``, gives the adapter random
weights (PEFT starts lora_B at zero, which would make every adapter a no-op; DoRA magnitudes and
saved embedding tables are perturbed too), saves it with ``save_pretrained`` (safetensors), then
*reloads* a fresh float32 eager base plus the saved adapter with ``PeftModel.from_pretrained`` to
compute the golden logits: what transformers + PEFT make of the files, independent of gemma_ref.
``base_model_name_or_path`` is rewritten relative to the adapter directory, so the base is found
without ``--base``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import peft
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from release.weights.backends import load_transformers_model
from release.weights.golden import Golden, GoldenPrompt, write_golden

DATA = Path(__file__).resolve().parent / "data"
MODELS = DATA / "models"
ADAPTERS = DATA / "adapters"
GOLDENS = ADAPTERS / "goldens"
VOCAB = 512
PROMPT_LENGTHS = (16, 11, 1)

CASES: dict[str, tuple[str, dict]] = {
    # plain LoRA on attention only, some layers only
    "gemma2_lora_attn": ("gemma2_gqa_softcap", dict(
        r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], layers_to_transform=[0, 2, 3])),
    # every linear layer, rsLoRA, a rank pattern and an alpha pattern
    "gemma3_all_linear_rslora": ("gemma3_1b_style", dict(
        r=8, lora_alpha=16, target_modules="all-linear", use_rslora=True,
        rank_pattern={"down_proj": 2, "layers.1.self_attn.q_proj": 6}, alpha_pattern={"o_proj": 3})),
    # a trained input embedding (modules_to_save), tied output head kept (PEFT's default)
    "gemma2_modules_to_save": ("gemma2_gqa_softcap", dict(
        r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"], modules_to_save=["embed_tokens"])),
    # DoRA
    "gemma3_dora": ("gemma3_1b_style", dict(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], use_dora=True)),
    # a multimodal (nested) Gemma 3, a regex target that leaves the vision tower alone, lora_bias
    "gemma3_nested_regex_bias": ("gemma3_nested", dict(
        r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|up_proj)", lora_bias=True)),
    # Gemma 4 E2B-style (per-layer embeddings, KV sharing): every linear layer, PLE projections included;
    # a gentler scale: at alpha 8 float32 itself (torch or NumPy) is 3-5e-4 away from float64 here
    "gemma4_e2b_all_linear": ("gemma4_e2b_style", dict(r=4, lora_alpha=2, target_modules="all-linear")),
    # Gemma 3n (nested release layout, run as transformers' text model): every linear layer, so AltUp's router,
    # prediction / correction coefficients and stream projections, LAuReL and the PLE projections too
    "gemma3n_all_linear": ("gemma3n_nested", dict(r=4, lora_alpha=2, target_modules="all-linear")),
}


def prompts(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.concatenate([[2], rng.integers(4, VOCAB, size=n - 1)]).astype(np.int64) for n in PROMPT_LENGTHS]


def load_base(name: str) -> torch.nn.Module:
    return load_transformers_model(MODELS / name)  # as the golden backend loads it (Gemma 3n: the text model)


def randomize(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "lora_A" in name:  # zero in PEFT's init
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            elif "lora_magnitude_vector" in name:  # starts at ||W||_row: make it differ
                p.mul_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif "modules_to_save" in name:  # a copy of the base's table: make it differ
                p.add_(torch.randn(p.shape, generator=g) * 0.5)


def make(case: str, seed: int) -> None:
    base_name, options = CASES[case]
    out = ADAPTERS / case
    shutil.rmtree(out, ignore_errors=True)
    model = get_peft_model(load_base(base_name), LoraConfig(lora_dropout=0.0, **options))
    randomize(model, seed)
    model.save_pretrained(out)  # safetensors
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = os.path.relpath(MODELS / base_name, out)
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (out / "README.md").unlink(missing_ok=True)

    ref = PeftModel.from_pretrained(load_base(base_name), out).eval()  # reloaded from disk
    golden_prompts = []
    with torch.no_grad():
        for n, ids in enumerate(prompts(seed)):
            t = torch.tensor(ids)[None, :]
            logits = ref(input_ids=t, attention_mask=torch.ones_like(t)).logits[0].float().numpy()
            golden_prompts.append(GoldenPrompt(f"p{n}", ids, logits=logits.astype(np.float32)))
    golden = Golden(prompts=golden_prompts, vocab_size=VOCAB, producer="transformers",
                    producer_version=f"{transformers.__version__} (torch {torch.__version__}, peft {peft.__version__})",
                    storage="full", model=f"tests/data/adapters/{case}", model_type=ref.config.model_type,
                    extra={"created": "generated by tests/make_adapters.py", "case": case, "seed": str(seed),
                           "base": f"tests/data/models/{base_name}"})
    GOLDENS.mkdir(parents=True, exist_ok=True)
    write_golden(golden, GOLDENS / f"{case}.safetensors")
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"{case}: {size / 1024:.0f} KiB of adapter files")


def main(argv: list[str]) -> None:
    names = argv or list(CASES)
    for name in names:
        make(name, seed=1000 + list(CASES).index(name))


if __name__ == "__main__":
    main(sys.argv[1:])
