"""Golden-logit files: expected logits for a model at a revision, in a safetensors container.

One file holds several prompts. For prompt ``i``:

* ``ids.{i}``            int64   [T]      the token ids that were run (BOS included)
* full storage:
  ``logits.{i}``         float32 [T, V]   every logit of every position
* top-k storage (for big vocabularies; 256k-wide rows are 1 MB a position):
  ``topk_ids.{i}``       int64   [T, k]   the k largest logits' ids, largest first
  ``topk_logits.{i}``    float32 [T, k]   their values
  ``lse.{i}``            float32 [T]      log-sum-exp of the whole row (pins the rest of the distribution)

A prompt with images (a multimodal Gemma 3 / Gemma 4) also holds:

* ``images.{i}.{j}``      uint8   [H, W, 3]   its j-th image, raw RGB as decoded (release.images.load_image)
* ``token_types.{i}``     int64   [T]         the token types fed to the producer (1 at image tokens, else 0:
                                              transformers' token_type_ids / mm_token_type_ids)
* ``soft_tokens.{i}``     float32 [n, D]      optional: the producer's projector output for the prompt's n image
                                              tokens, in order (localises a failure to the tower or the text model)
* ``pixel_values.{i}.{j}`` float32            optional: the producer's pixel values of image j, as its processor
                                              gave them (Gemma 3 [views, 3, S, S]; Gemma 4 [max_patches, 3p^2]),
  ``image_position_ids.{i}.{j}`` int64 [max_patches, 2]   with Gemma 4's patch positions ((-1, -1) on padding)

and its ``prompts`` entry an ``images`` list, one ``{"height", "width", "sha256_pixels"}`` per image
(``sha256_pixels``: SHA-256 of the producer's float32 pixel values of that image, C order, as
``gemma_ref.vision.pixel_sha256``). The file then says how images were preprocessed:
``image_processor`` (the processor's config as JSON), ``image_processor_backend`` (``pil`` for
transformers' PIL backend, ``torchvision``, or ``gemma_ref``) and ``pillow_version``. Files
without images are unchanged (format version 1 either way).

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
from release.images import MAX_PIXELS, MAX_SIDE
from release.resources import load_schema
from release.weights.prompts import (  # noqa: F401  (parse_ids re-exported)
    PromptSpec,
    check_image_runs,
    parse_ids,
    tokenize_prompt_specs,
)

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
    images: list[np.ndarray] | None = None  # uint8 [H, W, 3] each, in prompt order (image prompts only)
    token_types: np.ndarray | None = None  # int64 [T]: as fed to the producer, 1 at image tokens
    soft_tokens: np.ndarray | None = None  # float32 [n_image_tokens, D_text]: the producer's projector output
    image_meta: list[dict[str, Any]] | None = None  # per image: height, width, sha256_pixels
    pixels: list[dict[str, np.ndarray]] | None = None  # per image, the producer's pixel values (if recorded)


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
                text: str | None = None, messages: list[dict[str, str]] | None = None,
                **image_fields: Any) -> GoldenPrompt:
    """A GoldenPrompt from full float32 logits [T, V], keeping all of them or only the top k.

    ``image_fields``: images, token_types, soft_tokens, image_meta, pixels (see GoldenPrompt).
    """
    logits = np.asarray(logits, dtype=np.float32)
    ids = np.asarray(ids, dtype=np.int64)
    if storage == "full":
        return GoldenPrompt(name, ids, logits=logits, text=text, messages=messages, **image_fields)
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
                        text=text, messages=messages, **image_fields)


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
        if p.images:
            tensors.update(_image_tensors(i, p))
            entry["images"] = [{"height": int(im.shape[0]), "width": int(im.shape[1]),
                                "sha256_pixels": str(m["sha256_pixels"])} for im, m in zip(p.images, p.image_meta)]
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
    if any(p.images for p in golden.prompts):
        missing = [k for k in IMAGE_FILE_META if k not in meta]
        if missing:
            raise ValueError(f"a golden with images records {', '.join(missing)} (golden.extra)")
    write_safetensors(path, tensors, meta)
    return path


IMAGE_FILE_META = ("image_processor", "image_processor_backend", "pillow_version")


def _image_tensors(i: int, p: GoldenPrompt) -> dict[str, np.ndarray]:
    """The tensors of prompt i's images (see the module docstring)."""
    if p.token_types is None or p.image_meta is None or len(p.image_meta) != len(p.images):
        raise ValueError(f"prompt {p.name!r}: an image prompt records its token types and one image_meta per image")
    out = {f"token_types.{i}": np.ascontiguousarray(p.token_types, dtype=np.int64)}
    for j, im in enumerate(p.images):
        out[f"images.{i}.{j}"] = np.ascontiguousarray(im, dtype=np.uint8)
    if p.soft_tokens is not None:
        out[f"soft_tokens.{i}"] = np.ascontiguousarray(p.soft_tokens, dtype=np.float32)
    for j, px in enumerate(p.pixels or ()):
        out[f"pixel_values.{i}.{j}"] = np.ascontiguousarray(px["pixel_values"], dtype=np.float32)
        if px.get("image_position_ids") is not None:
            out[f"image_position_ids.{i}.{j}"] = np.ascontiguousarray(px["image_position_ids"], dtype=np.int64)
    return out


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
        _read_images(gp, i, pm, tensors, path)
        prompts.append(gp)
    _no_stray_image_tensors(tensors, doc["prompts"], path)
    if any(gp.images for gp in prompts):
        try:
            processor = json.loads(meta["image_processor"])
        except json.JSONDecodeError as e:
            raise InputError(f"metadata 'image_processor' is not JSON: {e.msg}", path) from None
        if not isinstance(processor, dict):
            raise InputError("metadata 'image_processor' must be a JSON object (the processor's config)", path)
    known = {"format", "format_version", "producer", "producer_version", "compute_dtype", "storage", "vocab_size",
             "model", "prompts", "topk", "revision", "model_type"}
    return Golden(
        prompts=prompts, vocab_size=vocab, producer=meta["producer"], producer_version=meta["producer_version"],
        compute_dtype=meta["compute_dtype"], storage=storage, model=meta.get("model", ""),
        revision=meta.get("revision"), model_type=meta.get("model_type"),
        extra={k: v for k, v in meta.items() if k not in known}, path=path,
    )


IMAGE_TENSORS = ("images", "token_types", "soft_tokens", "pixel_values", "image_position_ids")


def _read_images(gp: GoldenPrompt, i: int, pm: dict[str, Any], tensors: dict[str, np.ndarray], path: Path) -> None:
    """Prompt i's image tensors, checked against its metadata entry; InputError naming the tensor otherwise."""
    metas = pm.get("images") or []
    where = f"prompt {pm['name']!r}"
    if not metas:
        for key in (f"token_types.{i}", f"soft_tokens.{i}"):
            if key in tensors:
                raise InputError(f"tensor {key!r}: {where} has no images in its metadata", path)
        return
    T = len(gp.ids)
    images = []
    for j, m in enumerate(metas):
        key = f"images.{i}.{j}"
        if key not in tensors:
            raise InputError(f"tensor {key!r} is missing ({where}, image {j + 1} of {len(metas)})", path)
        im = tensors[key]
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
            raise InputError(f"tensor {key!r} must be uint8 [H, W, 3] RGB pixels, got {im.dtype} {list(im.shape)}", path)
        h, w = int(im.shape[0]), int(im.shape[1])
        if min(h, w) < 1 or h * w > MAX_PIXELS or max(h, w) > MAX_SIDE:
            raise InputError(f"tensor {key!r} is {w}x{h} pixels: empty, or more than {MAX_PIXELS} pixels or "
                             f"{MAX_SIDE} a side", path)
        if (h, w) != (m["height"], m["width"]):
            raise InputError(f"tensor {key!r} is {w}x{h} pixels, metadata says {m['width']}x{m['height']}", path)
        images.append(im)
    key = f"token_types.{i}"
    if key not in tensors:
        raise InputError(f"tensor {key!r} is missing ({where} has images: the token types fed with them)", path)
    tt = tensors[key]
    if tt.ndim != 1 or tt.dtype.kind not in "iu" or len(tt) != T:
        raise InputError(f"tensor {key!r} must be integer [{T}], got {tt.dtype} {list(tt.shape)}", path)
    if not np.isin(tt, (0, 1)).all():
        raise InputError(f"tensor {key!r} holds values other than 0 (text) and 1 (image)", path)
    marked = gp.ids[tt == 1]
    if len(marked) == 0:
        raise InputError(f"tensor {key!r} marks no image token, but {where} has {len(metas)} image(s)", path)
    if len(np.unique(marked)) != 1:
        raise InputError(f"tensor {key!r} marks ids {sorted({int(x) for x in marked})[:5]} as image tokens; they "
                         "are all one id, the image token", path)
    if np.count_nonzero(gp.ids == marked[0]) != len(marked):
        raise InputError(f"tensor {key!r} leaves some of the image token's ({int(marked[0])}) positions as text", path)
    soft = None
    key = f"soft_tokens.{i}"
    if key in tensors:
        soft = tensors[key]
        if soft.dtype.kind != "f" or soft.ndim != 2 or soft.shape[0] != len(marked) or soft.shape[1] < 1:
            raise InputError(f"tensor {key!r} must be float [{len(marked)}, D] (one row per image token), got "
                             f"{soft.dtype} {list(soft.shape)}", path)
        if not np.all(np.isfinite(soft)):
            raise InputError(f"tensor {key!r} contains NaN or Inf", path)
        soft = soft.astype(np.float32)
    pixels = _read_pixels(i, len(metas), tensors, path)
    if pixels is not None:
        from gemma_ref.vision import pixel_sha256

        for j, (px, m) in enumerate(zip(pixels, metas)):
            if pixel_sha256(px) != m["sha256_pixels"]:
                raise InputError(f"tensor 'pixel_values.{i}.{j}' does not hash to image {j + 1}'s sha256_pixels in "
                                 "the metadata", path)
    gp.images, gp.token_types, gp.soft_tokens = images, tt.astype(np.int64), soft
    gp.image_meta, gp.pixels = [dict(m) for m in metas], pixels


def _read_pixels(i: int, n: int, tensors: dict[str, np.ndarray], path: Path) -> list[dict[str, np.ndarray]] | None:
    """The producer's pixel values of prompt i's n images, if the file records them (all or none)."""
    have = [f"pixel_values.{i}.{j}" in tensors for j in range(n)]
    if not any(have):
        return None
    if not all(have):
        raise InputError(f"tensor 'pixel_values.{i}.{have.index(False)}' is missing: pixel values are recorded for "
                         "every image of a prompt or for none", path)
    out = []
    for j in range(n):
        key = f"pixel_values.{i}.{j}"
        px = tensors[key]
        pos = tensors.get(f"image_position_ids.{i}.{j}")
        if px.dtype != np.float32 or not np.all(np.isfinite(px)):
            raise InputError(f"tensor {key!r} must be finite float32, got {px.dtype}", path)
        if pos is None:  # Gemma 3: [views, 3, S, S]
            if px.ndim != 4 or px.shape[1] != 3 or px.shape[0] < 1 or px.shape[2] < 1 or px.shape[2] != px.shape[3]:
                raise InputError(f"tensor {key!r} must be [views, 3, S, S] (or [patches, width] with "
                                 f"'image_position_ids.{i}.{j}'), got {list(px.shape)}", path)
            out.append({"pixel_values": px})
            continue
        if px.ndim != 2 or px.shape[0] < 1 or pos.dtype.kind != "i" or pos.shape != (px.shape[0], 2):
            raise InputError(f"tensors {key!r} and 'image_position_ids.{i}.{j}' must be [patches, width] and integer "
                             f"[patches, 2], got {list(px.shape)} and {pos.dtype} {list(pos.shape)}", path)
        if pos.min() < -1 or pos.max() > MAX_SIDE:
            raise InputError(f"tensor 'image_position_ids.{i}.{j}' holds positions outside [-1, {MAX_SIDE}]", path)
        out.append({"pixel_values": px, "image_position_ids": pos.astype(np.int64)})
    return out


def _no_stray_image_tensors(tensors: dict[str, np.ndarray], prompts: list[dict[str, Any]], path: Path) -> None:
    """Image tensors must belong to a prompt's image (a renamed or extra one is a damaged file, not silence)."""
    for key in tensors:
        kind, _, rest = key.partition(".")
        if kind not in IMAGE_TENSORS:
            continue
        parts = rest.split(".")
        ok = all(x.isdigit() for x in parts) and len(parts) == (1 if kind in ("token_types", "soft_tokens") else 2)
        if ok:
            i = int(parts[0])
            ok = i < len(prompts) and (len(parts) == 1 or int(parts[1]) < len(prompts[i].get("images") or []))
        if not ok:
            raise InputError(f"tensor {key!r} belongs to no prompt's image in the metadata", path)
        if kind == "image_position_ids" and f"pixel_values.{rest}" not in tensors:
            raise InputError(f"tensor {key!r} has no 'pixel_values.{rest}'", path)


# --- making a golden file ----------------------------------------------------------------------------


#: ``storage=None`` (the CLI's default) keeps full rows up to this many bytes of logits, top-k beyond:
#: a 262,144-wide row is 1 MB a position, so a few real prompts would make a golden of gigabytes.
AUTO_FULL_LIMIT = 64 << 20


def auto_storage(n_positions: int, vocab_size: int) -> str:
    """"full" when every row fits in :data:`AUTO_FULL_LIMIT` bytes of float32, else "topk"."""
    return "full" if n_positions * vocab_size * 4 <= AUTO_FULL_LIMIT else "topk"


def make_golden(model_dir: str | os.PathLike, out: str | os.PathLike, prompts: list[PromptSpec],
                backend: str = "gemma_ref", storage: str | None = "full", topk: int = 64, model_name: str | None = None,
                revision: str | None = None, progress=None, base: str | os.PathLike | None = None,
                keep_pixels: bool = False, extra: dict[str, str] | None = None) -> Golden:
    """Compute logits for the prompts with a backend and write them as a golden file.

    ``storage=None`` picks by size (:func:`auto_storage`); ``golden.storage`` says which was used.
    ``model_dir`` may be a LoRA adapter on ``base`` (gemma_ref/adapters.py).

    Prompts with images (a multimodal Gemma 3 / Gemma 4): text and chat prompts have their
    placeholders expanded, ids prompts must hold each image's tokens expanded; the golden records
    the images, the token types, the soft tokens and each image's pixel hash, and with
    ``keep_pixels`` the producer's pixel values themselves (Gemma 3: 3*S*S floats an image, 9.6 MB at 896).
    ``extra``: more metadata to record (strings).
    """
    from gemma_ref import adapters
    from gemma_ref.config import load_config
    from gemma_ref.model import validate_ids
    from release.weights.backends import compute_image_logits, compute_logits

    if storage is not None and storage not in STORAGES:
        raise InputError(f"storage must be one of {', '.join(STORAGES)}, not {storage!r}")
    if topk < 1:
        raise InputError("--topk must be at least 1")
    model_dir = Path(model_dir)
    base_dir = Path(adapters.resolve_base(model_dir, base)) if adapters.is_adapter_dir(model_dir) else None
    cfg = load_config(base_dir or model_dir)
    from gemma_ref.tokenizer import has_tokenizer

    vc = _vision_config(prompts, base_dir or model_dir)
    specs = resolve_prompt_ids(prompts, model_dir if base_dir is None or has_tokenizer(model_dir)
                               else base_dir, vc)  # an adapter without its own tokenizer uses its base's
    sequences = [validate_ids(p.ids, cfg.vocab_size, cfg.max_position_embeddings) for p in specs]
    if vc is not None:
        for p, ids in zip(specs, sequences):
            if p.images:
                check_image_runs(p, ids, vc)
    if storage is None:
        storage = auto_storage(sum(len(s) for s in sequences), cfg.vocab_size)
    fields: list[dict[str, Any]] = [{} for _ in specs]
    meta = dict(extra or {})
    if vc is None:
        logits, version = compute_logits(backend, model_dir, sequences, progress, base_dir)
    else:
        from gemma_ref.vision import pixel_sha256
        from release.images import pillow_version

        run = compute_image_logits(backend, model_dir, sequences, [p.images for p in specs], vc, progress, base_dir)
        logits, version = run.logits, run.version
        for k, p in enumerate(specs):
            if p.images:
                fields[k] = {"images": p.images, "token_types": run.token_types[k], "soft_tokens": run.soft_tokens[k],
                             "pixels": run.pixels[k] if keep_pixels else None,
                             "image_meta": [{"height": int(im.shape[0]), "width": int(im.shape[1]),
                                             "sha256_pixels": pixel_sha256(px)}
                                            for im, px in zip(p.images, run.pixels[k])]}
        meta.update(image_processor=json.dumps(run.processor, sort_keys=True),
                    image_processor_backend=run.processor_backend, pillow_version=pillow_version())
    golden = Golden(
        prompts=[make_prompt(p.name, ids, lg, storage, topk, p.text, p.messages, **f)
                 for p, ids, lg, f in zip(specs, sequences, logits, fields)],
        vocab_size=cfg.vocab_size, producer=backend, producer_version=version, storage=storage,
        model=model_name or str(model_dir), revision=revision, model_type=cfg.model_type, extra=meta,
    )
    write_golden(golden, out)
    golden.path = Path(out)
    return golden


def resolve_prompt_ids(prompts: list[PromptSpec], model_dir: Path, vision_config: Any = None) -> list[PromptSpec]:
    """Fill in ids for text / chat prompts with the model's own tokenizer (images expanded with `vision_config`)."""
    if all(p.ids is not None for p in prompts):
        return prompts
    return tokenize_prompt_specs(prompts, model_dir, vision_config)


def _vision_config(prompts: list[PromptSpec], model_dir: Path) -> Any:
    """The checkpoint's image path when a prompt holds images (gemma_ref.vision.VisionConfig), else None."""
    with_images = [p for p in prompts if p.images]
    if not with_images:
        return None
    from gemma_ref import vision

    vc = vision.load_vision_config(model_dir)
    if vc is None:
        raise InputError(f"prompt {with_images[0].name!r} has images, but this checkpoint has no vision tower "
                         "gemma_ref knows (a Gemma 3 or Gemma 4 config.json with a vision_config)", model_dir,
                         hint="Gemma 3n's and gemma4_unified's images are not supported")
    return vc
