"""Make the tiny Gemma 4 test checkpoints and their golden logits with Hugging Face transformers.

The Gemma 4 sibling of tests/make_goldens.py (same VOCAB, same prompt scheme, same golden
format). Run once by a developer (needs torch==2.13.0 and transformers==5.24.*); its output
under tests/data/ is committed, and CI compares against it without torch.

    python tests/make_goldens_gemma4.py             # rewrite every Gemma 4 case
    python tests/make_goldens_gemma4.py gemma4_26b_moe

Each case is a transformers model built from a tiny config and given random weights chosen
so that every Gemma 4 quirk shows in the logits (GEMMA4.md §3.11, §4):

* embedding std 0.3 (PLE table 0.5), so logits reach ~10 (soft-cap 30 still bends them) and float32 noise stays small;
* post-branch norm weights N(0.4, 0.08), the others N(1, 0.2) (not ones: Gemma 4 multiplies by w, not 1 + w);
* q_norm / k_norm weights ~ head_dim**-0.25 * N(1, 0.1): with attention scale 1.0 this keeps
  scores at a sane size; with the small post-branch norms, the float32 noise floor stays near 1e-5
  (random deep nets amplify rounding ~1.5x per layer otherwise);
* ``layer_scalar`` ~ U(0.3, 0.9) (fresh models have 1.0, which hides a dropped scalar);
* router scales and ``per_expert_scale`` random.

The model is saved with ``save_pretrained`` in the case's storage dtype, the config is
rewritten where a real release writes another form, extra tensors real files carry are
added, and then transformers *reloads it from disk* in float32 with eager attention (and
eager experts) to compute the goldens.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import (
    Gemma4Config,
    Gemma4ForCausalLM,
    Gemma4ForConditionalGeneration,
    Gemma4TextConfig,
)
from transformers.models.gemma4.configuration_gemma4 import Gemma4AudioConfig, Gemma4VisionConfig
from transformers.models.gemma4_unified.configuration_gemma4_unified import (
    Gemma4UnifiedConfig,
    Gemma4UnifiedTextConfig,
)
from transformers.models.gemma4_unified.modeling_gemma4_unified import Gemma4UnifiedForConditionalGeneration

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
try:
    from release.weights.golden import Golden, make_prompt, write_golden  # noqa: E402
except ImportError:
    from release.golden import Golden, make_prompt, write_golden  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
MODELS = DATA / "models"
GOLDENS = DATA / "goldens"
VOCAB = 512
PROMPT_LENGTHS = (16, 11, 1)  # longer than every sliding window (4); a lone BOS too
SLIDING, FULL = "sliding_attention", "full_attention"

COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_attention_heads=4, head_dim=16,
              sliding_window=4, max_position_embeddings=128, final_logit_softcapping=30.0,
              vocab_size_per_layer_input=VOCAB)


def prompts(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.concatenate([[2], rng.integers(4, VOCAB, size=n - 1)]).astype(np.int64) for n in PROMPT_LENGTHS]


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Random weights that make every Gemma 4 quirk visible (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "language_model" not in name and not name.startswith(("model.layers", "model.embed", "model.norm",
                                                                     "model.per_layer")):
                p.normal_(0.0, 0.05, generator=g)  # vision / audio towers: never read by the text model
            elif name.endswith(("q_norm.weight", "k_norm.weight")):
                p.normal_(1.0, 0.1, generator=g).mul_(p.shape[-1] ** -0.25)
            elif ".post_" in name and name.endswith("norm.weight"):
                p.normal_(0.4, 0.08, generator=g)  # branch outputs small next to the residual: less chaotic
            elif name.endswith("norm.weight") or "layernorm" in name:
                p.normal_(1.0, 0.2, generator=g)
            elif name.endswith("router.scale"):
                p.uniform_(0.5, 1.5, generator=g)
            elif name.endswith("per_expert_scale"):
                p.uniform_(0.3, 2.0, generator=g)
            elif name.endswith("embed_tokens.weight"):
                p.normal_(0.0, 0.3, generator=g)  # tied head: logits up to ~10, so float32 noise stays ~1e-5
            elif name.endswith("embed_tokens_per_layer.weight"):
                p.normal_(0.0, 0.5, generator=g)
            elif p.ndim == 3:  # packed experts [E, out, in]
                p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5, generator=g)
            else:
                p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5, generator=g)
        for name, b in model.named_buffers():
            if name.endswith("layer_scalar"):
                b.uniform_(0.3, 0.9, generator=g)


def rewrite_config(model_dir: Path, edit) -> None:
    path = model_dir / "config.json"
    cfg = json.loads(path.read_text())
    cfg = edit(cfg)
    path.write_text(json.dumps(cfg, indent=2) + "\n")


def release_form(text: dict, global_head_dim: int, num_global_kv: int | None) -> dict:
    """A text_config as the real releases wrote it (transformers 5.5 era): global_head_dim, no per_layer_config."""
    text.pop("per_layer_config", None)
    text["global_head_dim"] = global_head_dim
    text["num_global_key_value_heads"] = num_global_kv
    return text


# --- the cases ------------------------------------------------------------------------------------


def gemma4_e2b_style():
    """E2B-like: nested gemma4 config with vision + audio towers, PLE, KV sharing with the leftover
    k_proj/v_proj/k_norm tensors on disk, double-wide MLP on shared layers, explicit 4:1 layer_types, bf16."""
    layer_types = [SLIDING, SLIDING, SLIDING, SLIDING, FULL] * 2  # 4:1, only via layer_types
    text = Gemma4TextConfig(**COMMON, num_hidden_layers=10, num_key_value_heads=1, layer_types=layer_types,
                            global_head_dim=32, hidden_size_per_layer_input=8, num_kv_shared_layers=4,
                            use_double_wide_mlp=True)
    vision = Gemma4VisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                num_key_value_heads=2, head_dim=8, patch_size=4, position_embedding_size=64)
    audio = Gemma4AudioConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                              subsampling_conv_channels=[4, 4], output_proj_dims=16)
    cfg = Gemma4Config(text_config=text, vision_config=vision, audio_config=audio,
                       boi_token_id=VOCAB - 6, eoi_token_id=VOCAB - 5, image_token_id=VOCAB - 4,
                       video_token_id=VOCAB - 3, boa_token_id=VOCAB - 2, eoa_token_index=VOCAB - 1,
                       audio_token_id=VOCAB - 1)

    def edit(c):
        c["text_config"] = release_form(c["text_config"], 32, None)
        c["eos_token_id"] = [1, 106]
        return c

    def extra(tensors, rng):
        # Real E2B files keep k_proj / v_proj / k_norm for the KV-shared layers (6..9 here); HF ignores them.
        t = {}
        for i in range(6, 10):
            hd = 32 if layer_types[i] == FULL else 16
            p = f"model.language_model.layers.{i}.self_attn."
            t[p + "k_proj.weight"] = torch.randn(hd, 64, generator=rng) * 0.5
            t[p + "v_proj.weight"] = torch.randn(hd, 64, generator=rng) * 0.5
            t[p + "k_norm.weight"] = torch.randn(hd, generator=rng) + 3.0
        return t

    return Gemma4ForConditionalGeneration(cfg), torch.bfloat16, edit, extra, Gemma4ForConditionalGeneration


def gemma4_e4b_style():
    """E4B-like: flat gemma4_text, text only, PLE, KV sharing (no leftover tensors), GQA 4:2, float32."""
    layer_types = [SLIDING] * 5 + [FULL, SLIDING, FULL]
    cfg = Gemma4TextConfig(**COMMON, num_hidden_layers=8, num_key_value_heads=2, layer_types=layer_types,
                           global_head_dim=32, hidden_size_per_layer_input=8, num_kv_shared_layers=2)

    def edit(c):
        return release_form(c, 32, None)

    return Gemma4ForCausalLM(cfg), torch.float32, edit, None, Gemma4ForCausalLM


def gemma4_31b_style():
    """31B-like: K=V on full layers (no v_proj), 1 global KV head vs 2 local, proportional RoPE,
    global_head_dim 32 != head_dim 16, no PLE; layer_types left to the default rule (last layer forced full)."""
    cfg = Gemma4TextConfig(**{**COMMON, "intermediate_size": 128}, num_hidden_layers=8, num_key_value_heads=2,
                           global_head_dim=32, num_global_key_value_heads=1, attention_k_eq_v=True,
                           hidden_size_per_layer_input=0)

    def edit(c):
        c = release_form(c, 32, 1)
        c.pop("layer_types")  # layers 5 and 7 (forced) are full
        return c

    return Gemma4ForCausalLM(cfg), torch.bfloat16, edit, None, Gemma4ForCausalLM


def gemma4_26b_moe():
    """26B-A4B-like: dense MLP + 8 experts top-2 with the three extra norms, K=V full layers, bf16."""
    cfg = Gemma4TextConfig(**COMMON, num_hidden_layers=6, num_key_value_heads=2, global_head_dim=32,
                           num_global_key_value_heads=1, attention_k_eq_v=True, hidden_size_per_layer_input=0,
                           enable_moe_block=True, num_experts=8, top_k_experts=2, moe_intermediate_size=32)

    def edit(c):
        return release_form(c, 32, 1)

    return Gemma4ForCausalLM(cfg), torch.bfloat16, edit, None, Gemma4ForCausalLM


def gemma4_per_layer_config():
    """The config exactly as transformers 5.24's save_pretrained writes it: per_layer_config, no global_head_dim;
    global head_dim 48 and 1 global KV head (K=V), PLE, float32."""
    cfg = Gemma4TextConfig(**COMMON, num_hidden_layers=7, num_key_value_heads=2, global_head_dim=48,
                           num_global_key_value_heads=1, attention_k_eq_v=True, hidden_size_per_layer_input=8,
                           layer_types=[SLIDING, SLIDING, FULL, SLIDING, SLIDING, SLIDING, FULL])
    return Gemma4ForCausalLM(cfg), torch.float32, None, None, Gemma4ForCausalLM


def gemma4_unified():
    """gemma4_unified (the 12B's class): no PLE / MoE fields at all, K=V with 1 global KV head, encoder-free
    vision and audio embedders, bf16."""
    text = Gemma4UnifiedTextConfig(**{k: v for k, v in COMMON.items() if k != "vocab_size_per_layer_input"},
                                   num_hidden_layers=6, num_key_value_heads=2, global_head_dim=32,
                                   num_global_key_value_heads=1, attention_k_eq_v=True)
    cfg = Gemma4UnifiedConfig(text_config=text, vision_config={"mm_embed_dim": 16, "mm_posemb_size": 8,
                                                               "output_proj_dims": 64, "patch_size": 4},
                              audio_config={"audio_embed_dim": 16},
                              boi_token_id=VOCAB - 6, eoi_token_id=VOCAB - 5, image_token_id=VOCAB - 4,
                              video_token_id=VOCAB - 3, boa_token_id=VOCAB - 2, audio_token_id=VOCAB - 1)

    def edit(c):
        c["text_config"] = release_form(c["text_config"], 32, 1)
        return c

    return (Gemma4UnifiedForConditionalGeneration(cfg), torch.bfloat16, edit, None,
            Gemma4UnifiedForConditionalGeneration)


CASES = {f.__name__: f for f in (gemma4_e2b_style, gemma4_e4b_style, gemma4_31b_style, gemma4_26b_moe,
                                   gemma4_per_layer_config, gemma4_unified)}


def make(name: str, seed: int) -> None:
    model, dtype, edit, extra, cls = CASES[name]()
    randomize(model, seed)
    out = MODELS / name
    shutil.rmtree(out, ignore_errors=True)
    model.to(dtype).save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)
    if edit:
        rewrite_config(out, edit)
    if extra:
        path = out / "model.safetensors"
        tensors = load_file(str(path))
        rng = torch.Generator().manual_seed(seed + 1000)
        tensors.update({k: v.to(dtype) for k, v in extra(tensors, rng).items()})
        save_file(tensors, str(path), metadata={"format": "pt"})

    # Golden: transformers reloads the saved files in float32, eager attention, eager experts.
    kw = dict(dtype=torch.float32, attn_implementation="eager")
    if name == "gemma4_26b_moe":
        kw["experts_implementation"] = "eager"
    ref = cls.from_pretrained(out, **kw).eval()
    golden_prompts = []
    with torch.no_grad():
        for i, ids in enumerate(prompts(seed)):
            t = torch.tensor(ids)[None]
            logits = ref(input_ids=t, attention_mask=torch.ones_like(t)).logits[0].numpy()
            golden_prompts.append(make_prompt(f"ids-{i}", ids, logits, "full"))
    golden = Golden(prompts=golden_prompts, vocab_size=VOCAB, producer="transformers",
                    producer_version=f"{transformers.__version__} (torch {torch.__version__})",
                    storage="full", model=f"tests/data/models/{name}", model_type=ref.config.model_type,
                    extra={"created": "generated by tests/make_goldens_gemma4.py", "case": name, "seed": str(seed)})
    GOLDENS.mkdir(parents=True, exist_ok=True)
    write_golden(golden, GOLDENS / f"{name}.safetensors")
    size = sum(f.stat().st_size for f in out.iterdir())
    mags = max(float(np.abs(p.logits).max()) for p in golden_prompts)
    print(f"{name}: {size / 1024:.0f} KiB of model files, max |logit| {mags:.1f}")


def main(argv: list[str]) -> None:
    torch.manual_seed(0)
    names = argv or list(CASES)
    for name in names:
        if name not in CASES:
            raise SystemExit(f"unknown case {name!r}; known: {', '.join(CASES)}")
        make(name, seed=101 + list(CASES).index(name))


if __name__ == "__main__":
    main(sys.argv[1:])
