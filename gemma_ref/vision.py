"""The image path of multimodal Gemma 3 and Gemma 4 in NumPy, float32: pixels to soft tokens.

Read it top to bottom like model.py: an image (uint8 [H, W, 3]) is resized and rescaled exactly
as the released processor config says, cut into patches, run through the vision tower, and
projected to the text model's width. The resulting *soft tokens* replace the embeddings of the
image tokens in the prompt (model.forward's ``images``), and the text model's attention among
the tokens of one image is made bidirectional. Shape letters: N patches, D the tower's width,
F its MLP width, Hd its head width, M soft tokens of one image, Dt the text model's width,
S the processor's image side, p the patch side, k the pooling kernel.

=========================  ==================================  ==========================================
                           Gemma 3 (SigLIP + projector)        Gemma 4 (its own encoder + embedder)
=========================  ==================================  ==========================================
resize                     to S x S (896), bilinear            keep the aspect ratio, sides multiples of
                                                               k*p, <= max_soft_tokens*k^2 patches; bicubic
pixel values               x/255, then (x - 0.5) / 0.5         x/255, then 2(x - 0.5) inside the tower
patches                    (c, kh, kw) order, a conv           (kh, kw, c) order, a linear
positions                  a learned table, one row per patch  two tables, x and y, summed; 2-D RoPE too
norms                      LayerNorm with bias, 2 per layer    RMSNorm gain w (no +1), 4 per layer (sandwich)
attention                  biases, scale Hd**-0.5              q/k RMSNorm + weightless v norm, scale 1.0
MLP                        fc1 -> tanh-GELU -> fc2, biases     gated tanh-GELU (gate, up, down), no biases
clipping                   none                                E2B/E4B: every projection clamps in and out
pooling                    k x k average to mm_tokens_per_img  k x k average by patch position, * sqrt(D)
after pooling              RMSNorm (1 + w), then @ W [D, Dt]   standardize (31B/26B), weightless RMSNorm, W.T
image token mask           bidirectional on every layer        bidirectional on sliding layers only, and only
                                                               with use_bidirectional_attention "vision"
=========================  ==================================  ==========================================

In both, soft tokens are NOT scaled by sqrt(Dt) like token embeddings, positions stay 0..T-1
(ordinary 1-D RoPE for image tokens too), and the window of sliding layers applies after the
bidirectional overlay. Gemma 3n's MobileNet tower and the audio towers are not run here.

Weights are read like the text model's: one layer at a time, as zero-copy views of the
memory-mapped file, converted a few rows at a time by ``linear``; a 27B's tower never sits
in float32 whole. Only safetensors is read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gemma_ref.config import read_config_json
from gemma_ref.errors import InputError
from gemma_ref.model import (
    gelu_tanh,
    linear,
    rms_norm,
    rms_norm_gemma4,
    rms_norm_unscaled,
    rotate_half,
)

f32 = np.float32

BILINEAR, BICUBIC = 2, 3  # PIL.Image.Resampling values, as processor configs store them
MAX_IMAGE_SIDE = 1 << 15  # an image side past this is no photo (Pillow's own limit is 2^31 pixels)
MAX_TOWER = {"hidden_size": 1 << 14, "intermediate_size": 1 << 16, "num_hidden_layers": 256,
             "num_attention_heads": 256, "image_size": 1 << 13, "patch_size": 1 << 10,
             "mm_tokens_per_image": 1 << 14, "position_embedding_size": 1 << 16, "pooling_kernel_size": 64,
             "max_soft_tokens": 1 << 14, "head_dim": 1 << 12}


# --- configuration -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocess:
    """How the released processor turns an image into pixel values (preprocessor_config.json)."""

    resample: int  # PIL filter: 2 bilinear (Gemma 3), 3 bicubic (Gemma 4)
    rescale_factor: float  # 1/255: uint8 to [0, 1]
    do_normalize: bool  # Gemma 3: (x - mean) / std; Gemma 4: no (the tower does 2(x - 0.5))
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    size: tuple[int, int] | None = None  # Gemma 3: (height, width) every image is resized to (896, 896)
    do_pan_and_scan: bool = False  # Gemma 3: extra crops of wide or tall images (off in the releases)
    pan_and_scan_min_crop_size: int = 256
    pan_and_scan_max_num_crops: int = 4
    pan_and_scan_min_ratio_to_activate: float = 1.2
    patch_size: int = 0  # Gemma 4: side of a patch in pixels (16)
    max_soft_tokens: int = 0  # Gemma 4: soft-token budget of one image (280; 70 ... 1120)
    pooling_kernel_size: int = 0  # Gemma 4: k, patches pooled k x k into one soft token (3)
    source: str = ""  # the file it was read from


@dataclass(frozen=True)
class VisionConfig:
    """A multimodal checkpoint's image path, resolved and validated (config.json + processor config)."""

    family: str  # "gemma3" (SigLIP + projector) or "gemma4"
    hidden_size: int  # D, the tower's width (1152 on Gemma 3 4B-27B and Gemma 4 26B/31B)
    intermediate_size: int  # F, the tower's MLP width (4304)
    num_hidden_layers: int  # tower layers (27)
    num_attention_heads: int  # tower heads (16)
    head_dim: int  # Hd (72)
    eps: float  # LayerNorm eps (Gemma 3, also its projector RMSNorm) or RMSNorm eps (Gemma 4)
    patch_size: int  # p: 14 (Gemma 3), 16 (Gemma 4)
    text_hidden_size: int  # Dt, the text model's width the soft tokens are projected to
    image_token_id: int  # the id of the image soft-token placeholder in the prompt
    boi_token_id: int  # begin-of-image (an ordinary text token: scaled embedding, causal)
    eoi_token_id: int  # end-of-image
    pad_token_id: int  # Gemma 4: image ids are looked up as this before their rows are replaced
    preprocess: Preprocess
    image_size: int = 0  # Gemma 3: S, the tower's input side (896)
    mm_tokens_per_image: int = 0  # Gemma 3: M (256)
    pooling_kernel_size: int = 0  # Gemma 4: k (3)
    position_embedding_size: int = 0  # Gemma 4: rows of each position table (10240)
    rope_theta: float = 100.0  # Gemma 4: base of the tower's 2-D RoPE
    standardize: bool = False  # Gemma 4 26B/31B: (soft - std_bias) * std_scale after pooling
    clipped: bool = False  # Gemma 4 E2B/E4B: use_clipped_linears
    bidirectional: str = "all"  # image blocks attend both ways on "all" layers (Gemma 3), "sliding" ones, or "none"
    source: str = field(default="", compare=False)

    @property
    def placeholder(self) -> str:
        """What a user writes in text where an image goes."""
        return "<start_of_image>" if self.family == "gemma3" else "<|image|>"

    @property
    def token_strings(self) -> tuple[str, str, str]:
        """(begin-of-image, image soft token, end-of-image) as the tokenizer spells them."""
        if self.family == "gemma3":
            return "<start_of_image>", "<image_soft_token>", "<end_of_image>"
        return "<|image>", "<|image|>", "<image|>"


def _int(d: dict[str, Any], key: str, where: str, default: int | None = None, minimum: int = 1) -> int:
    v = d.get(key)
    v = default if v is None else v  # null means "the default": real processor configs write pan_and_scan_*: null
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise InputError(f"{key} must be an integer >= {minimum}, got {v!r}", where)
    if key in MAX_TOWER and v > MAX_TOWER[key]:
        raise InputError(f"{key} is {v}, more than any Gemma vision tower could have (at most {MAX_TOWER[key]})", where)
    return v


def _float(d: dict[str, Any], key: str, where: str, default: float) -> float:
    v = d.get(key)
    v = default if v is None else v
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise InputError(f"{key} must be a positive number, got {v!r}", where)
    return float(v)


def _triple(d: dict[str, Any], key: str, where: str, default: float) -> tuple[float, float, float]:
    v = d.get(key)
    v = default if v is None else v
    v = [v] * 3 if isinstance(v, (int, float)) and not isinstance(v, bool) else v
    if (not isinstance(v, list) or len(v) != 3
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)):
        raise InputError(f"{key} must be a number or a list of 3 numbers, got {v!r}", where)
    return tuple(float(x) for x in v)  # type: ignore[return-value]


PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
MAX_PROCESSOR_BYTES = 1 << 20


def read_processor_config(model_dir: Path) -> tuple[dict[str, Any], str] | None:
    """The image processor's settings: preprocessor_config.json, or processor_config.json's image_processor."""
    for name in PROCESSOR_FILES:
        p = model_dir / name
        if not p.is_file():
            continue
        if p.stat().st_size > MAX_PROCESSOR_BYTES:
            raise InputError(f"{name} is {p.stat().st_size} bytes; a processor config is a few KB", p)
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{name} is not valid JSON: {e}", p) from None
        if isinstance(raw, dict) and isinstance(raw.get("image_processor"), dict):
            raw = raw["image_processor"]  # transformers 5 saves the processor's parts in one file
        if not isinstance(raw, dict):
            raise InputError(f"{name} must hold a JSON object", p)
        return raw, str(p)
    return None


def _preprocess(family: str, raw: dict[str, Any] | None, where: str) -> Preprocess:
    """The processor settings with transformers' class defaults for what the file leaves out."""
    d = raw or {}
    resample = d.get("resample", BILINEAR if family == "gemma3" else BICUBIC)
    if resample not in (BILINEAR, BICUBIC):
        raise InputError(f"resample {resample!r} is not supported (2 bilinear, 3 bicubic)", where)
    if d.get("do_resize", True) is not True or d.get("do_rescale", True) is not True:
        raise InputError("do_resize / do_rescale false: the released processors always resize and rescale", where)
    common = dict(resample=resample, rescale_factor=_float(d, "rescale_factor", where, 1 / 255), source=where,
                  do_normalize=bool(d.get("do_normalize", family == "gemma3")),
                  image_mean=_triple(d, "image_mean", where, 0.5 if family == "gemma3" else 0.0),
                  image_std=_triple(d, "image_std", where, 0.5 if family == "gemma3" else 1.0))
    if family == "gemma3":
        size = d.get("size", {"height": 224, "width": 224})  # transformers' class default, as it would run
        if not isinstance(size, dict):
            raise InputError(f"size must be an object with height and width, got {size!r}", where)
        h, w = _int(size, "height", where), _int(size, "width", where)
        if max(h, w) > MAX_IMAGE_SIDE:
            raise InputError(f"size {h}x{w} is larger than {MAX_IMAGE_SIDE} pixels a side", where)
        return Preprocess(**common, size=(h, w), do_pan_and_scan=bool(d.get("do_pan_and_scan") or False),
                          pan_and_scan_min_crop_size=_int(d, "pan_and_scan_min_crop_size", where, 256),
                          pan_and_scan_max_num_crops=_int(d, "pan_and_scan_max_num_crops", where, 4),
                          pan_and_scan_min_ratio_to_activate=_float(d, "pan_and_scan_min_ratio_to_activate", where, 1.2))
    tokens = _int(d, "max_soft_tokens", where, 280)
    if tokens not in (70, 140, 280, 560, 1120):
        raise InputError(f"max_soft_tokens {tokens} is not one of 70, 140, 280, 560, 1120 (transformers refuses it)", where)
    return Preprocess(**common, patch_size=_int(d, "patch_size", where, 16), max_soft_tokens=tokens,
                      pooling_kernel_size=_int(d, "pooling_kernel_size", where, 3))


def load_vision_config(model_dir: str | os.PathLike) -> VisionConfig | None:
    """The image path of a multimodal Gemma 3 / Gemma 4 checkpoint; None when it has no tower we run.

    Gemma 3n (MobileNet) and gemma4_unified (encoder-free) return None: their images are not verified.
    """
    raw, path = read_config_json(model_dir)
    where = str(path)
    mt = raw.get("model_type")
    vc = raw.get("vision_config")
    if mt not in ("gemma3", "gemma4") or not isinstance(vc, dict):
        return None
    text = raw.get("text_config") if isinstance(raw.get("text_config"), dict) else {}
    text_hidden = _int(text, "hidden_size", where, 2560 if mt == "gemma3" else None)
    found = read_processor_config(Path(model_dir))
    praw, psource = found if found else (None, "")
    if mt == "gemma3":
        # vision_use_head: SigLIP's pooling head, if saved, is never used (Gemma 3 reads last_hidden_state)
        act = vc.get("hidden_act", "gelu_pytorch_tanh")
        if act not in ("gelu_pytorch_tanh", "gelu_new", "gelu_fast"):
            raise InputError(f"vision hidden_act {act!r}: SigLIP in Gemma 3 uses the tanh GELU", where)
        D, heads = _int(vc, "hidden_size", where, 1152), _int(vc, "num_attention_heads", where, 16)
        if D % heads:
            raise InputError(f"vision hidden_size {D} is not a multiple of num_attention_heads {heads}", where)
        image_size, patch = _int(vc, "image_size", where, 896), _int(vc, "patch_size", where, 14)
        mm = _int(raw, "mm_tokens_per_image", where, 256)
        side, per_side = image_size // patch, math.isqrt(mm)
        if image_size % patch or per_side * per_side != mm or side % per_side:
            raise InputError(f"image_size {image_size}, patch_size {patch} and mm_tokens_per_image {mm} do not tile: "
                             f"{side}x{side} patches must pool evenly into a square of {mm} tokens", where)
        pp = _preprocess("gemma3", praw, psource or where)
        if pp.size != (image_size, image_size):
            hint = ("the processor config is missing: transformers resizes to 224x224 then" if not found
                    else "the processor and the tower disagree")
            raise InputError(f"the image processor resizes to {pp.size[0]}x{pp.size[1]} but the tower takes "
                             f"{image_size}x{image_size}", psource or where, hint=hint)
        return VisionConfig(
            family="gemma3", hidden_size=D, intermediate_size=_int(vc, "intermediate_size", where, 4304),
            num_hidden_layers=_int(vc, "num_hidden_layers", where, 27), num_attention_heads=heads, head_dim=D // heads,
            eps=_float(vc, "layer_norm_eps", where, 1e-6), patch_size=patch, text_hidden_size=text_hidden,
            image_token_id=_int(raw, "image_token_index", where, 262144, 0),
            boi_token_id=_int(raw, "boi_token_index", where, 255999, 0),
            eoi_token_id=_int(raw, "eoi_token_index", where, 256000, 0),
            pad_token_id=_int(text, "pad_token_id", where, 0, 0), preprocess=pp, image_size=image_size,
            mm_tokens_per_image=mm, bidirectional="all", source=where)
    act = vc.get("hidden_activation", "gelu_pytorch_tanh")
    if act != "gelu_pytorch_tanh":
        raise InputError(f"vision hidden_activation {act!r}: Gemma 4's tower uses the tanh GELU", where)
    if _int(vc, "num_key_value_heads", where, vc.get("num_attention_heads", 12)) != vc.get("num_attention_heads", 12):
        raise InputError("vision num_key_value_heads differs from num_attention_heads; Gemma 4's tower has none", where)
    rope = vc.get("rope_parameters") or {}
    if not isinstance(rope, dict) or rope.get("rope_type", "axial") != "axial":
        raise InputError(f"vision rope_parameters {rope!r}: Gemma 4's tower uses axial (2-D) RoPE", where)
    hd, k, patch = _int(vc, "head_dim", where, 64), _int(vc, "pooling_kernel_size", where, 3), _int(vc, "patch_size", where, 16)
    if hd % 4:
        raise InputError(f"vision head_dim {hd} must be a multiple of 4 (two axes, each rotated in halves)", where)
    pp = _preprocess("gemma4", praw, psource or where)
    if (pp.patch_size, pp.pooling_kernel_size) != (patch, k):
        raise InputError(f"the image processor cuts {pp.patch_size}-pixel patches pooled {pp.pooling_kernel_size}x"
                         f"{pp.pooling_kernel_size}, the tower expects {patch} and {k}", psource or where)
    bidi = text.get("use_bidirectional_attention")
    return VisionConfig(
        family="gemma4", hidden_size=_int(vc, "hidden_size", where, 768),
        intermediate_size=_int(vc, "intermediate_size", where, 3072),
        num_hidden_layers=_int(vc, "num_hidden_layers", where, 16),
        num_attention_heads=_int(vc, "num_attention_heads", where, 12), head_dim=hd,
        eps=_float(vc, "rms_norm_eps", where, 1e-6), patch_size=patch, text_hidden_size=text_hidden,
        image_token_id=_int(raw, "image_token_id", where, 258880, 0),
        boi_token_id=_int(raw, "boi_token_id", where, 255999, 0),
        eoi_token_id=_int(raw, "eoi_token_id", where, 258882, 0),
        pad_token_id=_int(text, "pad_token_id", where, 0, 0), preprocess=pp, pooling_kernel_size=k,
        position_embedding_size=_int(vc, "position_embedding_size", where, 10240),
        rope_theta=_float(rope, "rope_theta", where, 100.0), standardize=bool(vc.get("standardize", False)),
        clipped=bool(vc.get("use_clipped_linears", False)),
        bidirectional="sliding" if bidi == "vision" else "none", source=where)


# --- resizing exactly as Pillow does ------------------------------------------------------------------
#
# Pillow resamples uint8 images in two separable passes, each only when that side changes, horizontal
# first unless the height shrinks much more (vertical_first); each pass uses integer weights with 22
# fractional bits and rounds back to uint8. The processors resize with Pillow, so matching their pixels
# bit for bit means doing the same.


def _bilinear(x: float) -> float:
    x = -x if x < 0.0 else x
    return 1.0 - x if x < 1.0 else 0.0


def _bicubic(x: float) -> float:
    a = -0.5  # Pillow's (and Keys') a; written in Pillow's evaluation order for identical doubles
    x = -x if x < 0.0 else x
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def resample_weights(n_in: int, n_out: int, resample: int, antialias: bool = True) -> np.ndarray:
    """Pillow's fixed-point weights of one resize pass.  -> int64 [n_out, n_in], rows summing to ~2^22

    Shrinking widens the filter by the scale (antialiasing); each row's weights are normalised to
    sum 1 in double precision, then rounded half away from zero to 22 fractional bits.
    """
    filt, support = (_bilinear, 1.0) if resample == BILINEAR else (_bicubic, 2.0)
    scale = n_in / n_out
    fscale = max(scale, 1.0) if antialias else 1.0  # antialias=False: a port's bug (gemma_ref.bugs), never Pillow
    support *= fscale
    ss = 1.0 / fscale
    W = np.zeros((n_out, n_in), dtype=np.int64)
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)  # int() truncates toward zero, like C's cast
        hi = min(int(center + support + 0.5), n_in)
        w = [filt((x + lo - center + 0.5) * ss) for x in range(hi - lo)]
        total = 0.0
        for v in w:  # summed in order, as Pillow does (NumPy's pairwise sum rounds differently)
            total += v
        for x, v in enumerate(w):
            v = v / total if total != 0.0 else v
            W[i, lo + x] = int(v * (1 << 22) + (0.5 if v >= 0 else -0.5))  # C's (int) truncation
    return W


def resample_axis(img: np.ndarray, axis: int, n_out: int, resample: int) -> np.ndarray:
    """One Pillow pass along `axis` (0 rows, 1 columns).  uint8 [H, W, C] -> uint8 [.., n_out, .., C]"""
    W = resample_weights(img.shape[axis], n_out, resample)  # [n_out, n_in]
    x = np.moveaxis(img, axis, 0).astype(np.int64)  # [n_in, other, C]
    acc = np.tensordot(W, x, axes=(1, 0)) + (1 << 21)  # [n_out, other, C]: + 0.5 before the shift rounds
    out = np.clip(acc >> 22, 0, 255).astype(np.uint8)
    return np.moveaxis(out, 0, axis)


def vertical_first(h: int, w: int, height: int, width: int) -> bool:
    """Whether Pillow runs the vertical pass first: since Pillow 13 (PR #9549), when the height shrinks by more
    than twice as many pixels as the width; before, never. The passes round to uint8 in between, so the order
    moves some pixels by one level (0.04 in a tiny model's logits): goldens record the producer's pixels."""
    return height < h and (h - height) > 2 * (w - width)


def pil_resize(img: np.ndarray, height: int, width: int, resample: int) -> np.ndarray:
    """Image.resize((width, height), resample) on a uint8 RGB array, as Pillow 13 does it.  [H, W, 3] -> [height, width, 3]"""
    axes = [(1, width), (0, height)]  # horizontal pass first, as Pillow does unless the height shrinks much more
    if vertical_first(img.shape[0], img.shape[1], height, width):
        axes.reverse()
    for axis, n in axes:
        if img.shape[axis] != n:  # a side that keeps its size gets no pass at all
            img = resample_axis(img, axis, n, resample)
    return img


def check_image(img: Any, where: str = "image") -> np.ndarray:
    """A uint8 [H, W, 3] array, or an InputError saying what it is instead."""
    a = np.asarray(img)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or min(a.shape[:2]) < 1:
        raise InputError(f"{where} must be RGB pixels, uint8 [H, W, 3]; got {a.dtype} {list(a.shape)}")
    if max(a.shape[:2]) > MAX_IMAGE_SIDE:
        raise InputError(f"{where} is {a.shape[0]}x{a.shape[1]}: larger than {MAX_IMAGE_SIDE} pixels a side")
    return a


def rescale_normalize(img: np.ndarray, pp: Preprocess) -> np.ndarray:
    """uint8 to float32 as the processor does.  [H, W, 3] -> [3, H, W]"""
    x = (img.astype(np.float64) * pp.rescale_factor).astype(f32)  # float64 multiply, stored float32
    if pp.do_normalize:  # Gemma 3: (x - 0.5) / 0.5 per channel, in float32
        x = (x - np.asarray(pp.image_mean, dtype=f32)) / np.asarray(pp.image_std, dtype=f32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # channels first


# --- Gemma 3 preprocessing -------------------------------------------------------------------------------


def pan_and_scan(img: np.ndarray, pp: Preprocess) -> list[np.ndarray]:
    """Gemma 3's extra crops of a wide (or tall) image: 2..max crops side by side, or none.  -> [h, w, 3] each"""
    if not pp.do_pan_and_scan:
        return []
    h, w = img.shape[:2]
    long, short = (w, h) if w >= h else (h, w)
    if long / short < pp.pan_and_scan_min_ratio_to_activate:
        return []  # only clearly non-square images get crops
    n = int(math.floor(long / short + 0.5))  # crops close to the aspect ratio, rounded half up
    n = min(int(math.floor(long / pp.pan_and_scan_min_crop_size)), n)
    n = min(pp.pan_and_scan_max_num_crops, max(2, n))
    nw, nh = (n, 1) if w >= h else (1, n)
    cw, ch = int(math.ceil(w / nw)), int(math.ceil(h / nh))
    if min(cw, ch) < pp.pan_and_scan_min_crop_size:
        return []
    return [img[y:y + ch, x:x + cw] for y in range(0, ch * nh, ch) for x in range(0, cw * nw, cw)]


def gemma3_pixels(img: np.ndarray, pp: Preprocess) -> list[np.ndarray]:
    """An image (then its pan-and-scan crops) as the tower's input.  uint8 [H, W, 3] -> float32 [3, S, S] each"""
    S_h, S_w = pp.size
    return [rescale_normalize(pil_resize(view, S_h, S_w, pp.resample), pp) for view in [img] + pan_and_scan(img, pp)]


# --- Gemma 4 preprocessing -------------------------------------------------------------------------------


def gemma4_size(h: int, w: int, pp: Preprocess) -> tuple[int, int]:
    """The largest size keeping the aspect ratio within the patch budget, sides multiples of k*p."""
    p, k = pp.patch_size, pp.pooling_kernel_size
    max_patches = pp.max_soft_tokens * k * k
    factor = math.sqrt(max_patches * p * p / (h * w))
    side = k * p
    th, tw = int(math.floor(factor * h / side)) * side, int(math.floor(factor * w / side)) * side
    if th == 0 and tw == 0:
        raise InputError(f"a {h}x{w} image cannot be resized to a multiple of {side} pixels a side")
    longest = (max_patches // (k * k)) * side
    if th == 0:  # a very wide image: one row of pooled patches
        th, tw = side, min(int(math.floor(w / h)) * side, longest)
    elif tw == 0:
        tw, th = side, min(int(math.floor(h / w)) * side, longest)
    if th * tw > max_patches * p * p:
        raise InputError(f"a {h}x{w} image would need {th}x{tw} pixels, more than {max_patches} patches")
    return th, tw


def gemma4_patches(img: np.ndarray, pp: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """An image as Gemma 4's patches and their (x, y) grid positions.  uint8 [H, W, 3] -> [N, p*p*3], [N, 2]"""
    th, tw = gemma4_size(img.shape[0], img.shape[1], pp)
    if (th, tw) != img.shape[:2]:
        img = pil_resize(img, th, tw, pp.resample)  # small images are enlarged too
    x = rescale_normalize(img, pp)  # [3, th, tw] in [0, 1]: no mean/std (the tower maps to [-1, 1])
    p = pp.patch_size
    gh, gw = th // p, tw // p
    patches = x.reshape(3, gh, p, gw, p).transpose(1, 3, 2, 4, 0).reshape(gh * gw, p * p * 3)  # (kh, kw, c) order
    gx, gy = np.meshgrid(np.arange(gw), np.arange(gh), indexing="xy")
    positions = np.stack([gx, gy], axis=-1).reshape(gh * gw, 2)  # [N, 2]: (column, row), row-major
    return patches, positions.astype(np.int64)


def preprocess(image: np.ndarray, vc: VisionConfig) -> dict[str, np.ndarray]:
    """What transformers' processor feeds the model for one image (padding included, as it pads).

    Gemma 3: ``pixel_values`` float32 [1 + crops, 3, S, S]. Gemma 4: ``pixel_values`` float32
    [max_patches, p*p*3] (zeros past the image) and ``image_position_ids`` int64 [max_patches, 2] ((-1, -1) there).
    """
    img = check_image(image)
    if vc.family == "gemma3":
        return {"pixel_values": np.stack(gemma3_pixels(img, vc.preprocess))}
    patches, pos = gemma4_patches(img, vc.preprocess)
    pp = vc.preprocess
    n_max = pp.max_soft_tokens * pp.pooling_kernel_size ** 2
    pixels = np.zeros((n_max, patches.shape[1]), dtype=f32)
    positions = np.full((n_max, 2), -1, dtype=np.int64)
    pixels[:len(patches)], positions[:len(patches)] = patches, pos
    return {"pixel_values": pixels, "image_position_ids": positions}


def pixel_sha256(pixels: dict[str, np.ndarray]) -> str:
    """SHA-256 of the float32 pixel values (C order): equal hashes mean bit-identical preprocessing."""
    return hashlib.sha256(np.ascontiguousarray(pixels["pixel_values"], dtype=f32).tobytes()).hexdigest()


def soft_token_count(vc: VisionConfig, image: np.ndarray | dict) -> int:
    """How many image tokens one image becomes in the prompt (all its views, for Gemma 3 with pan-and-scan).

    `image`: uint8 [H, W, 3], or its pixels as ``preprocess`` gives them.
    """
    if isinstance(image, dict):
        if vc.family == "gemma3":
            return vc.mm_tokens_per_image * int(image["pixel_values"].shape[0])
        return int((image["image_position_ids"][:, 0] >= 0).sum()) // vc.pooling_kernel_size ** 2
    img = check_image(image)
    if vc.family == "gemma3":
        return vc.mm_tokens_per_image * (1 + len(pan_and_scan(img, vc.preprocess)))
    th, tw = gemma4_size(img.shape[0], img.shape[1], vc.preprocess)
    return (th // vc.patch_size) * (tw // vc.patch_size) // vc.pooling_kernel_size ** 2


def image_runs(vc: VisionConfig, image: np.ndarray | dict) -> list[int]:
    """The lengths of the runs of image tokens one image becomes (Gemma 3 with crops: one run per view)."""
    n = soft_token_count(vc, image)
    if vc.family == "gemma3":
        return [vc.mm_tokens_per_image] * (n // vc.mm_tokens_per_image)
    return [n]


def expand_placeholders(text: str, images: list[np.ndarray], vc: VisionConfig) -> str:
    """The prompt text as the processor expands it: each placeholder becomes its image's token sequence."""
    n = text.count(vc.placeholder)
    if n != len(images):
        raise InputError(f"the text holds {n} image placeholder(s) {vc.placeholder!r} but {len(images)} image(s) "
                         "were given; put one placeholder where each image goes")
    boi, tok, eoi = vc.token_strings
    parts = text.split(vc.placeholder)
    out = [parts[0]]
    for img, rest in zip(images, parts[1:]):
        if vc.family == "gemma3":
            seq = f"\n\n{boi}{tok * vc.mm_tokens_per_image}{eoi}\n\n"  # Gemma3Processor.full_image_sequence
            crops = soft_token_count(vc, img) // vc.mm_tokens_per_image - 1
            out.append(seq if not crops else
                       f"Here is the original image {seq} and here are some crops to help you see better "
                       + " ".join([seq] * crops))
        else:
            out.append(f"{boi}{tok * soft_token_count(vc, img)}{eoi}")
        out.append(rest)
    return "".join(out)


def added_tokens(vc: VisionConfig) -> dict[str, int]:
    """The image markers as single ids, for Tokenizer.add_tokens (Gemma 3's image token is past tokenizer.model)."""
    boi, tok, eoi = vc.token_strings
    return {boi: vc.boi_token_id, tok: vc.image_token_id, eoi: vc.eoi_token_id}


def image_token_types(ids: np.ndarray, vc: VisionConfig) -> np.ndarray:
    """token_type_ids (Gemma 3) / mm_token_type_ids (Gemma 4) for text and images.  [T] -> int64 [T], 1 at image tokens"""
    return (np.asarray(ids) == vc.image_token_id).astype(np.int64)


def image_blocks(ids: np.ndarray, vc: VisionConfig) -> np.ndarray:
    """Each position's image block: maximal runs of image tokens numbered 0, 1, ...; -1 outside.  [T] -> [T]

    A block is what attends bidirectionally; boi / eoi are ordinary text tokens outside it.
    """
    is_img = np.asarray(ids) == vc.image_token_id  # [T]
    starts = is_img & ~np.concatenate([[False], is_img[:-1]])  # first token of each run
    return np.where(is_img, np.cumsum(starts) - 1, -1)


def runs(ids: np.ndarray, vc: VisionConfig) -> list[int]:
    """Lengths of the runs of image tokens in a prompt, in order."""
    b = image_blocks(ids, vc)
    return [int(n) for n in np.bincount(b[b >= 0])] if (b >= 0).any() else []


# --- the towers' weights -----------------------------------------------------------------------------------


TOWER_PREFIXES = {"gemma3": ("vision_tower.vision_model.", "model.vision_tower.vision_model.", "vision_tower.",
                             "model.vision_tower."),
                  "gemma4": ("model.vision_tower.", "vision_tower.")}
PROJECTOR_PREFIXES = {"gemma3": ("multi_modal_projector.", "model.multi_modal_projector."),
                      "gemma4": ("model.embed_vision.", "embed_vision.")}


def tower_shapes(vc: VisionConfig) -> dict[str, tuple[int, ...]]:
    """Name (after the tower prefix) -> shape, for every tensor the tower needs."""
    D, F, p = vc.hidden_size, vc.intermediate_size, vc.patch_size
    if vc.family == "gemma3":
        N = (vc.image_size // p) ** 2
        shapes = {"embeddings.patch_embedding.weight": (D, 3, p, p), "embeddings.patch_embedding.bias": (D,),
                  "embeddings.position_embedding.weight": (N, D),
                  "post_layernorm.weight": (D,), "post_layernorm.bias": (D,)}
        for i in range(vc.num_hidden_layers):
            q = f"encoder.layers.{i}."
            for n in ("layer_norm1", "layer_norm2"):
                shapes[q + n + ".weight"] = shapes[q + n + ".bias"] = (D,)
            for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
                shapes[f"{q}self_attn.{n}.weight"], shapes[f"{q}self_attn.{n}.bias"] = (D, D), (D,)
            shapes.update({q + "mlp.fc1.weight": (F, D), q + "mlp.fc1.bias": (F,),
                           q + "mlp.fc2.weight": (D, F), q + "mlp.fc2.bias": (D,)})
        return shapes
    H, Hd = vc.num_attention_heads, vc.head_dim
    shapes = {"patch_embedder.input_proj.weight": (D, 3 * p * p),
              "patch_embedder.position_embedding_table": (2, vc.position_embedding_size, D)}
    if vc.standardize:
        shapes["std_bias"] = shapes["std_scale"] = (D,)
    for i in range(vc.num_hidden_layers):
        q = f"encoder.layers.{i}."
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"):
            shapes[f"{q}{n}.weight"] = (D,)
        shapes[q + "self_attn.q_norm.weight"] = shapes[q + "self_attn.k_norm.weight"] = (Hd,)
        for n, shape in (("self_attn.q_proj", (H * Hd, D)), ("self_attn.k_proj", (H * Hd, D)),
                         ("self_attn.v_proj", (H * Hd, D)), ("self_attn.o_proj", (D, H * Hd)),
                         ("mlp.gate_proj", (F, D)), ("mlp.up_proj", (F, D)), ("mlp.down_proj", (D, F))):
            shapes[f"{q}{n}.linear.weight"] = shape
            if vc.clipped:
                for c in ("input_min", "input_max", "output_min", "output_max"):
                    shapes[f"{q}{n}.{c}"] = ()
    return shapes


def projector_shapes(vc: VisionConfig) -> dict[str, tuple[int, ...]]:
    if vc.family == "gemma3":
        return {"mm_soft_emb_norm.weight": (vc.hidden_size,),
                "mm_input_projection_weight": (vc.hidden_size, vc.text_hidden_size)}  # [D, Dt]: used as stored
    return {"embedding_projection.weight": (vc.text_hidden_size, vc.hidden_size)}  # a Linear: [Dt, D]


class TowerWeights:
    """The vision tower's and projector's tensors of an open checkpoint (model.Weights), read per layer."""

    def __init__(self, weights: Any, vc: VisionConfig):
        self.weights, self.vc = weights, vc
        adapter = getattr(weights, "adapter", None)  # adapters.AdaptedWeights: its LoRAs apply to the text model only
        adapted = [m for m in (adapter.skipped if adapter is not None else [])
                   if any(t in m for t in ("vision_tower", "vision_model", "multi_modal_projector", "embed_vision",
                                           "vision_embedder"))]
        if adapted:
            raise InputError(f"the adapter adapts {len(adapted)} module(s) of the vision tower (e.g. "
                             f"{adapted[0]!r}), which gemma_ref does not apply: its image prompts cannot be "
                             "verified", hint="merge the adapter into the base (gemma-release export --merge), or "
                                              "verify with text-only prompts")
        names = weights.infos
        self.tower_prefix = _find_prefix(names, TOWER_PREFIXES[vc.family], tower_shapes(vc), "vision tower", weights.dir)
        self.proj_prefix = _find_prefix(names, PROJECTOR_PREFIXES[vc.family], projector_shapes(vc), "projector",
                                        weights.dir)
        problems = []
        for prefix, shapes in ((self.tower_prefix, tower_shapes(vc)), (self.proj_prefix, projector_shapes(vc))):
            for rel, shape in shapes.items():
                info = names.get(prefix + rel)
                if info is None:
                    problems.append(f"tensor {prefix + rel!r} is missing")
                elif tuple(info.shape) != shape:
                    problems.append(f"tensor {prefix + rel!r} has shape {list(info.shape)}, the config implies {list(shape)}")
                elif info.dtype not in ("BF16", "F16", "F32"):
                    problems.append(f"tensor {prefix + rel!r} is stored as {info.dtype}; expected BF16, F16 or F32")
        if problems:
            more = f" (and {len(problems) - 6} more)" if len(problems) > 6 else ""
            raise InputError("the vision tower does not fit config.json: " + "; ".join(problems[:6]) + more, weights.dir)

    def names(self) -> list[str]:
        """Full names of every tensor the image path reads."""
        return ([self.tower_prefix + r for r in tower_shapes(self.vc)]
                + [self.proj_prefix + r for r in projector_shapes(self.vc)])

    def matrix(self, rel: str) -> np.ndarray:
        """A tower weight as stored (bf16/f16/f32 view of the file), for ``linear``."""
        return self.weights.stored(self.tower_prefix + rel)

    def vector(self, rel: str) -> np.ndarray:
        """A small tower tensor in float32."""
        return np.array(self.weights.stored(self.tower_prefix + rel), dtype=f32)

    def layer(self, i: int) -> dict[str, np.ndarray]:
        """Layer i's tensors keyed by their name inside the layer: matrices as stored, the rest float32."""
        q = f"encoder.layers.{i}."
        return {rel[len(q):]: (self.matrix(rel) if len(shape) >= 2 else self.vector(rel))
                for rel, shape in tower_shapes(self.vc).items() if rel.startswith(q)}

    def projector(self, rel: str) -> np.ndarray:
        return self.weights.stored(self.proj_prefix + rel)


def _find_prefix(names: dict, prefixes: tuple[str, ...], shapes: dict, what: str, where: Any) -> str:
    probe = next(iter(shapes))
    for prefix in prefixes:
        if prefix + probe in names:
            return prefix
    raise InputError(f"no {what} tensors found (looked for " + ", ".join(repr(p + probe) for p in prefixes) + ")",
                     where, hint="config.json has a vision_config, but the weights hold no tower")


# --- SigLIP (Gemma 3) ------------------------------------------------------------------------------------


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm with bias, biased variance.  [..., D] -> [..., D]"""
    mu = np.mean(x, axis=-1, keepdims=True)
    xc = x - mu
    var = np.mean(xc * xc, axis=-1, keepdims=True)  # biased (divides by D), as torch's layer_norm
    return xc / np.sqrt(var + f32(eps)) * w + b


def siglip_embed(px: np.ndarray, tw: TowerWeights) -> np.ndarray:
    """A 14x14-stride conv as a matmul, plus a learned position per patch.  [3, S, S] -> [N, D]"""
    p = tw.vc.patch_size
    g = px.shape[1] // p  # patches per side (64)
    patches = px.reshape(3, g, p, g, p).transpose(1, 3, 0, 2, 4).reshape(g * g, 3 * p * p)  # [N, 3*p*p]: (c, kh, kw)
    conv = tw.matrix("embeddings.patch_embedding.weight")  # [D, 3, p, p]
    h = linear(patches, conv.reshape(conv.shape[0], -1)) + tw.vector("embeddings.patch_embedding.bias")  # [N, D]
    return h + np.asarray(tw.matrix("embeddings.position_embedding.weight"), dtype=f32)  # [N, D]: row i for patch i


def full_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, rows: int = 512) -> np.ndarray:
    """Every query sees every key (no mask), in blocks of query rows.  [H, N, Hd] x3 -> [N, H*Hd]

    All 4096 x 4096 scores of 16 heads would be 1 GiB of float32; 512 rows at a time are 128 MiB, in one
    buffer the softmax works in place (a fresh array per step cost the tower 1.6x the time and 2.2x the memory).
    """
    H, N, Hd = q.shape
    out = np.empty((N, H * Hd), dtype=f32)
    kT = k.transpose(0, 2, 1)  # [H, Hd, N]
    buf = np.empty((H, min(rows, N), N), dtype=f32)
    for a in range(0, N, rows):
        s = buf[:, :min(rows, N - a)]  # [H, n, N]
        np.matmul(q[:, a:a + rows], kT, out=s)
        s *= f32(scale)  # after the product, as transformers rounds it
        s -= s.max(axis=-1, keepdims=True)  # softmax, in place: the same operations as model.softmax
        np.exp(s, out=s)
        s /= s.sum(axis=-1, keepdims=True)
        out[a:a + rows] = (s @ v).transpose(1, 0, 2).reshape(-1, H * Hd)  # [H, n, Hd] -> [n, H*Hd]
    return out


def siglip_attention(x: np.ndarray, w: dict[str, np.ndarray], vc: VisionConfig) -> np.ndarray:
    """Multi-head self-attention with biases, scale Hd**-0.5, no mask, no RoPE.  [N, D] -> [N, D]"""
    N, H, Hd = x.shape[0], vc.num_attention_heads, vc.head_dim

    def heads(name: str) -> np.ndarray:  # [N, D] -> [H, N, Hd]
        return (linear(x, w[f"self_attn.{name}.weight"]) + w[f"self_attn.{name}.bias"]).reshape(N, H, Hd).transpose(1, 0, 2)

    out = full_attention(heads("q_proj"), heads("k_proj"), heads("v_proj"), Hd ** -0.5)  # [N, D]
    return linear(out, w["self_attn.out_proj.weight"]) + w["self_attn.out_proj.bias"]


def siglip_layer(h: np.ndarray, w: dict[str, np.ndarray], vc: VisionConfig) -> np.ndarray:
    """A pre-norm encoder layer: LayerNorm, attention, residual; LayerNorm, MLP, residual.  [N, D] -> [N, D]"""
    h = h + siglip_attention(layer_norm(h, w["layer_norm1.weight"], w["layer_norm1.bias"], vc.eps), w, vc)
    x = layer_norm(h, w["layer_norm2.weight"], w["layer_norm2.bias"], vc.eps)
    m = gelu_tanh(linear(x, w["mlp.fc1.weight"]) + w["mlp.fc1.bias"])  # [N, F]: SigLIP's tanh GELU (config default)
    return h + linear(m, w["mlp.fc2.weight"]) + w["mlp.fc2.bias"]  # [N, D]


def siglip_tower(px: np.ndarray, tw: TowerWeights, observe: Callable | None = None) -> np.ndarray:
    """SigLIP's encoder on one image.  [3, S, S] -> [N, D] (after post_layernorm)

    `observe(name, h)` sees each hidden state as the tower's output_hidden_states lists them: hidden_states.0 the
    embeddings, hidden_states.{i+1} layer i's output (before post_layernorm).
    """
    vc = tw.vc
    h = siglip_embed(px, tw)  # [N, D]
    if observe:
        observe("hidden_states.0", h)
    for i in range(vc.num_hidden_layers):
        h = siglip_layer(h, tw.layer(i), vc)
        if observe:
            observe(f"hidden_states.{i + 1}", h)
    return layer_norm(h, tw.vector("post_layernorm.weight"), tw.vector("post_layernorm.bias"), vc.eps)


def gemma3_project(h: np.ndarray, tw: TowerWeights) -> np.ndarray:
    """The projector: k x k average pooling, RMSNorm (1 + w), projection to the text width.  [N, D] -> [M, Dt]"""
    vc = tw.vc
    g, m = vc.image_size // vc.patch_size, math.isqrt(vc.mm_tokens_per_image)  # 64 patches, 16 tokens a side
    k = g // m  # 4: each soft token averages a 4 x 4 square of patches
    grid = h.reshape(g, g, -1)  # [rows, cols, D]: patches are row-major
    pooled = grid.reshape(m, k, m, k, -1).mean(axis=(1, 3), dtype=f32).reshape(m * m, -1)  # [M, D], row-major squares
    normed = rms_norm(pooled, np.asarray(tw.projector("mm_soft_emb_norm.weight"), dtype=f32), vc.eps)  # Gemma's 1 + w
    W = tw.projector("mm_input_projection_weight")  # [D, Dt]: a raw parameter, NOT a Linear: used as stored
    return linear(normed, W.T)  # [M, D] @ [D, Dt] -> [M, Dt]; the soft tokens are not scaled by sqrt(Dt)


# --- Gemma 4's vision encoder ---------------------------------------------------------------------------------


def clipped_linear(x: np.ndarray, w: dict[str, np.ndarray], name: str, clipped: bool) -> np.ndarray:
    """A projection that E2B/E4B clamp on the way in and out (scalars stored beside it).  [n, in] -> [n, out]"""
    if clipped:
        x = np.clip(x, w[name + ".input_min"], w[name + ".input_max"])
    y = linear(x, w[name + ".linear.weight"])
    return np.clip(y, w[name + ".output_min"], w[name + ".output_max"]) if clipped else y


def gemma4_embed(patches: np.ndarray, positions: np.ndarray, tw: TowerWeights) -> np.ndarray:
    """Patches projected, plus an x and a y position embedding.  [N, p*p*3], [N, 2] -> [N, D]"""
    h = linear(f32(2.0) * (patches - f32(0.5)), tw.matrix("patch_embedder.input_proj.weight"))  # [0,1] -> [-1,1], [N, D]
    table = tw.matrix("patch_embedder.position_embedding_table")  # [2, P, D]: x table, y table
    return h + (np.asarray(table[0][positions[:, 0]], dtype=f32) + np.asarray(table[1][positions[:, 1]], dtype=f32))


def vision_rope(positions: np.ndarray, vc: VisionConfig) -> tuple[np.ndarray, np.ndarray]:
    """2-D RoPE tables: the first half of each head turns with x, the second with y.  [N, 2] -> [N, Hd] x2"""
    half = vc.head_dim // 2  # each axis gets Hd/2 lanes, rotated in halves of its own
    exponents = np.arange(0, half, 2, dtype=np.int64).astype(f32) / f32(half)  # [Hd/4]
    inv = f32(1.0) / (np.float64(f32(vc.rope_theta)) ** exponents.astype(np.float64)).astype(f32)  # [Hd/4], base 100
    ax = positions[:, 0].astype(f32)[:, None] * inv  # [N, Hd/4], x angles
    ay = positions[:, 1].astype(f32)[:, None] * inv  # [N, Hd/4], y angles
    angles = np.concatenate([ax, ax, ay, ay], axis=-1)  # [N, Hd]: x-x-y-y, each pair of quarters one rotation
    return np.cos(angles), np.sin(angles)


def rope_2d(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate the x half and the y half of every head separately.  [H, N, Hd] -> [H, N, Hd]"""
    half = x.shape[-1] // 2
    parts = [x[..., :half] * cos[:, :half] + rotate_half(x[..., :half]) * sin[:, :half],
             x[..., half:] * cos[:, half:] + rotate_half(x[..., half:]) * sin[:, half:]]  # rotate_half within each half
    return np.concatenate(parts, axis=-1)


def value_norm(v: np.ndarray, eps: float) -> np.ndarray:
    """Gemma 4's weightless v_norm, as in the text model.  [H, N, Hd] -> [H, N, Hd]"""
    return rms_norm_unscaled(v, eps)


def gemma4_vision_attention(x: np.ndarray, w: dict[str, np.ndarray], vc: VisionConfig, cos: np.ndarray,
                            sin: np.ndarray) -> np.ndarray:
    """All-to-all attention among an image's patches, Gemma 4 style.  [N, D] -> [N, D]

    Padding patches are never computed here (the processor pads to max_patches; transformers
    masks them as keys and zeroes their outputs before pooling, which leaves the rest unchanged).
    """
    N, H, Hd, eps, c = x.shape[0], vc.num_attention_heads, vc.head_dim, vc.eps, vc.clipped

    def heads(name: str) -> np.ndarray:  # [N, D] -> [H, N, Hd]
        return clipped_linear(x, w, f"self_attn.{name}", c).reshape(N, H, Hd).transpose(1, 0, 2)

    q = rope_2d(rms_norm_gemma4(heads("q_proj"), w["self_attn.q_norm.weight"], eps), cos, sin)  # [H, N, Hd]
    k = rope_2d(rms_norm_gemma4(heads("k_proj"), w["self_attn.k_norm.weight"], eps), cos, sin)
    v = value_norm(heads("v_proj"), eps)  # [H, N, Hd]
    out = full_attention(q, k, v, 1.0)  # [N, H*Hd]: scale 1.0, the q/k norms carry the temperature
    return clipped_linear(out, w, "self_attn.o_proj", c)


def gemma4_vision_layer(h: np.ndarray, w: dict[str, np.ndarray], vc: VisionConfig, cos: np.ndarray,
                        sin: np.ndarray) -> np.ndarray:
    """A sandwich-norm encoder layer (gain w, no +1).  [N, D] -> [N, D]"""
    eps, c = vc.eps, vc.clipped
    a = gemma4_vision_attention(rms_norm_gemma4(h, w["input_layernorm.weight"], eps), w, vc, cos, sin)
    h = h + rms_norm_gemma4(a, w["post_attention_layernorm.weight"], eps)
    x = rms_norm_gemma4(h, w["pre_feedforward_layernorm.weight"], eps)
    m = clipped_linear(gelu_tanh(clipped_linear(x, w, "mlp.gate_proj", c)) * clipped_linear(x, w, "mlp.up_proj", c),
                       w, "mlp.down_proj", c)  # [N, F] -> [N, D]
    return h + rms_norm_gemma4(m, w["post_feedforward_layernorm.weight"], eps)


def gemma4_pool(h: np.ndarray, positions: np.ndarray, vc: VisionConfig) -> np.ndarray:
    """Average each k x k square of patches into one soft token, scaled by sqrt(D).  [N, D], [N, 2] -> [N/k^2, D]"""
    k = vc.pooling_kernel_size
    cols = int(positions[:, 0].max()) + 1  # patches per row
    slot = positions[:, 0] // k + (cols // k) * (positions[:, 1] // k)  # [N]: row-major squares
    pooled = np.zeros((int(slot.max()) + 1, h.shape[1]), dtype=f32)
    np.add.at(pooled, slot, h * f32(1.0 / (k * k)))  # [M, D]
    return pooled * f32(vc.hidden_size ** 0.5)  # transformers scales in float32 here, before standardize


def gemma4_tower(patches: np.ndarray, positions: np.ndarray, tw: TowerWeights,
                 observe: Callable | None = None) -> np.ndarray:
    """Gemma 4's encoder and pooler on one image's real patches.  [N, p*p*3], [N, 2] -> [M, D]"""
    vc = tw.vc
    h = gemma4_embed(patches, positions, tw)  # [N, D]
    if observe:
        observe("hidden_states.0", h)
    cos, sin = vision_rope(positions, vc)  # [N, Hd] each
    for i in range(vc.num_hidden_layers):
        h = gemma4_vision_layer(h, tw.layer(i), vc, cos, sin)
        if observe:
            observe(f"hidden_states.{i + 1}", h)
    soft = gemma4_pool(h, positions, vc)  # [M, D]
    if vc.standardize:  # 26B/31B: a fixed affine map learned for the projector's input
        soft = (soft - tw.vector("std_bias")) * tw.vector("std_scale")
    return soft


def gemma4_project(soft: np.ndarray, tw: TowerWeights) -> np.ndarray:
    """The embedder: weightless RMSNorm, then a Linear to the text width.  [M, D] -> [M, Dt]"""
    return linear(rms_norm_unscaled(soft, tw.vc.eps), tw.projector("embedding_projection.weight"))


# --- images to soft tokens ---------------------------------------------------------------------------------------


def check_pixels(pixels: dict, vc: VisionConfig) -> dict[str, np.ndarray]:
    """Preprocessed pixels (as ``preprocess`` gives them, or a golden recorded them), checked against the tower."""
    px = np.asarray(pixels.get("pixel_values"))
    if vc.family == "gemma3":
        S = vc.image_size
        if px.dtype != f32 or px.ndim != 4 or px.shape[1:] != (3, S, S) or px.shape[0] < 1:
            raise InputError(f"pixel_values must be float32 [views, 3, {S}, {S}] for this tower, got {px.dtype} "
                             f"{list(px.shape)}")
        return {"pixel_values": px}
    pos = np.asarray(pixels.get("image_position_ids"))
    width, k = 3 * vc.patch_size ** 2, vc.pooling_kernel_size
    if px.dtype != f32 or px.ndim != 2 or px.shape[1] != width or pos.shape != (px.shape[0], 2) or pos.dtype.kind != "i":
        raise InputError(f"pixel_values must be float32 [patches, {width}] with image_position_ids int [patches, 2]; "
                         f"got {px.dtype} {list(px.shape)} and {pos.dtype} {list(pos.shape)}")
    real = pos[:, 0] >= 0
    xy = pos[real]
    if (not real.any() or (pos[~real] != -1).any() or xy.min() < 0 or xy.max() >= vc.position_embedding_size
            or real.sum() % (k * k) or (xy[:, 0].max() + 1) % k or (xy[:, 1].max() + 1) % k):
        raise InputError(f"image_position_ids do not describe a grid of patches pooling {k}x{k} within the "
                         f"position table ({vc.position_embedding_size})")
    return {"pixel_values": px[real], "image_position_ids": xy.astype(np.int64)}  # padding dropped


def image_soft_tokens(image: np.ndarray | dict, tw: TowerWeights, observe: Callable | None = None) -> np.ndarray:
    """One image (all its views) to the soft tokens that replace its image tokens.  -> [n, Dt]

    `image`: uint8 [H, W, 3] (preprocessed here), or pixels already preprocessed (a dict as ``preprocess``
    returns; a golden records the producer's, so the tower is checked apart from the resizing).
    """
    vc = tw.vc
    pixels = check_pixels(image if isinstance(image, dict) else preprocess(image, vc), vc)
    if vc.family == "gemma3":
        soft = np.concatenate([gemma3_project(siglip_tower(px, tw, observe), tw)  # [M, Dt] per view
                               for px in pixels["pixel_values"]])
    else:
        patches, positions = pixels["pixel_values"], pixels["image_position_ids"]  # real patches only: no padding
        soft = gemma4_project(gemma4_tower(patches, positions, tw, observe), tw)
    if observe:
        observe("soft_tokens", soft)
    return soft


@dataclass
class ImageTokens:
    """What one prompt's images change in the text forward pass (model.forward's ``images``)."""

    rows: np.ndarray  # int64 [n]: the positions of the image tokens, in order
    values: np.ndarray  # float32 [n, Dt]: the soft tokens that replace their embeddings (unscaled)
    blocks: np.ndarray | None  # int64 [T]: image block of each position (-1 text), or None: causal everywhere
    block_layers: str  # which layers see blocks bidirectionally: "all" (Gemma 3) or "sliding" (Gemma 4)
    pad_token_id: int  # the id looked up for image tokens before their rows are replaced

    def chunk_end(self, start: int, stop: int) -> int:
        """`stop` moved back (or on, for a longer image) so that no image block is cut: a chunked forward's boundary."""
        if self.blocks is None or stop >= len(self.blocks) or self.blocks[stop] < 0 or self.blocks[stop - 1] != self.blocks[stop]:
            return stop
        inside = np.flatnonzero(self.blocks == self.blocks[stop])
        return int(inside[0]) if inside[0] > start else int(inside[-1]) + 1  # before the image, or past it

    def window(self, start: int, stop: int) -> "ImageTokens":
        """The part for positions start..stop-1 (rows relative to start; blocks stay absolute, as attention reads them)."""
        keep = (self.rows >= start) & (self.rows < stop)
        return ImageTokens(self.rows[keep] - start, self.values[keep], self.blocks, self.block_layers, self.pad_token_id)


def check_prompt_images(ids: np.ndarray, images: list, vc: VisionConfig) -> None:
    """The prompt's runs of image tokens must be exactly the images' (count and lengths), as transformers demands."""
    have, want = runs(ids, vc), [n for img in images for n in image_runs(vc, img)]
    if have != want:
        raise InputError(f"the prompt's image tokens (id {vc.image_token_id}) form runs of {have or 'none'}, but its "
                         f"{len(images)} image(s) need runs of {want or 'none'}",
                         hint=f"write {vc.placeholder!r} in text prompts (it is expanded), or give ids with each "
                              "image's tokens already expanded")


def prompt_image_tokens(ids: np.ndarray, images: list, tw: TowerWeights,
                        observe: Callable | None = None) -> ImageTokens:
    """Soft tokens and attention blocks for one prompt and its images (in prompt order; uint8 or pixel dicts)."""
    vc = tw.vc
    check_prompt_images(ids, images, vc)
    values = np.concatenate([image_soft_tokens(img, tw, observe) for img in images])  # [n, Dt]
    blocks = image_blocks(ids, vc) if vc.bidirectional != "none" else None
    return ImageTokens(rows=np.flatnonzero(np.asarray(ids) == vc.image_token_id), values=values.astype(f32),
                       blocks=blocks, block_layers=vc.bidirectional, pad_token_id=vc.pad_token_id)

