"""``export --merge``: a LoRA adapter folded into its base, written as a plain checkpoint.

Each adapted projection becomes ``W + scale * B A`` (DoRA: each row then rescaled to ``m / ||W +
scale B A||``), computed one tensor at a time in float32 and written straight to the shard (never
the whole model in memory). Every other tensor of the base (other towers included) is copied as
stored. The default dtype is float32, so the merged model's logits are the adapter's within float32
rounding; ``bfloat16`` / ``float16`` round the merged weights (lossy: check with ``verify``).

Refused by name, because a Gemma checkpoint cannot hold the result: ``lora_bias`` (Gemma's
projections have no bias), and a trained ``embed_tokens`` / ``lm_head`` whose input and output
tables would then differ (Gemma ties them) -- unless ``ensure_weight_tying`` ties them again.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gemma_ref import adapters
from gemma_ref.config import load_config
from gemma_ref.errors import InputError
from gemma_ref.weights import NUMPY_DTYPES, SAFETENSORS_DTYPES, Weights, expected_shapes
from release.weights.export import _ShardWriter

#: Files of the base copied next to the merged weights (tokenizer, generation settings, chat template).
COPIED = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
          "generation_config.json", "chat_template.jinja", "chat_template.json", "preprocessor_config.json",
          "processor_config.json")


def merged_matrix(w: np.ndarray, lora: adapters.LoRA) -> np.ndarray:
    """W + scale B A, DoRA-rescaled per row, in float32.  [out, in]"""
    m = np.array(w, dtype=np.float32)
    m += np.float32(lora.scale) * (lora.B @ lora.A)
    if lora.magnitude is not None:
        m *= (lora.magnitude / np.sqrt(np.sum(m * m, axis=1)))[:, None]
    return m


def merge_adapter(adapter_dir: str | os.PathLike, out: str | os.PathLike, base: str | os.PathLike | None = None,
                  dtype: str = "auto", progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Write the adapter merged into its base at `out` (a new or empty directory); returns a summary."""
    t0 = time.perf_counter()
    adapter_dir, out = Path(adapter_dir), Path(out)
    if not adapters.is_adapter_dir(adapter_dir):
        raise InputError("--merge takes an adapter directory (adapter_config.json + adapter_model.safetensors)",
                         adapter_dir)
    if dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise InputError(f"--dtype must be auto, float32, bfloat16 or float16, not {dtype!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("already exists and is not an empty directory; refusing to overwrite", out,
                         hint="pass a new directory to --out")
    base_dir = adapters.resolve_base(adapter_dir, base)
    cfg = load_config(base_dir)
    w = Weights(base_dir, cfg, check=True)
    try:
        ad = adapters.load_adapter(adapter_dir, w)
        c = ad.config
        if c.lora_bias:
            raise InputError("a lora_bias adapter cannot be merged: Gemma's projections have no bias to hold "
                             "lora_B's bias", adapter_dir, hint="run it unmerged (verify / golden / generate take it as is)")
        if ad.lm_head is not None or (ad.embed_tokens is not None and ad.output_table is not ad.embed_tokens):
            raise InputError("a trained embed_tokens / lm_head in modules_to_save leaves the input table and the output "
                             "head different, and Gemma ties them: no merged checkpoint can hold this model",
                             adapter_dir, hint="run it unmerged (verify / golden / generate take it as is)")
        dt = "float32" if dtype == "auto" else dtype
        merged = {(f"layers.{i}.{mod}.weight" if i >= 0 else f"{mod}.weight"): lo for (i, mod), lo in ad.loras.items()}
        text_names = {w.prefix + rel: rel for rel in expected_shapes(cfg)}
        plan = []
        for name, info in w.infos.items():
            if info.dtype not in SAFETENSORS_DTYPES:
                raise InputError(f"tensor {name!r} is stored as {info.dtype}; only float tensors are copied", info.file)
            plan.append((name, info.shape, dt if name in text_names else SAFETENSORS_DTYPES[info.dtype]))
        done = [0]

        def produce(name: str) -> np.ndarray:
            rel = text_names.get(name)
            done[0] += 1
            if progress:
                progress("tensors", done[0], len(plan))
            if rel in merged:
                return merged_matrix(w._slice(rel), merged[rel])
            if rel == "embed_tokens.weight" and ad.embed_tokens is not None:  # tied again (ensure_weight_tying)
                return ad.embed_tokens
            info = w.infos[name]
            return w._map(info.file)[info.start:info.stop].view(NUMPY_DTYPES[info.dtype]).reshape(info.shape)

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        try:
            total = _ShardWriter(tmp, plan).write(produce, {"format": "pt", "producer": "gemma-release export --merge",
                                                            "adapter": adapter_dir.name})
            raw = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
            if dtype != "auto" or raw.get("torch_dtype") or raw.get("dtype"):
                raw["torch_dtype" if "torch_dtype" in raw or "dtype" not in raw else "dtype"] = dt
            (tmp / "config.json").write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
            for f in COPIED:
                if (base_dir / f).is_file():
                    shutil.copyfile(base_dir / f, tmp / f)
            if out.exists():
                out.rmdir()
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        w.close()
    return {"out": str(out), "adapter": str(adapter_dir), "base": str(base_dir), "dtype": dt,
            "merged_projections": len(merged), "tensors": len(plan), "bytes": total,
            "seconds": round(time.perf_counter() - t0, 3), "files": sorted(p.name for p in out.iterdir())}
