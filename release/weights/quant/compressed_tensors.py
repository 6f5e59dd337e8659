"""compressed-tensors checkpoints (llm-compressor, RedHatAI): pack-quantized, naive/int-quantized, float-quantized.

``config.json``::

    "quantization_config": {"quant_method": "compressed-tensors", "format": "pack-quantized",
        "config_groups": {"group_0": {"targets": ["Linear"], "format": null,
            "weights": {"num_bits": 4, "type": "int", "symmetric": true, "strategy": "group", "group_size": 128},
            "input_activations": null}},
        "ignore": ["lm_head"], "quantization_status": "compressed", ...}

A layer is quantized by the config group whose ``targets`` match it most specifically: its exact name, else
a ``"re:"`` regex (``re.match``), else a class name such as ``Linear`` (a checkpoint holds no module classes,
so a class matches any layer storing quantized tensors); the first such group among equals. A layer stored
quantized must be matched, and not named by ``ignore`` (names and regexes; class names there cannot be
checked). A group's own ``format`` overrides the top-level one (``mixed-precision``). Stored per layer ``{m}``
(``G = in / group_size``; scales are ``[out, G]`` for "group", ``[out, 1]`` "channel", ``[1]`` "tensor",
``[ceil(out / bh), ceil(in / bw)]`` "block" with ``block_structure [bh, bw]``):

========================  ==========================  ===================  =========================================
tensor                    shape                       dtype                what
========================  ==========================  ===================  =========================================
pack-quantized (int, 2/4/8 bits)
----------------------------------------------------------------------------------------------------------------------
``{m}.weight_packed``     ``[out, ceil(in*b/32)]``    int32                codes ``q + 2**(b-1)``, dense little-endian
                                                                           bit stream along ``in``
``{m}.weight_scale``      as above                    bf16 / fp16 / f32
``{m}.weight_zero_point`` ``[ceil(out*b/32), G]``     int32                asymmetric group/channel only: packed the
                                                                           same way along ``out``
``{m}.weight_shape``      ``[2]``                     int64                ``[out, in]``
``{m}.weight_g_idx``      ``[in]``                    int32                (older releases, actorder "group") group
                                                                           of each input column
naive-quantized / int-quantized / float-quantized
----------------------------------------------------------------------------------------------------------------------
``{m}.weight``            ``[out, in]``               int8 / F8_E4M3       the codes themselves
``{m}.weight_scale``      as above                    bf16 / fp16 / f32
``{m}.weight_zero_point`` like the scale              int8                 asymmetric only
``{m}.input_scale``       ``[1]`` (or per channel)    f32 / bf16           static activation quantization (W8A8)
========================  ==========================  ===================  =========================================

Dequantization: ``w = (q - zero_point) * scale``, broadcast per tensor / channel / group / block, with ``q``
signed (``-2**(b-1)..2**(b-1)-1``; float8 E4M3 for float-quantized). Activation scales are not needed to
rebuild weights; they are counted as the layer's tensors and reported in ``Scheme.details``.

Checked against the installed ``compressed-tensors`` 0.20.1 as the oracle (tests/test_quant_ct_fp8.py runs it):
``compressors/pack_quantized/base.py`` + ``helpers.py`` (``pack_to_int32`` / ``unpack_from_int32``: dense
packing, ``packed_dim=0`` for zero points), ``compressors/naive_quantized/base.py``,
``quantization/lifecycle/forward.py`` + ``forward_helpers.py`` (``_dequantize``, ``_process_group``,
``_process_block``), ``utils/match.py`` (``match_name``, ``_match_class``). The library computes in the
scale's dtype; this module in float32, where ``(q - z) * scale`` is exact (at most 8 + 11 bits; 4 + 8 for
float8 times bf16), so it equals the library's result bit for bit with float32 scales, and once rounded to
bf16 / fp16 with those. ``weight_g_idx`` (0.20 no longer reads it) follows compressed-tensors 0.12's
``_process_quantization``, and equals 0.12.2's own ``decompress_weight`` once rounded to the scale dtype
(tests/data/quant/ct012_oracle.safetensors, written by tests/make_quant_oracles.py).

Refused, naming the value: formats nvfp4/mxfp4/mxfp6/mxfp8-pack-quantized, marlin-24, the sparse ones,
"dense"; a non-empty ``sparsity_config`` or ``transform_config`` (rotated weights); pack-quantized widths
other than 2, 4, 8 (compressed-tensors 0.20 packs 3/5/6/7 bits densely, older releases 32 // b codes per
word: the same checkpoint config, two layouts); float weights other than 8-bit; strategies
"tensor_group", "token", "attn_head".
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from release.errors import InputError
from release.weights.quant.base import Getter, Scheme
from release.weights.quant.gptq import (F8_E4M3, FLOATS, as_float32, fetch, optional, packed_words, select_rows,
                                        text, unpack_last)

NAME = "compressed-tensors"

FORMATS = ("pack-quantized", "naive-quantized", "int-quantized", "float-quantized")
PACK_BITS = (2, 4, 8)  # widths whose layout is the same in every compressed-tensors release
STRATEGIES = ("tensor", "channel", "group", "block")
ACTIVATION_TENSORS = ("input_scale", "input_zero_point", "output_scale", "output_zero_point")


# ---------------------------------------------------------------------------------------------------------
# Recognition
# ---------------------------------------------------------------------------------------------------------


def _config(config: dict[str, Any]) -> dict[str, Any] | None:
    # Early releases wrote `compression_config`; transformers unwraps a nested `quantization_config` too.
    qc = config.get("quantization_config") or config.get("compression_config")
    if not isinstance(qc, dict):
        return None
    if isinstance(qc.get("quantization_config"), dict):
        qc = {**qc["quantization_config"], "sparsity_config": qc.get("sparsity_config")}
    if text(qc.get("quant_method")) != "compressed-tensors":
        return None
    return qc


def _weights_args(group: str, g: dict, fmt: str) -> dict[str, Any]:
    """A config group's weight arguments, checked against what this module can rebuild."""
    w = g.get("weights")
    if not isinstance(w, dict):
        raise InputError(f"compressed-tensors config group {group!r} quantizes no weights")
    bits, kind = w.get("num_bits", 8), text(w.get("type") or "int")
    # QuantizationArgs.validate_model_after infers a missing strategy from group_size
    strategy = text(w.get("strategy") or ("group" if (w.get("group_size") or 0) > 0 else
                                          "channel" if w.get("group_size") == -1 else "tensor"))
    if strategy not in STRATEGIES:
        raise InputError(f"compressed-tensors weight strategy {strategy!r} is not supported "
                         f"(supported: {', '.join(STRATEGIES)})")
    if kind == "float":
        if bits != 8 or fmt == "pack-quantized":
            raise InputError(f"compressed-tensors float {bits}-bit weights in format {fmt!r} are not supported "
                             "(supported: float 8-bit E4M3)")
    elif kind == "int":
        if fmt == "pack-quantized" and bits not in PACK_BITS:
            raise InputError(f"compressed-tensors pack-quantized num_bits {bits} is not supported "
                             "(supported: 2, 4, 8)", hint="3/5/6/7-bit packing differs between library releases")
        if fmt == "float-quantized":
            raise InputError("compressed-tensors float-quantized format with int weights is not supported")
        if not 1 <= bits <= 8:
            raise InputError(f"compressed-tensors int num_bits {bits} is not supported (supported: 1..8)")
    else:
        raise InputError(f"compressed-tensors weight type {kind!r} is not supported (supported: 'int', 'float')")
    group_size = w.get("group_size")
    if strategy == "group" and (not isinstance(group_size, int) or group_size <= 0):
        raise InputError(f"compressed-tensors group strategy with group_size {group_size!r} is not supported")
    block = w.get("block_structure")
    if strategy == "block":
        if isinstance(block, str):  # early releases: "128x128"
            block = [int(x) for x in block.lower().split("x")]
        if not (isinstance(block, list) and len(block) == 2 and all(isinstance(x, int) and x > 0 for x in block)):
            raise InputError(f"compressed-tensors block_structure {w.get('block_structure')!r} is not supported")
    if w.get("dynamic") not in (None, False):
        raise InputError(f"compressed-tensors dynamic weight quantization {w.get('dynamic')!r} is not supported")
    return {"num_bits": bits, "type": kind, "symmetric": bool(w.get("symmetric", True)), "strategy": strategy,
            "group_size": group_size if strategy == "group" else None,
            "block_structure": block if strategy == "block" else None, "actorder": w.get("actorder")}


def _activation(a: Any) -> dict[str, Any] | None:
    if not isinstance(a, dict):
        return None
    return {k: a.get(k) for k in ("num_bits", "type", "strategy", "dynamic", "symmetric")}


def recognise(config: dict[str, Any], names: set[str]) -> Scheme | None:
    """A compressed-tensors scheme from ``quantization_config``, or None when it is not compressed-tensors."""
    qc = _config(config)
    if qc is None:
        return None
    top = text(qc.get("format") or "dense")
    if qc.get("sparsity_config"):
        sf = qc["sparsity_config"].get("format") if isinstance(qc["sparsity_config"], dict) else qc["sparsity_config"]
        raise InputError(f"compressed-tensors sparsity format {sf!r} is not supported")
    if qc.get("transform_config"):
        raise InputError("compressed-tensors transform_config (rotated weights) is not supported")
    status = text(qc.get("quantization_status") or "compressed")
    if status != "compressed":
        raise InputError(f"compressed-tensors quantization_status {status!r} is not supported (supported: "
                         "'compressed')", hint="the weights are not stored quantized")
    raw = qc.get("config_groups")
    if not isinstance(raw, dict) or not raw:
        raise InputError("compressed-tensors config has no config_groups")
    groups = {}
    for gname in raw:  # in the config's order: the first of equally specific matches wins
        g = raw[gname]
        if not isinstance(g, dict):
            raise InputError(f"compressed-tensors config group {gname!r} is not an object")
        fmt = text(g.get("format") or top)
        if fmt not in FORMATS:
            raise InputError(f"compressed-tensors format {fmt!r} is not supported (supported: {', '.join(FORMATS)})")
        targets = g.get("targets") or []
        if isinstance(targets, str):
            targets = [targets]
        groups[gname] = {"targets": list(targets), "format": fmt, "weights": _weights_args(gname, g, fmt),
                         "input_activations": _activation(g.get("input_activations")),
                         "output_activations": _activation(g.get("output_activations"))}
    if not any(n.endswith((".weight_packed", ".weight_scale")) for n in names):
        raise InputError("config.json says compressed-tensors but no .weight_packed or .weight_scale tensor is stored")
    ignore = qc.get("ignore") or []
    # the scheme's headline (and verify's bound family) is its fewest-bit group's, as for mixed-precision MLX
    w = min((g["weights"] for g in groups.values()), key=lambda a: a["num_bits"])
    formats = sorted({g["format"] for g in groups.values()})
    return Scheme(format=NAME, method=formats[0] if len(formats) == 1 else "mixed-precision",
                  bits=w["num_bits"], group_size=w["group_size"],
                  details={"groups": groups, "ignore": [ignore] if isinstance(ignore, str) else list(ignore),
                           "kv_cache_scheme": qc.get("kv_cache_scheme"), "type": w["type"],
                           "strategy": w["strategy"], "symmetric": w["symmetric"],
                           "activations": {k: g["input_activations"] for k, g in groups.items()}})


# ---------------------------------------------------------------------------------------------------------
# Which layers
# ---------------------------------------------------------------------------------------------------------


def _is_class(target: str) -> bool:
    """`Linear`, `Embedding` ...: a module class, not a name (names here are dotted or lower case)."""
    return not target.startswith("re:") and target[:1].isupper() and "." not in target


def _match_name(name: str, target: str) -> bool:
    """compressed-tensors utils/match.py ``match_name``: "re:" is re.match, anything else the exact name."""
    if target.startswith("re:"):
        return re.match(target[3:], name) is not None
    return target == name


def _rank(name: str, targets: list[str]) -> int | None:
    """0 exact name, 1 regex, 2 class name (any quantized layer), None no match (utils/match.py match_targets)."""
    ranks = [0 if t == name else 1 if t.startswith("re:") and _match_name(name, t) else 2 if _is_class(t) else None
             for t in targets]
    ranks = [r for r in ranks if r is not None]
    return min(ranks) if ranks else None


def group_of(scheme: Scheme, module: str) -> dict[str, Any]:
    """The config group quantizing `module` (the most specific match, the first among equals)."""
    for t in scheme.details["ignore"]:
        if not _is_class(t) and _match_name(module, t):
            raise InputError(f"compressed-tensors: {module} is stored quantized but ignore lists it ({t!r})")
    best, best_rank = None, None
    for g in scheme.details["groups"].values():
        r = _rank(module, g["targets"])
        if r is not None and (best_rank is None or r < best_rank):
            best, best_rank = g, r
    if best is None:
        raise InputError(f"compressed-tensors: {module} is stored quantized but no config group targets it")
    return best


def quantized_modules(scheme: Scheme, names: set[str]) -> set[str]:
    """Every layer storing ``weight_packed`` or ``weight_scale``; each must be targeted and not ignored."""
    mods = {n.rsplit(".", 1)[0] for n in names if n.endswith((".weight_packed", ".weight_scale"))}
    for m in mods:
        group_of(scheme, m)
    return mods


def stored_names(scheme: Scheme, module: str, names: set[str]) -> set[str]:
    """The layer's weight tensors for its format, plus zero point, g_idx and activation scales when stored."""
    fmt = group_of(scheme, module)["format"]
    own = ("weight_packed", "weight_shape", "weight_g_idx") if fmt == "pack-quantized" else ("weight",)
    return {f"{module}.{t}" for t in (*own, "weight_scale", "weight_zero_point", *ACTIVATION_TENSORS)} & names


# ---------------------------------------------------------------------------------------------------------
# Dequantization
# ---------------------------------------------------------------------------------------------------------


def _param_shape(w: dict, out: int, in_: int) -> tuple[int, int]:
    """The [rows, cols] of the scale / zero point for this strategy."""
    s = w["strategy"]
    if s == "tensor":
        return (1, 1)
    if s == "channel":
        return (out, 1)
    if s == "group":
        if in_ % w["group_size"]:
            raise InputError(f"compressed-tensors group_size {w['group_size']} does not divide {in_} input features")
        return (out, in_ // w["group_size"])
    bh, bw = w["block_structure"]
    return (-(-out // bh), -(-in_ // bw))


def _param(a: np.ndarray, name: str, want: tuple[int, int], what: str) -> np.ndarray:
    """A scale / zero point reshaped to `want` (a per-tensor one may be stored [], [1] or [1, 1], a channel one [out])."""
    if a.size != want[0] * want[1] or (a.ndim == 2 and tuple(a.shape) != want) or a.ndim > 2:
        raise InputError(f"{what}: tensor {name} has shape {list(a.shape)}, expected {list(want)}",
                         hint="truncated or misshapen tensor")
    return a.reshape(want)


def _expand(p: np.ndarray, w: dict, sel, out: int, in_: int, g_idx: np.ndarray | None) -> np.ndarray:
    """[rows, cols] per-strategy parameter -> broadcastable against the [sel, in] weight."""
    s = w["strategy"]
    if s == "tensor":
        return p  # [1, 1]
    if s == "channel":
        return p[sel]  # [sel, 1]
    if s == "group":
        cols = g_idx if g_idx is not None else np.arange(in_) // w["group_size"]
        return p[sel][:, cols]  # [sel, in]
    bh, bw = w["block_structure"]  # a partial last block is cut off the padded grid (forward_helpers _process_block)
    return p[np.arange(out)[sel] // bh][:, np.arange(in_) // bw]  # [sel, in]


def dequantize(scheme: Scheme, module: str, get: Getter, shape: tuple[int, int],
               rows: np.ndarray | slice | None = None) -> np.ndarray:
    """float32 [out, in] (or `rows` of it) of one compressed-tensors layer."""
    out, in_ = shape
    g = group_of(scheme, module)
    w, fmt = g["weights"], g["format"]
    bits = w["num_bits"]
    what = f"compressed-tensors {fmt} {w['type']} {bits}-bit {w['strategy']} layer {module} [{out}, {in_}]"
    sel = select_rows(out, rows)
    pshape = _param_shape(w, out, in_)

    if fmt == "pack-quantized":
        stored = optional(get, f"{module}.weight_shape")
        if stored is not None and [int(x) for x in np.asarray(stored).reshape(-1)] != [out, in_]:
            raise InputError(f"{what}: tensor {module}.weight_shape says {np.asarray(stored).tolist()}")
        packed = fetch(get, f"{module}.weight_packed", (out, packed_words(in_, bits)), (np.int32,), what)
        offset = 1 << (bits - 1)  # pack_to_int32 stores q + 2**(b-1)
        q = unpack_last(packed[sel], bits, in_).astype(np.float32) - offset  # [sel, in] signed codes
    else:
        dtypes = (F8_E4M3,) if w["type"] == "float" else (np.int8,)
        q = as_float32(fetch(get, f"{module}.weight", (out, in_), dtypes, what)[sel])

    scale = _param(fetch(get, f"{module}.weight_scale", None, FLOATS, what), f"{module}.weight_scale", pshape, what)
    zp = _zero_point(get, module, w, fmt, pshape, what)
    g_idx = _g_idx(get, module, w, in_, pshape, what)

    if w["strategy"] == "group" and g_idx is None:  # contiguous groups: broadcast in place, no [out, in] gathers
        n, gs = q.shape[0], w["group_size"]
        q3 = q.reshape(n, in_ // gs, gs)  # q is a fresh float32 array: safe to update in place
        if zp is not None:
            q3 -= zp[sel][:, :, None]
        q3 *= as_float32(scale)[sel][:, :, None]
        return q
    if zp is not None:
        q = q - _expand(zp, w, sel, out, in_, g_idx)  # exact: small integers in float32
    # (q - z) * scale is exact in float32 (<= 8 + 11 significant bits); the library rounds it to the scale dtype
    return (q * _expand(as_float32(scale), w, sel, out, in_, g_idx)).astype(np.float32, copy=False)


def _zero_point(get: Getter, module: str, w: dict, fmt: str, pshape: tuple[int, int], what: str) -> np.ndarray | None:
    """The zero point as float32 [rows, cols], or None (symmetric)."""
    name = f"{module}.weight_zero_point"
    z = optional(get, name)
    if w["symmetric"]:
        return None  # the library drops a symmetric zero point (_remove_symmetric_zp): zero
    if z is None:
        raise InputError(f"{what}: asymmetric, but tensor {name} is missing")
    if fmt == "pack-quantized" and w["strategy"] in ("group", "channel"):
        bits = w["num_bits"]
        want = (packed_words(pshape[0], bits), pshape[1])
        if tuple(z.shape) != want or z.dtype != np.int32:
            raise InputError(f"{what}: tensor {name} has shape {list(z.shape)} {z.dtype}, expected {list(want)} int32",
                             hint="truncated or misshapen packed tensor")
        # packed along out (packed_dim=0): unpack the transposed words, then back
        return (unpack_last(z.T, bits, pshape[0]).T.astype(np.float32) - (1 << (bits - 1)))
    if z.dtype.kind not in "iu" and z.dtype not in {np.dtype(d) for d in FLOATS}:
        raise InputError(f"{what}: tensor {name} has dtype {z.dtype}, expected int8")
    return as_float32(_param(z, name, pshape, what))


def _g_idx(get: Getter, module: str, w: dict, in_: int, pshape: tuple[int, int], what: str) -> np.ndarray | None:
    """Older releases' activation-order group index (actorder "group"): the group of each input column."""
    name = f"{module}.weight_g_idx"
    g = optional(get, name)
    if g is None:
        return None
    if w["strategy"] != "group":
        raise InputError(f"{what}: tensor {name} is stored but the strategy is {w['strategy']!r}")
    if tuple(g.shape) != (in_,) or g.dtype.kind not in "iu":
        raise InputError(f"{what}: tensor {name} has shape {list(g.shape)} {g.dtype}, expected [{in_}] int32")
    g = g.astype(np.int64)
    if (g < 0).any():  # compressed-tensors 0.12: a -1 anywhere means "not initialised, column order"
        return None
    if g.max() >= pshape[1]:
        raise InputError(f"{what}: tensor {name} holds group {int(g.max())} outside 0..{pshape[1] - 1}")
    return g
