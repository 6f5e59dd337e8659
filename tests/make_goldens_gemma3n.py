"""Make the tiny Gemma 3n and VaultGemma test checkpoints and their golden logits with transformers.

The sibling of tests/make_goldens.py and make_goldens_gemma4.py (same VOCAB, prompt scheme and
golden format). Run once by a developer (needs torch==2.13.0 and transformers==5.24.*); its output
under tests/data/ is committed, and CI compares against it without torch.

    python tests/make_goldens_gemma3n.py                # rewrite every case
    python tests/make_goldens_gemma3n.py vaultgemma_layer_types

Cases (GEMMA4.md §5, §6):

* ``gemma3n_nested``: a Gemma 3n text model in the released multimodal layout. Building
  ``Gemma3nForConditionalGeneration`` needs ``timm`` (its vision tower), which the venv does not
  have, so the text model is built as ``Gemma3nForCausalLM``, saved, and then *rewritten* into the
  release layout: weights renamed ``model.`` -> ``model.language_model.``, small fake tower tensors
  (``model.vision_tower.*``, ``model.audio_tower.*``, ``model.embed_vision.*``, ``model.embed_audio.*``)
  added, and a nested ``gemma3n`` config.json whose ``text_config`` is written as the releases write
  it (legacy ``rope_theta`` / ``rope_local_base_freq``, a per-layer ``intermediate_size`` list).
  transformers then reloads *that* directory (its 5.24 conversion mapping strips ``language_model``
  for gemma3n_text) in float32, eager, for the goldens. The PLE table has fewer rows (480) than the
  vocabulary (512) and the prompts hold ids past it; sparsity is on three of the eight layers, the
  last three layers share K/V.
* ``vaultgemma_layer_types``: VaultGemma with ``layer_types`` unlike Gemma 2's alternation and a
  sliding window (4) shorter than the prompt (16); both soft-caps bite.

Weights are random but chosen so each quirk shows (see GEMMA4.md §3.11): gain-w norms around 1,
post-branch norms ~0.4, q/k norms ~ head_dim**-0.25, AltUp's router strong enough that its tanh is
not linear (its input is scaled by 1/D), ``correct_output_scale`` away from its zero init.
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
from transformers import Gemma3nForCausalLM, Gemma3nTextConfig, VaultGemmaConfig, VaultGemmaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from release.weights.golden import Golden, make_prompt, write_golden  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
MODELS = DATA / "models"
GOLDENS = DATA / "goldens"
VOCAB = 512
PLE_VOCAB = 480  # < VOCAB, like 262144 < 262400: ids 480..511 read PLE row 0
PROMPT_LENGTHS = (16, 11, 1)  # longer than the sliding window (4); a lone BOS too
SLIDING, FULL = "sliding_attention", "full_attention"


def prompts(seed: int, past_ple: bool) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = [np.concatenate([[2], rng.integers(4, VOCAB, size=n - 1)]).astype(np.int64) for n in PROMPT_LENGTHS]
    if past_ple:  # make sure ids past the PLE table occur (the multimodal soft-token ids of a real 3n)
        out[0][[3, 9]] = [VOCAB - 1, PLE_VOCAB]
        out[1][5] = PLE_VOCAB + 7
    return out


def randomize_gemma3n(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                p.normal_(1.0, 0.1, generator=g).mul_(p.shape[-1] ** -0.25)
            elif ".post_" in name and name.endswith("norm.weight"):
                p.normal_(0.4, 0.08, generator=g)  # branch outputs small next to the residual
            elif name.endswith("norm.weight") or "layernorm" in name:
                p.normal_(1.0, 0.2, generator=g)  # gain w (no +1): ones-ish, not zeros
            elif name.endswith("altup.correct_output_scale"):
                p.uniform_(0.5, 1.5, generator=g)  # zeros when fresh: would hide the PLE gate entirely
            elif name.endswith("altup.modality_router.weight"):
                p.normal_(0.0, 4.0, generator=g)  # input is norm(x) / D: big weights so tanh(.) ~ 0.5
            elif name.endswith("altup.prediction_coefs.weight"):
                p.normal_(0.0, 0.3, generator=g)
            elif name.endswith("altup.correction_coefs.weight"):
                p.normal_(0.0, 0.3, generator=g)
            elif name.endswith("embed_tokens.weight"):
                p.normal_(0.0, 0.3, generator=g)
            elif name.endswith("embed_tokens_per_layer.weight"):
                p.normal_(0.0, 0.5, generator=g)
            else:
                p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5, generator=g)


def randomize_gemma2_style(model: torch.nn.Module, seed: int, embed_std: float, proj_gain: float) -> None:
    """(1 + w) norms ~ N(0, 0.4); large weights so both soft-caps bite (as make_goldens.py's Gemma 2 case)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.normal_(0.0, 0.4, generator=g)
            elif "embed_tokens" in name:
                p.normal_(0.0, embed_std, generator=g)
            else:
                p.normal_(0.0, proj_gain / p.shape[-1] ** 0.5, generator=g)


# --- Gemma 3n, rewritten into the release layout ---------------------------------------------------


GEMMA3N_LAYERS = [SLIDING, SLIDING, SLIDING, FULL, SLIDING, SLIDING, SLIDING, FULL]


def gemma3n_text_config() -> Gemma3nTextConfig:
    return Gemma3nTextConfig(
        vocab_size=VOCAB, vocab_size_per_layer_input=PLE_VOCAB, hidden_size=64,
        intermediate_size=[96, 128, 96, 64, 96, 96, 128, 96], num_hidden_layers=8, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, layer_types=GEMMA3N_LAYERS, sliding_window=4,
        max_position_embeddings=128, num_kv_shared_layers=3, hidden_size_per_layer_input=8, laurel_rank=8,
        altup_num_inputs=4, activation_sparsity_pattern=[0.95, 0.9, 0.0, 0.7, 0.0, 0.0, 0.0, 0.0],
        rope_parameters={FULL: {"rope_type": "default", "rope_theta": 1e6},
                         SLIDING: {"rope_type": "default", "rope_theta": 1e4}},
        final_logit_softcapping=30.0)


def nested_config(text: dict) -> dict:
    """A gemma3n config.json as the releases write it: text_config with the legacy rope keys."""
    rope = text.pop("rope_parameters")
    text["rope_theta"] = rope[FULL]["rope_theta"]
    text["rope_local_base_freq"] = rope[SLIDING]["rope_theta"]
    text["rope_scaling"] = None
    text["model_type"] = "gemma3n_text"
    for k in ("architectures", "transformers_version", "dtype", "torch_dtype", "output_hidden_states",
              "return_dict", "use_cache", "tie_word_embeddings"):
        text.pop(k, None)
    return {
        "architectures": ["Gemma3nForConditionalGeneration"],
        "model_type": "gemma3n",
        "text_config": text,
        "vision_config": {"model_type": "gemma3n_vision", "architecture": "mobilenetv5_300m_enc", "hidden_size": 16,
                          "vocab_offset": VOCAB - 32, "vocab_size": 16},
        "audio_config": {"model_type": "gemma3n_audio", "hidden_size": 16, "vocab_offset": VOCAB - 16,
                         "vocab_size": 16},
        "boi_token_id": VOCAB - 34, "eoi_token_id": VOCAB - 33, "image_token_id": VOCAB - 32,
        "boa_token_id": VOCAB - 18, "eoa_token_id": VOCAB - 17, "audio_token_id": VOCAB - 16,
        "audio_soft_tokens_per_image": 4, "vision_soft_tokens_per_image": 4,
        "initializer_range": 0.02, "torch_dtype": "bfloat16", "transformers_version": transformers.__version__,
    }


def fake_towers(rng: torch.Generator) -> dict[str, torch.Tensor]:
    """A few tower tensors under the release names: present, never read by the text model."""
    return {
        "model.vision_tower.timm_model.conv_stem.conv.weight": torch.randn(8, 3, 3, 3, generator=rng),
        "model.vision_tower.timm_model.msfa.norm.weight": torch.randn(16, generator=rng),
        "model.audio_tower.subsample_conv_projection.conv_0.conv.weight": torch.randn(8, 1, 3, 3, generator=rng),
        "model.audio_tower.conformer.0.attention.attn.q_proj.weight": torch.randn(16, 16, generator=rng),
        "model.embed_vision.embedding.weight": torch.randn(16, 16, generator=rng),
        "model.embed_vision.embedding_projection.weight": torch.randn(64, 16, generator=rng),
        "model.embed_audio.embedding.weight": torch.randn(16, 16, generator=rng),
        "model.embed_audio.embedding_projection.weight": torch.randn(64, 16, generator=rng),
    }


def make_gemma3n_nested(name: str, seed: int):
    text_cfg = gemma3n_text_config()
    model = Gemma3nForCausalLM(text_cfg)
    randomize_gemma3n(model, seed)
    out = MODELS / name
    shutil.rmtree(out, ignore_errors=True)
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)

    # Rewrite into the release layout: model.language_model.*, fake towers, no lm_head, nested config.
    path = out / "model.safetensors"
    tensors = load_file(str(path))
    renamed = {"model.language_model." + k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    assert len(renamed) == len([k for k in tensors if k != "lm_head.weight"]), sorted(tensors)[:5]
    renamed.update({k: v.to(torch.bfloat16) for k, v in fake_towers(torch.Generator().manual_seed(seed + 1000)).items()})
    save_file(renamed, str(path), metadata={"format": "pt"})
    saved = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(nested_config(saved), indent=2) + "\n")

    # transformers reloads the nested directory: the text config from text_config, the weights through
    # 5.24's gemma3n_text conversion mapping (prefix "language_model" removed); the towers are ignored.
    reload_cfg = Gemma3nTextConfig(**json.loads((out / "config.json").read_text())["text_config"])
    ref = Gemma3nForCausalLM.from_pretrained(out, config=reload_cfg, dtype=torch.float32,
                                             attn_implementation="eager").eval()
    check_loaded(model, ref)
    return ref, True


def check_loaded(built: torch.nn.Module, ref: torch.nn.Module) -> None:
    """The reloaded model holds exactly the (bf16-rounded) weights written: nothing silently re-initialised."""
    want = {k: v.float() for k, v in built.state_dict().items()}
    got = ref.state_dict()
    for k, v in want.items():
        if k in got and not torch.equal(got[k].float(), v):
            raise SystemExit(f"reloaded tensor {k} differs from the one saved")


# --- VaultGemma ---------------------------------------------------------------------------------------


def make_vaultgemma_layer_types(name: str, seed: int):
    layer_types = [FULL, SLIDING, SLIDING, FULL, FULL, SLIDING]  # Gemma 2's rule would say S F S F S F
    cfg = VaultGemmaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24,
                           sliding_window=4, layer_types=layer_types, max_position_embeddings=64,
                           attn_logit_softcapping=50.0, final_logit_softcapping=30.0)
    model = VaultGemmaForCausalLM(cfg)
    randomize_gemma2_style(model, seed, embed_std=4.0, proj_gain=2.0)
    out = MODELS / name
    shutil.rmtree(out, ignore_errors=True)
    model.to(torch.float32).save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)
    ref = VaultGemmaForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    check_loaded(model, ref)
    return ref, False


CASES = {"gemma3n_nested": make_gemma3n_nested, "vaultgemma_layer_types": make_vaultgemma_layer_types}


def make(name: str, seed: int) -> None:
    ref, past_ple = CASES[name](name, seed)
    golden_prompts = []
    with torch.no_grad():
        for i, ids in enumerate(prompts(seed, past_ple)):
            t = torch.tensor(ids)[None]
            logits = ref(input_ids=t, attention_mask=torch.ones_like(t)).logits[0].numpy()
            golden_prompts.append(make_prompt(f"ids-{i}", ids, logits, "full"))
    golden = Golden(prompts=golden_prompts, vocab_size=VOCAB, producer="transformers",
                    producer_version=f"{transformers.__version__} (torch {torch.__version__})",
                    storage="full", model=f"tests/data/models/{name}", model_type=ref.config.model_type,
                    extra={"created": "generated by tests/make_goldens_gemma3n.py", "case": name, "seed": str(seed)})
    GOLDENS.mkdir(parents=True, exist_ok=True)
    write_golden(golden, GOLDENS / f"{name}.safetensors")
    out = MODELS / name
    size = sum(f.stat().st_size for f in out.iterdir())
    mags = max(float(np.abs(p.logits).max()) for p in golden_prompts)
    print(f"{name}: {size / 1024:.0f} KiB of model files, max |logit| {mags:.1f}")


def main(argv: list[str]) -> None:
    torch.manual_seed(0)
    names = argv or list(CASES)
    for name in names:
        if name not in CASES:
            raise SystemExit(f"unknown case {name!r}; known: {', '.join(CASES)}")
        make(name, seed=201 + list(CASES).index(name))


if __name__ == "__main__":
    main(sys.argv[1:])
