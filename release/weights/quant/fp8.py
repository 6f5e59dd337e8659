"""transformers FP8 checkpoints: ``fbgemm_fp8`` (per output channel) and ``fp8`` (FineGrainedFP8, block-scaled).

``config.json``::

    "quantization_config": {"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0,
                            "modules_to_not_convert": ["lm_head"]}
    "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128],
                            "activation_scheme": "dynamic", "modules_to_not_convert": null}

Stored per quantized linear ``{m}``:

=============================  ============================================  ==========  ==============================
tensor                         shape                                         dtype       what
=============================  ============================================  ==========  ==============================
``fbgemm_fp8``
-----------------------------------------------------------------------------------------------------------------------
``{m}.weight``                 ``[out, in]``                                 F8_E4M3
``{m}.weight_scale``           ``[out, 1]``                                  float32     one scale per output row
``fp8`` (FineGrainedFP8)
-----------------------------------------------------------------------------------------------------------------------
``{m}.weight``                 ``[out, in]``                                 F8_E4M3
``{m}.weight_scale_inv``       ``[ceil(out / bh), ceil(in / bw)]``           float32     per ``[bh, bw]`` block
                               (``[]`` / ``[1]`` when weight_block_size is   (F8_E8M0    (``scale_fmt: "ue8m0"``)
                               null: per tensor)                             for ue8m0)
``{m}.activation_scale``       ``[]``                                        float32     ``activation_scheme: "static"``
=============================  ============================================  ==========  ==============================

Dequantization: ``w = f8 * scale``, the scale broadcast per output row (fbgemm) or per block, a partial last
block taking its block's scale. Despite its name ``weight_scale_inv`` is *multiplied*: it is the inverse of
the quantizer's ``FP8_MAX / amax`` scale, i.e. ``amax / 448``.

Checked against transformers 5.25 ``integrations/finegrained_fp8.py`` (``FP8Linear`` buffer shapes,
``Fp8Quantize._quantize_one``, ``Fp8Dequantize._dequantize_one``, ``_dequantize_fp8_weight`` for partial
blocks) and ``integrations/fbgemm_fp8.py`` (``FbgemmFp8Linear``: ``weight_scale [out, 1]`` float32 given to
``f8f8bf16_rowwise`` as the per-row weight scale), ``quantizers/quantizers_utils.py``
``should_convert_module`` (``modules_to_not_convert``), ``utils/quantization_config.py``
(``FineGrainedFP8Config``, ``FbgemmFp8Config``). Block fp8 runs transformers' own CPU code as the oracle in
tests/test_quant_ct_fp8.py and is bit-exact with ``Fp8Dequantize`` at float32 output (one rounding of the
same product); fbgemm's only dequantizer is the CUDA kernel ``f8f8bf16_rowwise``, so it is tested against a
torch line-by-line re-implementation of that per-row scaling, not the kernel.

Refused, naming the value: ``expert_dtype`` "fp4", ``modules_to_convert`` (FP8 embedding tables),
``weight_block_size`` that is not two positive integers; a stored layer that ``modules_to_not_convert``
excludes is an error.
"""

from __future__ import annotations

import re
from typing import Any

import ml_dtypes
import numpy as np

from release.errors import InputError
from release.weights.quant.base import Getter, Scheme
from release.weights.quant.gptq import F8_E4M3, as_float32, fetch, select_rows, text

NAME = "fp8"

METHODS = ("fbgemm_fp8", "fp8")
SCALE_DTYPES = (np.float32, np.float16, ml_dtypes.bfloat16, ml_dtypes.float8_e8m0fnu)


def recognise(config: dict[str, Any], names: set[str]) -> Scheme | None:
    """An FP8 scheme from ``quantization_config`` (quant_method "fbgemm_fp8" or "fp8"), or None."""
    qc = config.get("quantization_config")
    if not isinstance(qc, dict):
        return None
    method = text(qc.get("quant_method"))
    if method not in METHODS:
        return None
    # MiniMax spells it ignored_layers (FineGrainedFP8Config accepts the alias)
    skip = qc.get("modules_to_not_convert") or qc.get("ignored_layers") or []
    details: dict[str, Any] = {"modules_to_not_convert": [skip] if isinstance(skip, str) else list(skip)}
    if method == "fbgemm_fp8":
        details["activation_scale_ub"] = qc.get("activation_scale_ub")
        scheme = Scheme(format=NAME, method="fbgemm_fp8", bits=8, group_size=None, details=details)
        suffix = ".weight_scale"
    else:
        if text(qc.get("expert_dtype") or "fp8") != "fp8":
            raise InputError(f"fp8 expert_dtype {qc.get('expert_dtype')!r} is not supported (supported: 'fp8')")
        if qc.get("modules_to_convert"):
            raise InputError(f"fp8 modules_to_convert {qc.get('modules_to_convert')!r} is not supported",
                             hint="FP8 embedding tables")
        scale_fmt = text(qc.get("scale_fmt") or "float")
        if scale_fmt not in ("float", "ue8m0"):
            raise InputError(f"fp8 scale_fmt {scale_fmt!r} is not supported (supported: 'float', 'ue8m0')")
        activation = text(qc.get("activation_scheme") or "dynamic")
        if activation not in ("dynamic", "static"):
            raise InputError(f"fp8 activation_scheme {activation!r} is not supported (supported: 'dynamic', 'static')")
        block = qc.get("weight_block_size", [128, 128])  # FineGrainedFP8Config's default
        if block is not None and not (isinstance(block, (list, tuple)) and len(block) == 2
                                      and all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)):
            raise InputError(f"fp8 weight_block_size {block!r} is not supported (two positive integers, or null)")
        details.update(block=list(block) if block else None, activation_scheme=activation, scale_fmt=scale_fmt)
        scheme = Scheme(format=NAME, method="fp8-block" if block else "fp8-tensor", bits=8,
                        group_size=block[1] if block else None, details=details)
        suffix = ".weight_scale_inv"
    if not any(n.endswith(suffix) for n in names):
        raise InputError(f"config.json says {method} but no {suffix} tensor is stored")
    return scheme


def _scale_name(scheme: Scheme) -> str:
    return "weight_scale" if scheme.method == "fbgemm_fp8" else "weight_scale_inv"


def not_converted(name: str, patterns: list[str]) -> bool:
    """transformers quantizers_utils.should_convert_module, negated: a prefix at a module boundary, a regex, a suffix."""
    boundary = r"(?:(?<=\.)|(?=\.|$))"
    for key in patterns:
        try:
            if re.match(rf"(?:{key}){boundary}", name):
                return True
        except re.error:  # a pattern that is no regex can still match as a suffix
            pass
        if name.endswith(key):
            return True
    return False


def quantized_modules(scheme: Scheme, names: set[str]) -> set[str]:
    """Every layer storing the scale tensor; one that ``modules_to_not_convert`` excludes is an error."""
    suffix = "." + _scale_name(scheme)
    mods = {n[: -len(suffix)] for n in names if n.endswith(suffix)}
    clash = sorted(m for m in mods if not_converted(m, scheme.details.get("modules_to_not_convert", [])))
    if clash:
        raise InputError(f"{scheme.method}: {clash[0]} is stored quantized but modules_to_not_convert excludes it")
    return mods


def stored_names(scheme: Scheme, module: str, names: set[str]) -> set[str]:
    """``{m}.weight`` (float8) and its scale; ``{m}.activation_scale`` when stored (static activations)."""
    return {f"{module}.weight", f"{module}.{_scale_name(scheme)}", f"{module}.activation_scale"} & names


def dequantize(scheme: Scheme, module: str, get: Getter, shape: tuple[int, int],
               rows: np.ndarray | slice | None = None) -> np.ndarray:
    """float32 [out, in] (or `rows` of it) of one FP8 layer."""
    out, in_ = shape
    sel = select_rows(out, rows)
    what = f"{scheme.method} layer {module} [{out}, {in_}]"
    weight = fetch(get, f"{module}.weight", (out, in_), (F8_E4M3,), what)
    name = f"{module}.{_scale_name(scheme)}"
    scale = fetch(get, name, None, SCALE_DTYPES, what)
    w = as_float32(weight[sel])  # exact, and a fresh array we may scale in place: every E4M3 value is a float32
    block = scheme.details.get("block")
    if scheme.method == "fbgemm_fp8":
        w *= as_float32(_shaped(scale, name, (out, 1), what)[sel])  # [sel, 1]
    elif block is None:
        w *= as_float32(_shaped(scale, name, (1, 1), what))  # per tensor
    else:
        bh, bw = block
        grid = as_float32(_shaped(scale, name, (-(-out // bh), -(-in_ // bw)), what))
        per_row = grid[np.arange(out)[sel] // bh]  # [sel, blocks along in]: each row's block scales
        for j in range(grid.shape[1]):  # a column band at a time: no [sel, in] scale array
            w[:, j * bw:(j + 1) * bw] *= per_row[:, j:j + 1]  # a partial last band takes its block's scale
    # one float32 rounding of f8 * scale, as Fp8Dequantize (q.float() * s.float()) before its output cast
    return w


def _shaped(a: np.ndarray, name: str, want: tuple[int, int], what: str) -> np.ndarray:
    """The scale as `want`; a per-row one may be stored [out], a per-tensor one [], [1] or [1, 1]."""
    if a.size != want[0] * want[1] or a.ndim > 2 or (a.ndim == 2 and tuple(a.shape) != want):
        raise InputError(f"{what}: tensor {name} has shape {list(a.shape)}, expected {list(want)}",
                         hint="truncated or misshapen tensor")
    return a.reshape(want)
