"""bitsandbytes checkpoints as transformers saves them: 4-bit nf4/fp4 (± double quantization) and LLM.int8.

``from_pretrained(..., quantization_config=BitsAndBytesConfig(...))`` then ``save_pretrained`` replaces each
``nn.Linear`` (not the embedding, not a tied head) with ``bnb.nn.Linear4bit`` or ``Linear8bitLt`` and saves
(``QuantState.as_dict(packed=True)``, ``Linear8bitLt._save_to_state_dict``):

4-bit (``quantization_config``: ``quant_method: bitsandbytes``, ``load_in_4bit: true``,
``bnb_4bit_quant_type: nf4|fp4``, ``bnb_4bit_use_double_quant``, ``bnb_4bit_quant_storage``):

==========================================  ===================  ==========================================
tensor                                      shape, dtype         meaning
==========================================  ===================  ==========================================
``{m}.weight``                              [n/2, 1] uint8       two 4-bit codes a byte, HIGH nibble first,
                                                                 over the flattened [out, in] weight (n =
                                                                 out * in); another quant_storage dtype holds
                                                                 the same bytes
``{m}.weight.absmax``                       [n/blocksize] f32    one scale per block of ``blocksize`` (64)
                                            (uint8 with DQ)      consecutive weights; with double
                                                                 quantization an 8-bit code instead:
``{m}.weight.nested_absmax``                [blocks/256] f32     absmax = nested_quant_map[code] *
``{m}.weight.nested_quant_map``             [256] f32            nested_absmax[block // 256] + offset
``{m}.weight.quant_map``                    [16] f32             the code table (nf4 or fp4)
``{m}.weight.quant_state.bitsandbytes__nf4``  [k] uint8          JSON: quant_type, blocksize, dtype, shape,
(``__fp4``)                                                      nested_blocksize, nested_dtype, nested_offset
==========================================  ===================  ==========================================

w = quant_map[code] * absmax[block] in float32, then rounded to the quant_state's ``dtype`` (the
original weight's, e.g. bfloat16), as ``bitsandbytes.functional.dequantize_4bit`` returns it: that is the
weight bitsandbytes' matmul uses.

8-bit LLM.int8 (``load_in_8bit: true``):

=========================  ===============  ==========================================================
``{m}.weight``             [out, in] int8   q, row-wise absmax quantization
``{m}.SCB``                [out] f32        the row's absmax: w = q * SCB / 127
``{m}.weight_format``      [] uint8         0 = "row" (the only layout saved files hold)
=========================  ===============  ==========================================================

w = (q * SCB) * 7.874015718698502e-3 in float32, as ``int8_vectorwise_dequant``. Only the weights are
modelled: on CUDA, LLM.int8's matmul also quantizes the activations (outlier columns above
``llm_int8_threshold`` kept in 16-bit), which this measurement does not include.

Checked against bitsandbytes 0.50.2: ``functional.py`` (``QuantState.from_dict`` / ``as_dict``,
``dequantize_4bit``, ``get_4bit_type``), ``backends/default/ops.py`` (``_dequantize_4bit_compute``: high
nibble first, flat blocks) and ``_ops.py`` (``int8_vectorwise_dequant``), and files written by
transformers 5.25 ``save_pretrained``; bit-exact against ``dequantize_4bit`` and ``int8_vectorwise_dequant``
on bitsandbytes' CPU backend (tests/test_quant_bnb.py). The quant_state is read as JSON, never unpickled.
"""

from __future__ import annotations

import json
from typing import Any

import ml_dtypes
import numpy as np

from release.errors import InputError
from release.weights.quant.base import Getter, Scheme, problems_of

NAME = "bitsandbytes"

#: bitsandbytes' code tables (``get_4bit_type``), float32 bit patterns: a file's quant_map must be one of these,
#: since bitsandbytes' kernels use their built-in table whatever the file holds.
TABLES = {
    "nf4": np.array([0xBF800000, 0xBF3239B1, 0xBF066B30, 0xBECA32A0, 0xBE91A24D, 0xBE3D353F, 0xBDBA7871, 0x00000000,
                     0x3DA2FAFF, 0x3E24CAE3, 0x3E7C04DD, 0x3EAD033A, 0x3EE1A4B8, 0x3F1007AB, 0x3F3913B3, 0x3F800000],
                    dtype=np.uint32).view(np.float32),
    "fp4": np.array([0x00000000, 0x3BAAAAAB, 0x3F2AAAAB, 0x3F800000, 0x3EAAAAAB, 0x3F000000, 0x3E2AAAAB, 0x3E800000,
                     0x00000000, 0xBBAAAAAB, 0xBF2AAAAB, 0xBF800000, 0xBEAAAAAB, 0xBF000000, 0xBE2AAAAB, 0xBE800000],
                    dtype=np.uint32).view(np.float32),
}
DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
INT8_SCALE = np.float32(7.874015718698502e-3)  # 1/127 as bitsandbytes writes it
MAX_QUANT_STATE_BYTES = 1 << 16  # the JSON is ~170 bytes


# --- recognising -----------------------------------------------------------------------------------


def _config(config: dict[str, Any]) -> dict[str, Any] | None:
    for c in (config, config.get("text_config")):
        if isinstance(c, dict) and isinstance(c.get("quantization_config"), dict):
            return c["quantization_config"]
    return None


def _qs_suffix(quant_type: str) -> str:
    return f".weight.quant_state.bitsandbytes__{quant_type}"


def recognise(config: dict[str, Any], names: set[str]) -> Scheme | None:
    """``quant_method: bitsandbytes`` (or an older config with only load_in_4bit / load_in_8bit)."""
    qc = _config(config)
    if qc is None:
        return None
    method = qc.get("quant_method")
    four, eight = bool(qc.get("load_in_4bit") or qc.get("_load_in_4bit")), bool(qc.get("load_in_8bit") or qc.get("_load_in_8bit"))
    if method != "bitsandbytes" and not (method is None and (four or eight)):
        return None
    if four == eight:
        raise InputError("quantization_config says bitsandbytes but sets " +
                         ("both load_in_4bit and load_in_8bit" if four else "neither load_in_4bit nor load_in_8bit"))
    if eight:
        if not any(n.endswith(".SCB") for n in names):
            raise InputError("config.json says bitsandbytes 8-bit (LLM.int8) but no tensor is an 8-bit weight's "
                             "row scale ({module}.SCB): were the weights saved quantized?")
        return Scheme(NAME, "int8", 8, None, {"threshold": qc.get("llm_int8_threshold")})
    quant_type = qc.get("bnb_4bit_quant_type", "fp4")  # transformers' default
    if quant_type not in TABLES:
        raise InputError(f"bitsandbytes 4-bit quant type {quant_type!r} is not supported (supported: nf4, fp4)")
    if not any(n.endswith(_qs_suffix(quant_type)) for n in names):
        raise InputError(f"config.json says bitsandbytes 4-bit {quant_type} but no tensor holds a quant_state "
                         f"({{module}}{_qs_suffix(quant_type)}): were the weights saved quantized?")
    return Scheme(NAME, quant_type, 4, 64,  # bitsandbytes' default blocksize: each module's quant_state says its own
                  {"double_quant": bool(qc.get("bnb_4bit_use_double_quant")),
                   "quant_storage": qc.get("bnb_4bit_quant_storage", "uint8"),
                   "compute_dtype": qc.get("bnb_4bit_compute_dtype")})


def quantized_modules(scheme: Scheme, names: set[str]) -> set[str]:
    if scheme.method == "int8":
        return {n[:-len(".SCB")] for n in names if n.endswith(".SCB") and n[:-len(".SCB")] + ".weight" in names}
    suffix = _qs_suffix(scheme.method)
    return {n[:-len(suffix)] for n in names if n.endswith(suffix)}


def stored_names(scheme: Scheme, module: str, names: set[str]) -> set[str]:
    if scheme.method == "int8":
        parts = ("weight", "SCB", "weight_format")
    else:
        parts = ("weight", "weight.absmax", "weight.quant_map", "weight.nested_absmax", "weight.nested_quant_map",
                 "weight.quant_state.bitsandbytes__" + scheme.method)
    return {f"{module}.{p}" for p in parts} & names


# --- one module's quant state ---------------------------------------------------------------------------


def quant_state(scheme: Scheme, module: str, get: Getter, shape: tuple[int, int]) -> dict[str, Any]:
    """The module's packed quant_state JSON, checked against its tensors and the config's shape."""
    name = module + _qs_suffix(scheme.method)
    raw = get(name)
    if raw.dtype != np.uint8 or raw.ndim != 1 or raw.size > MAX_QUANT_STATE_BYTES:
        raise InputError(f"tensor {name} is {raw.dtype} {list(raw.shape)}: a quant_state is the bytes of a JSON object")
    try:
        qs = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"tensor {name} is not a JSON quant_state ({e})") from None
    if not isinstance(qs, dict):
        raise InputError(f"tensor {name} holds JSON {type(qs).__name__}, not an object")
    if qs.get("quant_type") != scheme.method:
        raise InputError(f"tensor {name} says quant_type {qs.get('quant_type')!r}; the config says {scheme.method!r}")
    if list(qs.get("shape") or ()) != list(shape):
        raise InputError(f"tensor {name} says shape {qs.get('shape')}, the config implies {list(shape)}")
    bs = qs.get("blocksize")
    if bs not in (32, 64, 128, 256, 512, 1024, 2048, 4096):
        raise InputError(f"tensor {name}: blocksize {bs!r} is not one bitsandbytes uses (32 .. 4096, powers of 2)")
    if qs.get("dtype") not in DTYPES:
        raise InputError(f"tensor {name}: dtype {qs.get('dtype')!r} is not float32, float16 or bfloat16")
    n = shape[0] * shape[1]
    blocks = -(-n // bs)
    w = get(module + ".weight")
    if w.nbytes != -(-n // 2):
        raise InputError(f"tensor {module}.weight holds {w.nbytes} bytes ({w.dtype} {list(w.shape)}): "
                         f"{n} 4-bit codes need {-(-n // 2)}")
    qmap = get(module + ".weight.quant_map")
    if qmap.dtype != np.float32 or qmap.shape != (16,) or not np.array_equal(qmap.view(np.uint32),
                                                                            TABLES[scheme.method].view(np.uint32)):
        raise InputError(f"tensor {module}.weight.quant_map is not bitsandbytes' {scheme.method} table "
                         "(its kernels use their built-in one, so this file would not run as it reads)")
    absmax = get(module + ".weight.absmax")
    nested = "nested_offset" in qs or "nested_blocksize" in qs
    if nested:
        nbs = qs.get("nested_blocksize")
        if nbs not in (32, 64, 128, 256, 512, 1024, 2048, 4096) or not isinstance(qs.get("nested_offset"), (int, float)):
            raise InputError(f"tensor {name}: nested_blocksize {nbs!r} / nested_offset {qs.get('nested_offset')!r} invalid")
        if absmax.dtype != np.uint8 or absmax.shape != (blocks,):
            raise InputError(f"tensor {module}.weight.absmax is {absmax.dtype} {list(absmax.shape)}: double-quantized "
                             f"absmax of {blocks} blocks is uint8 [{blocks}]")
        nq, na = get(module + ".weight.nested_quant_map"), get(module + ".weight.nested_absmax")
        if nq.dtype != np.float32 or nq.shape != (256,):
            raise InputError(f"tensor {module}.weight.nested_quant_map is {nq.dtype} {list(nq.shape)}; expected float32 [256]")
        if na.dtype != np.float32 or na.shape != (-(-blocks // nbs),):
            raise InputError(f"tensor {module}.weight.nested_absmax is {na.dtype} {list(na.shape)}; expected float32 "
                             f"[{-(-blocks // nbs)}]")
    elif absmax.dtype != np.float32 or absmax.shape != (blocks,):
        raise InputError(f"tensor {module}.weight.absmax is {absmax.dtype} {list(absmax.shape)}; expected float32 [{blocks}]")
    return qs


def _int8_check(module: str, get: Getter, shape: tuple[int, int]) -> None:
    w, scb = get(module + ".weight"), get(module + ".SCB")
    if w.dtype != np.int8 or w.shape != tuple(shape):
        raise InputError(f"tensor {module}.weight is {w.dtype} {list(w.shape)}; LLM.int8 stores int8 {list(shape)}")
    if scb.dtype != np.float32 or scb.shape != (shape[0],):
        raise InputError(f"tensor {module}.SCB is {scb.dtype} {list(scb.shape)}; expected float32 [{shape[0]}]")
    try:
        fmt = get(module + ".weight_format")
    except KeyError:
        return  # older saves have none: "row"
    if fmt.size != 1 or int(np.asarray(fmt).reshape(-1)[0]) != 0:
        raise InputError(f"tensor {module}.weight_format is {np.asarray(fmt).reshape(-1).tolist()}: only 0 (row) "
                         "is a layout bitsandbytes saves and loads")


def validate(scheme: Scheme, module: str, get: Getter, shape: tuple[int, int]) -> list[str]:
    """Structure problems of one module (headers and the small quant_state only)."""
    check = _int8_check if scheme.method == "int8" else (lambda m, g, sh: quant_state(scheme, m, g, sh))
    return problems_of(lambda: check(module, get, shape),
                       lambda name: f"tensor {name} is missing (bitsandbytes {scheme.method} module {module})")


# --- dequantizing ---------------------------------------------------------------------------------------


def _absmax(module: str, get: Getter, qs: dict[str, Any]) -> np.ndarray:
    """Each block's absmax in float32 (double quantization undone: code * nested absmax + offset).  [blocks]"""
    a = get(module + ".weight.absmax")
    if a.dtype == np.float32:
        return np.asarray(a)
    nq, na, nbs = get(module + ".weight.nested_quant_map"), get(module + ".weight.nested_absmax"), qs["nested_blocksize"]
    blocks = np.arange(a.shape[0]) // nbs
    out = nq[a] * na[blocks]  # dequantize_blockwise, float32
    out += np.float32(qs["nested_offset"])  # absmax += offset, in float32
    return out


def dequantize(scheme: Scheme, module: str, get: Getter, shape: tuple[int, int],
               rows: np.ndarray | slice | None = None) -> np.ndarray:
    """float32 [out, in] (or those rows)."""
    out_dim, in_dim = shape
    if scheme.method == "int8":
        _int8_check(module, get, shape)
        w, scb = get(module + ".weight"), get(module + ".SCB")
        if rows is not None:
            w, scb = w[rows], scb[rows]
        return (w.astype(np.float32) * scb[:, None]) * INT8_SCALE  # int8_vectorwise_dequant's order
    qs = quant_state(scheme, module, get, shape)
    bs = qs["blocksize"]
    packed = np.ascontiguousarray(get(module + ".weight")).view(np.uint8).reshape(-1)  # [ceil(n / 2)]
    absmax = _absmax(module, get, qs)  # [blocks]
    table = TABLES[scheme.method]
    if rows is None:
        idx = None
        codes = np.empty(packed.size * 2, dtype=np.uint8)
        codes[0::2], codes[1::2] = packed >> 4, packed & 0x0F  # high nibble first
        codes = codes[:out_dim * in_dim]
        flat = np.arange(codes.size) // bs
        w = table[codes] * absmax[flat]  # [n] float32
        r = out_dim
    else:
        r_ids = np.arange(out_dim)[rows]
        idx = (r_ids[:, None] * in_dim + np.arange(in_dim)).reshape(-1)  # flat positions of the selected rows
        byte = packed[idx // 2]
        codes = np.where(idx % 2 == 0, byte >> 4, byte & 0x0F)
        w = table[codes] * absmax[idx // bs]
        r = len(r_ids)
    # dequantize_4bit returns the quant_state dtype: round to it, so the weight is the one bitsandbytes multiplies by
    return w.astype(DTYPES[qs["dtype"]]).astype(np.float32).reshape(r, in_dim)
