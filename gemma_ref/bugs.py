"""The known Gemma port bugs, as switches beside model.py: each swaps one small function or config field.

model.py has no flags for them. A bug is switched on by temporarily replacing one function of
``gemma_ref.model`` (its functions look each other up by module attribute at call time) or by
running with one config field changed::

    with switched(["gelu_exact"], cfg) as bad_cfg:
        logits = M.forward(weights, bad_cfg, [ids])

Switches compose (``switched(["norm_no_plus_one", "gelu_exact"], cfg)``): each wraps the function
as it finds it. Not thread-safe: the swap is module-wide for the duration of the ``with``.

Ids are stable (tests, docs/architecture.md and ``gemma-release diagnose`` use them).
"""

from __future__ import annotations

import contextlib
import math
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import gemma_ref.model as M
from gemma_ref.config import SLIDING, GemmaConfig

f32 = np.float32
R = dataclasses.replace

Patch = Callable[[GemmaConfig], dict[str, Callable[[Callable], Callable]]]  # cfg -> {model function: wrap(orig)}


@dataclass(frozen=True)
class Bug:
    """One known port bug: what it is, where it applies, how to switch it on."""

    id: str
    what: str  # what the buggy port does
    applies: Callable[[GemmaConfig], bool]  # the config has the feature the bug gets wrong
    edit_config: Callable[[GemmaConfig], GemmaConfig] | None = None
    patch: Patch | None = None  # model functions to wrap: name -> (original -> replacement); "vision.f": vision.py's
    drops_bos: bool = False  # bos_missing: the ids change, not the model
    vision: Callable[[Any], bool] | None = None  # an image-path bug: applies to a vision.VisionConfig, not the text


class _Override:
    """A layer's weights with some tensors replaced (a read-only view; the real mapping is untouched)."""

    def __init__(self, w: Any, **over: np.ndarray):
        self._w, self._over = w, over

    def __getitem__(self, key: str) -> np.ndarray:
        return self._over[key] if key in self._over else self._w[key]

    def __contains__(self, key: object) -> bool:
        return key in self._over or key in self._w

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default  # noqa: SIM401  (no Mapping base: keep it minimal)

    def keys(self):
        return set(self._w.keys()) | set(self._over)


def _gen4(c: GemmaConfig) -> bool:
    return c.generation >= 4 or bool(c.altup_num_inputs)  # Gemma 4 and 3n share gain-w norms and Gemma 4 attention


def _old(c: GemmaConfig) -> bool:
    return not _gen4(c)


def _inv_rms(x: np.ndarray, eps: float) -> np.ndarray:
    return 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + f32(eps))


# --- the replacements ------------------------------------------------------------------------------


def _norm_gain(extra: float) -> Callable[[Callable], Callable]:
    """An RMSNorm whose gain is (extra + w) instead of the right one."""
    return lambda orig: (lambda x, w, eps: x * _inv_rms(x, eps) * (f32(extra) + w))


# math.erf, vectorised: correctly rounded in float64 by the C library, so rounding to float32 matches torch's
# erf; NumPy has no erf of its own, and a rational approximation would be one more thing to get wrong here.
_erf = np.frompyfunc(math.erf, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    """Error function, element-wise, in float64."""
    return _erf(np.asarray(x, dtype=np.float64)).astype(np.float64)


def _gelu_exact(orig: Callable) -> Callable:
    return lambda x: (f32(0.5) * x * (f32(1.0) + erf(x / f32(np.sqrt(2.0))).astype(f32))).astype(f32)


def _embed_scaled_by(scale: Callable[[GemmaConfig], float]) -> Callable[[Callable], Callable]:
    return lambda orig: (lambda weights, ids, cfg: weights.embedding_rows(ids) * f32(scale(cfg)))


def _bf16(v: float) -> float:
    import ml_dtypes

    return float(np.asarray(v, dtype=np.float32).astype(ml_dtypes.bfloat16).astype(np.float32))


def _rotate_interleaved(orig: Callable) -> Callable:
    def rotate(x: np.ndarray) -> np.ndarray:
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return np.stack([-x2, x1], axis=-1).reshape(x.shape)  # pairs (0,1), (2,3)...: GPT-J / Meta layout
    return rotate


def _cos_sin_interleaved(orig: Callable) -> Callable:
    def cos_sin(positions: np.ndarray, inv_freq: np.ndarray):
        angles = np.repeat(positions.astype(f32)[:, None] * inv_freq[None, :], 2, axis=-1)  # [T, Hd]: a0 a0 a1 a1 ...
        return np.cos(angles), np.sin(angles)
    return cos_sin


def _attend_head_dim_scale(orig: Callable) -> Callable:
    def attend(q, k, v, positions, window, cfg, *rest):
        return orig(q, k, v, positions, window, R(cfg, query_pre_attn_scalar=float(q.shape[-1])), *rest)  # Hd**-0.5, not 1
    return attend


def _project_kv(v_from_normed_k: bool, v_norm: bool) -> Callable[[Callable], Callable]:
    """model.project_kv with V taken after k_norm and RoPE, or without Gemma 4's v_norm."""

    def wrap(orig: Callable) -> Callable:
        def project_kv(x, w, spec, eps, cos, sin):
            if not v_from_normed_k and v_norm:
                return orig(x, w, spec, eps, cos, sin)
            T, K, Hd = x.shape[0], spec.num_key_value_heads, spec.head_dim
            k = M.linear(x, w["self_attn.k_proj.weight"]).reshape(T, K, Hd).transpose(1, 0, 2)
            v = k if spec.k_eq_v else M.linear(x, w["self_attn.v_proj.weight"]).reshape(T, K, Hd).transpose(1, 0, 2)
            k = M.apply_rope(M.rms_norm_gemma4(k, w["self_attn.k_norm.weight"], eps), cos, sin)
            if spec.k_eq_v and v_from_normed_k:
                v = k  # the bug: V forked after k_norm and RoPE instead of from the raw k_proj output
            return k, (M.rms_norm_unscaled(v, eps) if v_norm else v)
        return project_kv
    return wrap


def _inv_freq_partial(orig: Callable) -> Callable:
    def rope_inv_freq(head_dim, rope):
        if rope.proportion >= 1.0:
            return orig(head_dim, rope)
        d = int(rope.proportion * head_dim)  # ordinary partial rotary: exponents over the rotated dims only
        inv = np.zeros(head_dim // 2, dtype=f32)
        exps = np.arange(0, d, 2, dtype=np.int64).astype(f32) / f32(d)
        inv[:d // 2] = f32(1.0) / (np.float64(np.float32(rope.theta)) ** exps.astype(np.float64)).astype(f32)
        return inv / f32(rope.linear_factor)
    return rope_inv_freq


def _block_layer_scalar_one(orig: Callable) -> Callable:
    def gemma4_block(h, w, cfg, spec, positions, ple=None, cache=None, shared=None, blocks=None):
        return orig(h, _Override(w, layer_scalar=np.ones_like(w["layer_scalar"])), cfg, spec, positions, ple, cache, shared,
                    blocks)
    return gemma4_block


def _block_no_ple(orig: Callable) -> Callable:
    def gemma4_block(h, w, cfg, spec, positions, ple=None, cache=None, shared=None, blocks=None):
        return orig(h, w, cfg, spec, positions, None, cache, shared, blocks)
    return gemma4_block


def _block_no_kv_sharing(orig: Callable) -> Callable:
    def gemma4_block(h, w, cfg, spec, positions, ple=None, cache=None, shared=None, blocks=None):
        if spec.kv_source is None:
            return orig(h, w, cfg, spec, positions, ple, cache, shared, blocks)
        if "self_attn.k_proj.weight" not in w:
            raise KeyError("the KV-shared layers have no K/V projections of their own in this checkpoint")
        return orig(h, w, cfg, R(spec, kv_source=None), positions, ple, None, None, blocks)  # own K/V from leftover tensors
    return gemma4_block


def _route_on_normed(orig: Callable) -> Callable:
    def route(r, w, cfg):
        return orig(M.rms_norm_gemma4(r, w["pre_feedforward_layernorm_2.weight"], cfg.rms_norm_eps), w, cfg)
    return route


def _route_no_expert_scale(orig: Callable) -> Callable:
    def route(r, w, cfg):
        return orig(r, _Override(w, **{"router.per_expert_scale": np.ones_like(w["router.per_expert_scale"])}), cfg)
    return route


# --- the catalogue ---------------------------------------------------------------------------------


def _has_sliding(c: GemmaConfig) -> bool:
    return c.sliding_window is not None and SLIDING in c.layer_types


BUGS: dict[str, Bug] = {b.id: b for b in [
    # Gemma 1-3 (and VaultGemma)
    Bug("norm_no_plus_one", "RMSNorm gain w instead of 1 + w (Gemma 1-3 store w - 1)", _old,
        patch=lambda c: {"rms_norm": _norm_gain(0.0)}),
    Bug("norm_plus_one_twice", "RMSNorm gain 2 + w: the converter baked the +1 into the weights and the engine adds it again",
        _old, patch=lambda c: {"rms_norm": _norm_gain(2.0)}),
    Bug("gelu_exact", "exact (erf) GELU instead of the tanh approximation", lambda c: True,
        patch=lambda c: {"gelu_tanh": _gelu_exact}),
    Bug("embed_unscaled", "embeddings not multiplied by sqrt(hidden_size)", lambda c: True,
        patch=lambda c: {"embed": _embed_scaled_by(lambda cfg: 1.0)}),
    Bug("embed_scale_bf16", "sqrt(hidden_size) rounded to bfloat16 (55.5 instead of 55.4256 for D = 3072)",
        lambda c: _bf16(c.embed_scale) != c.embed_scale,
        patch=lambda c: {"embed": _embed_scaled_by(lambda cfg: _bf16(cfg.embed_scale))}),
    Bug("rope_interleaved", "RoPE on interleaved pairs (GPT-J / Meta layout) instead of HF's half-split", lambda c: True,
        patch=lambda c: {"rotate_half": _rotate_interleaved, "rope_cos_sin": _cos_sin_interleaved}),
    Bug("attn_softcap_missing", "attention scores not soft-capped (50 * tanh(s / 50))",
        lambda c: c.attn_logit_softcapping is not None, edit_config=lambda c: R(c, attn_logit_softcapping=None)),
    Bug("final_softcap_missing", "final logits not soft-capped (30 * tanh(z / 30))",
        lambda c: c.final_logit_softcapping is not None, edit_config=lambda c: R(c, final_logit_softcapping=None)),
    Bug("sliding_window_missing", "local layers attend over the whole context (no sliding window)", _has_sliding,
        edit_config=lambda c: R(c, sliding_window=None)),
    Bug("query_scale_head_dim", "attention scaled by head_dim**-0.5 instead of query_pre_attn_scalar**-0.5",
        lambda c: _old(c) and c.query_pre_attn_scalar != c.head_dim,
        edit_config=lambda c: R(c, query_pre_attn_scalar=float(c.head_dim))),
    Bug("local_rope_base_global", "sliding layers use the global RoPE base (1M) instead of their own (10k)",
        lambda c: c.rope_local.theta != c.rope_global.theta,
        edit_config=lambda c: R(c, rope_local=R(c.rope_local, theta=c.rope_global.theta))),
    Bug("rope_scaling_missing", "rope_scaling (linear factor) ignored on global layers",
        lambda c: c.rope_global.linear_factor != 1.0,
        edit_config=lambda c: R(c, rope_global=R(c.rope_global, linear_factor=1.0))),
    Bug("qk_norm_missing", "no RMSNorm on query and key heads (Gemma 3's q_norm / k_norm)",
        lambda c: _old(c) and c.use_qk_norm, edit_config=lambda c: R(c, use_qk_norm=False)),
    Bug("bos_missing", "the prompt run without its leading <bos>", lambda c: True, drops_bos=True),
    # Gemma 4 (and the parts Gemma 3n shares)
    Bug("norm_plus_one_added", "Gemma 1-3's (1 + w) RMSNorm on Gemma 4 (whose gain is w)", _gen4,
        patch=lambda c: {"rms_norm_gemma4": _norm_gain(1.0)}),
    Bug("attn_scale_head_dim", "attention scaled by head_dim**-0.5 instead of 1.0", _gen4,
        patch=lambda c: {"attend": _attend_head_dim_scale}),
    Bug("v_norm_missing", "no weightless RMSNorm on the values", _gen4,
        patch=lambda c: {"project_kv": _project_kv(False, v_norm=False)}),
    Bug("k_eq_v_after_norm", "on K=V layers, V taken after k_norm and RoPE instead of the raw k_proj output",
        lambda c: any(s.k_eq_v for s in c.layers), patch=lambda c: {"project_kv": _project_kv(True, v_norm=True)}),
    Bug("rope_partial_not_proportional", "proportional RoPE built as partial rotary (exponents over the rotated dims)",
        lambda c: min(c.rope_global.proportion, c.rope_local.proportion) < 1.0,
        patch=lambda c: {"rope_inv_freq": _inv_freq_partial}),
    Bug("layer_scalar_missing", "the per-layer layer_scalar not applied", lambda c: c.generation >= 4 and not c.altup_num_inputs,
        patch=lambda c: {"gemma4_block": _block_layer_scalar_one}),
    Bug("ple_missing", "per-layer embeddings (PLE) not added", lambda c: c.generation >= 4 and not c.altup_num_inputs
        and c.hidden_size_per_layer_input > 0, patch=lambda c: {"gemma4_block": _block_no_ple}),
    Bug("kv_sharing_missing", "KV-shared layers compute their own K/V from leftover tensors",
        lambda c: c.generation >= 4 and not c.altup_num_inputs and c.num_kv_shared_layers > 0,
        patch=lambda c: {"gemma4_block": _block_no_kv_sharing}),
    Bug("router_on_normed_input", "MoE router fed pre_feedforward_layernorm_2(x) instead of the raw residual",
        lambda c: c.num_experts > 0, patch=lambda c: {"route": _route_on_normed}),
    Bug("per_expert_scale_missing", "the router's per_expert_scale ignored", lambda c: c.num_experts > 0,
        patch=lambda c: {"route": _route_no_expert_scale}),
]}


# --- the image path (vision.py): each applies when the checkpoint's vision tower has the feature ---------------


def _vision_tokens_all_layers(orig: Callable) -> Callable:
    def prompt_image_tokens(ids, images, tw, observe=None):
        t = orig(ids, images, tw, observe)
        return dataclasses.replace(t, blocks=V().image_blocks(ids, tw.vc), block_layers="all")  # Gemma 3's mask
    return prompt_image_tokens


def _scaled_soft_tokens(orig: Callable) -> Callable:
    def merge_images(h, images):
        if images is None:
            return orig(h, images)
        return orig(h, dataclasses.replace(images, values=images.values * f32(np.sqrt(h.shape[1]))))  # like text
    return merge_images


def _pool_consecutive(orig: Callable) -> Callable:
    def gemma3_project(h, tw):
        vc, v = tw.vc, V()
        pooled = h.reshape(vc.mm_tokens_per_image, -1, h.shape[1]).mean(axis=1, dtype=f32)  # runs of k*k, not squares
        normed = v.rms_norm(pooled, np.asarray(tw.projector("mm_soft_emb_norm.weight"), dtype=f32), vc.eps)
        return v.linear(normed, tw.projector("mm_input_projection_weight").T)
    return gemma3_project


def _patches_hwc(orig: Callable) -> Callable:
    def siglip_embed(px, tw):
        p = tw.vc.patch_size
        g = px.shape[1] // p
        wrong = px.reshape(3, g, p, g, p).transpose(1, 3, 2, 4, 0).reshape(g * g, 3, p, p)  # (kh, kw, c) read as (c, kh, kw)
        return orig(wrong.reshape(g, g, 3, p, p).transpose(2, 0, 3, 1, 4).reshape(3, g * p, g * p), tw)
    return siglip_embed


def _imagenet_norm(orig: Callable) -> Callable:
    def rescale_normalize(img, pp):
        return orig(img, dataclasses.replace(pp, image_mean=(0.485, 0.456, 0.406), image_std=(0.229, 0.224, 0.225)))
    return rescale_normalize


def _resize_no_antialias(orig: Callable) -> Callable:
    return lambda n_in, n_out, resample: orig(n_in, n_out, resample, antialias=False)


def _other_filter(orig: Callable) -> Callable:
    return lambda img, h, w, resample: orig(img, h, w, 5 - resample)  # bilinear <-> bicubic (2 <-> 3)


def _rope_xy_swapped(orig: Callable) -> Callable:
    return lambda positions, vc: orig(positions[:, ::-1], vc)


def _no_pixel_shift(orig: Callable) -> Callable:
    return lambda patches, positions, tw: orig(patches * f32(0.5) + f32(0.5), positions, tw)  # the tower sees x, not 2x-1


def _clamps_ignored(orig: Callable) -> Callable:
    return lambda x, w, name, clipped: orig(x, w, name, False)


class _WithConfig:
    """TowerWeights with another VisionConfig (the tensors unchanged)."""

    def __init__(self, tw: Any, **changes: Any):
        self._tw, self.vc = tw, dataclasses.replace(tw.vc, **changes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tw, name)


def _no_standardize(orig: Callable) -> Callable:
    return lambda patches, positions, tw, observe=None: orig(patches, positions, _WithConfig(tw, standardize=False), observe)


def _pool_unscaled(orig: Callable) -> Callable:
    return lambda h, positions, vc: orig(h, positions, vc) / f32(np.sqrt(vc.hidden_size))


def _ple_at_image_id(orig: Callable) -> Callable:
    return lambda ids, images: ids  # the image id itself looked up (its embedding row is replaced; its PLE row is not)


def V():  # noqa: N802  (the vision module, imported on first use: model.py never needs it)
    import gemma_ref.vision as vision

    return vision


def _g3(vc: Any) -> bool:
    return vc.family == "gemma3"


def _g4(vc: Any) -> bool:
    return vc.family == "gemma4"


BUGS.update({b.id: b for b in [
    Bug("image_attention_causal", "image tokens attend causally, not to the whole image (no token types passed)",
        lambda c: True, vision=lambda vc: vc.bidirectional != "none", patch=lambda c: {"layer_blocks": lambda o: (lambda im, t: None)}),
    Bug("image_mask_every_layer", "Gemma 3's mask on Gemma 4: image blocks bidirectional on full layers too (or on E2B/E4B)",
        lambda c: True, vision=_g4, patch=lambda c: {"vision.prompt_image_tokens": _vision_tokens_all_layers}),
    Bug("soft_tokens_scaled", "soft tokens multiplied by sqrt(hidden_size) like token embeddings", lambda c: True,
        vision=lambda vc: True, patch=lambda c: {"merge_images": _scaled_soft_tokens}),
    Bug("vision_gelu_exact", "exact (erf) GELU in the vision tower instead of the tanh approximation", lambda c: True,
        vision=lambda vc: True, patch=lambda c: {"vision.gelu_tanh": _gelu_exact}),
    Bug("projector_norm_no_plus_one", "the projector's RMSNorm with gain w instead of 1 + w", lambda c: True,
        vision=_g3, patch=lambda c: {"vision.rms_norm": _norm_gain(0.0)}),
    Bug("pooling_consecutive", "soft tokens pooled from runs of consecutive patches instead of k x k squares",
        lambda c: True, vision=_g3, patch=lambda c: {"vision.gemma3_project": _pool_consecutive}),
    Bug("patch_order_hwc", "patch pixels flattened (kh, kw, c) instead of the conv's (c, kh, kw)", lambda c: True,
        vision=_g3, patch=lambda c: {"vision.siglip_embed": _patches_hwc}),
    Bug("imagenet_mean_std", "pixels normalised with ImageNet's mean/std instead of the processor's 0.5/0.5",
        lambda c: True, vision=lambda vc: vc.preprocess.do_normalize, patch=lambda c: {"vision.rescale_normalize": _imagenet_norm}),
    Bug("resize_no_antialias", "images shrunk without antialiasing (the filter not widened by the scale)",
        lambda c: True, vision=lambda vc: True, patch=lambda c: {"vision.resample_weights": _resize_no_antialias}),
    Bug("resize_other_filter", "images resized bilinear where the processor says bicubic, or the reverse",
        lambda c: True, vision=lambda vc: True, patch=lambda c: {"vision.pil_resize": _other_filter}),
    Bug("vision_rope_xy_swapped", "the tower's 2-D RoPE with x and y swapped", lambda c: True, vision=_g4,
        patch=lambda c: {"vision.vision_rope": _rope_xy_swapped}),
    Bug("vision_v_norm_missing", "no weightless RMSNorm on the tower's values", lambda c: True, vision=_g4,
        patch=lambda c: {"vision.value_norm": lambda o: (lambda v, eps: v)}),
    Bug("pixel_shift_missing", "pixels fed in [0, 1] instead of 2(x - 0.5) in [-1, 1]", lambda c: True, vision=_g4,
        patch=lambda c: {"vision.gemma4_embed": _no_pixel_shift}),
    Bug("vision_clamps_ignored", "the clipped linears' input/output clamps ignored (E2B/E4B)", lambda c: True,
        vision=lambda vc: vc.clipped, patch=lambda c: {"vision.clipped_linear": _clamps_ignored}),
    Bug("vision_standardize_missing", "the pooled soft tokens not standardized (std_bias, std_scale)", lambda c: True,
        vision=lambda vc: vc.standardize, patch=lambda c: {"vision.gemma4_tower": _no_standardize}),
    Bug("pooler_sqrt_missing", "pooled soft tokens not scaled by sqrt(hidden_size) (shows with standardize)",
        lambda c: True, vision=lambda vc: vc.standardize, patch=lambda c: {"vision.gemma4_pool": _pool_unscaled}),
    Bug("ple_at_image_id", "per-layer embeddings read at the image token's id instead of the pad id", lambda c: True,
        vision=_g4, patch=lambda c: {"text_ids": _ple_at_image_id}),
]})


COMPOSING = frozenset({"gemma4_block", "route", "attend"})  # wrappers that call the function they wrap


def compatible(a: str, b: str, cfg: GemmaConfig) -> bool:
    """Whether two bugs can be on together: not both replacing the same function outright (the pair would be
    just the second one), e.g. two RMSNorm gains."""
    pa = set(BUGS[a].patch(cfg)) if BUGS[a].patch else set()
    pb = set(BUGS[b].patch(cfg)) if BUGS[b].patch else set()
    return not ((pa & pb) - COMPOSING)


def applicable(cfg: GemmaConfig, vision: Any = None) -> list[str]:
    """The ids of the bugs a port of this config could have (the config has the feature they get wrong).

    `vision`: the checkpoint's vision.VisionConfig when its images are run; the image-path bugs need one.
    """
    return [b.id for b in BUGS.values() if b.applies(cfg) and
            (b.vision is None or (vision is not None and b.vision(vision) and
                                  (b.id != "ple_at_image_id" or cfg.hidden_size_per_layer_input > 0)))]


def parse(spec: str | Sequence[str]) -> list[Bug]:
    """Bugs from ids (a list, or one string joined with '+'); unknown ids are a ValueError."""
    ids = spec.split("+") if isinstance(spec, str) else list(spec)
    unknown = [i for i in ids if i not in BUGS]
    if unknown:
        raise ValueError(f"unknown bug id(s) {', '.join(unknown)}; known: {', '.join(BUGS)}")
    return [BUGS[i] for i in ids if i]


@contextlib.contextmanager
def patched(wraps: dict[str, Callable[[Callable], Callable]]) -> Iterator[None]:
    """Replace functions of gemma_ref.model by wrap(original) for the duration; always restored."""
    saved: list[tuple[str, Callable]] = []
    try:
        for name, wrap in wraps.items():
            module, attr = (V(), name[7:]) if name.startswith("vision.") else (M, name)
            orig = getattr(module, attr)
            setattr(module, attr, wrap(orig))
            saved.append((module, attr, orig))
        yield
    finally:
        for module, attr, orig in reversed(saved):
            setattr(module, attr, orig)


@contextlib.contextmanager
def switched(bug_ids: str | Sequence[str], cfg: GemmaConfig) -> Iterator[GemmaConfig]:
    """Run with these bugs on: yields the config to pass to model.forward (functions swapped meanwhile)."""
    bugs = parse(bug_ids)
    for b in bugs:
        if b.edit_config:
            cfg = b.edit_config(cfg)
    with contextlib.ExitStack() as stack:
        for b in bugs:
            if b.patch:
                stack.enter_context(patched(b.patch(cfg)))
        yield cfg


def forward_with(weights: Any, cfg: GemmaConfig, bug_ids: str | Sequence[str], ids: np.ndarray,
                 tower: Any = None, images: Sequence | None = None) -> np.ndarray:
    """Logits [T, V] of one sequence with the bugs switched on.

    `images` (with `tower`, a vision.TowerWeights): the prompt's images, run through the tower under the bugs too.

    ``bos_missing``: the engine ran the ids without their leading BOS; the row of the BOS position is
    the one a BOS-only run gives (both agree there), the other rows come from the run without it.
    """
    bugs = parse(bug_ids)
    with switched([b.id for b in bugs], cfg) as c:
        if any(b.drops_bos for b in bugs) and len(ids) > 1 and ids[0] == cfg.bos_token_id:
            first = M.forward(weights, c, [ids[:1]])[0]
            rest = M.forward(weights, c, [ids[1:]])[0]
            return np.concatenate([first, rest])
        soft = [V().prompt_image_tokens(ids, list(images), tower)] if images else None
        return M.forward(weights, c, [ids], images=soft)[0]
