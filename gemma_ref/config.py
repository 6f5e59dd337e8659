"""Gemma model configuration: one frozen dataclass for Gemma 1, 1.1, 2 and 3 (text).

`load_config` reads a Hugging Face ``config.json`` as the real releases write it:

* legacy names (``rope_theta``, ``torch_dtype``, ``hidden_act: gelu``,
  ``sliding_window_pattern``, ``rope_local_base_freq``, ``rope_scaling``) and the
  current ones (``rope_parameters`` per layer type, ``dtype``, ``layer_types``);
* Gemma 3's multimodal configs, where the text model sits in ``text_config`` and
  is *sparse*: every field left out takes transformers' ``Gemma3TextConfig``
  default (``DEFAULTS`` below).

Everything the forward pass needs is resolved here, so ``model.py`` never looks at
raw JSON and never asks "which generation is this?" except through these fields.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gemma_ref.errors import InputError

SLIDING = "sliding_attention"  # layer type: local attention over a window of recent keys
FULL = "full_attention"  # layer type: global (causal) attention over every earlier key

# HF model_type -> Gemma generation, for the whole family: release rules use it to tell which terms apply.
GENERATION_OF_MODEL_TYPE: dict[str, int] = {
    "gemma": 1,
    "recurrent_gemma": 1,  # RecurrentGemma: Gemma 1 era terms, a different (Griffin) architecture
    "gemma2": 2,
    "gemma3_text": 3,
    "gemma3": 3,  # multimodal wrapper; the text model is in text_config
    "gemma3n": 3,  # Gemma 3n: Gemma 3 era terms, a different (per-layer embedding) architecture
    "gemma3n_text": 3,
    "gemma4": 4,  # Apache-2.0, a different architecture
    "gemma4_text": 4,
}
# The model types this reference's forward pass implements (the others are refused by name).
FORWARD_MODEL_TYPES = ("gemma", "gemma2", "gemma3_text", "gemma3")

# transformers' defaults for fields a config.json may leave out, per generation
# (GemmaConfig, Gemma2Config, Gemma3TextConfig). Real Gemma 3 4b/12b/27b configs rely on them.
DEFAULTS: dict[int, dict[str, Any]] = {
    1: dict(vocab_size=256000, hidden_size=3072, intermediate_size=24576, num_hidden_layers=28,
            num_attention_heads=16, num_key_value_heads=16, head_dim=256, rms_norm_eps=1e-6,
            rope_theta=10000.0, max_position_embeddings=8192, query_pre_attn_scalar=None,
            attn_logit_softcapping=None, final_logit_softcapping=None, sliding_window=None,
            rope_local_base_freq=None, sliding_window_pattern=None),
    2: dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
            num_attention_heads=8, num_key_value_heads=4, head_dim=256, rms_norm_eps=1e-6,
            rope_theta=10000.0, max_position_embeddings=8192, query_pre_attn_scalar=256,
            attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=4096,
            rope_local_base_freq=None, sliding_window_pattern=2),
    3: dict(vocab_size=262208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
            num_attention_heads=8, num_key_value_heads=4, head_dim=256, rms_norm_eps=1e-6,
            rope_theta=1_000_000.0, max_position_embeddings=131072, query_pre_attn_scalar=256,
            attn_logit_softcapping=None, final_logit_softcapping=None, sliding_window=4096,
            rope_local_base_freq=10_000.0, sliding_window_pattern=6),
}

_TANH_GELU_NAMES = {"gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu_tanh", "gelu"}
STORAGE_DTYPES = {"bfloat16", "float16", "float32"}


@dataclass(frozen=True)
class Rope:
    """Rotary position embedding parameters for one kind of layer."""

    theta: float  # base of the frequencies: inv_freq[i] = 1 / theta^(2i / head_dim)
    linear_factor: float = 1.0  # "linear" rope scaling: positions (equivalently inv_freq) divided by this


@dataclass(frozen=True)
class GemmaConfig:
    """Everything the reference forward pass needs, resolved and validated."""

    model_type: str  # HF model_type of the text model: "gemma", "gemma2" or "gemma3_text"
    generation: int  # 1 (Gemma 1 / 1.1 / CodeGemma), 2 or 3
    vocab_size: int  # rows of the embedding matrix (Gemma 3 pads 262144 pieces to 262208)
    hidden_size: int  # width of the residual stream, d_model
    intermediate_size: int  # width of the MLP's gate/up projections
    num_hidden_layers: int  # number of transformer blocks
    num_attention_heads: int  # query heads
    num_key_value_heads: int  # key/value heads: 1 = MQA, == heads = MHA, in between = GQA
    head_dim: int  # width of one head; heads * head_dim need not equal hidden_size (gemma-7b: 16*256 = 4096 != 3072)
    rms_norm_eps: float  # epsilon inside every RMSNorm
    query_pre_attn_scalar: float  # attention scale is this ** -0.5 (Gemma 1: head_dim)
    attn_logit_softcapping: float | None  # Gemma 2: scores -> c * tanh(scores / c) before the mask; None = off
    final_logit_softcapping: float | None  # Gemma 2: logits -> c * tanh(logits / c); None = off
    sliding_window: int | None  # local layers see keys k with q - window < k <= q
    layer_types: tuple[str, ...]  # per layer: SLIDING or FULL
    rope_global: Rope  # RoPE of full-attention layers
    rope_local: Rope  # RoPE of sliding layers (Gemma 3: its own base, 10k; else the same as global)
    use_qk_norm: bool  # Gemma 3: RMSNorm over each query / key head before RoPE
    sandwich_norms: bool  # Gemma 2/3: extra norms after attention and around the MLP (four per layer)
    max_position_embeddings: int  # longest context the model was trained for (not enforced, reported)
    storage_dtype: str | None = None  # dtype the config declares for the weights ("bfloat16", ...), if any
    nested: bool = False  # True when read from a multimodal config's text_config (Gemma 3 4b/12b/27b)
    architectures: tuple[str, ...] = ()  # HF architectures as declared, for reporting
    bos_token_id: int = 2  # Gemma's <bos>
    eos_token_id: int | tuple[int, ...] = 1  # Gemma's <eos> (instruction-tuned Gemma 3 also stops on <end_of_turn>)
    pad_token_id: int = 0  # Gemma's <pad>
    source: str | None = field(default=None, compare=False)  # the config.json this came from

    # --- derived quantities, used by weights.py, inspect and the forward pass -------------------

    @property
    def q_width(self) -> int:
        """Output width of q_proj: heads * head_dim."""
        return self.num_attention_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        """Output width of k_proj and v_proj: kv_heads * head_dim."""
        return self.num_key_value_heads * self.head_dim

    @property
    def queries_per_kv(self) -> int:
        """How many query heads share one key/value head."""
        return self.num_attention_heads // self.num_key_value_heads

    @property
    def embed_scale(self) -> float:
        """Embedding multiplier sqrt(hidden_size), as a float32 value (not bf16-rounded)."""
        import numpy as np

        return float(np.float32(self.hidden_size**0.5))

    def layer_summary(self) -> str:
        n_local = sum(t == SLIDING for t in self.layer_types)
        n_global = len(self.layer_types) - n_local
        if n_local == 0:
            return f"{n_global} global layers"
        return f"{n_local} local (window {self.sliding_window}) + {n_global} global layers"

    def expected_parameters(self) -> int:
        """Parameter count implied by the shapes (tied embedding counted once)."""
        d, L = self.hidden_size, self.num_hidden_layers
        attn = d * self.q_width + 2 * d * self.kv_width + self.q_width * d
        mlp = 3 * d * self.intermediate_size
        norms = (4 if self.sandwich_norms else 2) * d + (2 * self.head_dim if self.use_qk_norm else 0)
        return self.vocab_size * d + L * (attn + mlp + norms) + d


# The published checkpoints' shapes: one registry from which the benchmark scripts'
# choices, `inspect`'s variant name and the docs derive.
KNOWN_VARIANTS: dict[str, dict[str, Any]] = {
    "gemma-2b": dict(model_type="gemma", hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                     num_attention_heads=8, num_key_value_heads=1, head_dim=256, vocab_size=256000),
    "gemma-7b": dict(model_type="gemma", hidden_size=3072, intermediate_size=24576, num_hidden_layers=28,
                     num_attention_heads=16, num_key_value_heads=16, head_dim=256, vocab_size=256000),
    "gemma-2-2b": dict(model_type="gemma2", hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                       num_attention_heads=8, num_key_value_heads=4, head_dim=256, vocab_size=256000),
    "gemma-2-9b": dict(model_type="gemma2", hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=256, vocab_size=256000),
    "gemma-2-27b": dict(model_type="gemma2", hidden_size=4608, intermediate_size=36864, num_hidden_layers=46,
                        num_attention_heads=32, num_key_value_heads=16, head_dim=128, vocab_size=256000,
                        query_pre_attn_scalar=144),
    "gemma-3-1b": dict(model_type="gemma3_text", hidden_size=1152, intermediate_size=6912, num_hidden_layers=26,
                       num_attention_heads=4, num_key_value_heads=1, head_dim=256, vocab_size=262144,
                       sliding_window=512),
    "gemma-3-4b": dict(model_type="gemma3_text", hidden_size=2560, intermediate_size=10240, num_hidden_layers=34,
                       num_attention_heads=8, num_key_value_heads=4, head_dim=256, vocab_size=262208,
                       sliding_window=1024, rope_scaling={"rope_type": "linear", "factor": 8.0}),
    "gemma-3-12b": dict(model_type="gemma3_text", hidden_size=3840, intermediate_size=15360, num_hidden_layers=48,
                        num_attention_heads=16, num_key_value_heads=8, head_dim=256, vocab_size=262208,
                        sliding_window=1024, rope_scaling={"rope_type": "linear", "factor": 8.0}),
    "gemma-3-27b": dict(model_type="gemma3_text", hidden_size=5376, intermediate_size=21504, num_hidden_layers=62,
                        num_attention_heads=32, num_key_value_heads=16, head_dim=128, vocab_size=262208,
                        query_pre_attn_scalar=168, sliding_window=1024,
                        rope_scaling={"rope_type": "linear", "factor": 8.0}),
}


def variant_config_json(name: str) -> dict[str, Any]:
    """A config.json (as a dict) for a known variant, e.g. to write benchmark checkpoints."""
    if name not in KNOWN_VARIANTS:
        raise InputError(f"unknown variant {name!r}; known: {', '.join(KNOWN_VARIANTS)}")
    raw = dict(KNOWN_VARIANTS[name])
    raw.setdefault("torch_dtype", "bfloat16")
    raw["architectures"] = [{"gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM",
                             "gemma3_text": "Gemma3ForCausalLM"}[raw["model_type"]]]
    return raw


def match_variant(cfg: GemmaConfig) -> str | None:
    """Name of the known variant with exactly these shapes, if any."""
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim")
    for name, v in KNOWN_VARIANTS.items():
        if GENERATION_OF_MODEL_TYPE[v["model_type"]] == cfg.generation and all(
            v[k] == getattr(cfg, k) for k in keys
        ):
            return name
    return None


# --- reading config.json -----------------------------------------------------------------------


def read_config_json(path: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    """Read ``config.json`` (or the one inside a directory) as a dict, with clear errors."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise InputError("no config.json found", p.parent if p.name == "config.json" else p,
                         hint="a model directory needs config.json next to its safetensors")
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"config.json is not UTF-8 text ({e.reason})", p) from None
    except json.JSONDecodeError as e:
        raise InputError(f"config.json is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}", p) from None
    if not isinstance(raw, dict):
        raise InputError(f"config.json must hold a JSON object, not {type(raw).__name__}", p)
    return raw, p


def load_config(path: str | os.PathLike) -> GemmaConfig:
    """Parse a Gemma ``config.json`` (a file or a model directory) into a :class:`GemmaConfig`."""
    raw, p = read_config_json(path)
    return config_from_dict(raw, source=str(p))


def config_from_dict(raw: dict[str, Any], source: str | None = None) -> GemmaConfig:
    """Resolve a raw HF config dict (possibly multimodal with ``text_config``) into a GemmaConfig."""
    where = source or "config.json"
    top_type = raw.get("model_type")
    nested = isinstance(raw.get("text_config"), dict)
    text = dict(raw["text_config"]) if nested else dict(raw)
    if nested:
        # Multimodal Gemma 3: the text model's dtype and token ids often sit at the top level only.
        for k in ("torch_dtype", "dtype", "bos_token_id", "eos_token_id", "pad_token_id"):
            if k not in text and k in raw:
                text[k] = raw[k]
    model_type = text.get("model_type") or top_type
    if nested and model_type in (None, "gemma3"):
        model_type = "gemma3_text"  # text_config of a gemma3 config may omit its model_type
    if model_type not in GENERATION_OF_MODEL_TYPE:
        raise InputError(f"unknown model_type {model_type!r}; this reference runs Gemma 1, 2 and 3 "
                         f"({', '.join(FORWARD_MODEL_TYPES)})", where)
    generation = GENERATION_OF_MODEL_TYPE[model_type]
    if model_type not in FORWARD_MODEL_TYPES:
        raise InputError(
            f"model_type {model_type!r} (Gemma {generation} family) is a different architecture the reference "
            "forward pass does not implement (release checks still apply)", where)
    if model_type == "gemma3":
        model_type = "gemma3_text"

    d = DEFAULTS[generation]

    def get(key: str, *aliases: str) -> Any:
        for k in (key, *aliases):
            if k in text and text[k] is not None:
                return text[k]
        return d.get(key)

    def integer(key: str, *aliases: str, minimum: int = 1) -> int:
        v = get(key, *aliases)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise InputError(f"{key} must be an integer >= {minimum}, got {v!r}", where)
        return v

    def number(key: str, *aliases: str, allow_none: bool = False, positive: bool = True) -> float | None:
        v = get(key, *aliases)
        if v is None and allow_none:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
            raise InputError(f"{key} must be a positive number, got {v!r}", where)
        return float(v)

    vocab = integer("vocab_size")
    hidden = integer("hidden_size")
    inter = integer("intermediate_size")
    n_layers = integer("num_hidden_layers")
    heads = integer("num_attention_heads")
    kv_heads = integer("num_key_value_heads", "num_kv_heads")
    head_dim = integer("head_dim")  # transformers' default (256) when absent, not hidden // heads
    if heads % kv_heads:
        raise InputError(f"num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})", where)

    act = text.get("hidden_activation") or text.get("hidden_act") or "gelu_pytorch_tanh"
    if act not in _TANH_GELU_NAMES:
        raise InputError(f"hidden activation {act!r} is not Gemma's GELU; expected gelu_pytorch_tanh", where)
    # "gelu" in Gemma 1 configs is legacy and still means the tanh approximation (transformers #29402).

    if text.get("use_bidirectional_attention"):
        raise InputError("use_bidirectional_attention (EmbeddingGemma) is not a causal LM; not supported", where)

    qpas = number("query_pre_attn_scalar", allow_none=True)
    if generation == 1 or qpas is None:
        qpas = float(head_dim)  # Gemma 1 scales scores by head_dim ** -0.5

    attn_cap = number("attn_logit_softcapping", allow_none=True)
    final_cap = number("final_logit_softcapping", allow_none=True)

    layer_types = _layer_types(text, generation, n_layers, where)
    window = get("sliding_window")
    if any(t == SLIDING for t in layer_types):
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise InputError(f"sliding_window must be a positive integer for sliding layers, got {window!r}", where)
    else:
        window = None

    rope_global, rope_local = _rope(text, generation, where)

    dtype = text.get("dtype") or text.get("torch_dtype")
    if dtype is not None and dtype not in STORAGE_DTYPES:
        raise InputError(f"dtype {dtype!r} is not one of {sorted(STORAGE_DTYPES)}", where)

    eos = text.get("eos_token_id", 1)
    eos = tuple(eos) if isinstance(eos, list) else eos
    return GemmaConfig(
        model_type=model_type,
        generation=generation,
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=number("rms_norm_eps"),
        query_pre_attn_scalar=qpas,
        attn_logit_softcapping=attn_cap,
        final_logit_softcapping=final_cap,
        sliding_window=window,
        layer_types=layer_types,
        rope_global=rope_global,
        rope_local=rope_local,
        use_qk_norm=generation >= 3,
        sandwich_norms=generation >= 2,
        max_position_embeddings=integer("max_position_embeddings"),
        storage_dtype=dtype,
        nested=nested,
        architectures=tuple(raw.get("architectures") or ()),
        bos_token_id=text.get("bos_token_id", 2) if isinstance(text.get("bos_token_id", 2), int) else 2,
        eos_token_id=eos,
        pad_token_id=text.get("pad_token_id", 0) if isinstance(text.get("pad_token_id", 0), int) else 0,
        source=source,
    )


def _layer_types(text: dict[str, Any], generation: int, n_layers: int, where: str) -> tuple[str, ...]:
    """Per-layer attention kind, from ``layer_types`` or the legacy ``sliding_window_pattern``."""
    explicit = text.get("layer_types")
    if explicit is not None:
        if not isinstance(explicit, list) or len(explicit) != n_layers or any(t not in (SLIDING, FULL) for t in explicit):
            raise InputError(
                f"layer_types must list {n_layers} entries, each {SLIDING!r} or {FULL!r}", where)
        return tuple(explicit)
    if generation == 1:
        return (FULL,) * n_layers
    pattern = text.get("sliding_window_pattern") or DEFAULTS[generation]["sliding_window_pattern"]
    if isinstance(pattern, bool) or not isinstance(pattern, int) or pattern < 1:
        raise InputError(f"sliding_window_pattern must be a positive integer, got {pattern!r}", where)
    # Layer i is global when (i + 1) % pattern == 0: Gemma 2 alternates local/global, Gemma 3 has 5 local : 1 global.
    return tuple(FULL if (i + 1) % pattern == 0 else SLIDING for i in range(n_layers))


def _rope_scaling_factor(spec: Any, where: str, what: str) -> float:
    """Linear scaling factor of a rope spec dict (1.0 for default); other rope types are refused."""
    if spec is None:
        return 1.0
    if not isinstance(spec, dict):
        raise InputError(f"{what} must be an object, got {type(spec).__name__}", where)
    kind = spec.get("rope_type", spec.get("type", "default"))
    if kind == "default":
        return 1.0
    if kind == "linear":
        factor = spec.get("factor")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 0:
            raise InputError(f"{what}: linear rope scaling needs a positive 'factor', got {factor!r}", where)
        return float(factor)
    raise InputError(f"{what}: rope type {kind!r} is not supported by the reference (default and linear are)", where)


def _rope(text: dict[str, Any], generation: int, where: str) -> tuple[Rope, Rope]:
    """(global, local) RoPE parameters from legacy fields or ``rope_parameters``."""
    d = DEFAULTS[generation]
    params = text.get("rope_parameters")
    legacy_scaling = text.get("rope_scaling")
    theta = text.get("rope_theta", d["rope_theta"])
    local_theta = text.get("rope_local_base_freq", d["rope_local_base_freq"])
    if isinstance(params, dict) and (FULL in params or SLIDING in params):
        # Current transformers: one rope spec per layer type.
        g = params.get(FULL) or {}
        loc = params.get(SLIDING) or {}
        g_theta = g.get("rope_theta", theta)
        l_theta = loc.get("rope_theta", local_theta if local_theta is not None else theta)
        g_factor = _rope_scaling_factor(g, where, f"rope_parameters.{FULL}")
        l_factor = _rope_scaling_factor(loc, where, f"rope_parameters.{SLIDING}")
    else:
        if isinstance(params, dict):  # one spec for every layer
            theta = params.get("rope_theta", theta)
            legacy_scaling = legacy_scaling or params
        g_theta = theta
        g_factor = _rope_scaling_factor(legacy_scaling, where, "rope_scaling")
        if generation >= 3:
            # Gemma 3: local layers have their own base (10k) and no scaling; only global layers are scaled.
            l_theta, l_factor = (local_theta if local_theta is not None else d["rope_local_base_freq"]), 1.0
        else:
            l_theta, l_factor = g_theta, g_factor
    for name, v in (("rope_theta", g_theta), ("rope_local_base_freq", l_theta)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 1:
            raise InputError(f"{name} must be a number > 1, got {v!r}", where)
    return Rope(float(g_theta), g_factor), Rope(float(l_theta), l_factor)


def config_fields() -> list[str]:
    """Names of the dataclass fields (for docs and `inspect --json`)."""
    return [f.name for f in fields(GemmaConfig)]
