"""Who computes logits: this project's NumPy reference, or Hugging Face transformers.

transformers (with torch) is a development extra: it is imported only when the
``transformers`` backend is asked for, so nothing else ever needs it. It runs in
float32 with eager attention, the only attention path that keeps Gemma 2's
soft-capping (and the only one Gemma 4's audio tower accepts), and, for Gemma 4's
mixture of experts, eager experts (each routed expert's own matmuls, as the model
code writes them; transformers 5.24 would otherwise pick grouped_mm).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from release.errors import InputError

BACKENDS = ("gemma_ref", "transformers")
# config model_type of a multimodal release -> the transformers class that loads it whole
MULTIMODAL_CLASSES = {
    "gemma3": "Gemma3ForConditionalGeneration",
    "gemma4": "Gemma4ForConditionalGeneration",  # E2B/E4B (vision + audio), 31B, 26B-A4B (vision)
    "gemma4_unified": "Gemma4UnifiedForConditionalGeneration",  # the 12B: encoder-free vision/audio
}
# multimodal model_type -> the text-only class run on its text_config instead. Gemma 3n's full model needs
# timm for its vision tower, and its text path is the same (model.language_model.* is read through
# transformers' gemma3n checkpoint mapping; soft-cap 30 from the text config, as the full model applies it).
TEXT_PATH_CLASSES = {
    "gemma3n": "Gemma3nForCausalLM",
}


def gemma_ref_logits(model_dir: Path, sequences: list[np.ndarray],
                     progress: Callable[[int, int], None] | None = None,
                     base: Path | None = None) -> tuple[list[np.ndarray], str]:
    """Logits from the NumPy reference, and its version string (`model_dir` may be an adapter on `base`)."""
    from gemma_ref import load_model
    from release import __version__

    with load_model(model_dir, base=base) as model:
        return model.forward_many(sequences, progress), __version__


def load_transformers_model(model_dir: Path):  # noqa: ANN201 - a torch module; torch is not imported here
    """The release as transformers runs it: float32, eager attention (and eager experts), every weight found.

    Also what tests/make_adapters.py loads its bases with, so goldens and the backend read releases alike.
    """
    try:
        import torch
        import transformers
    except ImportError:
        raise InputError("the transformers backend needs torch and transformers installed",
                         hint="pip install torch==2.13.0 transformers (CPU build), or use --backend gemma_ref") from None
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_dir)
    model_type = getattr(cfg, "model_type", None)
    # Multimodal checkpoints run their text path through the full model, which reads the weights
    # where they are (model.language_model.*) and applies what the release applies (Gemma 4: soft-cap 30).
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    extra = {"experts_implementation": "eager"} if getattr(text_cfg, "enable_moe_block", False) else {}
    if model_type in TEXT_PATH_CLASSES:
        cls = getattr(transformers, TEXT_PATH_CLASSES[model_type])
        extra["config"] = text_cfg
    elif model_type in MULTIMODAL_CLASSES:
        cls = getattr(transformers, MULTIMODAL_CLASSES[model_type])
    else:  # gemma, gemma2, gemma3_text, gemma3n_text, gemma4_text (Gemma4ForCausalLM), vaultgemma, ...
        from transformers import AutoModelForCausalLM as cls
    # Its load report lists every tower tensor a text path leaves alone as UNEXPECTED; what matters,
    # a MISSING weight, is checked below and said in one line.
    transformers.logging.set_verbosity_error()
    model, info = cls.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager",
                                      output_loading_info=True, **extra)
    # A weight transformers did not find is silently initialised at random: its logits would be no golden.
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise InputError(f"transformers did not find {len(missing)} weight(s) it needs in {model_dir}, "
                         f"e.g. {', '.join(missing[:3])}; it would have used random values",
                         hint="check the checkpoint's tensor names (gemma-release inspect), or use --backend gemma_ref")
    return model.eval()


def with_adapter(model, adapter: Path | None):  # noqa: ANN001, ANN201 - torch modules; torch is not imported here
    """The transformers model with a LoRA adapter directory on it (peft's PeftModel), in eval mode, and ', peft X'."""
    peft_version = ""
    if adapter is not None:
        try:
            import peft
        except ImportError:
            raise InputError("the transformers backend needs peft installed to run an adapter",
                             hint="pip install peft, or use --backend gemma_ref") from None
        model = peft.PeftModel.from_pretrained(model, adapter)
        peft_version = f", peft {peft.__version__}"
    return model.eval(), peft_version


def transformers_logits(model_dir: Path, sequences: list[np.ndarray],
                        progress: Callable[[int, int], None] | None = None,
                        adapter: Path | None = None) -> tuple[list[np.ndarray], str]:
    """Logits from transformers (float32, eager attention), and 'transformers X (torch Y)'.

    With `adapter`, a LoRA adapter directory on the base `model_dir`, run by peft's PeftModel.
    """
    model = load_transformers_model(model_dir)  # exit 2 with what to install when torch / transformers are missing
    import torch
    import transformers

    model, peft_version = with_adapter(model, adapter)
    out = []
    with torch.no_grad():
        for n, ids in enumerate(sequences):
            t = torch.tensor(np.asarray(ids, dtype=np.int64))[None, :]
            logits = model(input_ids=t, attention_mask=torch.ones_like(t)).logits[0]
            out.append(logits.float().numpy().astype(np.float32))
            if progress:
                progress(n + 1, len(sequences))
    return out, f"{transformers.__version__} (torch {torch.__version__}{peft_version})"


def compute_logits(backend: str, model_dir: Path, sequences: list[np.ndarray],
                   progress: Callable[[int, int], None] | None = None,
                   base: Path | None = None) -> tuple[list[np.ndarray], str]:
    if backend == "gemma_ref":
        return gemma_ref_logits(model_dir, sequences, progress, base)
    if backend == "transformers" and base is not None:  # an adapter (make_golden resolved its base)
        return transformers_logits(base, sequences, progress, adapter=model_dir)
    if backend == "transformers":
        return transformers_logits(model_dir, sequences, progress)
    raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


# --- prompts with images ----------------------------------------------------------------------------------------


@dataclass
class ImageRun:
    """What a backend computed for prompts with images (one entry per prompt; None for text-only prompts)."""

    logits: list[np.ndarray]
    version: str
    token_types: list[np.ndarray | None]  # int64 [T] as fed: 1 at image tokens
    soft_tokens: list[np.ndarray | None]  # float32 [n image tokens, D_text]: the projector's output, in prompt order
    pixels: list[list[dict[str, np.ndarray]] | None]  # per image: the pixel values the backend's preprocessing gave
    processor: dict[str, Any]  # the preprocessing config it used
    processor_backend: str  # "pil" / "torchvision" (transformers' image processor backends) or "gemma_ref"


def compute_image_logits(backend: str, model_dir: Path, sequences: list[np.ndarray],
                         images: list[list[np.ndarray] | None], vc: Any,
                         progress: Callable[[int, int], None] | None = None, base: Path | None = None) -> ImageRun:
    """compute_logits for prompts of which some hold images (uint8 [H, W, 3] each; the ids hold them expanded).

    `vc` is gemma_ref.vision's VisionConfig of the checkpoint (its image token id gives the token types).
    """
    if backend == "gemma_ref":
        return gemma_ref_image_logits(model_dir, sequences, images, vc, progress, base)
    if backend == "transformers":
        return transformers_image_logits(base or model_dir, sequences, images, vc, progress,
                                         adapter=model_dir if base is not None else None)
    raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def gemma_ref_image_logits(model_dir: Path, sequences: list[np.ndarray], images: list[list[np.ndarray] | None],
                           vc: Any, progress: Callable[[int, int], None] | None = None,
                           base: Path | None = None) -> ImageRun:
    """The NumPy reference: gemma_ref.vision's preprocessing and towers, then the text model (Model.forward_many's path).

    The soft tokens are kept on the way (``Model.image_tokens``), so the towers run once.
    """
    import dataclasses

    from gemma_ref import load_model, vision
    from gemma_ref.model import forward
    from release import __version__

    pixels = [[vision.preprocess(im, vc) for im in imgs] if imgs else None for imgs in images]
    with load_model(model_dir, base=base) as model:
        tokens = model.image_tokens(sequences, pixels)  # as forward_many does, from the preprocessed pixels
        logits = forward(model.weights, model.config, sequences, progress, images=tokens)
    soft = [t.values.astype(np.float32) if t is not None else None for t in tokens or [None] * len(sequences)]
    types = [vision.image_token_types(ids, vc) if imgs else None for ids, imgs in zip(sequences, images)]
    processor = {k: v for k, v in dataclasses.asdict(vc.preprocess).items() if k != "source"}
    processor = {"image_processor_type": "gemma_ref.vision", "family": vc.family, **processor}
    return ImageRun(list(logits), __version__, types, soft, pixels, processor, "gemma_ref")


def transformers_image_logits(model_dir: Path, sequences: list[np.ndarray], images: list[list[np.ndarray] | None],
                              vc: Any, progress: Callable[[int, int], None] | None = None,
                              adapter: Path | None = None) -> ImageRun:
    """transformers, float32 eager, with the model's own image processor (AutoImageProcessor on the model directory).

    Without torchvision that is the processor's PIL backend (Pillow resizes); with it, the torchvision
    backend (torch resizes, a level off on some pixels): the run records which. Each image prompt is fed
    as transformers' processor would feed it: Gemma 3 ``pixel_values`` + ``token_type_ids``; Gemma 4
    ``pixel_values`` + ``image_position_ids`` + ``mm_token_type_ids`` (without the token types
    transformers would not make the image tokens' attention bidirectional).
    """
    model = load_transformers_model(model_dir)
    import torch
    import transformers
    from PIL import Image
    from transformers import AutoImageProcessor

    model, peft_version = with_adapter(model, adapter)
    try:
        processor = AutoImageProcessor.from_pretrained(model_dir)
    except (OSError, ValueError) as e:
        raise InputError(f"transformers cannot load the image processor: {e}", model_dir,
                         hint="a multimodal release ships preprocessor_config.json (or processor_config.json)") from None
    family = model.config.model_type
    if family not in ("gemma3", "gemma4"):
        raise InputError(f"image prompts need a Gemma 3 or Gemma 4 multimodal model, not {family!r}", model_dir)
    image_token_id = int(model.config.image_token_id)
    if image_token_id != vc.image_token_id:  # the two readings of config.json must agree
        raise InputError(f"transformers' image token id is {image_token_id}, gemma_ref read {vc.image_token_id}",
                         model_dir)
    logits_, types, soft, pixels = [], [], [], []
    with torch.no_grad():
        for n, (ids, imgs) in enumerate(zip(sequences, images)):
            t = torch.tensor(np.asarray(ids, dtype=np.int64))[None, :]
            kw: dict[str, Any] = {"input_ids": t, "attention_mask": torch.ones_like(t)}
            if imgs:
                feats = processor(images=[Image.fromarray(np.ascontiguousarray(im)) for im in imgs], return_tensors="np")
                per_image, counts = _split_pixels(family, feats, len(imgs), vc)
                _check_counts(ids, counts, vc, n)
                tt = (np.asarray(ids) == image_token_id).astype(np.int64)
                pv = torch.from_numpy(np.ascontiguousarray(feats["pixel_values"], dtype=np.float32))
                if family == "gemma3":
                    kw.update(pixel_values=pv, token_type_ids=torch.from_numpy(tt)[None, :])
                else:
                    kw.update(pixel_values=pv,
                              image_position_ids=torch.from_numpy(np.asarray(feats["image_position_ids"], np.int64)),
                              mm_token_type_ids=torch.from_numpy(tt)[None, :])
                out = model(**kw)
                feats_out = out.image_outputs.pooler_output  # Gemma 3: [views, M, Dt]; Gemma 4: a tuple, [n_j, Dt] each
                st = (torch.cat(list(feats_out), dim=0) if isinstance(feats_out, (tuple, list))
                      else feats_out.reshape(-1, feats_out.shape[-1]))
                types.append(tt)
                soft.append(st.float().numpy().astype(np.float32))
                pixels.append(per_image)
            else:
                out = model(**kw)
                types.append(None)
                soft.append(None)
                pixels.append(None)
            logits_.append(out.logits[0].float().numpy().astype(np.float32))
            if progress:
                progress(n + 1, len(sequences))
    version = f"{transformers.__version__} (torch {torch.__version__}{peft_version})"
    import json

    config = json.loads(processor.to_json_string())  # what to_dict holds, JSON-safe (enums, tuples)
    return ImageRun(logits_, version, types, soft, pixels, config, str(getattr(processor, "backend", "pil")))


def _split_pixels(family: str, feats: Any, n_images: int, vc: Any) -> tuple[list[dict[str, np.ndarray]], list[list[int]]]:
    """The processor's batch cut per image (Gemma 3: the image then its pan-and-scan crops), and each image's runs."""
    pv = np.ascontiguousarray(feats["pixel_values"], dtype=np.float32)
    if family == "gemma3":
        crops = [int(c) for c in np.asarray(feats.get("num_crops", [0] * n_images)).reshape(-1)]
        out, at = [], 0
        for c in crops:
            out.append({"pixel_values": np.ascontiguousarray(pv[at:at + 1 + c])})
            at += 1 + c
        return out, [[vc.mm_tokens_per_image] * (1 + c) for c in crops]
    pos = np.asarray(feats["image_position_ids"], dtype=np.int64)
    k2 = vc.pooling_kernel_size ** 2
    return ([{"pixel_values": np.ascontiguousarray(pv[j]), "image_position_ids": np.ascontiguousarray(pos[j])}
             for j in range(n_images)],
            [[int((pos[j][:, 0] >= 0).sum()) // k2] for j in range(n_images)])


def _check_counts(ids: np.ndarray, counts: list[list[int]], vc: Any, n: int) -> None:
    """transformers' processor and the prompt's expanded image tokens must agree (else the model itself raises)."""
    from gemma_ref import vision

    have, want = vision.runs(np.asarray(ids), vc), [r for c in counts for r in c]
    if have != want:
        raise InputError(f"prompt {n + 1}: transformers' image processor makes image-token runs of {want}, but the "
                         f"prompt holds runs of {have}: gemma_ref's expansion and transformers' processor disagree "
                         "(the processor config?)")

