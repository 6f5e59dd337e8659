"""GPTQ checkpoints (AutoGPTQ, GPTQModel, optimum/transformers): int32-packed codes, per-group fp16 scales, zeros.

``config.json``::

    "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": false,
                            "sym": true, "checkpoint_format": "gptq" | "gptq_v2", ...}

Stored per quantized linear layer ``{m}`` (``in`` / ``out`` = the layer's input / output features,
``G = ceil(in / group_size)``, or 1 when ``group_size`` is -1, per channel):

=================  ===================================  =======  ==================================================
tensor             shape                                dtype    what
=================  ===================================  =======  ==================================================
``{m}.qweight``    ``[ceil(in * bits / 32), out]``      int32    codes packed along the INPUT dimension
``{m}.qzeros``     ``[G, ceil(out * bits / 32)]``       int32    zero points packed along the OUTPUT dimension
``{m}.scales``     ``[G, out]``                         float16  one scale per group and output
``{m}.g_idx``      ``[in]``                             int32    group of each input row (a permutation with
                                                                 ``desc_act``); ``i // group_size`` without
=================  ===================================  =======  ==================================================

Packing: every 32 codes along the packed dimension are one little-endian bit stream of ``bits`` int32 words,
code ``k`` at bit ``k * bits``. For 2/4/8 bits that is ``32 / bits`` whole codes per word, lowest bits first;
for 3 bits it is AutoGPTQ's "10 | 1 | 10 | 1 | 10" scheme, where codes 10 and 21 straddle two words (bits
30..32 and 63..65 of the stream): the same bit stream. ``qzeros`` uses it along ``out``.

Dequantization: ``w[out, in] = (q[in, out] - zero[g_idx[in], out]) * scale[g_idx[in], out]``, transposed.
``checkpoint_format`` "gptq" (v1, also the default when absent) stores ``zero - 1`` per field, so the real
zero is ``(stored + 1) & (2**bits - 1)``, as GPTQModel (what transformers loads GPTQ with) reads it;
AutoGPTQ's 3-bit torch path skips the mask and reads a stored 7 as 8, a zero no 3-bit packer writes.
"gptq_v2" stores the real zero.

Checked against (source read, and run as the oracle for tests/data/quant/gptq_oracle.safetensors, see
tests/make_quant_oracles.py):

* GPTQModel ``gptqmodel/utils/model_dequant.py``: ``convert_gptq_file``, ``unpack_rows``, ``unpack_cols``,
  ``_unpack_rows_3bit``, ``_uses_gptq_v1_qzeros`` (v1 is "gptq" or absent), ``_shift_gptq_qzeros``
  (the per-field ``(z + 1) & maxq``); ``gptqmodel/nn_modules/qlinear/__init__.py`` ``dequantize_weight``
  and ``pack_block`` (the 3-bit word layout);
* AutoGPTQ ``auto_gptq/nn_modules/qlinear/qlinear_cuda.py`` ``pack`` (v1: ``zeros -= 1`` before packing,
  3-bit layout) and ``qlinear_cuda_old.py`` ``forward`` (``zeros + 1`` then ``& maxq``);
* transformers ``utils/quantization_config.py`` ``GPTQConfig`` (bits 2/3/4/8; ``format`` is the newer
  name of ``checkpoint_format``).

Results are bit-exact with GPTQModel's ``convert_gptq_file`` in float32: ``(q - z)`` is a small integer and
its product with an fp16 scale needs at most 19 significant bits, so float32 holds it exactly.

Not supported (refused naming the value): other bit widths, GPTQModel's planar "gptq_p" and 5/6/7-bit
layouts, kernel-repacked formats ("marlin", "bitblas", ``is_marlin_format``), ``pack_dtype`` other than
int32, GPTQModel's ``rotation`` (rotated weights), and ``dynamic`` per-module overrides of bits or group
size (``-:`` skip entries are fine: which layers are quantized is read from the tensor names).

One historical case nobody can undo: AutoGPTQ's v1 packer ORed ``zero - 1 = -1`` (all 32 bits set) into
``qzeros`` for an asymmetric group whose zero is 0, overwriting the neighbouring fields; such a checkpoint
dequantizes here as in GPTQModel and AutoGPTQ.
"""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np

from release.errors import InputError
from release.weights.quant.base import Getter, Scheme

NAME = "gptq"

BITS = (2, 3, 4, 8)
FORMATS = ("gptq", "gptq_v2")  # v1 (zero - 1 stored) and v2 (real zero)
TENSORS = ("qweight", "qzeros", "scales", "g_idx")
CHUNK = 4096  # input rows dequantized at a time (multiple of 32): bounds the int/float temporaries

# ---------------------------------------------------------------------------------------------------------
# Bit unpacking shared by the integer formats (gptq, awq, compressed-tensors pack-quantized)
# ---------------------------------------------------------------------------------------------------------


def packed_words(count: int, bits: int) -> int:
    """int32 words holding `count` codes of `bits` bits as one dense bit stream."""
    return math.ceil(count * bits / 32)


def unpack_last(words: np.ndarray, bits: int, count: int) -> np.ndarray:
    """[R, ceil(count*bits/32)] int32/uint32 words -> [R, count] uint8 codes; code k at stream bit k*bits.

    Little-endian within a word, words in order: for bits dividing 32 that is the familiar "32 / bits codes
    per word, lowest first"; for 3 bits a code may straddle two words (AutoGPTQ's 3-bit scheme, and
    compressed-tensors' dense packing of any width).
    """
    w = np.ascontiguousarray(words).view(np.uint32)  # [R, W]; a view: int32 -> uint32 keeps the bits
    rows = w.shape[0]
    blocks = math.ceil(count / 32)
    need = blocks * bits  # 32 codes take exactly `bits` words
    if w.shape[1] < need:  # the last block may be stored short (its missing words are padding)
        w = np.concatenate([w, np.zeros((rows, need - w.shape[1]), np.uint32)], axis=1)
    w = w[:, :need].reshape(rows, blocks, bits)  # [R, blocks, bits]
    out = np.empty((rows, blocks, 32), np.uint8)
    mask = np.uint32((1 << bits) - 1)
    for k in range(32):  # 32 vector ops whatever the size; temporaries are one code plane each
        start = k * bits
        word, off = divmod(start, 32)
        v = w[:, :, word] >> np.uint32(off)
        if off + bits > 32:  # straddles into the next word: its low bits are this code's high bits
            v = v | (w[:, :, word + 1] << np.uint32(32 - off))
        out[:, :, k] = v & mask
    return out.reshape(rows, blocks * 32)[:, :count]


def pack_last(codes: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`unpack_last`: [R, C] codes (< 2**bits) -> [R, ceil(C*bits/32)] int32 (for tests and tools)."""
    c = np.asarray(codes).astype(np.uint64)
    rows, count = c.shape
    blocks = math.ceil(count / 32)
    padded = np.zeros((rows, blocks * 32), np.uint64)
    padded[:, :count] = c & np.uint64((1 << bits) - 1)
    padded = padded.reshape(rows, blocks, 32)
    words = np.zeros((rows, blocks, bits), np.uint64)
    for k in range(32):
        word, off = divmod(k * bits, 32)
        words[:, :, word] |= (padded[:, :, k] << np.uint64(off)) & np.uint64(0xFFFFFFFF)
        if off + bits > 32:
            words[:, :, word + 1] |= padded[:, :, k] >> np.uint64(32 - off)
    words = words.reshape(rows, blocks * bits)[:, :packed_words(count, bits)]
    return words.astype(np.uint32).view(np.int32)


def select_rows(out: int, rows: np.ndarray | slice | None) -> np.ndarray | slice:
    """The output rows asked for, as an index array (or slice(None) for all)."""
    if rows is None:
        return slice(None)
    if isinstance(rows, slice):
        return rows
    r = np.asarray(rows)
    if r.dtype == bool:
        r = np.flatnonzero(r)
    if r.size and (r.min() < -out or r.max() >= out):
        raise InputError(f"rows {int(r.min())}..{int(r.max())} are outside a layer of {out} output rows")
    return r


FLOATS = (np.float16, np.float32, ml_dtypes.bfloat16)  # scale dtypes in the wild
F8_E4M3 = np.dtype(ml_dtypes.float8_e4m3fn)


def fetch(get: Getter, name: str, shape: tuple[int, ...] | None, dtypes: tuple, what: str) -> np.ndarray:
    """One stored tensor, checked for shape (unless None) and dtype; InputError naming it otherwise."""
    try:
        a = np.asarray(get(name))
    except KeyError:
        raise InputError(f"{what}: tensor {name} is missing") from None
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise InputError(f"{what}: tensor {name} has shape {list(a.shape)}, expected {list(shape)}",
                         hint="truncated or misshapen tensor")
    if dtypes and a.dtype not in {np.dtype(d) for d in dtypes}:
        raise InputError(f"{what}: tensor {name} has dtype {a.dtype}, expected "
                         + " or ".join(str(np.dtype(d)) for d in dtypes))
    return a


def optional(get: Getter, name: str) -> np.ndarray | None:
    """A tensor a layer may or may not store (g_idx, a zero point): None when absent."""
    try:
        return np.asarray(get(name))
    except (KeyError, InputError):  # the getter's own "no such tensor" (either kind) means absent
        return None


def text(value: Any) -> str:
    """A config string, lower case; a str Enum (transformers' QuantizationMethod before JSON) by its value."""
    return str(getattr(value, "value", value) or "").lower()


_E4M3_VALUES = np.arange(256, dtype=np.uint16).astype(np.uint8).view(F8_E4M3).astype(np.float32)  # code -> value


def as_float32(a: np.ndarray) -> np.ndarray:
    """float16 / bfloat16 / float32 / float8 (ml_dtypes) -> float32, exactly, in a fresh array."""
    a = np.asarray(a)
    if a.dtype == F8_E4M3:  # a 256-entry table beats ml_dtypes' cast loop (about 1.7x on a 115M-weight layer)
        return _E4M3_VALUES[a.view(np.uint8)]
    return a.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Recognition
# ---------------------------------------------------------------------------------------------------------


def _config(config: dict[str, Any]) -> dict[str, Any] | None:
    qc = config.get("quantization_config")
    if not isinstance(qc, dict) or text(qc.get("quant_method")) != "gptq":
        return None
    return qc


def _int(qc: dict, key: str, default: Any) -> int:
    v = qc.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise InputError(f"gptq {key} {v!r} is not supported (an integer is needed)")
    return v


def recognise(config: dict[str, Any], names: set[str]) -> Scheme | None:
    """A GPTQ scheme from ``quantization_config`` (quant_method "gptq"), or None when it is not GPTQ."""
    qc = _config(config)
    if qc is None:
        return None
    bits = _int(qc, "bits", 4)
    if bits not in BITS:
        raise InputError(f"gptq bits {bits} is not supported (supported: 2, 3, 4, 8)")
    group_size = _int(qc, "group_size", 128)
    if group_size != -1 and group_size <= 0:
        raise InputError(f"gptq group_size {group_size} is not supported (a positive size, or -1 per channel)")
    # transformers 5 writes `format` and the legacy `checkpoint_format`; GPTQModel and AutoGPTQ the latter.
    fmt = text(qc.get("checkpoint_format") or qc.get("format") or "gptq")
    if fmt not in FORMATS:
        raise InputError(f"gptq checkpoint_format {fmt!r} is not supported (supported: 'gptq', 'gptq_v2')",
                         hint="kernel-repacked layouts such as marlin cannot be read back")
    if qc.get("is_marlin_format"):
        raise InputError("gptq is_marlin_format true is not supported (a Marlin-repacked checkpoint)")
    pack_dtype = text(qc.get("pack_dtype") or "int32").removeprefix("torch.")
    if pack_dtype != "int32":
        raise InputError(f"gptq pack_dtype {pack_dtype!r} is not supported (supported: 'int32')")
    _check_dynamic(qc.get("dynamic"))
    if qc.get("rotation"):  # GPTQModel's Hadamard/random rotation: stored weights are rotated, not the original's
        raise InputError(f"gptq rotation {qc['rotation']!r} is not supported (rotated weights)")
    for key in ("sym", "desc_act"):
        if key in qc and not isinstance(qc[key], bool) and qc[key] is not None:
            raise InputError(f"gptq {key} {qc[key]!r} is not supported (true or false)")
    if not any(n.endswith(".qweight") for n in names):
        raise InputError("config.json says gptq but no .qweight tensor is stored")
    return Scheme(format=NAME, method="gptq" if fmt == "gptq" else "gptq_v2", bits=bits,
                  group_size=None if group_size == -1 else group_size,
                  details={"sym": bool(qc.get("sym", True)), "desc_act": bool(qc.get("desc_act", False)),
                           "checkpoint_format": fmt, "zero_offset": 1 if fmt == "gptq" else 0})


def _check_dynamic(dynamic: Any) -> None:
    """GPTQModel's per-module overrides: skips ("-:regex") are fine, changed bits or groups are not."""
    if not dynamic:
        return
    if not isinstance(dynamic, dict):
        raise InputError(f"gptq dynamic {dynamic!r} is not supported")
    for pattern, override in dynamic.items():
        if str(pattern).startswith("-:"):
            continue
        changed = sorted(set(override or {}) & {"bits", "group_size", "sym", "desc_act"}) if isinstance(
            override, dict) else ["?"]
        if changed:
            raise InputError(f"gptq dynamic override {pattern!r} ({', '.join(changed)}) is not supported",
                             hint="per-module bit widths or group sizes")


def quantized_modules(scheme: Scheme, names: set[str]) -> set[str]:
    """Every stored ``{m}.qweight`` prefix."""
    return {n[: -len(".qweight")] for n in names if n.endswith(".qweight")}


def stored_names(scheme: Scheme, module: str, names: set[str]) -> set[str]:
    """``{m}.qweight``, ``.qzeros``, ``.scales``, ``.g_idx`` as stored (a bias stays the layer's own tensor)."""
    return {f"{module}.{t}" for t in TENSORS} & names


# ---------------------------------------------------------------------------------------------------------
# Dequantization
# ---------------------------------------------------------------------------------------------------------


def n_groups(in_features: int, group_size: int | None) -> int:
    return 1 if not group_size else math.ceil(in_features / group_size)


def dequantize(scheme: Scheme, module: str, get: Getter, shape: tuple[int, int],
               rows: np.ndarray | slice | None = None) -> np.ndarray:
    """float32 [out, in] (or `rows` of it) of one GPTQ layer."""
    out, in_ = shape
    bits = scheme.bits
    groups = n_groups(in_, scheme.group_size)
    what = f"gptq {bits}-bit layer {module} [{out}, {in_}]"
    qweight = fetch(get, f"{module}.qweight", (packed_words(in_, bits), out), (np.int32, np.uint32), what)
    qzeros = fetch(get, f"{module}.qzeros", (groups, packed_words(out, bits)), (np.int32, np.uint32), what)
    scales = fetch(get, f"{module}.scales", (groups, out), FLOATS, what)
    g_idx = _g_idx(get, module, in_, scheme.group_size, groups, what)

    sel = select_rows(out, rows)
    zeros = unpack_last(qzeros, bits, out)  # [G, out] codes
    if scheme.details.get("zero_offset", 0):  # v1: stored zero - 1 per field (GPTQModel _shift_gptq_qzeros)
        zeros = (zeros.astype(np.int16) + 1) & ((1 << bits) - 1)
    zeros_t = zeros[:, sel].T.astype(np.float32)  # [sel, G]
    scales_t = as_float32(scales)[:, sel].T  # [sel, G]
    qsel = qweight[:, sel]  # [in words, sel]
    n_out = zeros_t.shape[0]
    result = np.empty((n_out, in_), np.float32)
    words_per_chunk = CHUNK * bits // 32
    for i0 in range(0, in_, CHUNK):
        i1 = min(in_, i0 + CHUNK)
        w0 = i0 * bits // 32
        codes = unpack_last(qsel[w0:w0 + words_per_chunk].T, bits, i1 - i0)  # [sel, chunk]
        g = g_idx[i0:i1]
        # (q - z) is exact in float32, and so is its product with an fp16 scale (<= 19 significant bits).
        result[:, i0:i1] = (codes.astype(np.float32) - zeros_t[:, g]) * scales_t[:, g]
    return result


def _g_idx(get: Getter, module: str, in_: int, group_size: int | None, groups: int, what: str) -> np.ndarray:
    """The stored group of each input row, checked; ``i // group_size`` when the checkpoint has none."""
    g = optional(get, f"{module}.g_idx")
    if g is None:
        return np.arange(in_) // group_size if group_size else np.zeros(in_, np.int64)
    if g.shape != (in_,):
        raise InputError(f"{what}: tensor {module}.g_idx has shape {list(g.shape)}, expected [{in_}]",
                         hint="truncated or misshapen tensor")
    if g.dtype.kind not in "iu":
        raise InputError(f"{what}: tensor {module}.g_idx has dtype {g.dtype}, expected int32")
    g = g.astype(np.int64)
    if g.size and (g.min() < 0 or g.max() >= groups):
        bad = int(g.max()) if g.max() >= groups else int(g.min())
        raise InputError(f"{what}: tensor {module}.g_idx holds group {bad} outside 0..{groups - 1}")
    return g
