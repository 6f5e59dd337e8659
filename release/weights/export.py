"""A Gemma GGUF back to a Hugging Face checkpoint: ``config.json``, safetensors, ``tokenizer.model``.

What llama.cpp's converter (``convert_hf_to_gguf.py``) did, and how it is undone here:

=============================  =========================================================
norm weights                   stored as ``1 + w`` by Gemma 1-3's converters: the reader
                               subtracts the 1 (:class:`GGUFWeights`); Gemma 4 stores w
tensor names, GGML order       gguf's own name map, shapes reversed (the reader)
embedding rows                 Gemma 3 drops the padding past the tokenizer (262144 of
                               262208 rows for 4B/12B/27B): zero rows are put back up
                               to the config's ``vocab_size``
quantized tensors              dequantized with ``gguf.quants`` (float32: exact)
config                         the published config of the known variant with these
                               shapes (``KNOWN_VARIANTS``), cross-checked against the
                               metadata; else built from the metadata, with llama.cpp's
                               own assumptions where no key exists (``query_pre_attn_scalar``,
                               the local/global layer pattern, Gemma 3's local RoPE base)
vocabulary                 ``tokenizer.ggml.*`` -> a SentencePiece ``ModelProto`` (below)
=============================  =========================================================

The converter's vocabulary rewrites (``TextModel._set_vocab_sentencepiece``): every token the
HF ``tokenizer_config.json`` lists as added got score -1000 and type CONTROL (when special)
or USER_DEFINED (with "▁" written as a space); user-defined pieces it did not list came out
as NORMAL (it never asks ``IsUserDefined``). Reversed here: a -1000 CONTROL piece is CONTROL
again when it is the pad/eos/bos piece, UNKNOWN when it is the unk piece, USER_DEFINED
otherwise (``<start_of_turn>``, ``<unusedN>``, ``<mask>``: Gemma's tokenizer.model matches
them in text); a -1000 USER_DEFINED piece gets its "▁" back; those scores become 0 (what
SentencePiece gives user-defined and control pieces). The ``ModelProto`` is hand-encoded
(protobuf wire format; the fields SentencePiece reads when encoding) with Gemma's settings:
BPE, byte fallback, identity normalization, no dummy prefix, whitespace kept.

Nothing is written in place: everything goes to a temporary directory beside ``--out``,
renamed onto it at the end; an existing non-empty ``--out`` is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gguf
import numpy as np

from gemma_ref.config import KNOWN_VARIANTS, SLIDING, config_from_dict, variant_config_json
from gemma_ref.spm_reference import SPACE, PieceType, write_model_proto
from gemma_ref.weights import expected_shapes
from release.errors import InputError
from release.findings import Finding
from release.weights.gguf_reader import (
    _LLAMA_CPP_27B_LAYERS, _LLAMA_CPP_GEMMA3_LOCAL_BASE, _LLAMA_CPP_SWA_PATTERN, GGUFWeights, _layer_kinds, metadata,
    open_gguf,
)

DTYPES = ("auto", "float32", "bfloat16", "float16")
#: safetensors dtype names
_ST_DTYPE = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
_GGML_FLOAT = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
MAX_SHARD_BYTES = 4 << 30  # shards of at most 4 GiB, as HF's save_pretrained does by default (5 GB)
GENERATION_OF_ARCH = {"gemma": 1, "gemma2": 2, "gemma3": 3, "gemma4": 4}
MODEL_TYPE = {1: "gemma", 2: "gemma2", 3: "gemma3_text", 4: "gemma4_text"}
ARCHITECTURES = {1: "GemmaForCausalLM", 2: "Gemma2ForCausalLM", 3: "Gemma3ForCausalLM", 4: "Gemma4ForCausalLM"}
#: Published values KNOWN_VARIANTS leaves to the generation's defaults but the checkpoints set otherwise.
PUBLISHED_EXTRAS = {"gemma-3-270m": {"max_position_embeddings": 32768},
                    "gemma-3-1b": {"max_position_embeddings": 32768}}


@dataclass
class ExportResult:
    out: Path
    config_source: str  # "published config of gemma-3-270m" or "GGUF metadata"
    variant: str | None
    dtype: str
    n_tensors: int
    bytes_written: int
    files: list[str]
    seconds: float
    tokenizer_pieces: int | None
    tokenizer_rewrites_reversed: int
    notes: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def summary(self) -> str:
        return (f"wrote {self.out}: {self.n_tensors} tensors in {self.dtype} "
                f"({self.bytes_written / 1e6:.0f} MB, {len(self.files)} files), config: {self.config_source}"
                + (f", tokenizer.model: {self.tokenizer_pieces} pieces ({self.tokenizer_rewrites_reversed} converter "
                   "rewrites reversed)" if self.tokenizer_pieces else ", no tokenizer.model")
                + f", {self.seconds:.1f} s")


# --- config --------------------------------------------------------------------------------------


def _meta(reader: gguf.GGUFReader, path: Path, key: str, arch: str) -> Any:
    return metadata(reader, key.format(arch=arch), path)


def metadata_shape(reader: gguf.GGUFReader, path: Path) -> tuple[int, str, dict[str, Any]]:
    """(generation, arch, the config.json fields the GGUF metadata states) -- InputError when not a Gemma."""
    arch = metadata(reader, gguf.Keys.General.ARCHITECTURE, path)
    if arch not in GENERATION_OF_ARCH:
        raise InputError(f"general.architecture is {arch!r}: not a Gemma GGUF (gemma, gemma2, gemma3, gemma4)", path,
                         hint="export rebuilds Gemma checkpoints only" + (
                             "; Gemma 3n (gemma3n) is not supported" if arch == "gemma3n" else ""))
    gen = GENERATION_OF_ARCH[arch]
    K, A = gguf.Keys.LLM, gguf.Keys.Attention

    def get(key: str) -> Any:
        return _meta(reader, path, key, arch)

    def scalar(v: Any) -> Any:
        if isinstance(v, list) and v and len(set(v)) == 1:
            return v[0]
        return v

    need = {"num_hidden_layers": K.BLOCK_COUNT, "hidden_size": K.EMBEDDING_LENGTH,
            "num_attention_heads": A.HEAD_COUNT}
    raw: dict[str, Any] = {}
    for name, key in need.items():
        v = get(key)
        if not isinstance(v, int) or v <= 0:
            raise InputError(f"{key.format(arch=arch)} is {v!r}: the GGUF does not say the model's shape", path)
        raw[name] = v
    raw["model_type"] = MODEL_TYPE[gen]
    raw["intermediate_size"] = scalar(get(K.FEED_FORWARD_LENGTH))
    kv = scalar(get(A.HEAD_COUNT_KV))
    raw["num_key_value_heads"] = raw["num_attention_heads"] if kv is None else kv
    hd = get(A.KEY_LENGTH_SWA) if gen >= 4 else None
    raw["head_dim"] = hd or get(A.KEY_LENGTH) or raw["hidden_size"] // raw["num_attention_heads"]
    tokens = metadata(reader, gguf.Keys.Tokenizer.LIST, path)
    if tokens is not None:
        raw["vocab_size"] = len(tokens)
    return gen, arch, raw


def config_from_metadata(reader: gguf.GGUFReader, path: Path, gen: int, arch: str, raw: dict[str, Any],
                         vocab_rows: int) -> tuple[dict[str, Any], list[str]]:
    """A config.json from the metadata alone (Gemma 1-3), with llama.cpp's assumptions where no key exists."""
    K, A, R = gguf.Keys.LLM, gguf.Keys.Attention, gguf.Keys.Rope
    notes: list[str] = []

    def get(key: str) -> Any:
        return _meta(reader, path, key, arch)

    if gen >= 4:
        raise InputError("a Gemma 4 GGUF whose shapes are no known variant: its config (per-layer geometry, PLE, "
                         "proportional RoPE, experts) cannot be rebuilt from the metadata alone", path,
                         hint=f"known Gemma 4 variants: {', '.join(n for n in KNOWN_VARIANTS if n.startswith('gemma-4'))}")
    if not isinstance(raw.get("intermediate_size"), int):
        raise InputError(f"{K.FEED_FORWARD_LENGTH.format(arch=arch)} is missing or per-layer "
                         f"({raw.get('intermediate_size')!r}): cannot build a config", path)
    cfg = dict(raw)
    cfg["vocab_size"] = max(raw.get("vocab_size", 0), vocab_rows)
    eps = get(A.LAYERNORM_RMS_EPS)
    if eps is not None:
        cfg["rms_norm_eps"] = float(np.float32(eps).item()) if abs(eps - 1e-6) > 1e-12 else 1e-6
    for name, key in (("max_position_embeddings", K.CONTEXT_LENGTH), ("rope_theta", R.FREQ_BASE)):
        v = get(key)
        if v is not None:
            cfg[name] = v
    kind, factor = get(R.SCALING_TYPE), get(R.SCALING_FACTOR)
    if kind == "linear" and isinstance(factor, (int, float)) and factor != 1:
        cfg["rope_scaling"] = {"rope_type": "linear", "factor": float(factor)}
    elif kind not in (None, "none", "linear"):
        raise InputError(f"rope.scaling.type is {kind!r}: only linear scaling is part of Gemma", path)
    if gen >= 2:
        for name, key in (("attn_logit_softcapping", K.ATTN_LOGIT_SOFTCAPPING),
                          ("final_logit_softcapping", K.FINAL_LOGIT_SOFTCAPPING)):
            cfg[name] = get(key)
        window = get(A.SLIDING_WINDOW)
        cfg["sliding_window"] = window if window is not None else (4096 if gen == 2 else None)
        big = cfg["num_hidden_layers"] == _LLAMA_CPP_27B_LAYERS[gen]
        cfg["query_pre_attn_scalar"] = cfg["hidden_size"] // cfg["num_attention_heads"] if big else cfg["head_dim"]
        notes.append(f"query_pre_attn_scalar {cfg['query_pre_attn_scalar']}: no GGUF key holds it; llama.cpp's rule "
                     "(head_dim, or hidden_size / heads for a 27B-deep model)")
        pattern = get(A.SLIDING_WINDOW_PATTERN)
        kinds = _layer_kinds(pattern if pattern is not None else _LLAMA_CPP_SWA_PATTERN[gen], cfg["num_hidden_layers"])
        if kinds is None:
            raise InputError(f"sliding_window_pattern {pattern!r} does not describe {cfg['num_hidden_layers']} layers", path)
        cfg["layer_types"] = ["sliding_attention" if k == SLIDING else "full_attention" for k in kinds]
        if pattern is None:
            notes.append(f"layer pattern: llama.cpp's built-in every-{_LLAMA_CPP_SWA_PATTERN[gen]}th-layer-global")
        if gen == 3:
            local = get(R.FREQ_BASE_SWA)
            cfg["rope_local_base_freq"] = float(local if local is not None else _LLAMA_CPP_GEMMA3_LOCAL_BASE)
    return cfg, notes


def _special_ids(reader: gguf.GGUFReader, path: Path) -> dict[str, int]:
    T = gguf.Keys.Tokenizer
    out = {}
    for name, key in (("bos_token_id", T.BOS_ID), ("eos_token_id", T.EOS_ID), ("pad_token_id", T.PAD_ID)):
        v = metadata(reader, key, path)
        if isinstance(v, int):
            out[name] = v
    return out


def choose_config(reader: gguf.GGUFReader, path: Path) -> tuple[dict[str, Any], str, str | None, list[str]]:
    """(config.json dict, where it came from, the variant name or None, notes)."""
    gen, arch, raw = metadata_shape(reader, path)
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim")
    embd = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    rows = int(embd.shape[1]) if embd is not None and len(embd.shape) == 2 else raw.get("vocab_size", 0)
    notes: list[str] = []
    for name, v in KNOWN_VARIANTS.items():
        if v["model_type"] != raw["model_type"]:
            continue
        same = all(v.get(k) == raw.get(k) for k in keys if raw.get(k) is not None and not isinstance(raw.get(k), list))
        same = same and all(v.get(k) == raw.get(k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads"))
        if gen < 4:
            same = same and all(v.get(k) == raw.get(k) for k in keys)
        if same:
            cfg = variant_config_json(name)
            cfg.update(PUBLISHED_EXTRAS.get(name, {}))
            cfg.update(_special_ids(reader, path))
            problems = _metadata_errors(reader, path, cfg)
            if not problems:
                return cfg, f"published config of {name} (the GGUF metadata agrees)", name, notes
            if gen >= 4:
                raise InputError(f"the shapes are {name}'s, but the metadata disagrees with its published config: "
                                 f"{'; '.join(problems[:3])}", path, hint="a Gemma 4 config cannot be rebuilt from "
                                 "the metadata alone")
            notes.append(f"shapes of {name}, but the metadata differs from its published config "
                         f"({'; '.join(problems[:3])}): config built from the metadata")
            break
    cfg, more = config_from_metadata(reader, path, gen, arch, raw, rows)
    cfg["architectures"] = [ARCHITECTURES[gen]]
    cfg.update(_special_ids(reader, path))
    return cfg, "GGUF metadata (no known variant has these shapes)" if not notes else "GGUF metadata", None, notes + more


def _metadata_errors(reader: gguf.GGUFReader, path: Path, cfg_json: dict[str, Any]) -> list[str]:
    from release.weights.gguf_reader import metadata_findings

    try:
        cfg = config_from_dict(dict(cfg_json), str(path))
    except InputError as e:
        return [e.message if hasattr(e, "message") else str(e)]
    return [f.message for f in metadata_findings(reader, cfg, path) if f.severity == "error"]


# --- tokenizer.model -------------------------------------------------------------------------------


@dataclass
class RebuiltVocab:
    proto: bytes
    pieces: int
    reversed: int  # entries whose converter rewrite was undone


def rebuild_tokenizer(reader: gguf.GGUFReader, path: Path) -> RebuiltVocab:
    """Gemma's SentencePiece ``tokenizer.model`` from a GGUF's ``tokenizer.ggml.*`` (Gemma 1-3: model "llama")."""
    T = gguf.Keys.Tokenizer
    model = metadata(reader, T.MODEL, path)
    if model != "llama":
        raise InputError(f"{T.MODEL} is {model!r}: only a SentencePiece vocabulary (\"llama\") can become a "
                         "tokenizer.model", path)
    tokens = metadata(reader, T.LIST, path)
    scores = metadata(reader, T.SCORES, path)
    types = metadata(reader, T.TOKEN_TYPE, path)
    if tokens is None or scores is None or types is None or not (len(tokens) == len(scores) == len(types)):
        raise InputError("the GGUF's vocabulary (tokens, scores, token types) is missing or inconsistent", path)
    special = {name: metadata(reader, key, path) for name, key in
               (("pad", T.PAD_ID), ("eos", T.EOS_ID), ("bos", T.BOS_ID), ("unk", T.UNK_ID))}
    n = len(tokens)
    # Trailing [PAD{i}] pieces the converter appends up to the config's vocab_size are not SentencePiece's.
    while n and types[n - 1] == PieceType.UNUSED and tokens[n - 1].startswith("[PAD"):
        n -= 1
    rewritten = 0
    pieces: list[tuple[str, float, PieceType]] = []
    for i in range(n):
        text, score, kind = tokens[i], float(scores[i]), int(types[i])
        if score == -1000.0 and kind in (PieceType.CONTROL, PieceType.USER_DEFINED):
            rewritten += 1
            score = 0.0
            if kind == PieceType.USER_DEFINED:
                text = text.replace(" ", SPACE)
            elif i == special["unk"]:
                kind = PieceType.UNKNOWN
            elif i not in (special["pad"], special["eos"], special["bos"]):
                kind = PieceType.USER_DEFINED
        elif kind == PieceType.CONTROL and i == special["unk"]:
            kind = PieceType.UNKNOWN
        try:
            kind = PieceType(kind)
        except ValueError:
            raise InputError(f"token {i} has token type {kind}, which SentencePiece does not know", path) from None
        pieces.append((text, score, kind))
    if not (isinstance(special["unk"], int) and 0 <= special["unk"] < n):
        raise InputError("the GGUF names no unknown token (tokenizer.ggml.unknown_token_id)", path)
    proto = write_model_proto(pieces, special)
    return RebuiltVocab(proto, n, rewritten)


# --- safetensors, streamed ------------------------------------------------------------------------


def _np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


class _ShardWriter:
    """safetensors files written one tensor at a time (the header first, so every size is known up front)."""

    def __init__(self, out: Path, plan: list[tuple[str, tuple[int, ...], str]]):
        self.out, self.plan = out, plan
        self.shards: list[list[tuple[str, tuple[int, ...], str]]] = [[]]
        size = 0
        for item in plan:
            nbytes = int(np.prod(item[1])) * _np_dtype(item[2]).itemsize
            if self.shards[-1] and size + nbytes > MAX_SHARD_BYTES:
                self.shards.append([])
                size = 0
            self.shards[-1].append(item)
            size += nbytes
        k = len(self.shards)
        self.names = ["model.safetensors"] if k == 1 else [f"model-{i + 1:05d}-of-{k:05d}.safetensors" for i in range(k)]

    def write(self, produce: Callable[[str], np.ndarray], metadata_: dict[str, str]) -> int:
        total = 0
        for fname, items in zip(self.names, self.shards):
            header: dict[str, Any] = {"__metadata__": metadata_}
            offset = 0
            for name, shape, dt in items:
                nbytes = int(np.prod(shape)) * _np_dtype(dt).itemsize
                header[name] = {"dtype": _ST_DTYPE[dt], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
                offset += nbytes
            hb = json.dumps(header, separators=(",", ":")).encode()
            hb += b" " * (-len(hb) % 8)
            with open(self.out / fname, "wb") as fh:
                fh.write(struct.pack("<Q", len(hb)))
                fh.write(hb)
                for name, shape, dt in items:
                    a = produce(name)
                    a = np.ascontiguousarray(a, dtype=_np_dtype(dt)).reshape(np.shape(a))  # 0-d stays 0-d
                    if a.shape != tuple(shape):
                        raise RuntimeError(f"{name}: produced {a.shape}, planned {shape}")
                    fh.write(a.tobytes())
            total += 8 + len(hb) + offset
        if len(self.names) > 1:
            weight_map = {name: fname for fname, items in zip(self.names, self.shards) for name, _, _ in items}
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (self.out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        return total


# --- the export -----------------------------------------------------------------------------------


def _weights(src: Path, cfg, reader: gguf.GGUFReader) -> GGUFWeights:  # noqa: ANN001
    """GGUFWeights on the reader already open: gguf's parser takes ~40 s over a 262k vocabulary, once is enough."""
    from release.weights import gguf_reader

    opened = gguf_reader.open_gguf
    gguf_reader.open_gguf = lambda p: reader if Path(p) == src else opened(p)
    try:
        return GGUFWeights(src, cfg)
    finally:
        gguf_reader.open_gguf = opened


def _choose_dtype(w: GGUFWeights, names: dict[str, str], asked: str) -> str:
    """The dtype of every tensor: the one asked, or (auto) the narrowest that holds every value exactly."""
    if asked != "auto":
        return asked
    stored = {w.tensors[g].tensor_type.name for g in names.values()}
    quantized = stored - set(_GGML_FLOAT)
    if quantized:
        return "float32"  # dequantized values need float32 to be exact
    matrices = {w.tensors[g].tensor_type.name for r, g in names.items() if len(expected_shapes(w.cfg)[r]) > 1}
    if len(matrices) != 1:
        return "float32"
    want = _GGML_FLOAT[matrices.pop()]
    if want == "float32":
        return want
    dt = _np_dtype(want)
    for rel in names:  # the small F32 tensors (norms, scalars) must round-trip too
        if len(expected_shapes(w.cfg)[rel]) <= 1:
            a = w.tensor(rel)
            if not np.array_equal(a.astype(dt).astype(np.float32), a):
                return "float32"
    return want


def export_gguf(gguf_path: str | os.PathLike, out: str | os.PathLike, dtype: str = "auto",
                progress: Callable[[str, int, int], None] | None = None) -> ExportResult:
    """Write a Hugging Face-format directory for ``gguf_path`` at ``out`` (atomically)."""
    t0 = time.perf_counter()
    src, out = Path(gguf_path), Path(out)
    if dtype not in DTYPES:
        raise InputError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("already exists and is not an empty directory; refusing to overwrite", out,
                         hint="pass a new directory to --out")
    reader = open_gguf(src)
    count = metadata(reader, gguf.Keys.Split.LLM_KV_SPLIT_COUNT, src)
    cfg_json, source, variant, notes = choose_config(reader, src)
    gen = GENERATION_OF_ARCH[metadata(reader, gguf.Keys.General.ARCHITECTURE, src)]
    try:
        cfg = config_from_dict(dict(cfg_json), str(src))
    except InputError as e:
        raise InputError(f"the config rebuilt from the GGUF is not a valid Gemma config: {e}", src) from None
    weights = _weights(src, cfg, reader)  # every tensor present with the config's shape, or one InputError
    try:
        if weights.head != "token_embd.weight":
            raise InputError("the GGUF has its own output.weight: Gemma ties the output head to the embedding, so "
                             "a Hugging Face Gemma checkpoint cannot hold this model", src)
        errors = [f for f in weights.findings if f.severity == "error"]
        if errors:
            raise InputError("the GGUF metadata contradicts the config rebuilt for it: "
                             + "; ".join(f.message for f in errors[:3]), src)
        names = weights.names
        shapes = expected_shapes(cfg)
        dt = _choose_dtype(weights, names, dtype)
        cfg_json["torch_dtype"] = dt
        vocab = None
        tok_model = metadata(reader, gguf.Keys.Tokenizer.MODEL, src)
        if tok_model is None:
            notes.append("no tokenizer.model: the GGUF carries no vocabulary (tokenizer.ggml.model is missing)")
        elif gen < 4 or tok_model == "llama":
            vocab = rebuild_tokenizer(reader, src)
        else:
            notes.append("no tokenizer.model: a Gemma 4 GGUF's vocabulary comes from tokenizer.json (model 'gemma4')")
        prefix = "model."
        plan = [(prefix + rel, shapes[rel], dt) for rel in names]

        def produce(name: str) -> np.ndarray:
            rel = name[len(prefix):]
            i = list(names).index(rel)
            if progress:
                progress("tensors", i, len(names))
            a = weights.tensor(rel)
            if rel == "embed_tokens.weight" and a.shape[0] < cfg.vocab_size:
                a = np.concatenate([a, np.zeros((cfg.vocab_size - a.shape[0], a.shape[1]), a.dtype)])
            return a

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        try:
            writer = _ShardWriter(tmp, plan)
            meta = {"format": "pt", "source": src.name, "producer": "gemma-release export"}
            total = writer.write(produce, meta)
            (tmp / "config.json").write_text(json.dumps(cfg_json, indent=2) + "\n", encoding="utf-8")
            if vocab is not None:
                (tmp / "tokenizer.model").write_bytes(vocab.proto)
            if out.exists():
                out.rmdir()  # empty (checked above)
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        weights.close()
    if progress:
        progress("tensors", len(names), len(names))
    if count and isinstance(count, int) and count > 1:
        notes.append(f"read from {count} split parts")
    files = sorted(p.name for p in out.iterdir())
    return ExportResult(out=out, config_source=source, variant=variant, dtype=dt, n_tensors=len(plan),
                        bytes_written=total, files=files, seconds=time.perf_counter() - t0,
                        tokenizer_pieces=vocab.pieces if vocab else None,
                        tokenizer_rewrites_reversed=vocab.reversed if vocab else 0, notes=notes,
                        findings=[f for f in weights.findings if f.severity != "error"])
