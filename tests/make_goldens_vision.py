"""Make the tiny multimodal test checkpoints (Gemma 3 SigLIP, Gemma 4 31B- and E2B-style towers), their test
images and their golden logits with images, with Hugging Face transformers.

The image sibling of tests/make_goldens.py and tests/make_goldens_gemma4.py (same VOCAB, same golden
format). Run once by a developer (needs torch==2.13.0, transformers==5.25.*, and NO torchvision, so that
transformers' image processors use their PIL backend); its output under tests/data/ is committed, and CI
compares against it without torch.

    python tests/make_goldens_vision.py                 # the images, then every case
    python tests/make_goldens_vision.py gemma4_vision

Outputs:

* ``tests/data/images/*.png``: four synthetic RGB images from a seeded RNG (smooth gradients, hard-edged
  shapes, a little noise), saved losslessly; non-square, one smaller than every processor's target (it is
  enlarged), one larger (shrunk, with Pillow's antialiasing), one wide.
* ``tests/data/models/{case}/``: ``save_pretrained`` of a tiny random model plus the
  ``preprocessor_config.json`` its transformers image processor class writes.
* ``tests/data/goldens/{case}.safetensors``: ``make_golden(..., backend="transformers")`` on the files as
  saved (transformers reloads them in float32, eager attention, with the model's own image processor), so
  the golden path users run is the one that made them. Per case: a prompt with one image, one with two
  images, and a text-only prompt, as token ids with each image's run of image tokens expanded (the
  checkpoints ship no tokenizer). The goldens keep the producer's pixel values (``keep_pixels``) so
  the towers can be checked apart from the resizing.

Random weights are chosen so that every image-path quirk shows in the logits (VISION.md §7):

* LayerNorm weights N(1, 0.2), biases N(0, 0.1), linear biases N(0, 0.1); SigLIP position embeddings
  N(0, 0.5) (never zero); the towers' first MLP matrix (fc1, gate_proj) 2.5x the fan-in scale, so the tanh
  and erf GELUs part visibly;
* the Gemma 3 projector norm weight N(0, 0.3), so ``1 + w`` and ``w`` differ;
* Gemma 4 tower norm weights N(1, 0.2) (its q/k norms also scaled by head_dim**-0.25, as the text ones: the
  attention scale is 1.0); ``std_bias`` N(0, 2) and ``std_scale`` U(0.5, 2), the size of the pooled
  features times sqrt(D), so that dropping the sqrt(D) shows; clip bounds (E2B) that clip a good share of
  the values;
* projectors scaled so soft tokens come out about as large as the text embeddings; text weights as the
  text fixtures have them, embeddings small enough that |logit| stays near 10 and float32 noise small.

Each sliding window (4) is shorter than one image's soft tokens (9 on Gemma 3, up to 70 on Gemma 4), so the
order of the bidirectional overlay and the window matters (VISION.md §5).
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
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessor,
    Gemma3TextConfig,
    Gemma4Config,
    Gemma4ForConditionalGeneration,
    Gemma4ImageProcessor,
    Gemma4TextConfig,
    SiglipVisionConfig,
)
from transformers.models.gemma4.configuration_gemma4 import Gemma4VisionConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from release.images import load_image, save_png  # noqa: E402
from release.weights.golden import make_golden, read_golden  # noqa: E402
from release.weights.prompts import PromptSpec  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
MODELS = DATA / "models"
GOLDENS = DATA / "goldens"
IMAGES = DATA / "images"
VOCAB = 512
SLIDING, FULL = "sliding_attention", "full_attention"


# --- the test images ---------------------------------------------------------------------------------------------

# name -> (height, width): non-square; "small" is below every processor's target (84x84 on Gemma 3, about
# 100x100 at Gemma 4's 70-token budget with 4-pixel patches), "large" above it, "wide" 1:3.
IMAGE_SIZES = {"small": (40, 56), "large": (150, 110), "medium": (72, 96), "wide": (30, 120)}


def synthetic_image(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [H, W, 3]: per-channel gradients in random directions, a few hard-edged shapes, a little noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width, 3))
    for c in range(3):
        a, b, phase = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0, 2 * np.pi)
        img[..., c] = 127.5 + 100 * np.sin(phase + 3.0 * (a * x / width + b * y / height))
    for _ in range(3):  # rectangles with sharp edges
        y0, x0 = rng.integers(0, height - 4), rng.integers(0, width - 4)
        y1, x1 = y0 + rng.integers(3, max(4, height // 2)), x0 + rng.integers(3, max(4, width // 2))
        img[y0:y1, x0:x1] = rng.uniform(0, 255, size=3)
    cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(4, min(height, width) / 2)
    img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, size=3)  # a disc
    img += rng.normal(0, 6, size=img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def make_images() -> dict[str, Path]:
    rng = np.random.default_rng(2024)
    IMAGES.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (h, w) in IMAGE_SIZES.items():
        paths[name] = IMAGES / f"{name}_{w}x{h}.png"
        pixels = synthetic_image(h, w, rng)
        save_png(pixels, paths[name])
        assert np.array_equal(load_image(paths[name]), pixels)  # lossless
    return paths


def image_paths() -> dict[str, Path]:
    return {name: IMAGES / f"{name}_{w}x{h}.png" for name, (h, w) in IMAGE_SIZES.items()}


# --- random weights ------------------------------------------------------------------------------------------------


def randomize(model: torch.nn.Module, seed: int, family: str) -> None:
    """Random weights that make every text and image-path quirk visible (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    text_width = model.config.get_text_config().hidden_size
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "language_model" in name:
                _text_param(name, p, family, g)
            elif "multi_modal_projector" in name or "embed_vision" in name:
                if name.endswith("mm_soft_emb_norm.weight"):
                    p.normal_(0.0, 0.3, generator=g)  # Gemma 3 applies 1 + w: w ~ 0 would hide a dropped +1
                else:  # Gemma 3 [D_vision, D_text] (used as is), Gemma 4 [D_text, D_vision]
                    d_vision = p.shape[0] if p.shape[1] == text_width else p.shape[1]
                    p.normal_(0.0, 2.5 / d_vision ** 0.5, generator=g)  # soft tokens about as large as embeddings
            elif family == "gemma3":
                _siglip_param(name, p, g)
            else:
                _gemma4_tower_param(name, p, g)
        for name, b in model.named_buffers():
            if name.endswith("layer_scalar"):
                b.uniform_(0.3, 0.9, generator=g)
            elif name.endswith("std_bias"):
                b.normal_(0.0, 2.0, generator=g)
            elif name.endswith("std_scale"):
                b.uniform_(0.5, 2.0, generator=g)
            elif name.endswith(("input_min", "output_min")):  # E2B clip bounds that bite (unit-scale inputs)
                b.fill_(-float(torch.empty(()).uniform_(0.8, 1.6, generator=g)))
            elif name.endswith(("input_max", "output_max")):
                b.fill_(float(torch.empty(()).uniform_(0.8, 1.6, generator=g)))


def _text_param(name: str, p: torch.Tensor, family: str, g: torch.Generator) -> None:
    if family == "gemma3":  # as tests/make_goldens.py: RMSNorm 1 + w, so w ~ N(0, 0.4)
        if name.endswith("norm.weight"):
            p.normal_(0.0, 0.4, generator=g)
        elif "embed_tokens" in name:
            p.normal_(0.0, 0.22, generator=g)
        else:
            p.normal_(0.0, 1.5 / p.shape[-1] ** 0.5, generator=g)
        return
    # as tests/make_goldens_gemma4.py
    if name.endswith(("q_norm.weight", "k_norm.weight")):
        p.normal_(1.0, 0.1, generator=g).mul_(p.shape[-1] ** -0.25)
    elif ".post_" in name and name.endswith("norm.weight"):
        p.normal_(0.4, 0.08, generator=g)
    elif name.endswith("norm.weight"):
        p.normal_(1.0, 0.2, generator=g)
    elif name.endswith("embed_tokens.weight"):
        p.normal_(0.0, 0.3, generator=g)
    elif name.endswith("embed_tokens_per_layer.weight"):
        p.normal_(0.0, 0.5, generator=g)
    else:
        p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5, generator=g)


def _siglip_param(name: str, p: torch.Tensor, g: torch.Generator) -> None:
    if "layer_norm" in name or "post_layernorm" in name:
        p.normal_(1.0, 0.2, generator=g) if name.endswith("weight") else p.normal_(0.0, 0.1, generator=g)
    elif name.endswith("position_embedding.weight"):
        p.normal_(0.0, 0.5, generator=g)
    elif name.endswith("bias"):
        p.normal_(0.0, 0.1, generator=g)
    else:  # conv [D, 3, p, p] and linears [out, in]: fan-in scaled; fc1 wider, so the GELU's tails matter
        gain = {".fc1.": 1.5, ".fc2.": 3.0}.get(next((k for k in (".fc1.", ".fc2.") if k in name), ""), 1.0)
        p.normal_(0.0, gain / p[0].numel() ** 0.5, generator=g)


def _gemma4_tower_param(name: str, p: torch.Tensor, g: torch.Generator) -> None:
    if name.endswith(("q_norm.weight", "k_norm.weight")):
        p.normal_(1.0, 0.2, generator=g).mul_(p.shape[-1] ** -0.25)  # attention scale 1.0: keep scores sane
    elif name.endswith("norm.weight"):
        p.normal_(1.0, 0.2, generator=g)  # Gemma 4 multiplies by w, not 1 + w
    elif name.endswith("position_embedding_table"):
        p.normal_(0.0, 0.5, generator=g)
    else:  # gate_proj wider, so the GELU's tails matter
        gain = 1.5 if "gate_proj" in name else 1.0
        p.normal_(0.0, gain / p.shape[-1] ** 0.5, generator=g)


# --- the cases ------------------------------------------------------------------------------------------------------


def gemma3_vision():
    """Gemma 3 4B-like at toy size: SigLIP 84x84 / patch 14 (36 patches), pooled 2x2 to 9 soft tokens, a text
    model with sliding (window 4 < 9) and full layers, bf16 on disk."""
    text = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
                            sliding_window=4, max_position_embeddings=512,
                            layer_types=[SLIDING, FULL, SLIDING, FULL])
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=84, patch_size=14, vision_use_head=False)
    cfg = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=9,
                       boi_token_index=VOCAB - 3, eoi_token_index=VOCAB - 2, image_token_index=VOCAB - 1)
    processor = Gemma3ImageProcessor(size={"height": 84, "width": 84})
    return Gemma3ForConditionalGeneration(cfg), torch.bfloat16, processor, "gemma3", None


def _gemma4(text: Gemma4TextConfig, vision: Gemma4VisionConfig) -> Gemma4ForConditionalGeneration:
    cfg = Gemma4Config(text_config=text, vision_config=vision, audio_config=None,
                       boi_token_id=VOCAB - 6, eoi_token_id=VOCAB - 5, image_token_id=VOCAB - 4,
                       video_token_id=VOCAB - 3, boa_token_id=VOCAB - 2, eoa_token_index=VOCAB - 1,
                       audio_token_id=VOCAB - 1)
    return Gemma4ForConditionalGeneration(cfg)


G4_TEXT = {"vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "head_dim": 16,
           "sliding_window": 4, "max_position_embeddings": 512, "final_logit_softcapping": 30.0,
           "vocab_size_per_layer_input": VOCAB}
G4_PROCESSOR = {"patch_size": 4, "max_soft_tokens": 70, "pooling_kernel_size": 3}  # 70: the smallest budget transformers takes


def gemma4_vision():
    """Gemma 4 31B-like: bidirectional image blocks on sliding layers (use_bidirectional_attention "vision"),
    K=V full layers with one global KV head, a standardized tower (std_bias / std_scale), 4-pixel patches
    pooled 3x3, at most 70 soft tokens an image; float32 on disk."""
    text = Gemma4TextConfig(**G4_TEXT, num_hidden_layers=4, num_key_value_heads=2, global_head_dim=32,
                            num_global_key_value_heads=1, attention_k_eq_v=True, hidden_size_per_layer_input=0,
                            layer_types=[SLIDING, SLIDING, FULL, FULL], use_bidirectional_attention="vision")
    vision = Gemma4VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                num_key_value_heads=2, head_dim=16, patch_size=4, pooling_kernel_size=3,
                                position_embedding_size=64, standardize=True)
    return _gemma4(text, vision), torch.float32, Gemma4ImageProcessor(**G4_PROCESSOR), "gemma4", release_form(32, 1)


def gemma4_vision_e2b():
    """Gemma 4 E2B-like: clipped linears in the tower (bounds that clip), per-layer embeddings (PLE), no
    bidirectional attention (causal everywhere), no standardize; bf16 on disk."""
    text = Gemma4TextConfig(**G4_TEXT, num_hidden_layers=5, num_key_value_heads=1, global_head_dim=32,
                            hidden_size_per_layer_input=8, layer_types=[SLIDING] * 4 + [FULL])
    vision = Gemma4VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                num_key_value_heads=2, head_dim=16, patch_size=4, pooling_kernel_size=3,
                                position_embedding_size=64, use_clipped_linears=True)
    return _gemma4(text, vision), torch.bfloat16, Gemma4ImageProcessor(**G4_PROCESSOR), "gemma4", release_form(32, None)


def release_form(global_head_dim: int, num_global_kv: int | None):
    """The text_config as the real Gemma 4 releases wrote it (as tests/make_goldens_gemma4.py): global_head_dim,
    num_global_key_value_heads, no per_layer_config."""
    def edit(cfg: dict) -> dict:
        text = cfg["text_config"]
        text.pop("per_layer_config", None)
        text["global_head_dim"] = global_head_dim
        text["num_global_key_value_heads"] = num_global_kv
        return cfg

    return edit


CASES = {f.__name__: f for f in (gemma3_vision, gemma4_vision, gemma4_vision_e2b)}
# case -> images of the one-image prompt, images of the two-image prompt (names of IMAGE_SIZES)
CASE_IMAGES = {
    "gemma3_vision": (["small"], ["large", "wide"]),
    "gemma4_vision": (["large"], ["small", "medium"]),
    "gemma4_vision_e2b": (["medium"], ["wide", "large"]),
}


def image_run(model: torch.nn.Module, processor, family: str, image: np.ndarray) -> list[int]:
    """The image tokens one image becomes, as transformers' processor counts them (not gemma_ref)."""
    from PIL import Image

    feats = processor(images=[Image.fromarray(image)], return_tensors="np")
    cfg = model.config
    if family == "gemma3":
        return [cfg.boi_token_id] + [cfg.image_token_id] * cfg.mm_tokens_per_image + [cfg.eoi_token_id]
    n = int(feats["num_soft_tokens_per_image"][0])
    return [cfg.boi_token_id] + [cfg.image_token_id] * n + [cfg.eoi_token_id]


def prompt_ids(rng: np.random.Generator, pieces: list) -> list[int]:
    """BOS, then each piece: an int n is n random text ids, a list is taken as it is (an image's tokens)."""
    ids = [2]
    for piece in pieces:
        ids += [int(x) for x in rng.integers(4, VOCAB - 8, size=piece)] if isinstance(piece, int) else piece
    return ids


def make(name: str, seed: int) -> None:
    model, dtype, processor, family, edit = CASES[name]()
    randomize(model, seed, family)
    out = MODELS / name
    shutil.rmtree(out, ignore_errors=True)
    model.to(dtype).save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)
    if edit:
        path = out / "config.json"
        path.write_text(json.dumps(edit(json.loads(path.read_text())), indent=2) + "\n")
    processor.save_pretrained(out)  # preprocessor_config.json, as the processor class writes it

    paths = image_paths()
    one, two = CASE_IMAGES[name]
    pics = {k: load_image(paths[k]) for k in set(one) | set(two)}
    rng = np.random.default_rng(seed)
    run = {k: image_run(model, processor, family, v) for k, v in pics.items()}
    specs = [
        PromptSpec("one-image", ids=prompt_ids(rng, [5, run[one[0]], 6]), images=[pics[one[0]]]),
        PromptSpec("two-images", ids=prompt_ids(rng, [3, run[two[0]], 4, run[two[1]], 5]),
                   images=[pics[k] for k in two]),
        PromptSpec("text", ids=prompt_ids(rng, [15])),
    ]
    golden_path = GOLDENS / f"{name}.safetensors"
    make_golden(out, golden_path, specs, backend="transformers", storage="full", model_name=f"tests/data/models/{name}",
                keep_pixels=True, extra={"created": "generated by tests/make_goldens_vision.py", "case": name,
                                         "seed": str(seed), "image_files": json.dumps({k: paths[k].name for k in pics})})
    g = read_golden(golden_path)
    size = sum(f.stat().st_size for f in out.iterdir())
    mags = max(float(np.abs(p.logits).max()) for p in g.prompts)
    soft = max(float(np.abs(p.soft_tokens).std()) for p in g.prompts if p.soft_tokens is not None)
    print(f"{name}: {size / 1024:.0f} KiB of model files, golden {golden_path.stat().st_size / 1024:.0f} KiB, "
          f"{[len(p.ids) for p in g.prompts]} positions, max |logit| {mags:.1f}, soft-token std {soft:.2f}, "
          f"image processor backend {g.extra['image_processor_backend']}")


def main(argv: list[str]) -> None:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("torchvision is installed: transformers would preprocess with torch, not Pillow; "
                         "make the goldens in an environment without it")
    torch.manual_seed(0)
    names = argv or list(CASES)
    if not argv:
        make_images()
    for name in names:
        if name not in CASES:
            raise SystemExit(f"unknown case {name!r}; known: {', '.join(CASES)}")
        make(name, seed=301 + list(CASES).index(name))
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main(sys.argv[1:])
