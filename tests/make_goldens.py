"""Make the tiny test checkpoints and their golden logits with Hugging Face transformers.

Run once by a developer (needs the `reference` extra: `pip install torch==2.13.0 transformers`);
its output under tests/data/ is committed, and CI compares against it without torch.

    python tests/make_goldens.py            # rewrite every case
    python tests/make_goldens.py gemma2_gqa_softcap

Each case is a transformers model built from a tiny config, given random weights
(norm weights random, not zero, so Gemma's +1 matters), saved with
``save_pretrained`` in the case's storage dtype, then *reloaded from disk* by
transformers in float32 with eager attention to compute the golden logits: the
goldens are what transformers makes of the files, independent of gemma_ref.
Some configs are then rewritten in the legacy or sparse forms real releases use
before the reload, so transformers' reading of those forms is what is pinned.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3Config,
    Gemma3ForCausalLM,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
    GemmaConfig,
    GemmaForCausalLM,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from release.weights.golden import Golden, make_prompt, write_golden  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
MODELS = DATA / "models"
GOLDENS = DATA / "goldens"
VOCAB = 512
PROMPT_LENGTHS = (16, 11, 1)  # longer than every sliding window; a lone BOS too


def prompts(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.concatenate([[2], rng.integers(4, VOCAB, size=n - 1)]).astype(np.int64) for n in PROMPT_LENGTHS]


def randomize(model: torch.nn.Module, seed: int, embed_std: float, proj_gain: float, norm_std: float = 0.4) -> None:
    """Random weights: projections ~ gain/sqrt(fan_in), embeddings ~ embed_std, norms ~ N(0, norm_std)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "vision" in name or "multi_modal" in name:
                p.normal_(0.0, 0.05, generator=g)
            elif name.endswith("norm.weight") or "layernorm" in name:
                p.normal_(0.0, norm_std, generator=g)
            elif "embed_tokens" in name:
                p.normal_(0.0, embed_std, generator=g)
            else:
                p.normal_(0.0, proj_gain / p.shape[-1] ** 0.5, generator=g)


def rewrite_config(model_dir: Path, edit) -> None:
    path = model_dir / "config.json"
    cfg = json.loads(path.read_text())
    cfg = edit(cfg)
    path.write_text(json.dumps(cfg, indent=2) + "\n")


def gemma3_linear_rope() -> dict:
    """Gemma 3 4b/12b/27b RoPE in the current form: global layers 1M base scaled x8, local layers 10k."""
    return {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}


# --- the cases ------------------------------------------------------------------------------------


def gemma1_mqa_bf16():
    """Gemma 1 (gemma-2b-like): multi-query attention, bf16 storage."""
    cfg = GemmaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=64)
    return GemmaForCausalLM(cfg), torch.bfloat16, dict(embed_std=1.0, proj_gain=1.0), None


def gemma1_mha_f32():
    """Gemma 1 (gemma-7b-like): MHA, fp32 storage, heads*head_dim (64) != hidden (48), legacy hidden_act 'gelu'."""
    cfg = GemmaConfig(vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, head_dim=16, max_position_embeddings=64)

    def legacy(c):
        c["hidden_act"] = "gelu"  # what the original gemma-7b config.json says; it means tanh GELU
        c.pop("hidden_activation", None)
        c["torch_dtype"] = c.pop("dtype", "float32")
        return c

    return GemmaForCausalLM(cfg), torch.float32, dict(embed_std=1.0, proj_gain=1.0), legacy


def gemma2_gqa_softcap():
    """Gemma 2: GQA 4:2, both soft-caps biting, sliding window 4 < prompt, query_pre_attn_scalar != head_dim."""
    cfg = Gemma2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24,
                       sliding_window=4, max_position_embeddings=64, attn_logit_softcapping=50.0,
                       final_logit_softcapping=30.0)
    # Large weights so attention scores and final logits exceed the caps (50 and 30) by a wide margin.
    return Gemma2ForCausalLM(cfg), torch.bfloat16, dict(embed_std=8.0, proj_gain=4.0), None


def gemma3_1b_style():
    """Gemma 3 text like gemma-3-1b: q/k norm, 5 local : 1 global, bases 10k / 1M, legacy config names."""
    cfg = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                           sliding_window=4, max_position_embeddings=64)

    def legacy(c):
        # gemma-3-1b's config.json as released: no layer_types, no rope_parameters.
        c.pop("layer_types", None)
        c.pop("rope_parameters", None)
        c["sliding_window_pattern"] = 6
        c["rope_theta"] = 1_000_000.0
        c["rope_local_base_freq"] = 10_000.0
        c["rope_scaling"] = None
        c["torch_dtype"] = c.pop("dtype", "bfloat16")
        return c

    return Gemma3ForCausalLM(cfg), torch.bfloat16, dict(embed_std=1.0, proj_gain=1.5), legacy


def gemma3_rope_linear():
    """Gemma 3 text with linear RoPE scaling (x8) on global layers, current rope_parameters form, fp32."""
    cfg = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=32,
                           sliding_window=4, max_position_embeddings=64,
                           layer_types=["sliding_attention", "full_attention"],
                           rope_parameters=gemma3_linear_rope())
    return Gemma3ForCausalLM(cfg), torch.float32, dict(embed_std=1.0, proj_gain=2.0), None


def gemma3_nested():
    """Gemma 3 multimodal (4b-style): text weights under the nested prefix, sparse text_config, vision tower."""
    text = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=6,
                            rope_parameters=gemma3_linear_rope())
    vision = dict(model_type="siglip_vision_model", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, image_size=28, patch_size=14)
    cfg = Gemma3Config(text_config=text.to_dict(), vision_config=vision, mm_tokens_per_image=4,
                       boi_token_index=VOCAB - 3, eoi_token_index=VOCAB - 2, image_token_index=VOCAB - 1)

    def sparse(c):
        # Like google/gemma-3-4b-it's config.json: text_config lists only what differs from the defaults.
        keep = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "vocab_size", "sliding_window", "model_type")
        c["text_config"] = {k: c["text_config"][k] for k in keep}
        c["text_config"]["rope_scaling"] = {"factor": 8.0, "rope_type": "linear"}
        c["torch_dtype"] = c.pop("dtype", "bfloat16")
        return c

    return Gemma3ForConditionalGeneration(cfg), torch.bfloat16, dict(embed_std=1.0, proj_gain=1.5), sparse


CASES = {f.__name__: f for f in (gemma1_mqa_bf16, gemma1_mha_f32, gemma2_gqa_softcap, gemma3_1b_style,
                                   gemma3_rope_linear, gemma3_nested)}


def make(name: str, seed: int) -> None:
    model, dtype, init, edit = CASES[name]()
    randomize(model, seed, **init)
    out = MODELS / name
    shutil.rmtree(out, ignore_errors=True)
    model.to(dtype).save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)
    if edit:
        rewrite_config(out, edit)

    # Golden: transformers reloads the saved files in float32 with eager attention.
    cls = Gemma3ForConditionalGeneration if name == "gemma3_nested" else AutoModelForCausalLM
    ref = cls.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    golden_prompts = []
    with torch.no_grad():
        for i, ids in enumerate(prompts(seed)):
            t = torch.tensor(ids)[None]
            logits = ref(input_ids=t, attention_mask=torch.ones_like(t)).logits[0].numpy()
            golden_prompts.append(make_prompt(f"ids-{i}", ids, logits, "full"))
    golden = Golden(prompts=golden_prompts, vocab_size=VOCAB, producer="transformers",
                    producer_version=f"{transformers.__version__} (torch {torch.__version__})",
                    storage="full", model=f"tests/data/models/{name}", model_type=ref.config.model_type,
                    extra={"created": "generated by tests/make_goldens.py", "case": name, "seed": str(seed)})
    GOLDENS.mkdir(parents=True, exist_ok=True)
    write_golden(golden, GOLDENS / f"{name}.safetensors")
    # A top-k copy of one case, to pin the top-k storage path against transformers too.
    if name == "gemma2_gqa_softcap":
        topk = Golden(prompts=[make_prompt(p.name, p.ids, p.logits, "topk", topk=8) for p in golden_prompts],
                      vocab_size=VOCAB, producer=golden.producer, producer_version=golden.producer_version,
                      storage="topk", model=golden.model, model_type=golden.model_type, extra=golden.extra)
        write_golden(topk, GOLDENS / f"{name}.topk.safetensors")
    size = sum(f.stat().st_size for f in out.iterdir())
    mags = max(float(np.abs(p.logits).max()) for p in golden_prompts)
    print(f"{name}: {size / 1024:.0f} KiB of model files, max |logit| {mags:.1f}")


def main(argv: list[str]) -> None:
    torch.manual_seed(0)
    names = argv or list(CASES)
    for name in names:
        if name not in CASES:
            raise SystemExit(f"unknown case {name!r}; known: {', '.join(CASES)}")
        make(name, seed=list(CASES).index(name) + 1)


if __name__ == "__main__":
    main(sys.argv[1:])
