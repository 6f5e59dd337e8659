"""Who computes logits: this project's NumPy reference, or Hugging Face transformers.

transformers (with torch) is a development extra: it is imported only when the
``transformers`` backend is asked for, so nothing else ever needs it. It runs in
float32 with eager attention, the only attention path that keeps Gemma 2's
soft-capping (and the only one Gemma 4's audio tower accepts), and, for Gemma 4's
mixture of experts, eager experts (each routed expert's own matmuls, as the model
code writes them; transformers 5.24 would otherwise pick grouped_mm).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

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


def transformers_logits(model_dir: Path, sequences: list[np.ndarray],
                        progress: Callable[[int, int], None] | None = None,
                        adapter: Path | None = None) -> tuple[list[np.ndarray], str]:
    """Logits from transformers (float32, eager attention), and 'transformers X (torch Y)'.

    With `adapter`, a LoRA adapter directory on the base `model_dir`, run by peft's PeftModel.
    """
    model = load_transformers_model(model_dir)  # exit 2 with what to install when torch / transformers are missing
    import torch
    import transformers

    peft_version = ""
    if adapter is not None:
        try:
            import peft
        except ImportError:
            raise InputError("the transformers backend needs peft installed to run an adapter",
                             hint="pip install peft, or use --backend gemma_ref") from None
        model = peft.PeftModel.from_pretrained(model, adapter)
        peft_version = f", peft {peft.__version__}"
    model.eval()
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
