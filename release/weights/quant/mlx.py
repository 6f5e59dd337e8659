"""MLX (mlx-lm) quantized checkpoints: affine 1-8-bit, mxfp4, nvfp4 and mxfp8, dequantized in NumPy.

``mlx_lm.convert -q`` (``mlx_lm.utils.quantize_model`` + ``save_model`` / ``save_config``) replaces each
``nn.Linear`` and ``nn.Embedding`` whose input width divides by the group size with its quantized
version and saves the module's parameters under its path (the path is the stored tensor prefix):

=====================  ===============================  ===========================================
tensor                 shape, dtype                     meaning
=====================  ===============================  ===========================================
``{m}.weight``         [out, in * bits / 32] uint32     codes, a little-endian bit stream per row:
                                                        code j of a row is bits j*b .. j*b+b-1 of the
                                                        row's bytes read LSB first (3-, 5- and 6-bit
                                                        codes straddle bytes and words)
``{m}.scales``         [out, in / group]                affine: the model's float dtype (bf16/f16/f32);
                                                        mxfp4/mxfp8: uint8 E8M0 (2^(s-127));
                                                        nvfp4: uint8 FP8 E4M3
``{m}.biases``         [out, in / group], as scales     affine only: w = scale * q + bias per group
``{m}.global_scale``   [] / [1] float32                 nvfp4 only, optional: scales times g / (448*6)
=====================  ===============================  ===========================================

Codes: affine q is an unsigned integer 0 .. 2^b-1; mxfp4/nvfp4 q is FP4 E2M1 (the 16 values
0, ±0.5, ±1, ±1.5, ±2, ±3, ±4, ±6, sign in bit 3); mxfp8 q is FP8 E4M3. config.json holds
``"quantization": {"group_size": 64, "bits": 4, "mode": "affine"}`` (``mode`` absent before mlx-lm
0.26: affine) and a copy as ``quantization_config``; mixed-precision recipes (``--quant-predicate
mixed_3_6`` ...) add one entry per module path with its own ``{group_size, bits, mode}`` (older
files: ``false`` for a module left in float). A module the map does not name has its group size
and bits inferred from its tensors' shapes, as ``mlx_lm.utils.infer_quant_config`` does. The
embedding is quantized like a linear layer (``nn.QuantizedEmbedding``) and, Gemma's head being tied,
is the output head too (``as_linear``).

Checked against mlx ``mlx/ops.cpp`` (``affine_dequantize`` and ``fp_dequantize``'s fallbacks, which the
CPU backend runs) and ``mlx/backend/cpu/quantized.cpp`` (``extract_bits``, ``dequantize_scale``) at
ml-explore/mlx 846d176227a0ac13d2667e58d2bb68b322109ab0, and mlx-lm 0.32.2 ``utils.py`` /
``convert.py``. The float32 result is bit-exact against ``mx.dequantize`` given float32 scales and
biases (tests/test_quant_mlx.py); with bf16/f16 scales mlx's own dequantize rounds twice in that
dtype (after the product and after the bias), while its matmul kernels compute ``scale * q + bias``
in float32: the float32 weight is what the kernels multiply by.
"""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np

from release.errors import InputError
from release.weights.quant.base import Getter, Scheme, problems_of

NAME = "mlx"

#: mode -> (allowed bits, allowed group sizes); mlx's quantize accepts exactly these (ops.cpp).
MODES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "affine": ((1, 2, 3, 4, 5, 6, 8), (32, 64, 128)),
    "mxfp4": ((4,), (32,)),
    "nvfp4": ((4,), (16,)),
    "mxfp8": ((8,), (32,)),
}
FP4_E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                     -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], dtype=np.float32)
_KEYS = ("group_size", "bits", "mode")
FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(ml_dtypes.bfloat16))


# --- recognising -----------------------------------------------------------------------------------


def _params(entry: Any, where: str) -> dict[str, Any]:
    """One {group_size, bits, mode} entry of the quantization map, checked against what mlx supports."""
    if not isinstance(entry, dict):
        raise InputError(f"MLX {where} must be an object with group_size and bits, not {entry!r}")
    mode = entry.get("mode", "affine")
    if mode not in MODES:
        raise InputError(f"MLX quantization mode {mode!r} ({where}) is not supported "
                         f"(supported: {', '.join(MODES)})")
    bits, group = entry.get("bits"), entry.get("group_size")
    if not isinstance(bits, int) or isinstance(bits, bool) or not isinstance(group, int) or isinstance(group, bool):
        raise InputError(f"MLX {where}: bits and group_size must be integers, got {bits!r} and {group!r}")
    ok_bits, ok_groups = MODES[mode]
    if bits not in ok_bits:
        raise InputError(f"MLX {mode} {bits}-bit ({where}) is not supported "
                         f"(supported bits: {', '.join(map(str, ok_bits))})")
    if group not in ok_groups:
        raise InputError(f"MLX {mode} group size {group} ({where}) is not supported "
                         f"(supported: {', '.join(map(str, ok_groups))})")
    return {"group_size": group, "bits": bits, "mode": mode}


def _quantization(config: dict[str, Any]) -> dict[str, Any] | None:
    """config.json's ``quantization`` (mlx-lm's own key), at the top or in text_config."""
    for c in (config, config.get("text_config")):
        if isinstance(c, dict) and isinstance(c.get("quantization"), dict):
            return c["quantization"]
    return None


def recognise(config: dict[str, Any], names: set[str]) -> Scheme | None:
    """An MLX checkpoint: a ``quantization`` key (mlx-lm's) with group_size/bits, or its tensors alone."""
    q = _quantization(config)
    if q is None:
        qc = config.get("quantization_config")
        # mlx-lm copies "quantization" into "quantization_config" (no quant_method); a copy alone is MLX too
        if isinstance(qc, dict) and "quant_method" not in qc and {"group_size", "bits"} <= set(qc):
            q = qc
    if q is None:
        return None
    default = _params({k: q[k] for k in _KEYS if k in q}, "quantization")
    overrides: dict[str, dict[str, Any] | bool] = {}
    for path, entry in q.items():
        if path in _KEYS:
            continue
        if entry is False:  # older mlx-lm: this module stays in float
            overrides[path] = False
        elif isinstance(entry, dict):
            overrides[path] = _params(entry, f"quantization[{path!r}]")
    quantized = {n[:-len(".scales")] for n in names if n.endswith(".scales")}
    used = [overrides.get(m) or default for m in quantized if overrides.get(m) is not False]
    bits = min((p["bits"] for p in used), default=default["bits"])  # the bound follows the fewest bits
    modes = sorted({p["mode"] for p in used} or {default["mode"]})
    groups = sorted({p["group_size"] for p in used} or {default["group_size"]})
    return Scheme(NAME, "+".join(modes), bits, groups[0] if len(groups) == 1 else None,
                  {"default": default, "overrides": overrides,
                   "bits_used": sorted({p["bits"] for p in used}), "group_sizes": groups})


def quantized_modules(scheme: Scheme, names: set[str]) -> set[str]:
    """Modules with ``.scales`` next to their ``.weight`` (how mlx-lm's loader finds them), not mapped to false.

    A ``.biases`` without its scales counts too, so that the missing scales are named (not a U32 "float" weight).
    """
    over = scheme.details.get("overrides", {})
    found = {n.rsplit(".", 1)[0] for n in names if n.endswith((".scales", ".biases"))}
    return {m for m in found if m + ".weight" in names and over.get(m) is not False}


def stored_names(scheme: Scheme, module: str, names: set[str]) -> set[str]:
    return {f"{module}.{t}" for t in ("weight", "scales", "biases", "global_scale")} & names


# --- the parameters of one module ----------------------------------------------------------------------


def module_params(scheme: Scheme, module: str, get: Getter, shape: tuple[int, int]) -> dict[str, Any]:
    """group_size, bits and mode of one module: its map entry, else inferred from its shapes (mlx-lm's loader).

    Raises InputError naming the tensor when the stored shapes do not fit them.
    """
    out_dim, in_dim = shape
    w, s = get(f"{module}.weight"), get(f"{module}.scales")
    if w.dtype != np.uint32 or w.ndim != 2 or w.shape[0] != out_dim:
        raise InputError(f"tensor {module}.weight is {w.dtype} {list(w.shape)}: an MLX quantized weight is uint32 "
                         f"[{out_dim}, {in_dim} * bits / 32]")
    if s.ndim != 2 or s.shape[0] != out_dim or s.shape[1] == 0 or in_dim % s.shape[1]:
        raise InputError(f"tensor {module}.scales has shape {list(s.shape)}: expected [{out_dim}, {in_dim} / group_size]")
    entry = scheme.details.get("overrides", {}).get(module)
    if isinstance(entry, dict):
        p = dict(entry)
    else:  # mlx_lm.utils.infer_quant_config: the shapes say group size and bits; the scales' dtype the mode
        group, bits = in_dim // s.shape[1], (w.shape[1] * 32) // in_dim
        if s.dtype != np.uint8:
            mode = "affine"
        else:
            mode = {(4, 16): "nvfp4", (4, 32): "mxfp4", (8, 32): "mxfp8"}.get((bits, group))
            if mode is None:
                raise InputError(f"tensor {module}.scales is uint8 with {bits}-bit codes in groups of {group}: "
                                 "no MLX mode stores that (mxfp4: 4-bit g32, nvfp4: 4-bit g16, mxfp8: 8-bit g32)")
        p = _params({"group_size": group, "bits": bits, "mode": mode}, f"module {module}")
    bits, group, mode = p["bits"], p["group_size"], p["mode"]
    if w.shape[1] * 32 != in_dim * bits:
        raise InputError(f"tensor {module}.weight has shape {list(w.shape)}: {bits}-bit codes of {in_dim} inputs "
                         f"need [{out_dim}, {in_dim * bits // 32 if in_dim * bits % 32 == 0 else in_dim * bits / 32}]")
    if s.shape[1] * group != in_dim:
        raise InputError(f"tensor {module}.scales has shape {list(s.shape)}: groups of {group} over {in_dim} inputs "
                         f"need [{out_dim}, {in_dim // group}]")
    if not ((s.dtype in FLOATS) if mode == "affine" else (s.dtype == np.uint8)):
        raise InputError(f"tensor {module}.scales is {s.dtype}: MLX {mode} scales are "
                         + ("bf16, f16 or f32" if mode == "affine" else "uint8"))
    if mode == "affine":
        b = get(f"{module}.biases")
        if b.shape != s.shape or b.dtype != s.dtype:
            raise InputError(f"tensor {module}.biases is {b.dtype} {list(b.shape)}; its scales are "
                             f"{s.dtype} {list(s.shape)}")
    return p


def validate(scheme: Scheme, module: str, get: Getter, shape: tuple[int, int]) -> list[str]:
    """Structure problems of one module, read from its tensors' headers only (empty: it will dequantize)."""
    return problems_of(lambda: module_params(scheme, module, get, shape),
                       lambda name: f"tensor {name} is missing (MLX {module} has scales, so it is quantized)")


# --- dequantizing ---------------------------------------------------------------------------------------


def unpack_codes(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    """MLX's packed rows back to codes.  uint32 [rows, n * bits / 32] -> uint8/uint16 [rows, n]

    Each row is a little-endian bit stream. ``lcm(bits, 8) / 8`` bytes hold a whole number of codes
    (1 byte: 8 one-bit, 4 two-bit, 2 four-bit or 1 eight-bit codes; 3 bytes: 8 three-bit or 4 six-bit
    codes; 5 bytes: 8 five-bit codes), so the bytes are read in such packs, each as one little-endian
    integer, and shifted apart -- mlx's ``extract_bits`` for 3/5/6, its shift-and-mask for the others.
    """
    rows = packed.shape[0]
    raw = np.ascontiguousarray(packed).view(np.uint8).reshape(rows, -1)  # [rows, n * bits / 8]
    nbytes = math.lcm(bits, 8) // 8
    per = nbytes * 8 // bits  # codes per pack
    packs = raw.reshape(rows, -1, nbytes).astype(np.uint64)  # [rows, n / per, nbytes]
    word = (packs << (np.arange(nbytes, dtype=np.uint64) * np.uint64(8))).sum(-1, dtype=np.uint64)  # [rows, n / per]
    shifts = np.arange(per, dtype=np.uint64) * np.uint64(bits)
    codes = (word[..., None] >> shifts) & np.uint64((1 << bits) - 1)  # [rows, n / per, per]
    return codes.reshape(rows, n).astype(np.uint8 if bits <= 8 else np.uint16)


def _e8m0(s: np.ndarray) -> np.ndarray:
    """MX scales: 2^(s - 127) in float32 (s = 0 is 2^-127, as mlx's CPU kernel's 0x40 bf16; 255 is inf)."""
    return np.ldexp(np.float32(1.0), s.astype(np.int32) - 127).astype(np.float32)


def _select(a: np.ndarray, rows: np.ndarray | slice | None) -> np.ndarray:
    return a if rows is None else a[rows]


def dequantize(scheme: Scheme, module: str, get: Getter, shape: tuple[int, int],
               rows: np.ndarray | slice | None = None) -> np.ndarray:
    """float32 [out, in] (or those rows): affine ``scale * q + bias``, mx/nvfp ``value(q) * scale`` per group."""
    p = module_params(scheme, module, get, shape)
    bits, group, mode = p["bits"], p["group_size"], p["mode"]
    in_dim = shape[1]
    w = _select(get(f"{module}.weight"), rows)  # [r, in * bits / 32] uint32
    s = _select(get(f"{module}.scales"), rows)  # [r, in / group]
    r = w.shape[0]
    q = unpack_codes(w, bits, in_dim).reshape(r, in_dim // group, group)  # [r, groups, group]
    if mode == "affine":
        b = _select(get(f"{module}.biases"), rows)
        # Two float32 roundings, product then sum, as mlx's dequantize (no fused multiply-add); with bf16/f16
        # scales the product is exact, so this is also what mlx's kernels compute in float32.
        out = q.astype(np.float32) * s.astype(np.float32)[..., None]
        out += b.astype(np.float32)[..., None]
    else:
        values = FP4_E2M1[q] if bits == 4 else q.view(ml_dtypes.float8_e4m3fn).astype(np.float32)
        if mode == "nvfp4":
            scale = s.view(ml_dtypes.float8_e4m3fn).astype(np.float32)
            try:
                g = np.asarray(get(f"{module}.global_scale"), dtype=np.float32).reshape(-1)
            except KeyError:  # optional: mlx-lm writes it for switch (MoE) layers only
                g = None
            if g is not None:  # mlx: scales * (global_scale / (448 * 6)), in float32
                if g.size != 1:
                    raise InputError(f"tensor {module}.global_scale has {g.size} values; nvfp4's global scale is one")
                scale = scale * (g[0] / np.float32(448.0 * 6.0))
        else:
            scale = _e8m0(s)
        out = values * scale[..., None]
    return out.reshape(r, in_dim)
