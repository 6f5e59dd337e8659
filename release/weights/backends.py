"""Who computes logits: this project's NumPy reference, or Hugging Face transformers.

transformers (with torch) is a development extra: it is imported only when the
``transformers`` backend is asked for, so nothing else ever needs it. It runs in
float32 with eager attention, the only attention path that keeps Gemma 2's
soft-capping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from release.errors import InputError

BACKENDS = ("gemma_ref", "transformers")


def gemma_ref_logits(model_dir: Path, sequences: list[np.ndarray],
                     progress: Callable[[int, int], None] | None = None) -> tuple[list[np.ndarray], str]:
    """Logits from the NumPy reference, and its version string."""
    from gemma_ref import load_model
    from release import __version__

    with load_model(model_dir) as model:
        return model.forward_many(sequences, progress), __version__


def transformers_logits(model_dir: Path, sequences: list[np.ndarray],
                        progress: Callable[[int, int], None] | None = None) -> tuple[list[np.ndarray], str]:
    """Logits from transformers (float32, eager attention), and 'transformers X (torch Y)'."""
    try:
        import torch
        import transformers
    except ImportError:
        raise InputError("the transformers backend needs torch and transformers installed",
                         hint="pip install torch==2.13.0 transformers (CPU build), or use --backend gemma_ref") from None
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_dir)
    if getattr(cfg, "model_type", None) == "gemma3":  # multimodal checkpoint: run its text path through the full model
        from transformers import Gemma3ForConditionalGeneration as cls
    else:
        from transformers import AutoModelForCausalLM as cls
    model = cls.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    out = []
    with torch.no_grad():
        for n, ids in enumerate(sequences):
            t = torch.tensor(np.asarray(ids, dtype=np.int64))[None, :]
            logits = model(input_ids=t, attention_mask=torch.ones_like(t)).logits[0]
            out.append(logits.float().numpy().astype(np.float32))
            if progress:
                progress(n + 1, len(sequences))
    return out, f"{transformers.__version__} (torch {torch.__version__})"


def compute_logits(backend: str, model_dir: Path, sequences: list[np.ndarray],
                   progress: Callable[[int, int], None] | None = None) -> tuple[list[np.ndarray], str]:
    if backend == "gemma_ref":
        return gemma_ref_logits(model_dir, sequences, progress)
    if backend == "transformers":
        return transformers_logits(model_dir, sequences, progress)
    raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
