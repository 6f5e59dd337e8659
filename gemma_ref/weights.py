"""Reading Gemma weights from safetensors, one layer at a time, never all in float32.

A model directory holds either ``model.safetensors`` or shards listed in
``model.safetensors.index.json``. safetensors validates every header; the data is
then memory-mapped, and the forward pass gets zero-copy views in the stored dtype
(bf16, f16 or f32), one layer at a time, plus the embedding/output matrix in
blocks of rows. ``matmul_stored`` multiplies by a bf16/f16 view converting a few
rows at a time into a reused float32 buffer, so a 17 GB bf16 checkpoint runs in a
few hundred MB of anonymous memory; reading touches only the pages used. The
opt-in ``cache=True`` converts each tensor once and keeps it in float32 instead.
Only safetensors is ever read: no pickle, whatever else lies in the directory.

Tensor names are the Hugging Face ones under a prefix that depends on how the
model was saved:

=========================  =============================================
``model.``                 GemmaForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM
``language_model.model.``  Gemma3ForConditionalGeneration, older saves
``model.language_model.``  Gemma3ForConditionalGeneration, newer saves
``""`` (none)              a bare GemmaModel / Gemma3TextModel
=========================  =============================================

Gemma 4 adds (names as on disk; see GEMMA4.md §2): ``layer_scalar`` [1] per layer; the
per-layer-embedding (PLE) table ``embed_tokens_per_layer`` [V_ple, L*P], gathered by rows and
never converted whole (2.35B parameters on E2B); packed experts ``experts.gate_up_proj``
[E, 2I, D] and ``experts.down_proj`` [E, D, I], handed out as views and read one expert at a
time; no ``v_proj`` on K=V full layers; and, on KV-shared layers, leftover
``k_proj``/``v_proj``/``k_norm`` tensors that real E2B/E4B files keep and nothing uses (reported
as info, like transformers' ``_keys_to_ignore_on_load_unexpected``).

Gemma 3n (releases: ``model.language_model.``, towers under ``model.vision_tower.`` /
``model.audio_tower.`` / ``model.embed_vision.`` / ``model.embed_audio.``, reported and skipped)
adds per layer ``altup.{correct_output_scale, correction_coefs, prediction_coefs,
modality_router, router_norm}`` and ``laurel.{linear_left, linear_right, post_laurel_norm}``,
and globally ``altup_projections.{0,1,2}`` / ``altup_unembed_projections.{0,1,2}`` [D, D].
VaultGemma is Gemma 2's layout without ``post_attention_layernorm`` / ``post_feedforward_layernorm``.
"""

from __future__ import annotations

import functools
import json
import os
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy, so safetensors can return it)
import numpy as np
from safetensors import SafetensorError, safe_open

from gemma_ref.config import GemmaConfig
from gemma_ref.errors import InputError

PREFIXES = ("model.", "language_model.model.", "model.language_model.", "")
# Tensors of other towers in multimodal checkpoints: present, expected, not ours.
FOREIGN_PREFIXES = ("vision_tower.", "model.vision_tower.", "multi_modal_projector.", "model.multi_modal_projector.",
                    "vision_model.", "audio_tower.", "model.audio_tower.", "embed_vision.", "model.embed_vision.",
                    "embed_audio.", "model.embed_audio.", "model.vision_embedder.", "model.audio_embedder.")
SAFETENSORS_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}
NUMPY_DTYPES = {"BF16": ml_dtypes.bfloat16, "F16": np.float16, "F32": np.float32}
BF16 = np.dtype(ml_dtypes.bfloat16)
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor is and what it looks like, read from the safetensors header only."""

    name: str  # full name in the checkpoint
    file: Path  # the safetensors file holding it
    dtype: str  # safetensors dtype code: "BF16", "F16", "F32", ...
    shape: tuple[int, ...]
    start: int = 0  # byte offset of the data in the file
    stop: int = 0  # end of the data (exclusive)


@dataclass(frozen=True)
class WeightIssue:
    """A structural problem with the weights (release.verify turns these into Findings)."""

    code: str  # "missing", "shape", "dtype", "unexpected", "nonfinite", "mixed_dtype", "foreign", "lm_head", "kv_shared"
    severity: Literal["error", "warning", "info"]
    message: str
    tensor: str | None = None
    file: str | None = None


def _open(file: Path):
    try:
        return safe_open(str(file), framework="numpy")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise InputError(f"cannot read safetensors file: {e}", file,
                         hint="the file may be truncated, corrupt, or not safetensors at all") from None


def list_checkpoint_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a model directory, from the shard index or the single file."""
    index = model_dir / INDEX_NAME
    if index.is_file():
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
            weight_map = data["weight_map"]
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise TypeError("weight_map must map tensor names to file names")
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise InputError(f"invalid shard index: {e}", index) from None
        files = []
        for name in dict.fromkeys(weight_map.values()):  # keep order, drop repeats
            if Path(name).name != name:
                raise InputError(f"shard name {name!r} must be a plain file name in the model directory", index)
            shard = model_dir / name
            if not shard.is_file():
                raise InputError(f"shard {name!r} listed in the index is missing", index)
            files.append(shard)
        return files
    single = model_dir / SINGLE_NAME
    if single.is_file():
        return [single]
    others = sorted(p for p in model_dir.glob("*.safetensors") if p.is_file())  # regular files only: a FIFO would block
    if len(others) == 1:
        return others
    if not others:
        pickles = [p.name for p in model_dir.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
        hint = ("only pickle weights found (" + ", ".join(pickles) + "); they are never loaded: convert to safetensors"
                if pickles else "expected model.safetensors or model.safetensors.index.json")
        raise InputError("no safetensors weights found", model_dir, hint=hint)
    raise InputError(f"{len(others)} safetensors files but no {INDEX_NAME} saying how they fit together", model_dir)


def _data_offsets(file: Path) -> dict[str, tuple[int, int]]:
    """Absolute byte ranges of each tensor's data, from the header safetensors has already validated."""
    with open(file, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    base = 8 + n
    return {k: (base + v["data_offsets"][0], base + v["data_offsets"][1])
            for k, v in header.items() if k != "__metadata__"}


def read_headers(files: list[Path]) -> dict[str, TensorInfo]:
    """Name -> TensorInfo for every tensor in the files (headers only, no data read)."""
    infos: dict[str, TensorInfo] = {}
    for file in files:
        with _open(file) as f:  # safetensors validates the header: offsets, sizes, dtypes
            offsets = _data_offsets(file)
            for name in f.keys():
                sl = f.get_slice(name)
                info = TensorInfo(name, file, sl.get_dtype(), tuple(int(x) for x in sl.get_shape()), *offsets[name])
                if name in infos:
                    raise InputError(f"tensor {name!r} appears in two files ({infos[name].file.name} and {file.name})", file)
                infos[name] = info
    return infos


def detect_prefix(names: set[str] | dict, model_dir: Path) -> str:
    """The prefix under which the text model's tensors are stored (see the module docstring)."""
    for prefix in PREFIXES:
        if prefix + "embed_tokens.weight" in names:
            return prefix
    raise InputError("no embedding tensor found (looked for " +
                     ", ".join(repr(p + "embed_tokens.weight") for p in PREFIXES) + ")", model_dir,
                     hint="is this a Gemma checkpoint?")


def expected_shapes(cfg: GemmaConfig) -> dict[str, tuple[int, ...]]:
    """Tensor name (without prefix) -> shape, for every tensor the text model needs."""
    if cfg.altup_num_inputs:
        return gemma3n_shapes(cfg)
    if cfg.generation >= 4:
        return gemma4_shapes(cfg)
    d, f, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    shapes: dict[str, tuple[int, ...]] = {"embed_tokens.weight": (cfg.vocab_size, d), "norm.weight": (d,)}
    for i in range(cfg.num_hidden_layers):
        p = f"layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (cfg.q_width, d),
            p + "self_attn.k_proj.weight": (cfg.kv_width, d),
            p + "self_attn.v_proj.weight": (cfg.kv_width, d),
            p + "self_attn.o_proj.weight": (d, cfg.q_width),
            p + "mlp.gate_proj.weight": (f, d),
            p + "mlp.up_proj.weight": (f, d),
            p + "mlp.down_proj.weight": (d, f),
        })
        if not cfg.sandwich_norms or cfg.post_norms:  # Gemma 1: the pre-MLP norm; Gemma 2/3: after attention
            shapes[p + "post_attention_layernorm.weight"] = (d,)
        if cfg.sandwich_norms:
            shapes[p + "pre_feedforward_layernorm.weight"] = (d,)
            if cfg.post_norms:  # VaultGemma has none
                shapes[p + "post_feedforward_layernorm.weight"] = (d,)
        if cfg.use_qk_norm:
            shapes[p + "self_attn.q_norm.weight"] = (hd,)
            shapes[p + "self_attn.k_norm.weight"] = (hd,)
    return shapes


def gemma4_shapes(cfg: GemmaConfig) -> dict[str, tuple[int, ...]]:
    """expected_shapes for Gemma 4: per-layer geometry, PLE, KV sharing, K=V, MoE."""
    d, P, L, H = cfg.hidden_size, cfg.hidden_size_per_layer_input, cfg.num_hidden_layers, cfg.num_attention_heads
    shapes: dict[str, tuple[int, ...]] = {"embed_tokens.weight": (cfg.vocab_size, d), "norm.weight": (d,)}
    if P:
        shapes["embed_tokens_per_layer.weight"] = (cfg.vocab_size_per_layer_input, L * P)
        shapes["per_layer_model_projection.weight"] = (L * P, d)
        shapes["per_layer_projection_norm.weight"] = (P,)
    for i, s in enumerate(cfg.layers):
        p, hd, f = f"layers.{i}.", s.head_dim, s.intermediate_size
        shapes.update(_sandwich_layer_shapes(p, d, H, hd, f))
        shapes[p + "layer_scalar"] = (1,)
        if s.kv_source is None:  # KV-shared layers reuse another layer's K/V: nothing of their own
            shapes[p + "self_attn.k_proj.weight"] = (s.num_key_value_heads * hd, d)
            shapes[p + "self_attn.k_norm.weight"] = (hd,)
            if not s.k_eq_v:  # K=V layers have no v_proj
                shapes[p + "self_attn.v_proj.weight"] = (s.num_key_value_heads * hd, d)
        if P:
            shapes[p + "per_layer_input_gate.weight"] = (P, d)
            shapes[p + "per_layer_projection.weight"] = (d, P)
            shapes[p + "post_per_layer_input_norm.weight"] = (d,)
        if cfg.num_experts:
            E, I = cfg.num_experts, cfg.moe_intermediate_size
            shapes.update({
                p + "router.proj.weight": (E, d),
                p + "router.scale": (d,),
                p + "router.per_expert_scale": (E,),
                p + "experts.gate_up_proj": (E, 2 * I, d),
                p + "experts.down_proj": (E, d, I),
                p + "pre_feedforward_layernorm_2.weight": (d,),
                p + "post_feedforward_layernorm_1.weight": (d,),
                p + "post_feedforward_layernorm_2.weight": (d,),
            })
    return shapes


def _sandwich_layer_shapes(p: str, d: int, H: int, hd: int, f: int) -> dict[str, tuple[int, ...]]:
    """The four-norm attention + MLP tensors Gemma 4 and Gemma 3n layers share (q side only; K/V differ)."""
    return {
        p + "input_layernorm.weight": (d,),
        p + "self_attn.q_proj.weight": (H * hd, d),
        p + "self_attn.q_norm.weight": (hd,),
        p + "self_attn.o_proj.weight": (d, H * hd),
        p + "post_attention_layernorm.weight": (d,),
        p + "pre_feedforward_layernorm.weight": (d,),
        p + "mlp.gate_proj.weight": (f, d),
        p + "mlp.up_proj.weight": (f, d),
        p + "mlp.down_proj.weight": (d, f),
        p + "post_feedforward_layernorm.weight": (d,),
    }


def gemma3n_shapes(cfg: GemmaConfig) -> dict[str, tuple[int, ...]]:
    """expected_shapes for Gemma 3n: Gemma 4's attention and PLE names, plus AltUp and LAuReL."""
    d, P, L, H, n = (cfg.hidden_size, cfg.hidden_size_per_layer_input, cfg.num_hidden_layers,
                     cfg.num_attention_heads, cfg.altup_num_inputs)
    hd, kv, r = cfg.head_dim, cfg.kv_width, cfg.laurel_rank
    shapes: dict[str, tuple[int, ...]] = {
        "embed_tokens.weight": (cfg.vocab_size, d), "norm.weight": (d,),
        "embed_tokens_per_layer.weight": (cfg.vocab_size_per_layer_input, L * P),
        "per_layer_model_projection.weight": (L * P, d), "per_layer_projection_norm.weight": (P,),
    }
    for j in range(n - 1):
        shapes[f"altup_projections.{j}.weight"] = (d, d)
        shapes[f"altup_unembed_projections.{j}.weight"] = (d, d)
    for i, s in enumerate(cfg.layers):
        p, f = f"layers.{i}.", s.intermediate_size
        shapes.update(_sandwich_layer_shapes(p, d, H, hd, f))
        shapes.update({
            p + "altup.correct_output_scale": (d,),
            p + "altup.correction_coefs.weight": (n, n),
            p + "altup.prediction_coefs.weight": (n * n, n),
            p + "altup.modality_router.weight": (n, d),
            p + "altup.router_norm.weight": (d,),
            p + "laurel.linear_left.weight": (r, d),
            p + "laurel.linear_right.weight": (d, r),
            p + "laurel.post_laurel_norm.weight": (d,),
            p + "per_layer_input_gate.weight": (P, d),
            p + "per_layer_projection.weight": (d, P),
            p + "post_per_layer_input_norm.weight": (d,),
        })
        if s.kv_source is None:  # KV-shared layers have no K/V of their own
            shapes[p + "self_attn.k_proj.weight"] = (kv, d)
            shapes[p + "self_attn.v_proj.weight"] = (kv, d)
            shapes[p + "self_attn.k_norm.weight"] = (hd,)
    return shapes


def _unused_by_design(cfg: GemmaConfig, rel: str) -> str | None:
    """Why a tensor real Gemma 4 / 3n files carry is not used, for the ones that are expected there."""
    if not cfg.layers or not rel.startswith("layers."):
        return None
    parts = rel.split(".")
    if not parts[1].isdigit() or int(parts[1]) >= len(cfg.layers):
        return None
    s, what = cfg.layers[int(parts[1])], ".".join(parts[2:])
    if s.kv_source is not None and what in ("self_attn.k_proj.weight", "self_attn.v_proj.weight",
                                            "self_attn.k_norm.weight", "self_attn.v_norm.weight"):
        return "kv_shared"
    return None


def check_structure(cfg: GemmaConfig, infos: dict[str, TensorInfo], prefix: str) -> list[WeightIssue]:
    """Every expected tensor present with the right shape and a float dtype; unexpected ones reported."""
    issues: list[WeightIssue] = []
    want = expected_shapes(cfg)
    for rel, shape in want.items():
        info = infos.get(prefix + rel)
        if info is None:
            issues.append(WeightIssue("missing", "error", f"tensor {prefix + rel!r} is missing", prefix + rel))
            continue
        if info.shape != shape:
            issues.append(WeightIssue("shape", "error",
                                      f"tensor {info.name!r} has shape {list(info.shape)}, the config implies {list(shape)}",
                                      info.name, str(info.file)))
        if info.dtype not in SAFETENSORS_DTYPES:
            issues.append(WeightIssue("dtype", "error",
                                      f"tensor {info.name!r} is stored as {info.dtype}; expected BF16, F16 or F32",
                                      info.name, str(info.file)))
    stored = {SAFETENSORS_DTYPES.get(infos[prefix + r].dtype, infos[prefix + r].dtype) for r in want if prefix + r in infos}
    if len(stored) > 1:
        issues.append(WeightIssue("mixed_dtype", "warning", f"weights mix storage dtypes: {', '.join(sorted(stored))}"))
    elif stored and cfg.storage_dtype and stored != {cfg.storage_dtype}:
        issues.append(WeightIssue("dtype", "warning",
                                  f"config declares {cfg.storage_dtype} but the weights are stored as {stored.pop()}"))
    foreign = 0
    kv_shared: list[str] = []
    for name, info in infos.items():
        if name.startswith(prefix) and name[len(prefix):] in want:
            continue
        if name.startswith(prefix) and _unused_by_design(cfg, name[len(prefix):]) == "kv_shared":
            kv_shared.append(name)
            continue
        if name in ("lm_head.weight", prefix + "lm_head.weight"):
            # Gemma ties the output head to the embedding; transformers ignores a stored lm_head, and so do we.
            issues.append(WeightIssue("lm_head", "warning",
                                      f"{name!r} present: Gemma's output head is the tied embedding, so it is ignored",
                                      name, str(info.file)))
        elif name.startswith(FOREIGN_PREFIXES) or (prefix and not name.startswith(prefix)):
            foreign += 1
        elif cfg.generation >= 4 and name.endswith("self_attn.v_proj.weight"):
            issues.append(WeightIssue("unexpected", "warning",
                                      f"unused tensor {name!r}: this is a K=V layer (attention_k_eq_v), its V is "
                                      "the raw k_proj output, so a v_proj is never used", name, str(info.file)))
        else:
            issues.append(WeightIssue("unexpected", "warning", f"unexpected tensor {name!r} (not used by the text model)",
                                      name, str(info.file)))
    if kv_shared:
        issues.append(WeightIssue("kv_shared", "info",
                                  f"{len(kv_shared)} K/V tensors of KV-shared layers ignored (those layers reuse an "
                                  "earlier layer's keys and values; real E2B/E4B files keep them, transformers "
                                  "ignores them too)", kv_shared[0]))
    if foreign:
        issues.append(WeightIssue("foreign", "info", f"{foreign} tensors of other towers (vision/audio/projector) are "
                                  "not part of the text model (a vision tower runs for prompts with images)"))
    return issues


def matmul_stored(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w.T for a weight still in its stored dtype (bf16/f16), converted a few rows at a time.  [T, in] -> [T, out]

    Converting a whole matrix first would write it to memory in float32 and read it back: three
    times the traffic of the bf16 bytes. For one token (decoding: bandwidth-bound) every core
    converts its own cache-sized chunks and takes one dot product per row; for more tokens, chunks
    big enough for an efficient GEMM are converted by all cores, then multiplied by BLAS on all cores.
    Conversion is exact: the result is the float32 product.
    """
    n_out, n_in = w.shape
    out = np.empty((x.shape[0], n_out), dtype=np.float32)
    if x.shape[0] == 1:
        _on_all_cores(lambda lo, hi: _convert_and_dot(x[0], w, out[0], lo, hi), n_out)
        return out
    rows = max(8, LARGE_CHUNK_BYTES // (4 * n_in))
    buf = _chunk_buffer(rows * n_in, "large")
    for start in range(0, n_out, rows):
        stop = min(start + rows, n_out)
        chunk = buf[: (stop - start) * n_in].reshape(stop - start, n_in)
        _on_all_cores(lambda lo, hi: to_float32(chunk[lo:hi], w[start + lo:start + hi]), stop - start)
        out[:, start:stop] = (chunk @ x.T).T  # [rows, in] @ [in, T] -> [rows, T], the faster orientation
    return out


def to_float32(dst: np.ndarray, src: np.ndarray) -> None:
    """dst[...] = src in float32, exactly.

    A bf16 value is the top half of the float32 with the same value, so its 16 bits shifted up are
    that float32, bit for bit (NaN, Inf and subnormals too): one integer pass, 1.3-1.4x faster than
    NumPy's cast (measured 6.3 vs 4.5 GB/s of bf16 on one core). Other dtypes are cast.
    """
    if src.dtype == BF16:
        np.left_shift(src.view(np.uint16), 16, out=dst.view(np.uint32), dtype=np.uint32)
    else:
        np.copyto(dst, src)


def count_nonfinite(t: np.ndarray, block_bytes: int = 32 << 20) -> int:
    """NaN/Inf values in a tensor (memory-mapped, any stored dtype), read a block of rows at a time."""
    row_bytes = max(1, int(np.prod(t.shape[1:], dtype=np.int64)) * 4)
    step = max(1, block_bytes // row_bytes)
    bad = 0
    for start in range(0, len(t), step):
        src = t[start:start + step]
        block = _chunk_buffer(src.size, "scan")[: src.size].reshape(src.shape)  # reused: no page faults
        to_float32(block, src)
        bad += int(block.size - np.count_nonzero(np.isfinite(block)))
    return bad


def _on_all_cores(job, n: int) -> None:
    """Run job(lo, hi) over [0, n) split in one contiguous part per worker thread."""
    bounds = np.linspace(0, n, N_THREADS + 1).astype(int)
    for f in [_pool().submit(job, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]:
        f.result()


def _convert_and_dot(v: np.ndarray, w: np.ndarray, out: np.ndarray, lo: int, hi: int) -> None:
    """out[lo:hi] = w[lo:hi] @ v, converting rows in cache-sized chunks into this thread's buffer."""
    n_in = w.shape[1]
    rows = max(8, DOT_CHUNK_BYTES // (4 * n_in))
    piece = _dot_piece(n_in)
    buf = _chunk_buffer(rows * n_in)
    for start in range(lo, hi, rows):
        stop = min(start + rows, hi)
        chunk = buf[: (stop - start) * n_in].reshape(stop - start, n_in)
        to_float32(chunk, w[start:stop])
        # Dot products, not a BLAS matrix-vector call: on chunks past 1 MB that one starts BLAS's
        # own threads, and two workers doing so at once ran 4x slower. Long rows go in pieces that
        # keep their part of v in L1, then the pieces are summed (in cache 1.5x faster for in = 16384;
        # about 4% of a gemma-2b decoding step).
        parts = np.vecdot(chunk.reshape(stop - start, n_in // piece, piece), v.reshape(n_in // piece, piece))
        parts.sum(axis=1, out=out[start:stop])  # [rows, pieces] -> [rows]


@functools.lru_cache(maxsize=None)
def _dot_piece(n_in: int) -> int:
    """Length of the pieces a row of n_in is dotted in: n_in itself up to 4096, else its largest divisor <= 2048."""
    if n_in <= 4096:
        return n_in
    return next((d for d in range(2048, 255, -1) if n_in % d == 0), n_in)


DOT_CHUNK_BYTES = 4 << 20  # float32 bytes per chunk for one token (gemma-2b decode: 1/2/3/4/6/8 MB gave 0.43/0.35/0.33/0.30/0.31/0.33 s/token)
LARGE_CHUNK_BYTES = 8 << 20  # otherwise: big enough for an efficient GEMM (measured best of 2-32 MB)
N_THREADS = max(1, min(8, os.cpu_count() or 1))  # conversion threads: one per core
_local = threading.local()
_workers: list[ThreadPoolExecutor] = []


def _pool() -> ThreadPoolExecutor:
    """Threads for the conversion (NumPy releases the GIL while it converts and multiplies)."""
    if not _workers:
        _workers.append(ThreadPoolExecutor(N_THREADS, thread_name_prefix="gemma_ref"))
    return _workers[0]


def _chunk_buffer(size: int, name: str = "small") -> np.ndarray:
    """A float32 scratch buffer of at least `size` elements, one per thread and name.

    Converting into fresh memory costs a page fault per 4 KiB (measured 0.46 GB/s on a 2-core VM);
    into reused memory it runs at ~10 GB/s.
    """
    buf = getattr(_local, name, None)
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype=np.float32)
        setattr(_local, name, buf)
    return buf


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is no such file)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class Weights:
    """Lazy access to a checkpoint's text-model tensors.

    By default nothing is converted ahead of time: ``layer(i)`` hands out zero-copy views of the
    memory-mapped file in the stored dtype (the forward pass's ``linear`` converts them chunk by
    chunk), so a 17 GB bf16 checkpoint runs in about one layer's worth of float32 scratch.
    With ``cache=True`` every tensor is converted to float32 once, on first use, and kept: 2x the
    bf16 size in RAM, in exchange for repeated forwards and decoding that never convert again.
    """

    def __init__(self, model_dir: str | os.PathLike, cfg: GemmaConfig, check: bool = True, cache: bool = False):
        self.dir = Path(model_dir)
        self.cfg = cfg
        self.files = list_checkpoint_files(self.dir)
        self.infos = read_headers(self.files)
        self.prefix = detect_prefix(self.infos, self.dir)
        self._shapes = expected_shapes(cfg)
        self.issues = check_structure(cfg, self.infos, self.prefix)
        if check:
            errors = [i for i in self.issues if i.severity == "error"]
            if errors:
                shown = "; ".join(i.message for i in errors[:8])
                more = f" (and {len(errors) - 8} more)" if len(errors) > 8 else ""
                raise InputError(f"weights do not fit config.json: {shown}{more}", self.dir)
        self._maps: dict[Path, np.ndarray] = {}  # one read-only mapping per file, opened on first use
        self._cache: dict[str, np.ndarray] | None = None
        if cache:
            need = 4 * self.parameter_count()
            avail = available_memory()
            if avail is not None and need > 0.9 * avail:
                raise InputError(f"the float32 weight cache needs {need / 2**30:.1f} GiB but only "
                                 f"{avail / 2**30:.1f} GiB of memory is available", self.dir,
                                 hint="run without the cache: weights are then streamed from the file")
            self._cache = {}

    # --- raw access --------------------------------------------------------------------------

    def _map(self, file: Path) -> np.ndarray:
        m = self._maps.get(file)
        if m is None:
            # A plain ndarray view of the mapping: slicing np.memmap itself runs Python code on every slice,
            # which costs more than converting the slice when decoding streams thousands of chunks per token.
            m = self._maps[file] = np.memmap(file, dtype=np.uint8, mode="r").view(np.ndarray)
        return m

    def _slice(self, rel: str) -> np.ndarray:
        """Zero-copy view of a tensor in its stored dtype, backed by the memory-mapped file."""
        info = self.infos[self.prefix + rel]
        raw = self._map(info.file)[info.start:info.stop]
        return raw.view(NUMPY_DTYPES[info.dtype]).reshape(info.shape)

    def stored(self, name: str) -> np.ndarray:
        """Any tensor of the checkpoint by its full name (other towers too), as a zero-copy view in its stored dtype."""
        info = self.infos[name]
        if info.dtype not in NUMPY_DTYPES:
            raise InputError(f"tensor {name!r} is stored as {info.dtype}; expected BF16, F16 or F32", info.file)
        return self._map(info.file)[info.start:info.stop].view(NUMPY_DTYPES[info.dtype]).reshape(info.shape)

    def tensor(self, rel: str) -> np.ndarray:
        """One tensor (name without prefix) in float32, in fresh memory."""
        return np.array(self._slice(rel), dtype=np.float32)

    def _matrix(self, rel: str) -> np.ndarray:
        """A 2-D weight for ``linear``: the cached float32 copy, or the stored-dtype view of the file."""
        if self._cache is None:
            return self._slice(rel)  # float32 files give float32 views: used as they are
        w = self._cache.get(rel)
        if w is None:
            w = self._cache[rel] = self.tensor(rel)
        return w

    # --- what the forward pass asks for --------------------------------------------------------

    def embedding_rows(self, ids: np.ndarray) -> np.ndarray:
        """E[ids] in float32, reading only those rows' pages.  [T] -> [T, hidden]"""
        return np.array(self._matrix("embed_tokens.weight")[ids], dtype=np.float32)

    def embedding_blocks(self, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """The embedding matrix in blocks of rows (float32 or stored dtype): yields (first row, [n, hidden])."""
        E = self._matrix("embed_tokens.weight")
        for start in range(0, self.cfg.vocab_size, block_rows):
            yield start, E[start:start + block_rows]

    def layer(self, i: int) -> dict[str, np.ndarray]:
        """All tensors of layer i keyed by their name inside the layer.

        Matrices come as float32 (cached or stored so) or as zero-copy views in the stored dtype,
        which ``model.linear`` converts chunk by chunk; the small norm vectors always in float32.
        Gemma 4's packed experts [E, out, in] come as views too: ``[e]`` of one is that expert's matrix.
        """
        p = f"layers.{i}."
        out = {}
        for rel, shape in self._shapes.items():
            if rel.startswith(p):
                out[rel[len(p):]] = self._matrix(rel) if len(shape) >= 2 else self.tensor(rel)
        return out

    def final_norm(self) -> np.ndarray:
        return self.tensor("norm.weight")

    # --- Gemma 4's per-layer embeddings ----------------------------------------------------------

    def per_layer_rows(self, ids: np.ndarray) -> np.ndarray:
        """Rows of the PLE table embed_tokens_per_layer in float32, only those rows read.  [T] -> [T, L*P]"""
        # Always the file's view, even with cache=True: E2B's table is 2.35B parameters (9.4 GB in float32).
        return np.array(self._slice("embed_tokens_per_layer.weight")[ids], dtype=np.float32)

    def per_layer_projection(self) -> tuple[np.ndarray, np.ndarray]:
        """PLE's context part: per_layer_model_projection [L*P, D] (as for linear) and its norm weight [P]."""
        return self._matrix("per_layer_model_projection.weight"), self.tensor("per_layer_projection_norm.weight")

    # --- Gemma 3n's AltUp streams ----------------------------------------------------------------

    def altup_projections(self) -> list[np.ndarray]:
        """The [D, D] maps making AltUp streams 1..n-1 from the embedding (as for linear)."""
        return [self._matrix(f"altup_projections.{j}.weight") for j in range(self.cfg.altup_num_inputs - 1)]

    def altup_unembed_projections(self) -> list[np.ndarray]:
        """The [D, D] maps bringing streams 1..n-1 back before their average (as for linear)."""
        return [self._matrix(f"altup_unembed_projections.{j}.weight") for j in range(self.cfg.altup_num_inputs - 1)]

    # --- reporting -----------------------------------------------------------------------------

    def scan_nonfinite(self, block_bytes: int = 32 << 20) -> list[WeightIssue]:
        """NaN/Inf anywhere in the text model's tensors, read in blocks of rows."""
        issues = []
        for rel in expected_shapes(self.cfg):
            info = self.infos[self.prefix + rel]
            bad = count_nonfinite(self._slice(rel), block_bytes)
            if bad:
                issues.append(WeightIssue("nonfinite", "error", f"tensor {info.name!r} holds {bad} NaN/Inf values",
                                          info.name, str(info.file)))
        return issues

    def storage_dtypes(self) -> dict[str, int]:
        """Stored dtype -> number of text-model tensors in it."""
        counts: dict[str, int] = {}
        for rel in expected_shapes(self.cfg):
            dt = SAFETENSORS_DTYPES.get(self.infos[self.prefix + rel].dtype, self.infos[self.prefix + rel].dtype)
            counts[dt] = counts.get(dt, 0) + 1
        return counts

    def parameter_count(self) -> int:
        """Parameters in the text model's tensors as stored (tied head counted once)."""
        return sum(int(np.prod(self.infos[self.prefix + rel].shape, dtype=np.int64)) for rel in expected_shapes(self.cfg))

    def bytes_on_disk(self) -> int:
        return sum(f.stat().st_size for f in self.files)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.clear()
        self._maps.clear()  # the mappings close when the last view of them is gone
