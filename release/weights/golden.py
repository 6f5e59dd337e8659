"""Golden-logit files: expected logits for a model at a revision, in a safetensors container.

One file holds several prompts. For prompt ``i``:

* ``ids.{i}``            int64   [T]      the token ids that were run (BOS included)
* full storage:
  ``logits.{i}``         float32 [T, V]   every logit of every position
* top-k storage (for big vocabularies; 256k-wide rows are 1 MB a position):
  ``topk_ids.{i}``       int64   [T, k]   the k largest logits' ids, largest first
  ``topk_logits.{i}``    float32 [T, k]   their values
  ``lse.{i}``            float32 [T]      log-sum-exp of the whole row (pins the rest of the distribution)

``__metadata__`` (strings only, as safetensors requires) says what produced the
logits; ``prompts`` is a JSON list. ``schemas/golden.schema.json`` describes it
and every file is validated against it on read.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from release.errors import InputError
from release.files import require_regular, write_safetensors
from release.resources import load_schema
from release.weights.prompts import PromptSpec, parse_ids, tokenize_prompt_specs  # noqa: F401  (parse_ids re-exported)

FORMAT = "gemma-release-golden"
FORMAT_VERSION = "1"
STORAGES = ("full", "topk")


@dataclass
class GoldenPrompt:
    """One prompt of a golden file and its expected logits."""

    name: str  # a short label ("en-1", "chat", "ids-0", ...)
    ids: np.ndarray  # int64 [T]
    logits: np.ndarray | None = None  # float32 [T, V] (full storage)
    topk_ids: np.ndarray | None = None  # int64 [T, k] (top-k storage)
    topk_logits: np.ndarray | None = None  # float32 [T, k]
    lse: np.ndarray | None = None  # float32 [T]
    text: str | None = None  # the text that was tokenized, if the prompt was text
    messages: list[dict[str, str]] | None = None  # the chat turns, if the prompt used the chat template


@dataclass
class Golden:
    """A golden file in memory."""

    prompts: list[GoldenPrompt]
    vocab_size: int
    producer: str  # "gemma_ref" or "transformers"
    producer_version: str
    compute_dtype: str = "float32"
    storage: str = "full"
    model: str = ""  # what the logits were computed from (path or repo id)
    revision: str | None = None
    model_type: str | None = None
    extra: dict[str, str] = field(default_factory=dict)  # unknown metadata keys, kept as read
    path: Path | None = None

    @property
    def topk(self) -> int | None:
        if self.storage != "topk" or not self.prompts:
            return None
        return int(self.prompts[0].topk_ids.shape[1])


def make_prompt(name: str, ids: np.ndarray, logits: np.ndarray, storage: str, topk: int = 64,
                text: str | None = None, messages: list[dict[str, str]] | None = None) -> GoldenPrompt:
    """A GoldenPrompt from full float32 logits [T, V], keeping all of them or only the top k."""
    logits = np.asarray(logits, dtype=np.float32)
    ids = np.asarray(ids, dtype=np.int64)
    if storage == "full":
        return GoldenPrompt(name, ids, logits=logits, text=text, messages=messages)
    k = min(topk, logits.shape[1])
    T = logits.shape[0]
    top_ids = np.empty((T, k), dtype=np.int64)
    lse = np.empty(T, dtype=np.float32)
    for a in range(0, T, ROW_BLOCK):  # in row blocks: argpartition's indices and the float64 copy are [rows, V]
        rows = logits[a:a + ROW_BLOCK]  # [n, V]
        part = np.argpartition(-rows, k - 1, axis=1)[:, :k]  # the k largest, unordered  [n, k]
        order = np.argsort(-np.take_along_axis(rows, part, axis=1), axis=1, kind="stable")
        top_ids[a:a + ROW_BLOCK] = np.take_along_axis(part, order, axis=1)  # largest first
        lse[a:a + ROW_BLOCK] = logsumexp(rows)
    return GoldenPrompt(name, ids, topk_ids=top_ids, topk_logits=np.take_along_axis(logits, top_ids, axis=1), lse=lse,
                        text=text, messages=messages)


ROW_BLOCK = 256  # rows per block in make_prompt: 256 x 262144 float64 is 0.5 GB, not 8.6 GB for 4,096 rows


def logsumexp(x: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """log(sum(exp(x))) over the last axis, computed in float64, returned as `dtype`.  [T, V] -> [T]"""
    x64 = x.astype(np.float64)
    m = x64.max(axis=-1)
    return (m + np.log(np.exp(x64 - m[..., None]).sum(axis=-1))).astype(dtype)


# --- writing -------------------------------------------------------------------------------------


def write_golden(golden: Golden, path: str | os.PathLike) -> Path:
    """Write atomically (temp file + rename), so a failure never leaves half a golden file."""
    path = Path(path)
    tensors: dict[str, np.ndarray] = {}
    prompts_meta = []
    for i, p in enumerate(golden.prompts):
        tensors[f"ids.{i}"] = np.ascontiguousarray(p.ids, dtype=np.int64)
        if golden.storage == "full":
            tensors[f"logits.{i}"] = np.ascontiguousarray(p.logits, dtype=np.float32)
        else:
            tensors[f"topk_ids.{i}"] = np.ascontiguousarray(p.topk_ids, dtype=np.int64)
            tensors[f"topk_logits.{i}"] = np.ascontiguousarray(p.topk_logits, dtype=np.float32)
            tensors[f"lse.{i}"] = np.ascontiguousarray(p.lse, dtype=np.float32)
        entry: dict[str, Any] = {"name": p.name, "n_tokens": int(len(p.ids))}
        if p.text is not None:
            entry["text"] = p.text
        if p.messages is not None:
            entry["messages"] = p.messages
        prompts_meta.append(entry)
    meta = {
        **golden.extra,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "producer": golden.producer,
        "producer_version": golden.producer_version,
        "compute_dtype": golden.compute_dtype,
        "storage": golden.storage,
        "vocab_size": str(golden.vocab_size),
        "model": golden.model,
        "created": golden.extra.get("created") or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "prompts": json.dumps(prompts_meta, ensure_ascii=False),
    }
    if golden.storage == "topk":
        meta["topk"] = str(golden.topk)
    if golden.revision:
        meta["revision"] = golden.revision
    if golden.model_type:
        meta["model_type"] = golden.model_type
    write_safetensors(path, tensors, meta)
    return path


def sniff_golden(path: str | os.PathLike, header_limit: int = 1 << 20) -> bool:
    """Whether ``path`` is a golden file, from its safetensors header alone (never the tensor data).

    Used to keep goldens out of a release's weights whatever their name (`before.golden`,
    `golden.safetensors`, ...). Anything unreadable or not safetensors is simply not a golden.
    """
    import stat
    import struct

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                return False
            (n,) = struct.unpack("<Q", head)
            if n > header_limit:
                return False
            header = json.loads(fh.read(n))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return isinstance(meta, dict) and meta.get("format") == FORMAT


# --- reading ---------------------------------------------------------------------------------------


def read_golden(path: str | os.PathLike) -> Golden:
    """Read and validate a golden file; every problem is an InputError naming the file."""
    import jsonschema
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise InputError("golden file not found", path)
    require_regular(path, "golden file")  # safetensors would block opening a FIFO
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise InputError(f"not a readable safetensors golden file: {e}", path) from None

    doc: dict[str, Any] = dict(meta)
    try:
        doc["prompts"] = json.loads(meta.get("prompts", "null"))
    except json.JSONDecodeError as e:
        raise InputError(f"metadata 'prompts' is not JSON: {e.msg}", path) from None
    validator = jsonschema.Draft202012Validator(load_schema("golden.schema.json"))
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        pointer = "/" + "/".join(str(p) for p in error.absolute_path)
        raise InputError(f"metadata {pointer}: {error.message}", path,
                         hint="is this a gemma-release golden file?" if meta.get("format") != FORMAT else None)

    vocab = int(meta["vocab_size"])
    storage = meta["storage"]
    prompts = []
    for i, pm in enumerate(doc["prompts"]):
        def need(name: str, ndim: int, kind: str) -> np.ndarray:
            key = f"{name}.{i}"
            if key not in tensors:
                raise InputError(f"tensor {key!r} is missing (prompt {pm['name']!r})", path)
            t = tensors[key]
            if t.ndim != ndim or t.dtype.kind != kind:
                raise InputError(f"tensor {key!r} must be {ndim}-D {'integer' if kind == 'i' else 'float'}, "
                                 f"got {t.ndim}-D {t.dtype}", path)
            return t

        ids = need("ids", 1, "i")
        T = len(ids)
        if T == 0 or T != pm["n_tokens"]:
            raise InputError(f"prompt {pm['name']!r}: ids hold {T} tokens, metadata says {pm['n_tokens']}", path)
        if ids.min() < 0 or ids.max() >= vocab:
            raise InputError(f"prompt {pm['name']!r}: token ids outside [0, {vocab})", path)
        gp = GoldenPrompt(pm["name"], ids.astype(np.int64), text=pm.get("text"), messages=pm.get("messages"))
        if storage == "full":
            gp.logits = need("logits", 2, "f").astype(np.float32)
            if gp.logits.shape != (T, vocab):
                raise InputError(f"tensor 'logits.{i}' has shape {list(gp.logits.shape)}, expected [{T}, {vocab}]", path)
        else:
            gp.topk_ids = need("topk_ids", 2, "i").astype(np.int64)
            gp.topk_logits = need("topk_logits", 2, "f").astype(np.float32)
            gp.lse = need("lse", 1, "f").astype(np.float32)
            k = int(meta["topk"])
            if gp.topk_ids.shape != (T, k) or gp.topk_logits.shape != (T, k) or gp.lse.shape != (T,):
                raise InputError(f"prompt {pm['name']!r}: top-k tensors must be [{T}, {k}], [{T}, {k}] and [{T}]", path)
            if gp.topk_ids.min() < 0 or gp.topk_ids.max() >= vocab:
                raise InputError(f"prompt {pm['name']!r}: top-k ids outside [0, {vocab})", path)
        if not all(np.all(np.isfinite(a)) for a in (gp.logits, gp.topk_logits, gp.lse) if a is not None):
            raise InputError(f"prompt {pm['name']!r}: expected logits contain NaN or Inf", path)
        prompts.append(gp)
    known = {"format", "format_version", "producer", "producer_version", "compute_dtype", "storage", "vocab_size",
             "model", "prompts", "topk", "revision", "model_type"}
    return Golden(
        prompts=prompts, vocab_size=vocab, producer=meta["producer"], producer_version=meta["producer_version"],
        compute_dtype=meta["compute_dtype"], storage=storage, model=meta.get("model", ""),
        revision=meta.get("revision"), model_type=meta.get("model_type"),
        extra={k: v for k, v in meta.items() if k not in known}, path=path,
    )


# --- making a golden file ----------------------------------------------------------------------------


#: ``storage=None`` (the CLI's default) keeps full rows up to this many bytes of logits, top-k beyond:
#: a 262,144-wide row is 1 MB a position, so a few real prompts would make a golden of gigabytes.
AUTO_FULL_LIMIT = 64 << 20


def auto_storage(n_positions: int, vocab_size: int) -> str:
    """"full" when every row fits in :data:`AUTO_FULL_LIMIT` bytes of float32, else "topk"."""
    return "full" if n_positions * vocab_size * 4 <= AUTO_FULL_LIMIT else "topk"


def make_golden(model_dir: str | os.PathLike, out: str | os.PathLike, prompts: list[PromptSpec],
                backend: str = "gemma_ref", storage: str | None = "full", topk: int = 64, model_name: str | None = None,
                revision: str | None = None, progress=None, base: str | os.PathLike | None = None) -> Golden:
    """Compute logits for the prompts with a backend and write them as a golden file.

    ``storage=None`` picks by size (:func:`auto_storage`); ``golden.storage`` says which was used.
    ``model_dir`` may be a LoRA adapter on ``base`` (gemma_ref/adapters.py).
    """
    from gemma_ref import adapters
    from gemma_ref.config import load_config
    from gemma_ref.model import validate_ids
    from release.weights.backends import compute_logits

    if storage is not None and storage not in STORAGES:
        raise InputError(f"storage must be one of {', '.join(STORAGES)}, not {storage!r}")
    if topk < 1:
        raise InputError("--topk must be at least 1")
    model_dir = Path(model_dir)
    base_dir = Path(adapters.resolve_base(model_dir, base)) if adapters.is_adapter_dir(model_dir) else None
    cfg = load_config(base_dir or model_dir)
    from gemma_ref.tokenizer import has_tokenizer

    specs = resolve_prompt_ids(prompts, model_dir if base_dir is None or has_tokenizer(model_dir)
                               else base_dir)  # an adapter without its own tokenizer uses its base's
    sequences = [validate_ids(p.ids, cfg.vocab_size, cfg.max_position_embeddings) for p in specs]
    if storage is None:
        storage = auto_storage(sum(len(s) for s in sequences), cfg.vocab_size)
    logits, version = compute_logits(backend, model_dir, sequences, progress, base_dir)
    golden = Golden(
        prompts=[make_prompt(p.name, ids, lg, storage, topk, p.text, p.messages)
                 for p, ids, lg in zip(specs, sequences, logits)],
        vocab_size=cfg.vocab_size, producer=backend, producer_version=version, storage=storage,
        model=model_name or str(model_dir), revision=revision, model_type=cfg.model_type,
    )
    write_golden(golden, out)
    golden.path = Path(out)
    return golden


def resolve_prompt_ids(prompts: list[PromptSpec], model_dir: Path) -> list[PromptSpec]:
    """Fill in ids for text / chat prompts with the model's own tokenizer."""
    if all(p.ids is not None for p in prompts):
        return prompts
    return tokenize_prompt_specs(prompts, model_dir)
