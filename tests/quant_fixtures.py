"""Quantized variants of the tiny fixtures, written at test time the way the formats' own tools write them.

MLX: :func:`write_mlx_variant` quantizes every linear layer and the embedding whose input width divides
by the group size, as ``mlx_lm.convert -q`` does (``mlx_lm.utils.quantize_model``), with either mlx itself
(``mx.quantize``) or :func:`mlx_affine_quantize`, a NumPy port of mlx's CPU quantizer
(``mlx/backend/cpu/quantized.cpp`` ``quantize``, ml-explore/mlx 846d176227a0ac13d2667e58d2bb68b322109ab0:
min/max per group, the edge value made exact) that tests/test_quant_mlx.py holds bit-exact against
``mx.quantize`` where mlx is installed -- so these tests run without mlx too. The directory is what
mlx-lm saves: config.json with ``quantization`` and its ``quantization_config`` copy (per-module entries
for mixed precision), ``{m}.weight`` uint32, ``{m}.scales`` / ``{m}.biases`` in the model's dtype.

bitsandbytes: :func:`write_bnb_variant` runs transformers' own ``from_pretrained(quantization_config=
BitsAndBytesConfig(...))`` + ``save_pretrained`` on bitsandbytes' CPU backend (needs torch, transformers,
accelerate and bitsandbytes). tests/make_quant_fixtures.py uses both to write the committed fixtures
under tests/data/quant/.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import load_file, save_file

QUANT_DATA = Path(__file__).resolve().parent / "data" / "quant"
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes [rows, n] (0 .. 2^bits-1) as MLX's little-endian bit stream.  -> uint32 [rows, n * bits / 32]"""
    rows, n = codes.shape
    nbytes = math.lcm(bits, 8) // 8
    per = nbytes * 8 // bits
    c = codes.astype(np.uint64).reshape(rows, n // per, per)
    word = (c << (np.arange(per, dtype=np.uint64) * np.uint64(bits))).sum(-1, dtype=np.uint64)  # [rows, n / per]
    raw = ((word[..., None] >> (np.arange(nbytes, dtype=np.uint64) * np.uint64(8))) & np.uint64(0xFF)).astype(np.uint8)
    return np.ascontiguousarray(raw.reshape(rows, -1)).view(np.uint32)


def mlx_affine_quantize(w: np.ndarray, group: int, bits: int, dtype=ml_dtypes.bfloat16):
    """mlx's CPU affine quantizer in NumPy float32.  [rows, n] -> (uint32 packed, scales, biases) in ``dtype``"""
    rows, n = w.shape
    g = w.astype(np.float32).reshape(rows, n // group, group)
    n_bins = np.float32((1 << bits) - 1)
    w_max, w_min = g.max(-1), g.min(-1)
    mask = np.abs(w_min) > np.abs(w_max)
    scale = np.maximum((w_max - w_min) / n_bins, np.float32(1e-7))
    scale = np.where(mask, scale, -scale)
    edge = np.where(mask, w_min, w_max)
    q0 = np.rint(edge / scale)
    nz = q0 != 0
    scale = np.where(nz, edge / np.where(nz, q0, 1), scale).astype(np.float32)
    bias = np.where(nz, edge, np.float32(0)).astype(np.float32)
    q = np.clip(np.rint((g - bias[..., None]) / scale[..., None]), 0, n_bins).astype(np.uint32)
    return pack_codes(q.reshape(rows, n), bits), scale.astype(dtype), bias.astype(dtype)


def _mx_quantize(w: np.ndarray, group: int, bits: int, mode: str = "affine"):
    import mlx.core as mx

    out = mx.quantize(mx.array(w.astype(np.float32)).astype(mx.bfloat16), group_size=group, bits=bits, mode=mode)
    arrays = []
    for a in out:
        arrays.append(np.array(a.astype(mx.float32)).astype(ml_dtypes.bfloat16) if a.dtype == mx.bfloat16 else np.array(a))
    return tuple(arrays)


def is_linear(name: str) -> bool:
    return name.endswith(".weight") and (name.split(".")[-2] in LINEARS or name.endswith("embed_tokens.weight"))


def write_mlx_variant(src: Path, dst: Path, bits: int = 4, group: int = 64, mode: str = "affine",
                      quantizer: str = "numpy", per_module: dict[str, dict | bool] | None = None) -> Path:
    """An mlx-lm style quantized copy of ``src`` in ``dst``; ``per_module``: path -> {group_size, bits, mode} / False."""
    tensors = load_file(str(src / "model.safetensors"))
    config = json.loads((src / "config.json").read_text())
    default = {"group_size": group, "bits": bits, "mode": mode}
    quantization: dict = dict(default)
    out = {}
    for name, t in tensors.items():
        module = name[:-len(".weight")]
        p = (per_module or {}).get(module, default)
        if per_module and module in per_module:
            quantization[module] = p
        if not is_linear(name) or p is False or t.shape[-1] % p["group_size"]:
            out[name] = t  # mlx-lm's predicate: only layers whose input width divides by the group size
            continue
        if quantizer == "mlx":
            parts = _mx_quantize(t, p["group_size"], p["bits"], p["mode"])
        else:
            assert p["mode"] == "affine", "the NumPy quantizer is affine only"
            parts = mlx_affine_quantize(t.astype(np.float32), p["group_size"], p["bits"], t.dtype)
        out[name] = parts[0]
        out[module + ".scales"] = parts[1]
        if len(parts) > 2:
            out[module + ".biases"] = parts[2]
    config["quantization"] = quantization
    config["quantization_config"] = quantization  # mlx_lm.utils.save_config's copy for transformers
    dst.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in out.items()}, str(dst / "model.safetensors"),
              metadata={"format": "mlx"})
    (dst / "config.json").write_text(json.dumps(dict(sorted(config.items())), indent=4))
    return dst


def write_mlx_lm_variant(src: Path, dst: Path, bits: int = 4, group: int = 64, recipe: str | None = None) -> Path:
    """mlx-lm itself: load_model, quantize_model (optionally a mixed recipe), save_model, save_config."""
    from mlx_lm.convert import mixed_quant_predicate_builder
    from mlx_lm.utils import load_model, quantize_model, save_config, save_model

    model, config = load_model(src, lazy=False)
    predicate = mixed_quant_predicate_builder(recipe, model, group) if recipe else None
    model, qconfig = quantize_model(model, config, group, bits, quant_predicate=predicate)
    save_model(dst, model)
    save_config(qconfig, dst / "config.json")
    return dst


def write_bnb_variant(src: Path, dst: Path, kind: str) -> Path:
    """transformers + bitsandbytes (CPU): kind nf4, nf4-dq, fp4, fp4-dq or int8."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if kind == "int8":
        qc = BitsAndBytesConfig(load_in_8bit=True)
    else:
        qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=kind.split("-")[0],
                                bnb_4bit_use_double_quant=kind.endswith("-dq"), bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(src, quantization_config=qc)
    model.save_pretrained(dst)
    for extra in ("generation_config.json",):  # not part of the fixture
        (dst / extra).unlink(missing_ok=True)
    return dst


def copy_variant(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def damage(variant: Path, name: str, fn) -> None:
    """Rewrite one tensor of a variant's model.safetensors with ``fn(array)``."""
    path = variant / "model.safetensors"
    t = load_file(str(path))
    t[name] = fn(t[name].copy())
    save_file(t, str(path), metadata={"format": "pt"})
