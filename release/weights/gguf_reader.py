"""A GGUF file (llama.cpp's format) as a weights source for the reference forward pass.

:class:`GGUFWeights` duck-types :class:`gemma_ref.weights.Weights` -- ``cfg``,
``layer(i)``, ``embedding_rows(ids)``, ``embedding_blocks(n)``, ``final_norm()``,
``close()`` -- so ``gemma_ref.model.forward`` runs a quantized variant unchanged.
The file is read with the ``gguf`` package (llama.cpp's own reader) and every tensor
is dequantized with ``gguf.quants.dequantize``, one layer at a time (the embedding in
blocks of rows), so a 27B GGUF never sits in memory in float32 as a whole.

How llama.cpp's converter (``convert_hf_to_gguf.py``: ``GemmaModel``, ``Gemma2Model``,
``Gemma3Model``) stores a Gemma, and how this module undoes it:

=============================  =========================================================
tensor names                   ``token_embd``, ``blk.N.attn_q``, ... from gguf's own
                               ``TensorNameMap`` (per architecture: Gemma 1's
                               ``post_attention_layernorm`` is ``ffn_norm``, Gemma 2/3's
                               is ``post_attention_norm``); we ask the same map
RMSNorm weights                stored as ``1 + w`` (every ``*norm.weight``, Gemma 3's
                               q/k norms too): we subtract 1, the model adds it back
q / k projections              not permuted (Gemma's RoPE is NEOX style = HF's halves)
shapes                         GGML order is reversed: ``ne = [in, out]`` for an HF
                               ``[out, in]`` matrix; numpy views are back in HF order
output head                    none: tied to ``token_embd``; an ``output.weight`` that is
                               present anyway is what llama.cpp would use, and so do we
embedding rows                 Gemma 3: trimmed to the tokenizer (262144 of 262208 rows)
config                         not enough in the metadata (no ``query_pre_attn_scalar``):
                               the config comes from the original model directory, and the
                               metadata is cross-checked against it (``metadata_findings``)
=============================  =========================================================

Gemma 4 (``Gemma4Model`` / ``Gemma4UnifiedModel``, both ``gemma4``; read in ggml-org/llama.cpp
``conversion/gemma.py`` @ 061b8c5f91885f2779d23198a091777df47c3f6f and ``conversion/base.py``
@ 00bd27a621f92be9a99d24d7c5117a263b9b3c01) differs from that:

=============================  =========================================================
RMSNorm weights                stored as they are (``Gemma4Model.norm_shift`` is 0.0):
                               Gemma 4 multiplies by w, so nothing is subtracted
names the map lacks            ``layer_scalar`` and ``experts.*`` get ``.weight`` appended
                               first (``layer_output_scale``, ``ffn_gate_up_exps`` /
                               ``ffn_down_exps``); ``router.scale`` is written as
                               ``blk.N.ffn_gate_inp.scale`` and ``router.per_expert_scale``
                               as ``blk.N.ffn_down_exps.scale`` (F32: not ``.weight``)
packed experts                 unchanged: [E, 2I, D] (gate rows, then up rows) and [E, D, I],
                               GGML ne reversed; read one expert at a time (``ExpertStack``)
proportional RoPE              keys say full rotation (``rope.dimension_count`` = global head
                               dim); an extra F32 ``rope_freqs.weight`` [global_head_dim/2] of
                               1.0 for the rotated pairs and 1e30 (frequency / 1e30, so angle
                               ~0) for the rest carries the proportion, for full layers only:
                               cross-checked against the config (GGUF001)
per-layer geometry             ``key_length``/``value_length`` = global_head_dim,
                               ``*_swa`` = head_dim; ``head_count_kv`` a per-layer array when
                               the config has ``num_global_key_value_heads``;
                               ``feed_forward_length`` a per-layer array with
                               ``use_double_wide_mlp``; ``sliding_window_pattern`` a per-layer
                               bool array; ``shared_kv_layers``;
                               ``embedding_length_per_layer_input`` (0 = no PLE)
KV-shared layers' K/V          not dropped: real E2B/E4B files' leftover k_proj/v_proj/k_norm
                               are converted too; reported as unused (info), never read
=============================  =========================================================

Gemma 3n (``Gemma3NModel(Gemma3Model)``, arch ``gemma3n``; same ``conversion/gemma.py`` commit, and
``prepare_tensors`` in ``conversion/base.py``) differs from Gemma 3:

=============================  =========================================================
RMSNorm weights                stored as they are (``Gemma3NModel.norm_shift`` is 0.0; Gemma 3n's
                               RMSNorm is x * w like Gemma 4's): nothing subtracted
AltUp projections              ``altup_projections.{0,1,2}`` / ``altup_unembed_projections.{0,1,2}``
                               stacked (dim 0) into ``altup_proj`` / ``altup_unembd_proj`` [3, D, D];
                               ``altup_projections()`` returns ``[j]`` of the stack
names the map lacks            ``*_scale`` gets ``.weight`` first: ``altup.correct_output_scale`` is
                               ``blk.N.altup_correct_scale.weight``; the rest through gguf's map
                               (``altup_correct_coef``, ``altup_predict_coef``, ``altup_router``,
                               ``altup_router_norm``, ``laurel_l``, ``laurel_r``, ``laurel_post_norm``,
                               ``inp_gate``, ``proj``, ``post_norm``, ``per_layer_*``)
embedding rows                 ``token_embd`` and ``per_layer_token_embd`` padded with zero rows up to
                               ``vocab_size`` (never trimmed); the PLE padding is never read (ids past
                               the table read row 0, ``model.ple_ids``)
tensor types                   ``altup_correct_coef`` / ``altup_predict_coef`` forced to F32
keys                           ``altup.active_idx``, ``altup.num_inputs``, ``shared_kv_layers``,
                               ``embedding_length_per_layer_input``, ``activation_sparsity_scale``
                               (per layer, Normal(0,1).icdf(p), -inf for p = 0), a per-layer
                               ``feed_forward_length`` array, ``sliding_window_pattern``: all
                               cross-checked (GGUF001 / GGUF002)
KV-shared layers' K/V          not dropped, as for Gemma 4: reported as unused (info), never read
=============================  =========================================================
"""

from __future__ import annotations

import math
import os
import re
import statistics
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import gguf
import numpy as np
from gguf.gguf_writer import SHARD_NAME_FORMAT  # llama.cpp's part names: NAME-00001-of-00003.gguf

from gemma_ref.config import FULL, SLIDING, GemmaConfig
from gemma_ref.weights import expected_shapes
from release.errors import InputError
from release.files import require_regular
from release.findings import Finding, Rule, register_rules

register_rules(
    Rule("GGUF001", "error", "GGUF metadata contradicts the original config (llama.cpp would run a different model)"),
    Rule("GGUF002", "warning", "a GGUF metadata key is missing and llama.cpp has no default that is known to fit"),
    Rule("GGUF003", "warning", "llama.cpp runs this architecture with a built-in assumption the original does not share "
                               "(no GGUF key can say otherwise)"),
    Rule("GGUF004", "warning", "the GGUF's tensors are laid out differently from the original (dropped vocabulary rows, "
                               "an untied output head, extra tensors)"),
    Rule("GGUF005", "error", "norm weights differ from the original's (e.g. stored without the +1 llama.cpp's Gemma "
                             "1-3 converters add, or with a +1 Gemma 4's converter does not add)"),
)

SPLIT = gguf.Keys.Split

#: Gemma generation -> llama.cpp architecture (the converter class's model_arch).
ARCH_OF_GENERATION = {1: gguf.MODEL_ARCH.GEMMA, 2: gguf.MODEL_ARCH.GEMMA2, 3: gguf.MODEL_ARCH.GEMMA3,
                      4: gguf.MODEL_ARCH.GEMMA4}  # gemma4_unified (the 12B) is "gemma4" too (Gemma4UnifiedModel)
#: What the converter adds to every ``*norm.weight``: GemmaModel/Gemma2Model/Gemma3Model 1 (their RMSNorm is
#: x * (1 + w), llama.cpp's x * w); Gemma4Model.norm_shift returns 0.0 (Gemma 4's RMSNorm is already x * w).
NORM_SHIFT = {1: 1.0, 2: 1.0, 3: 1.0, 4: 0.0}
#: Gemma 4 tensors the converter names itself (Gemma4Model.modify_tensors), not through gguf's map.
_GEMMA4_OWN_NAMES = {"router.scale": (gguf.MODEL_TENSOR.FFN_GATE_INP, ".scale"),
                     "router.per_expert_scale": (gguf.MODEL_TENSOR.FFN_DOWN_EXP, ".scale")}
_EXPERTS = ("experts.gate_up_proj", "experts.down_proj")
#: Gemma 3n: the AltUp projections the converter stacks into one tensor each ([n-1, D, D], index j = HF's .j.)
_ALTUP_STACKS = {"altup_projections": gguf.MODEL_TENSOR.ALTUP_PROJ,
                 "altup_unembed_projections": gguf.MODEL_TENSOR.ALTUP_UNEMBD_PROJ}
ROPE_FREQS = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
#: generation -> the layer count at which llama.cpp takes a model for a 27B and scales attention by
#: (n_embd / n_head) ** -0.5 instead of head_dim ** -0.5 (llama-model.cpp, Gemma 2 and 3 hparams)
_LLAMA_CPP_27B_LAYERS = {2: 46, 3: 62}
#: llama.cpp's built-in local/global layer pattern (hparams.set_swa_pattern) and Gemma 3's local RoPE base.
_LLAMA_CPP_SWA_PATTERN = {2: 2, 3: 6}
_LLAMA_CPP_GEMMA3_LOCAL_BASE = 10_000.0
_READ_ERRORS = (ValueError, KeyError, IndexError, TypeError, OverflowError, OSError, UnicodeDecodeError)


def arch_name(generation: int) -> str:
    """``general.architecture`` llama.cpp writes for a Gemma generation ("gemma", "gemma2", "gemma3")."""
    return gguf.MODEL_ARCH_NAMES[ARCH_OF_GENERATION[generation]]


def model_arch(cfg: GemmaConfig) -> gguf.MODEL_ARCH:
    """llama.cpp's architecture for a config: Gemma 3n (AltUp) is "gemma3n" (Gemma3NModel), else by generation."""
    return gguf.MODEL_ARCH.GEMMA3N if cfg.altup_num_inputs else ARCH_OF_GENERATION[cfg.generation]


def cfg_arch_name(cfg: GemmaConfig) -> str:
    """``general.architecture`` llama.cpp writes for this config ("gemma3n" for Gemma 3n)."""
    return gguf.MODEL_ARCH_NAMES[model_arch(cfg)]


def norm_shift_of(cfg: GemmaConfig) -> float:
    """What llama.cpp's converter adds to this model's norm weights (Gemma3NModel.norm_shift: 0.0, like Gemma 4)."""
    return 0.0 if cfg.altup_num_inputs else NORM_SHIFT[cfg.generation]


def model_label(cfg: GemmaConfig) -> str:
    """"Gemma 3n" or "Gemma N", for messages."""
    return "Gemma 3n" if cfg.altup_num_inputs else f"Gemma {cfg.generation}"


def is_norm(rel: str) -> bool:
    """True for the RMSNorm weights (the ones llama.cpp's Gemma 1-3 converters store with +1; they test this suffix)."""
    return rel.endswith("norm.weight")


def gguf_tensor_names(cfg: GemmaConfig) -> dict[str, str]:
    """HF tensor name (without prefix, as in ``expected_shapes``) -> GGUF name, from gguf's own name map."""
    tmap = gguf.get_tensor_name_map(model_arch(cfg), cfg.num_hidden_layers)
    names = {}
    for rel in expected_shapes(cfg):
        m = re.fullmatch(r"layers\.(\d+)\.(.+)", rel)
        if m and m.group(2) in _GEMMA4_OWN_NAMES:
            key, suffix = _GEMMA4_OWN_NAMES[m.group(2)]
            names[rel] = gguf.TENSOR_NAMES[key].format(bid=int(m.group(1))) + suffix
            continue
        m = re.fullmatch(r"(altup_projections|altup_unembed_projections)\.\d+\.weight", rel)
        if m and cfg.altup_num_inputs:  # Gemma3NModel.modify_tensors stacks the n-1 matrices into one [n-1, D, D]
            names[rel] = gguf.TENSOR_NAMES[_ALTUP_STACKS[m.group(1)]] + ".weight"
            continue
        # Gemma4Model (and Gemma3NModel, for altup.correct_output_scale) .filter_tensors appends ".weight" to layer_scalar and the packed experts before mapping
        name = tmap.get_name("model." + rel + ("" if rel.endswith(".weight") else ".weight"), try_suffixes=(".weight",))
        if name is None:  # the gguf package lost a Gemma tensor: not the user's input at fault
            raise RuntimeError(f"gguf's tensor map has no name for {rel!r} ({cfg_arch_name(cfg)})")
        names[rel] = name
    return names


def open_gguf(path: str | os.PathLike) -> gguf.GGUFReader:
    """Open a GGUF file with llama.cpp's reader; InputError (naming the file) when it is not one."""
    p = Path(path)
    if not p.exists():
        raise InputError("GGUF file not found", p)
    require_regular(p, "GGUF file")  # GGUFReader memory-maps it: a FIFO would block, a device never ends
    try:
        return gguf.GGUFReader(p)
    except _READ_ERRORS as e:
        raise InputError(f"not a readable GGUF file ({type(e).__name__}: {e})", p,
                         hint="the file may be truncated, corrupt or not GGUF at all") from None


def open_gguf_parts(path: str | os.PathLike) -> list[tuple[Path, gguf.GGUFReader]]:
    """(path, reader) of the GGUF, or of all parts of a split one in order when ``path`` is its first part.

    llama.cpp splits big files (``gguf-split``, the converter's ``--split-max-*``) into parts named
    ``NAME-00001-of-0000N.gguf``; each is a GGUF holding some of the tensors, and all carry
    ``split.no`` / ``split.count``; the model's metadata is in the first. Every problem -- a later
    part passed first, a part missing, parts from another split -- is an InputError naming the file.
    """
    p = Path(path)
    first = open_gguf(p)
    count = metadata(first, SPLIT.LLM_KV_SPLIT_COUNT, p)
    if not isinstance(count, int) or count <= 1:
        return [(p, first)]
    no = metadata(first, SPLIT.LLM_KV_SPLIT_NO, p)
    m = re.fullmatch(r"(.+)-(\d{5})-of-(\d{5})\.gguf", p.name)
    if no != 0:
        first_name = SHARD_NAME_FORMAT.format(m.group(1), 1, count) if m else "its first part"
        raise InputError(f"this is part {no + 1 if isinstance(no, int) else '?'} of a {count}-part split GGUF", p,
                         hint=f"pass the first part, {first_name}; the others are found beside it")
    if m is None:
        raise InputError(f"the first part of a {count}-part split GGUF, but not named as llama.cpp names parts "
                         f"(NAME-00001-of-{count:05d}.gguf), so the others cannot be found", p)
    readers = [(p, first)]
    for i in range(2, count + 1):
        part = p.with_name(SHARD_NAME_FORMAT.format(m.group(1), i, count))
        if not part.is_file():
            raise InputError(f"part {i} of this {count}-part split GGUF is missing ({part.name})", p)
        r = open_gguf(part)
        if (metadata(r, SPLIT.LLM_KV_SPLIT_NO, part), metadata(r, SPLIT.LLM_KV_SPLIT_COUNT, part)) != (i - 1, count):
            raise InputError(f"its split.no / split.count do not make it part {i} of {count}", part,
                             hint="the parts come from different splits")
        readers.append((part, r))
    total = metadata(first, SPLIT.LLM_KV_SPLIT_TENSORS_COUNT, p)
    held = sum(len(r.tensors) for _, r in readers)
    if isinstance(total, int) and held != total:
        raise InputError(f"the {count} parts hold {held} tensors but split.tensors.count says {total}", p,
                         hint="a part may come from another split")
    return readers


def numpy_shape(t: gguf.ReaderTensor) -> tuple[int, ...]:
    """A tensor's shape in numpy / HF order: GGML lists dimensions fastest-first, so reverse them."""
    return tuple(int(n) for n in reversed(t.shape.tolist()))


def dequantize(t: gguf.ReaderTensor, rows: slice | np.ndarray | None = None) -> np.ndarray:
    """A tensor (or some of its rows) in float32, numpy shape, through ``gguf.quants.dequantize``."""
    data = t.data if rows is None else t.data[rows]  # quantized data is [rows, bytes per row]: rows slice cleanly
    return np.asarray(gguf.quants.dequantize(data, t.tensor_type), dtype=np.float32)


def metadata(reader: gguf.GGUFReader, key: str, path: Path) -> Any:
    """One metadata value (a list for arrays), or None when the key is absent."""
    field = reader.get_field(key)
    if field is None:
        return None
    try:
        return field.contents()
    except _READ_ERRORS as e:
        raise InputError(f"metadata key {key!r} cannot be decoded ({e})", path) from None


def quant_label(reader: gguf.GGUFReader, type_counts: dict[str, int], path: Path) -> str:
    """The file's quant type as people write it (Q4_K_M, Q8_0, F16): general.file_type, else the dominant type."""
    ft = metadata(reader, gguf.Keys.General.FILE_TYPE, path)
    if isinstance(ft, int):
        try:
            name = gguf.LlamaFileType(ft).name
        except ValueError:
            name = ""
        if name.startswith(("MOSTLY_", "ALL_")):
            return name.split("_", 1)[1]
    return max(type_counts, key=type_counts.get) if type_counts else "unknown"


# --- metadata against the config -------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    """Equal, with floats compared at float32 precision (GGUF stores them as float32)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-6, abs_tol=0)
    return a == b


def _per_layer(value: Any, n_layers: int) -> Any:
    """Per-layer arrays (llama.cpp allows them for head counts and ffn length) collapse to one value when uniform."""
    if isinstance(value, list) and len(value) == n_layers and len(set(value)) == 1:
        return value[0]
    return value


def metadata_findings(reader: gguf.GGUFReader, cfg: GemmaConfig, path: Path) -> list[Finding]:
    """Every place the GGUF metadata disagrees with the original's config (all of them, not the first)."""
    where = str(path)
    out: list[Finding] = []
    arch = metadata(reader, gguf.Keys.General.ARCHITECTURE, path)
    want_arch = cfg_arch_name(cfg)
    if arch != want_arch:
        out.append(Finding("GGUF001", "error", f"general.architecture is {arch!r}; the original is {model_label(cfg)}, "
                                               f"which llama.cpp runs as {want_arch!r}", path=where))
    a = arch if isinstance(arch, str) and arch.startswith("gemma") else want_arch  # keys live under the file's arch

    def check(key: str, want: Any, what: str, default: Any = None, known_default: bool = False) -> None:
        full = key.format(arch=a)
        have = _per_layer(metadata(reader, full, path), cfg.num_hidden_layers)
        if have is None:
            if want is None:
                return
            if known_default:
                if not _same(default, want):
                    out.append(Finding("GGUF001", "error", f"{full} is missing: llama.cpp would use its default {default!r}, "
                                                           f"the original's {what} is {want!r}", path=where))
                return
            out.append(Finding("GGUF002", "warning", f"{full} is missing (the original's {what} is {want!r})", path=where))
        elif want is None:
            out.append(Finding("GGUF001", "error", f"{full} is {have!r} but the original has no {what}", path=where))
        elif not _same(have, want):
            out.append(Finding("GGUF001", "error", f"{full} is {have!r}, the original's {what} is {want!r}", path=where))

    K, A, R = gguf.Keys.LLM, gguf.Keys.Attention, gguf.Keys.Rope
    check(K.BLOCK_COUNT, cfg.num_hidden_layers, "num_hidden_layers")
    check(K.EMBEDDING_LENGTH, cfg.hidden_size, "hidden_size")
    check(A.HEAD_COUNT, cfg.num_attention_heads, "num_attention_heads")
    if cfg.generation >= 4 or cfg.altup_num_inputs:
        return out + _gemma4_findings(reader, cfg, a, path, check)
    check(K.FEED_FORWARD_LENGTH, cfg.intermediate_size, "intermediate_size")
    check(A.HEAD_COUNT_KV, cfg.num_key_value_heads, "num_key_value_heads", cfg.num_attention_heads, known_default=True)
    # Without key_length llama.cpp takes n_embd / n_head: 192 for gemma-7b, whose heads are 256 wide.
    check(A.KEY_LENGTH, cfg.head_dim, "head_dim", cfg.hidden_size // cfg.num_attention_heads, known_default=True)
    check(A.VALUE_LENGTH, cfg.head_dim, "head_dim", cfg.hidden_size // cfg.num_attention_heads, known_default=True)
    check(A.LAYERNORM_RMS_EPS, cfg.rms_norm_eps, "rms_norm_eps")
    check(K.CONTEXT_LENGTH, cfg.max_position_embeddings, "max_position_embeddings")
    check(R.FREQ_BASE, cfg.rope_global.theta, "rope_theta", 10_000.0, known_default=True)
    out += _rope_scaling(reader, cfg, a, path)
    if cfg.generation >= 2:
        check(K.ATTN_LOGIT_SOFTCAPPING, cfg.attn_logit_softcapping, "attn_logit_softcapping")
        check(K.FINAL_LOGIT_SOFTCAPPING, cfg.final_logit_softcapping, "final_logit_softcapping")
        if cfg.generation == 2:  # llama.cpp's Gemma 2 default window is 4096
            check(A.SLIDING_WINDOW, cfg.sliding_window, "sliding_window", 4096, known_default=True)
        elif cfg.sliding_window is not None and metadata(reader, A.SLIDING_WINDOW.format(arch=a), path) is None:
            out.append(Finding("GGUF001", "error", f"{A.SLIDING_WINDOW.format(arch=a)} is missing: llama.cpp refuses to "
                                                   f"load a Gemma 3 without it (the original's is {cfg.sliding_window})",
                                                   path=where))
        else:
            check(A.SLIDING_WINDOW, cfg.sliding_window, "sliding_window")
    out += _llama_cpp_assumptions(reader, cfg, a, path)
    return out


def _gemma4_findings(reader: gguf.GGUFReader, cfg: GemmaConfig, a: str, path: Path, check) -> list[Finding]:
    """Gemma 4's keys (Gemma4Model.set_gguf_parameters on top of Gemma3Model's and TextModel's) against the config.

    Per-layer values are compared layer by layer: a scalar key stands for every layer, an array has one
    entry per layer (llama.cpp reads ``head_count_kv`` and ``feed_forward_length`` either way).
    """
    where, out = str(path), []
    K, A, R = gguf.Keys.LLM, gguf.Keys.Attention, gguf.Keys.Rope
    L = cfg.num_hidden_layers
    spec = cfg.layers

    def per_layer(key: str, want: list[Any], what: str, default: Any = None) -> None:
        full = key.format(arch=a)
        have = metadata(reader, full, path)
        if have is None:
            if default is None:
                out.append(Finding("GGUF002", "warning", f"{full} is missing (the original's {what} per layer: "
                                                         f"{_short(want)})", path=where))
                return
            have, full = default, f"{full} (missing; llama.cpp's default {default!r})"
        values = have if isinstance(have, list) else [have] * L
        if len(values) != L:
            out.append(Finding("GGUF001", "error", f"{full} has {len(values)} entries for {L} layers", path=where))
            return
        bad = [i for i, (h, w) in enumerate(zip(values, want)) if not _same(h, w)]
        if bad:
            shown = ", ".join(f"layer {i}: {values[i]!r} vs {want[i]!r}" for i in bad[:4])
            out.append(Finding("GGUF001", "error", f"{full} disagrees with the original's {what} on {len(bad)} of {L} "
                                                   f"layers ({shown}{' …' if len(bad) > 4 else ''})", path=where))

    full_dims = {s.head_dim for s in spec if s.type == FULL}
    swa_dims = {s.head_dim for s in spec if s.type == SLIDING}
    per_layer(K.FEED_FORWARD_LENGTH, [s.intermediate_size for s in spec], "MLP width (intermediate_size)")
    per_layer(A.HEAD_COUNT_KV, [s.num_key_value_heads for s in spec], "key/value heads",
              default=cfg.num_attention_heads)  # llama.cpp's default: as many as query heads
    if cfg.altup_num_inputs:  # Gemma3NModel: one head width, no *_swa widths or rope dimension counts written
        out.extend(_gemma3n_findings(reader, cfg, a, path, check, per_layer))
        return out
    # One width per layer type in GGUF: key_length for full layers, key_length_swa for sliding ones.
    if len(full_dims) == 1:
        (d,) = full_dims
        check(A.KEY_LENGTH, d, "full layers' head width (global_head_dim)", cfg.hidden_size // cfg.num_attention_heads,
              known_default=True)
        check(A.VALUE_LENGTH, d, "full layers' head width (global_head_dim)", cfg.hidden_size // cfg.num_attention_heads,
              known_default=True)
        check(R.DIMENSION_COUNT, d, "full layers' head width (the converter states full rotation; rope_freqs "
                                    "carries the proportion)")
    if len(swa_dims) == 1:
        (d,) = swa_dims
        check(A.KEY_LENGTH_SWA, d, "sliding layers' head width (head_dim)")
        check(A.VALUE_LENGTH_SWA, d, "sliding layers' head width (head_dim)")
        check(R.DIMENSION_COUNT_SWA, int(d * cfg.rope_local.proportion), "sliding layers' rotated width")
        check(R.FREQ_BASE_SWA, cfg.rope_local.theta, "sliding layers' rope_theta")
    if len(full_dims) > 1 or len(swa_dims) > 1:
        out.append(Finding("GGUF003", "warning", "the original's layers of one type differ in head width "
                                                 f"(full: {sorted(full_dims)}, sliding: {sorted(swa_dims)}); GGUF has "
                                                 "one key_length per layer type", path=where))
    out.extend(_per_layer_model_keys(reader, cfg, a, path, check))
    check(K.EXPERT_COUNT, cfg.num_experts or None, "num_experts")
    check(K.EXPERT_USED_COUNT, cfg.top_k_experts or None, "top_k_experts")
    check(K.EXPERT_FEED_FORWARD_LENGTH, cfg.moe_intermediate_size or None, "moe_intermediate_size")
    return out


def _per_layer_model_keys(reader: gguf.GGUFReader, cfg: GemmaConfig, a: str, path: Path, check) -> list[Finding]:
    """The keys Gemma 4 and Gemma 3n GGUFs share: eps, context, global RoPE, soft-caps, the per-layer
    sliding pattern (one bool per layer), KV-shared layers and the per-layer-embedding width."""
    where, out = str(path), []
    K, A, R = gguf.Keys.LLM, gguf.Keys.Attention, gguf.Keys.Rope
    check(A.LAYERNORM_RMS_EPS, cfg.rms_norm_eps, "rms_norm_eps")
    check(K.CONTEXT_LENGTH, cfg.max_position_embeddings, "max_position_embeddings")
    check(R.FREQ_BASE, cfg.rope_global.theta, "full layers' rope_theta", 10_000.0, known_default=True)
    out.extend(_rope_scaling(reader, cfg, a, path))
    check(K.ATTN_LOGIT_SOFTCAPPING, cfg.attn_logit_softcapping, "attn_logit_softcapping")
    check(K.FINAL_LOGIT_SOFTCAPPING, cfg.final_logit_softcapping, "final_logit_softcapping")
    check(A.SLIDING_WINDOW, cfg.sliding_window, "sliding_window")
    key = A.SLIDING_WINDOW_PATTERN.format(arch=a)
    pattern = metadata(reader, key, path)
    kinds = ", ".join("L" if t == SLIDING else "G" for t in cfg.layer_types)
    if pattern is None:
        out.append(Finding("GGUF002", "warning", f"{key} is missing (the original's layers: {kinds})", path=where))
    elif _layer_kinds(pattern, cfg.num_hidden_layers) != cfg.layer_types:
        out.append(Finding("GGUF001", "error", f"{key} is {_short(pattern)}; the original's layers are {kinds}",
                           path=where))
    check(A.SHARED_KV_LAYERS, cfg.num_kv_shared_layers, "num_kv_shared_layers")
    check(K.EMBD_LENGTH_PER_LAYER_INP, cfg.hidden_size_per_layer_input, "hidden_size_per_layer_input (0: no PLE)")
    return out


def _gemma3n_findings(reader: gguf.GGUFReader, cfg: GemmaConfig, a: str, path: Path, check, per_layer) -> list[Finding]:
    """Gemma 3n's keys (Gemma3NModel.set_gguf_parameters on top of Gemma3Model's and TextModel's) against the config.

    Besides Gemma 3's: ``altup.active_idx``, ``altup.num_inputs``, ``embedding_length_per_layer_input``,
    ``attention.shared_kv_layers``, ``sliding_window_pattern`` (bool per layer), ``activation_sparsity_scale``
    (per layer, the standard normal's quantile of ``activation_sparsity_pattern``: -inf for 0.0, i.e. no
    sparsity) and ``feed_forward_length`` per layer when the config lists one width per layer.
    """
    out: list[Finding] = []
    K, A, R = gguf.Keys.LLM, gguf.Keys.Attention, gguf.Keys.Rope
    default_hd = cfg.hidden_size // cfg.num_attention_heads
    check(A.KEY_LENGTH, cfg.head_dim, "head_dim", default_hd, known_default=True)
    check(A.VALUE_LENGTH, cfg.head_dim, "head_dim", default_hd, known_default=True)
    if metadata(reader, R.FREQ_BASE_SWA.format(arch=a), path) is not None:
        check(R.FREQ_BASE_SWA, cfg.rope_local.theta, "sliding layers' rope_theta (rope_local_base_freq)")
    out.extend(_per_layer_model_keys(reader, cfg, a, path, check))
    check(K.ALTUP_ACTIVE_IDX, cfg.altup_active_idx, "altup_active_idx")
    check(K.ALTUP_NUM_INPUTS, cfg.altup_num_inputs, "altup_num_inputs")
    nd = statistics.NormalDist()  # torch.distributions.Normal(0, 1).icdf, as the converter computes it
    per_layer(K.ACTIVATION_SPARSITY_SCALE,
              [-math.inf if s.activation_sparsity <= 0 else math.inf if s.activation_sparsity >= 1
               else float(np.float32(nd.inv_cdf(s.activation_sparsity))) for s in cfg.layers],
              "activation sparsity (activation_sparsity_pattern, as a normal quantile)")
    return out


def rope_freqs_findings(t: gguf.ReaderTensor | None, cfg: GemmaConfig, path: Path) -> list[Finding]:
    """Gemma 4's proportional RoPE as llama.cpp gets it: ``rope_freqs.weight`` against the config (full layers).

    llama.cpp divides each pair's frequency by its factor: the converter writes 1.0 for the first
    int(global_head_dim * partial_rotary_factor / 2) pairs and 1e30 (no rotation) for the rest.
    """
    if cfg.generation < 4 or not any(s.type == FULL for s in cfg.layers):
        return []
    where, hd, rope = str(path), cfg.global_head_dim, cfg.rope_global
    base = np.float32(1.0) / np.float32(rope.theta) ** (np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd))
    want = base.copy()
    n_rot = int(rope.proportion * hd // 2) if rope.proportion < 1.0 else hd // 2
    want[n_rot:] = 0
    what = (f"the original rotates {n_rot} of the {hd // 2} dimension pairs of full layers "
            f"(partial_rotary_factor {rope.proportion:g})")
    if t is None:
        if n_rot == hd // 2:
            return []
        return [Finding("GGUF001", "error", f"{ROPE_FREQS} is missing: llama.cpp would rotate all {hd // 2} dimension "
                                            f"pairs; {what}", path=where)]
    try:
        ff = dequantize(t).reshape(-1)
    except _READ_ERRORS + (NotImplementedError,) as e:
        return [Finding("GGUF001", "error", f"{ROPE_FREQS} cannot be decoded ({e})", path=where)]
    if ff.shape != (hd // 2,) or not np.all(ff > 0):
        return [Finding("GGUF001", "error", f"{ROPE_FREQS} has {ff.size} entries (or non-positive ones); full layers "
                                            f"have {hd // 2} dimension pairs", path=where)]
    eff = base / ff  # what llama.cpp rotates by
    if not np.allclose(eff, want, rtol=1e-5, atol=1e-12):
        rotated = int(np.sum(eff > 1e-12))
        return [Finding("GGUF001", "error", f"{ROPE_FREQS} makes llama.cpp rotate {rotated} dimension pairs of full "
                                            f"layers (or at other speeds); {what}", path=where)]
    return []


def _short(v: Any) -> str:
    if isinstance(v, list) and len(v) > 8:
        return repr(v[:8])[:-1] + ", …]"
    return repr(v)


def _layer_kinds(pattern: Any, n_layers: int) -> tuple[str, ...] | None:
    """Layer types from a sliding-window pattern: every n-th layer global, or a per-layer list (True = sliding)."""
    if isinstance(pattern, list) and len(pattern) == n_layers:
        return tuple(SLIDING if bool(x) else FULL for x in pattern)
    if isinstance(pattern, int) and not isinstance(pattern, bool) and pattern > 0:
        return tuple(SLIDING if (i + 1) % pattern else FULL for i in range(n_layers))
    return None


def _rope_scaling(reader: gguf.GGUFReader, cfg: GemmaConfig, a: str, path: Path) -> list[Finding]:
    """Linear RoPE scaling of the global layers: rope.scaling.type / .factor against the config."""
    R = gguf.Keys.Rope
    kind = metadata(reader, R.SCALING_TYPE.format(arch=a), path)
    factor = metadata(reader, R.SCALING_FACTOR.format(arch=a), path)
    want = cfg.rope_global.linear_factor
    if kind not in (None, "none", "linear"):
        return [Finding("GGUF001", "error", f"{R.SCALING_TYPE.format(arch=a)} is {kind!r}; the original uses "
                                            + (f"linear scaling by {want:g}" if want != 1.0 else "none"), path=str(path))]
    have = float(factor) if kind == "linear" and isinstance(factor, (int, float)) else 1.0
    if not _same(have, want):
        return [Finding("GGUF001", "error", f"RoPE scaling: the GGUF gives {kind or 'none'} with factor {have:g} "
                                            f"({R.SCALING_FACTOR.format(arch=a)}), the original linear {want:g}",
                        path=str(path))]
    return []


def _llama_cpp_assumptions(reader: gguf.GGUFReader, cfg: GemmaConfig, a: str, path: Path) -> list[Finding]:
    """What llama.cpp hard-codes for Gemma 2/3 (llama-model.cpp) and this original does otherwise (GGUF003)."""
    if cfg.generation < 2:
        return []
    where, out = str(path), []
    n_embd_head = cfg.hidden_size // cfg.num_attention_heads
    big = cfg.num_hidden_layers == _LLAMA_CPP_27B_LAYERS[cfg.generation]
    implied = float(n_embd_head if big else cfg.head_dim)  # llama.cpp's attention scale is implied ** -0.5
    if not _same(implied, cfg.query_pre_attn_scalar):
        out.append(Finding("GGUF003", "warning",
                           f"llama.cpp scales attention by {implied:g} ** -0.5 (inferred from the layer count; no GGUF "
                           f"key sets it), the original's query_pre_attn_scalar is {cfg.query_pre_attn_scalar:g}", path=where))
    key = gguf.Keys.Attention.SLIDING_WINDOW_PATTERN.format(arch=a)
    pattern = metadata(reader, key, path)
    kinds = ", ".join("L" if t == SLIDING else "G" for t in cfg.layer_types)  # L local (sliding), G global
    if pattern is None:
        p = _LLAMA_CPP_SWA_PATTERN[cfg.generation]
        if _layer_kinds(p, cfg.num_hidden_layers) != cfg.layer_types:
            out.append(Finding("GGUF003", "warning", f"llama.cpp assumes every {p}th layer is global (the rest sliding); "
                                                     f"the original's layers differ ({kinds})", path=where))
    elif _layer_kinds(pattern, cfg.num_hidden_layers) != cfg.layer_types:
        out.append(Finding("GGUF001", "error", f"{key} is {pattern!r}; the original's layers are {kinds}", path=where))
    if cfg.generation == 3:
        local = metadata(reader, gguf.Keys.Rope.FREQ_BASE_SWA.format(arch=a), path)
        base = _LLAMA_CPP_GEMMA3_LOCAL_BASE if local is None else local
        if not _same(float(base), cfg.rope_local.theta) and any(t == SLIDING for t in cfg.layer_types):
            key = "rope.freq_base_swa" if local is not None else "its built-in 10000"
            out.append(Finding("GGUF001" if local is not None else "GGUF003", "error" if local is not None else "warning",
                               f"local layers' RoPE base: llama.cpp uses {base:g} ({key}), the original "
                               f"{cfg.rope_local.theta:g}", path=where))
    return out


# --- the weights source ------------------------------------------------------------------------------


class GGUFWeights:
    """Lazy float32 access to a GGUF's Gemma tensors, under the reference's (HF) names.

    ``norm_plus_one=False`` reads norm weights as stored (only for files known to lack the +1). Gemma 4
    norms are read as stored either way: its converter adds nothing (:data:`NORM_SHIFT`).
    """

    def __init__(self, path: str | os.PathLike, cfg: GemmaConfig, norm_plus_one: bool = True):
        self.path = Path(path)
        self.cfg = cfg
        self.norm_plus_one = norm_plus_one
        self.norm_shift = np.float32(norm_shift_of(cfg) if norm_plus_one else 0.0)
        self.parts = open_gguf_parts(self.path)  # one reader, or one per part of a split file
        self.tensors = {}
        for part, r in self.parts:
            for t in r.tensors:
                if t.name in self.tensors:
                    raise InputError(f"tensor {t.name!r} is in two parts of the split GGUF", part)
                self.tensors[t.name] = t
        self.names = gguf_tensor_names(cfg)
        self.findings: list[Finding] = metadata_findings(self.reader, cfg, self.path)
        self.vocab_rows, self.head = self._check_tensors()

    # --- structure ---------------------------------------------------------------------------------

    def _check_tensors(self) -> tuple[int, str]:
        """Every tensor present, in a decodable type, with the config's shape; else one InputError listing all."""
        problems: list[str] = []
        shapes = expected_shapes(self.cfg)
        for rel, stack in _altup_stacks(self.names).items():  # Gemma 3n: n-1 [D, D] matrices stacked into one tensor
            shapes = {k: v for k, v in shapes.items() if k not in stack}
            shapes[stack[0]] = (len(stack), *expected_shapes(self.cfg)[stack[0]])
        ple_padding = 0
        for rel, want in shapes.items():
            name = self.names[rel]
            t = self.tensors.get(name)
            if t is None:
                problems.append(f"tensor {name!r} ({rel}) is missing")
                continue
            have = numpy_shape(t)
            rows_ok = rel == "embed_tokens.weight" and len(have) == 2 and have[1] == want[1] and have[0] <= want[0]
            if (rel == "embed_tokens_per_layer.weight" and self.cfg.altup_num_inputs and len(have) == 2
                    and have[1] == want[1] and want[0] < have[0] <= self.cfg.vocab_size):
                # Gemma3NModel pads the PLE table with zero rows up to vocab_size; the ids past the original's rows
                # are mapped to row 0 before the lookup (model.ple_ids), so those rows are never read
                rows_ok, ple_padding = True, have[0] - want[0]
            if have != want and not rows_ok:
                problems.append(f"tensor {name!r} ({rel}) has shape {list(have)} (GGML order {list(reversed(have))}), "
                                f"the config implies {list(want)}")
            elif (why := _undecodable(t)) is not None:
                problems.append(f"tensor {name!r} is {t.tensor_type.name}: {why}")
        head = "token_embd.weight"
        out = self.tensors.get("output.weight")
        if out is not None:  # llama.cpp uses a stored output head instead of the tied embedding; measure what it runs
            if numpy_shape(out)[1:] != (self.cfg.hidden_size,) or (why := _undecodable(out)) is not None:
                problems.append(f"tensor 'output.weight' has shape {list(numpy_shape(out))} or an undecodable type")
            else:
                head = "output.weight"
                self.findings.append(Finding("GGUF004", "warning", "output.weight is present: llama.cpp uses it as the "
                                             "output head instead of the tied embedding (the comparison does too)",
                                             path=str(self.path)))
        if problems:
            arch = metadata(self.reader, gguf.Keys.General.ARCHITECTURE, self.path)
            hint = None
            if arch != cfg_arch_name(self.cfg):
                hint = f"the file's architecture is {arch!r}, the original is {model_label(self.cfg)}: is --against right?"
            shown = "; ".join(problems[:8]) + (f" (and {len(problems) - 8} more)" if len(problems) > 8 else "")
            raise InputError(f"GGUF does not fit the original's config.json: {shown}", self.path, hint=hint)
        self.findings += rope_freqs_findings(self.tensors.get(ROPE_FREQS), self.cfg, self.path)
        rows = min(numpy_shape(self.tensors["token_embd.weight"])[0], numpy_shape(self.tensors[head])[0])
        if rows < self.cfg.vocab_size:
            self.findings.append(Finding("GGUF004", "warning" if self.cfg.generation < 3 else "info",
                                         f"the GGUF holds {rows} of the original's {self.cfg.vocab_size} vocabulary rows "
                                         "(llama.cpp's Gemma 3 converter drops the padding past the tokenizer); logits are "
                                         f"compared over ids 0..{rows - 1}", path=str(self.path)))
        if ple_padding:
            self.findings.append(Finding("GGUF004", "info", f"per_layer_token_embd holds {ple_padding} zero rows past the "
                                         f"original's {self.cfg.vocab_size_per_layer_input} (llama.cpp's Gemma 3n converter "
                                         f"pads it to vocab_size {self.cfg.vocab_size}); the reference reads row 0 for "
                                         "those ids, as transformers does", path=str(self.path)))
        unused = sorted(set(self.tensors) - set(self.names.values()) - {head, ROPE_FREQS})
        shared = self._kv_shared_leftovers(unused)
        if shared:  # Gemma 4 E2B/E4B: the converter keeps the K/V tensors real files carry on KV-shared layers
            unused = [n for n in unused if n not in shared]
            self.findings.append(Finding("GGUF004", "info", f"{len(shared)} K/V tensors of KV-shared layers are in the "
                                         f"GGUF ({', '.join(shared[:3])}{' …' if len(shared) > 3 else ''}): those layers "
                                         "reuse an earlier layer's K/V, so they are never read", path=str(self.path)))
        if unused:
            self.findings.append(Finding("GGUF004", "info", f"{len(unused)} GGUF tensors not used by the text model "
                                         f"({', '.join(unused[:5])}{' …' if len(unused) > 5 else ''})", path=str(self.path)))
        return rows, head

    def _kv_shared_leftovers(self, names: list[str]) -> list[str]:
        """The GGUF names among ``names`` that are K/V tensors of Gemma 4 / 3n KV-shared layers."""
        if not any(s.kv_source is not None for s in self.cfg.layers or ()):
            return []
        tmap = gguf.get_tensor_name_map(model_arch(self.cfg), self.cfg.num_hidden_layers)
        kv = {tmap.get_name(f"model.layers.{i}.self_attn.{t}.weight", try_suffixes=(".weight",))
              for i, s in enumerate(self.cfg.layers) if s.kv_source is not None for t in ("k_proj", "v_proj", "k_norm")}
        return [n for n in names if n in kv]

    # --- what the forward pass asks for ------------------------------------------------------------

    def tensor(self, rel: str) -> np.ndarray:
        """One tensor (HF name without prefix) in float32 and HF shape, norms without the converter's +1 (Gemma 1-3)."""
        m = re.fullmatch(r"(?:altup_projections|altup_unembed_projections)\.(\d+)\.weight", rel)
        if m and self.cfg.altup_num_inputs:  # one matrix of the converter's stack
            return dequantize(self.tensors[self.names[rel]], int(m.group(1)))
        w = dequantize(self.tensors[self.names[rel]])
        if is_norm(rel) and self.norm_shift:
            w = w - self.norm_shift  # llama.cpp stores 1 + w for Gemma 1-3; the reference's rms_norm adds the 1 itself
        return w

    def layer(self, i: int) -> dict[str, Any]:
        """All tensors of layer i in float32, keyed by their HF name inside the layer (dequantized now).

        Gemma 4's packed experts come as :class:`ExpertStack`: ``[e]`` dequantizes expert e alone,
        so a layer's experts never sit in memory in float32 as a whole.
        """
        p = f"layers.{i}."
        return {rel[len(p):]: ExpertStack(self.tensors[self.names[rel]]) if rel.endswith(_EXPERTS) else self.tensor(rel)
                for rel in self.names if rel.startswith(p)}

    def per_layer_rows(self, ids: np.ndarray) -> np.ndarray:
        """Gemma 4 PLE: rows of per_layer_token_embd in float32, only those rows dequantized.  [T] -> [T, L*P]"""
        t = self.tensors[self.names["embed_tokens_per_layer.weight"]]
        ids = np.asarray(ids)
        if ids.size and int(ids.max()) >= numpy_shape(t)[0]:
            raise InputError(f"token id {int(ids.max())} has no row in the GGUF's per-layer embedding "
                             f"({numpy_shape(t)[0]} rows)", self.path)
        return dequantize(t, ids)

    def per_layer_projection(self) -> tuple[np.ndarray, np.ndarray]:
        """Gemma 4 PLE's context part: per_layer_model_proj [L*P, D] and per_layer_proj_norm [P], float32."""
        return self.tensor("per_layer_model_projection.weight"), self.tensor("per_layer_projection_norm.weight")

    def altup_projections(self) -> list[np.ndarray]:
        """Gemma 3n: the n-1 AltUp stream projections [D, D] (HF's altup_projections.j = the GGUF's altup_proj[j])."""
        return [self.tensor(f"altup_projections.{j}.weight") for j in range(self.cfg.altup_num_inputs - 1)]

    def altup_unembed_projections(self) -> list[np.ndarray]:
        """Gemma 3n: the n-1 projections back [D, D] (altup_unembd_proj[j])."""
        return [self.tensor(f"altup_unembed_projections.{j}.weight") for j in range(self.cfg.altup_num_inputs - 1)]

    def embedding_rows(self, ids: np.ndarray) -> np.ndarray:
        """E[ids] in float32, unscaled (the model scales).  [T] -> [T, hidden]"""
        ids = np.asarray(ids)
        if ids.size and int(ids.max()) >= self.vocab_rows:
            raise InputError(f"token id {int(ids.max())} has no row in the GGUF's embedding ({self.vocab_rows} rows)",
                             self.path)
        return dequantize(self.tensors["token_embd.weight"], ids)

    def embedding_blocks(self, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """The output head in blocks of rows, float32: yields (first row, [n, hidden]).

        Rows the GGUF does not hold (Gemma 3's dropped padding) come back as zeros, so their logits
        are defined; the comparison leaves them out.
        """
        head = self.tensors[self.head]
        for start in range(0, self.cfg.vocab_size, block_rows):
            stop = min(start + block_rows, self.cfg.vocab_size)
            block = np.zeros((stop - start, self.cfg.hidden_size), dtype=np.float32)
            have = min(stop, self.vocab_rows)
            if have > start:
                block[: have - start] = dequantize(head, slice(start, have))
            yield start, block

    def final_norm(self) -> np.ndarray:
        return self.tensor("norm.weight")

    @property
    def reader(self) -> gguf.GGUFReader | None:
        """The first part's reader, which holds the metadata (None once closed)."""
        return self.parts[0][1] if self.parts else None

    def close(self) -> None:
        self.tensors = {}
        self.parts = []  # the memory maps close when the last views of them are gone

    # --- reporting ---------------------------------------------------------------------------------

    def type_counts(self) -> dict[str, int]:
        """GGML type -> number of the text model's tensors stored in it."""
        return dict(Counter(self.tensors[n].tensor_type.name for n in set(self.names.values())))

    def describe(self) -> dict[str, Any]:
        """File, size, quant label and tensor types, for reports and the variants table."""
        counts = self.type_counts()
        elements: Counter[str] = Counter()
        for n in set(self.names.values()):
            elements[self.tensors[n].tensor_type.name] += int(self.tensors[n].n_elements)
        return {
            "file": self.path.name,
            "path": str(self.path),
            "bytes": sum(part.stat().st_size for part, _ in self.parts) if self.parts else self.path.stat().st_size,
            "parts": max(1, len(self.parts)),
            "architecture": metadata(self.reader, gguf.Keys.General.ARCHITECTURE, self.path) if self.reader else None,
            "quant": quant_label(self.reader, dict(elements), self.path) if self.reader else None,
            "tensor_types": counts,
            "vocab_rows": self.vocab_rows,
            "output_head": self.head,
        }


class ExpertStack:
    """A GGUF's packed expert tensor ([E, out, in] in HF order), dequantized one expert at a time.

    ``stack[e]`` is expert e's [out, in] matrix in float32 -- what ``gemma_ref.model.moe`` indexes;
    the GGUF's rows of one expert are contiguous, so only that expert's blocks are decoded.
    """

    def __init__(self, t: gguf.ReaderTensor):
        self._t = t
        self.shape = numpy_shape(t)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, e: int) -> np.ndarray:
        return dequantize(self._t, int(e))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:  # the whole stack, for tests and reports
        w = dequantize(self._t)
        return w if dtype is None else w.astype(dtype)


def _altup_stacks(names: dict[str, str]) -> dict[str, list[str]]:
    """GGUF name -> the HF names stored in it, for the names several HF tensors share (Gemma 3n's altup stacks)."""
    by_name: dict[str, list[str]] = {}
    for rel, name in names.items():
        by_name.setdefault(name, []).append(rel)
    return {name: sorted(rels) for name, rels in by_name.items() if len(rels) > 1}


def _undecodable(t: gguf.ReaderTensor) -> str | None:
    """Why gguf.quants cannot dequantize this tensor's type, or None (probes the first row)."""
    try:
        dequantize(t, slice(0, 1) if t.data.ndim > 1 else None)
    except NotImplementedError:
        return "the gguf package cannot dequantize this type"
    except _READ_ERRORS as e:
        return f"cannot be decoded ({e})"
    return None
