"""AWQ checkpoints (AutoAWQ, llm-compressor's AutoAWQ export, transformers' AwqConfig): 4-bit GEMM and GEMV packing.

``config.json``::

    "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": true,
                            "version": "gemm" | "gemv", "modules_to_not_convert": null, ...}

(AutoAWQ's own ``quant_config.json`` spells them ``w_bit`` / ``q_group_size``; transformers 5 writes
``format`` next to the legacy ``version``; both are read.) Stored per quantized linear ``{m}`` (``G = in /
group_size``; ``group_size`` -1 is one group of ``in``):

``version: "gemm"`` (``WQLinear_GEMM``)

=================  =====================  =======  ==========================================================
tensor             shape                  dtype    what
=================  =====================  =======  ==========================================================
``{m}.qweight``    ``[in, out / 8]``      int32    8 codes per word along OUTPUT, nibble ``j`` holding output
                                                   ``8c + [0, 2, 4, 6, 1, 3, 5, 7][j]`` (AWQ_ORDER)
``{m}.qzeros``     ``[G, out / 8]``       int32    zero points, same interleaved order
``{m}.scales``     ``[G, out]``           float16
=================  =====================  =======  ==========================================================

``version: "gemv"`` (``WQLinear_GEMV``)

=================  =====================  =======  ==========================================================
tensor             shape                  dtype    what
=================  =====================  =======  ==========================================================
``{m}.qweight``    ``[out, in / 8]``      int32    8 codes per word along INPUT, in order, lowest nibble first
``{m}.qzeros``     ``[out, Z]``           int32    group ``g``'s zero at word ``g // 8``, nibble ``g % 8``;
                                                   ``Z = ceil(G / 8)`` rounded up to a multiple of 1, 2 or 4
                                                   for group size >= 128, 64, 32 (``calculate_zeros_width``)
``{m}.scales``     ``[out, 8 Z]``         float16  the first ``G`` columns used, the rest padding (zeros)
=================  =====================  =======  ==========================================================

Dequantization (both): ``w[out, in] = (q - zero[group(in)]) * scale[group(in)]``; 4-bit only, zero points
always (AutoAWQ's packers assert them; ``zero_point: false`` cannot be written).

Checked against AutoAWQ (commit 88e4c76b): ``awq/utils/packing_utils.py`` (``AWQ_ORDER``,
``AWQ_REVERSE_ORDER``, ``unpack_awq``, ``reverse_awq_order``, ``dequantize_gemm``),
``awq/modules/linear/gemm.py`` and ``gemv.py`` (``__init__`` buffer shapes, ``from_linear`` packing,
``calculate_zeros_width``), and AutoAWQ_kernels ``awq_ext/quantization/gemv_cuda.cu`` (how the GEMV kernel
reads qweight, qzeros and scales: ``scale * (q - zero)``, nibbles lowest first). GEMM is bit-exact with
``dequantize_gemm`` run with float32 scales (and equals its fp16 result once rounded to fp16); GEMV matches
the weight ``from_linear`` packed (AutoAWQ has no CPU dequantizer for it; the kernel was read, not run).

Refused, naming the value: ``version`` "gemv_fast" (int16 interleaved tiles with fp16 pre-scaled zeros),
"marlin", "llm-awq" and any other; bits other than 4; ``zero_point: false``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from release.errors import InputError
from release.weights.quant.base import Getter, Scheme
from release.weights.quant.gptq import FLOATS, as_float32, fetch, select_rows, text, unpack_last

NAME = "awq"

VERSIONS = ("gemm", "gemv")
TENSORS = ("qweight", "qzeros", "scales")
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # nibble j of a GEMM word holds output 8c + AWQ_ORDER[j]
AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)  # output 8c + k sits in nibble AWQ_REVERSE_ORDER[k]
CHUNK = 4096  # input rows of a GEMM layer dequantized at a time


def recognise(config: dict[str, Any], names: set[str]) -> Scheme | None:
    """An AWQ scheme from ``quantization_config`` (quant_method "awq"), or None when it is not AWQ."""
    qc = config.get("quantization_config")
    if not isinstance(qc, dict) or text(qc.get("quant_method")) != "awq":
        return None
    bits = qc.get("bits", qc.get("w_bit", 4))
    if bits != 4 or isinstance(bits, bool):
        raise InputError(f"awq bits {bits!r} is not supported (supported: 4)")
    version = text(qc.get("version") or qc.get("format") or "gemm")
    if version not in VERSIONS:
        raise InputError(f"awq version {version!r} is not supported (supported: 'gemm', 'gemv')")
    if qc.get("zero_point", True) is not True:
        raise InputError(f"awq zero_point {qc.get('zero_point')!r} is not supported (AutoAWQ packs zero points)")
    group_size = qc.get("group_size", qc.get("q_group_size", 128))
    if isinstance(group_size, bool) or not isinstance(group_size, int) or (group_size <= 0 and group_size != -1):
        raise InputError(f"awq group_size {group_size!r} is not supported (a positive size, or -1 per channel)")
    if version == "gemv" and group_size not in (-1, 32, 64) and group_size < 128:
        # calculate_zeros_width (gemv.py) raises NotImplementedError for these: no such checkpoint exists
        raise InputError(f"awq gemv group_size {group_size} is not supported (32, 64, or 128 and more)")
    if not any(n.endswith(".qweight") for n in names):
        raise InputError("config.json says awq but no .qweight tensor is stored")
    skip = qc.get("modules_to_not_convert") or []
    skip = [skip] if isinstance(skip, str) else [str(s) for s in skip]
    return Scheme(format=NAME, method=f"awq-{version}", bits=4, group_size=None if group_size == -1 else group_size,
                  details={"version": version, "zero_point": True, "modules_to_not_convert": skip})


def quantized_modules(scheme: Scheme, names: set[str]) -> set[str]:
    """Every stored ``{m}.qweight`` prefix; one that ``modules_to_not_convert`` names is an error."""
    modules = {n[: -len(".qweight")] for n in names if n.endswith(".qweight")}
    # AutoAWQ skips a linear when any entry is a substring of its name (quantizer.py exclude_layers_to_not_quantize)
    clash = sorted(m for m in modules if any(s in m for s in scheme.details.get("modules_to_not_convert", [])))
    if clash:
        raise InputError(f"awq: {clash[0]} is stored quantized but modules_to_not_convert excludes it")
    return modules


def stored_names(scheme: Scheme, module: str, names: set[str]) -> set[str]:
    """``{m}.qweight``, ``.qzeros``, ``.scales`` as stored."""
    return {f"{module}.{t}" for t in TENSORS} & names


def gemv_zeros_width(in_features: int, group_size: int) -> int:
    """Words of GEMV qzeros per output row (AutoAWQ gemv.py ``calculate_zeros_width``)."""
    multiplier = 1 if group_size >= 128 else 2 if group_size == 64 else 4  # 32 (others refused in recognise)
    base = -(-(in_features // group_size) // 8)
    return -(-base // multiplier) * multiplier


def dequantize(scheme: Scheme, module: str, get: Getter, shape: tuple[int, int],
               rows: np.ndarray | slice | None = None) -> np.ndarray:
    """float32 [out, in] (or `rows` of it) of one AWQ layer."""
    out, in_ = shape
    gs = scheme.group_size or in_
    what = f"awq {scheme.details['version']} layer {module} [{out}, {in_}] g{gs}"
    if in_ % gs or out % 8 or in_ % 8:
        raise InputError(f"{what}: AWQ needs in divisible by the group size and in, out by 8")
    sel = select_rows(out, rows)
    if scheme.details["version"] == "gemm":
        return _gemm(module, get, out, in_, gs, sel, what)
    return _gemv(module, get, out, in_, gs, sel, what)


def _gemm(module: str, get: Getter, out: int, in_: int, gs: int, sel, what: str) -> np.ndarray:
    groups = in_ // gs
    qweight = fetch(get, f"{module}.qweight", (in_, out // 8), (np.int32, np.uint32), what)
    qzeros = fetch(get, f"{module}.qzeros", (groups, out // 8), (np.int32, np.uint32), what)
    scales = fetch(get, f"{module}.scales", (groups, out), FLOATS, what)
    outputs = np.arange(out)[sel]
    words = np.unique(outputs // 8)  # only the int32 columns holding the requested outputs are unpacked
    # output 8c + k sits in nibble AWQ_REVERSE_ORDER[k] of word c, i.e. column 8 * (c's place in words) + that
    cols = np.searchsorted(words, outputs // 8) * 8 + np.array(AWQ_REVERSE_ORDER)[outputs % 8]
    zeros_t = unpack_last(qzeros[:, words], 4, 8 * words.size)[:, cols].T.astype(np.float32)  # [sel, G]
    scl_t = as_float32(scales)[:, outputs].T  # [sel, G]
    result = np.empty((outputs.size, in_), np.float32)
    for i0 in range(0, in_, CHUNK):
        i1 = min(in_, i0 + CHUNK)
        # transpose the one-byte codes, not the float32 result, then reorder whole rows: [chunk, 8w] -> [sel, chunk]
        codes = np.ascontiguousarray(unpack_last(qweight[i0:i1, words], 4, 8 * words.size).T)[cols]
        block = codes.astype(np.float32)  # [sel, chunk]; (q - z) * s below is exact in float32 (4 + 11 bits)
        if (i1 - i0) % gs == 0 and i0 % gs == 0:  # whole groups: broadcast, no [sel, chunk] gathers
            b3 = block.reshape(block.shape[0], -1, gs)
            g = slice(i0 // gs, i1 // gs)
            b3 -= zeros_t[:, g, None]
            b3 *= scl_t[:, g, None]
        else:  # per channel (one group wider than a chunk)
            g = np.arange(i0, i1) // gs
            block = (block - zeros_t[:, g]) * scl_t[:, g]
        result[:, i0:i1] = block
    return result


def _gemv(module: str, get: Getter, out: int, in_: int, gs: int, sel, what: str) -> np.ndarray:
    groups = in_ // gs
    width = gemv_zeros_width(in_, gs)
    qweight = fetch(get, f"{module}.qweight", (out, in_ // 8), (np.int32, np.uint32), what)
    qzeros = fetch(get, f"{module}.qzeros", (out, width), (np.int32, np.uint32), what)
    scales = fetch(get, f"{module}.scales", (out, width * 8), FLOATS, what)
    codes = unpack_last(qweight[sel], 4, in_).astype(np.float32)  # [sel, in]
    zeros = unpack_last(qzeros[sel], 4, groups).astype(np.float32)  # [sel, G]: padding words ignored
    scl = as_float32(scales[sel][:, :groups])  # [sel, G]: padding columns ignored
    n = codes.shape[0]
    codes = codes.reshape(n, groups, gs)  # groups are contiguous along in: broadcast instead of gathering
    return ((codes - zeros[:, :, None]) * scl[:, :, None]).reshape(n, in_)
