"""LoRA adapters (PEFT's format) on a base Gemma checkpoint, applied on the fly.

An adapter directory holds ``adapter_config.json`` and ``adapter_model.safetensors`` as PEFT saves
them; the weights are those of a base model (``--base DIR`` / ``load_model(adapter, base=...)``, or
the config's ``base_model_name_or_path`` when that is a local directory). Nothing is merged: each
adapted projection is handed to ``model.linear`` as a :class:`LoRA` next to its base weight, and
``linear`` adds the low-rank update to the base projection, ``W x + scale * B (A x)``. The base
weights stay memory-mapped in their stored dtype; the adapter's own tensors are small and float32.

What PEFT 0.21 does, and so what is done here:

=========================  ===============================================================================
tensor names               ``base_model.model.<module>.lora_A.weight`` [r, in], ``lora_B.weight`` [out, r],
                           ``lora_B.bias`` [out] (``lora_bias``), ``lora_magnitude_vector`` [out] (DoRA),
                           ``base_model.model.<module>.weight`` for a ``modules_to_save`` module
scale                      ``lora_alpha / r``, or ``lora_alpha / sqrt(r)`` with ``use_rslora``; a module's
                           r and alpha from the first ``rank_pattern`` / ``alpha_pattern`` key K (in the
                           config's order) with ``re.match(rf"(.*\\.)?({K})$", module)``
target_modules             a list: a module's name or a ``.suffix`` of it; a string: ``re.fullmatch``;
                           ``all-linear``: every linear layer but the output head; ``layers_to_transform``
                           (an int or a list) keeps those layer indices only; ``exclude_modules`` likewise
DoRA (``use_dora``)        ``y = (m / ||W + scale B A||_row) * (W x + scale B A x)``, the row norm from the weights
``modules_to_save``        ``embed_tokens``: the trained table feeds the input; the output head stays the
                           base's tied matrix unless ``ensure_weight_tying`` (then the trained one) or a saved
                           ``lm_head`` (then that). With ``ensure_weight_tying`` PEFT also saves the tied head as
                           ``lm_head.weight``, a copy of ``embed_tokens``: accepted when equal bit for bit
``fan_in_fan_out``         meaningless for ``nn.Linear``: PEFT resets it to False with a warning, and so here
vision / audio towers      targets there (generic names like ``q_proj`` match them too) are skipped: the
                           text forward never runs them
=========================  ===============================================================================

Other PEFT methods (IA3, prompt tuning, LoHa, ...) and LoRA variants that change the arithmetic
(LoRA on embeddings, ``layer_replication``, ``target_parameters``, trainable tokens) are refused by name.
A pickle ``adapter_model.bin`` is never unpickled.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gemma_ref.errors import InputError
from gemma_ref.weights import (
    NUMPY_DTYPES,
    WeightIssue,
    Weights,
    _unused_by_design,
    count_nonfinite,
    expected_shapes,
    read_headers,
)

f32 = np.float32

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_NAMES = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth")
KEY_PREFIX = "base_model.model."
#: Module names of other towers: a text forward never runs them, so their adapters are skipped.
FOREIGN = re.compile(r"(^|\.)(vision_tower|vision_model|audio_tower|multi_modal_projector|embed_vision|embed_audio|"
                     r"vision_embedder|audio_embedder)\.")
#: Layer projections gemma_ref runs through ``linear`` (so a LoRA on them applies); others are refused by name.
ADAPTABLE = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
             "mlp.up_proj", "mlp.down_proj", "per_layer_input_gate", "per_layer_projection", "router.proj",
             "laurel.linear_left", "laurel.linear_right",
             "altup.modality_router", "altup.prediction_coefs", "altup.correction_coefs")  # Gemma 3n's AltUp: nn.Linear too
#: Projections outside the layers that run through ``linear`` (Gemma 4 / 3n's PLE context projection, Gemma 3n's
#: AltUp stream projections); key layer -1.
GLOBAL_ADAPTABLE = re.compile(r"per_layer_model_projection|altup_(?:unembed_)?projections\.\d+")
LAYER_MODULE = re.compile(r"(?P<prefix>(?:.*\.)?)layers\.(?P<i>\d+)\.(?P<rel>.+)")
LORA_PART = re.compile(r"(?P<module>.+)\.(?P<part>lora_A\.weight|lora_B\.weight|lora_B\.bias|"
                       r"lora_magnitude_vector(?:\.weight)?|lora_embedding_A(?:\.weight)?|lora_embedding_B(?:\.weight)?)")
#: LoraConfig options that change the arithmetic in ways not implemented here: refused when set.
UNSUPPORTED_OPTIONS = {"layer_replication": "layer replication", "target_parameters": "LoRA on parameters (MoE experts)",
                       "trainable_token_indices": "trainable tokens", "alora_invocation_tokens": "activated LoRA (aLoRA)",
                       "use_qalora": "QA-LoRA", "use_bdlora": "block-diagonal LoRA"}


def is_adapter_dir(path: str | os.PathLike) -> bool:
    """True when `path` is a directory holding an adapter_config.json."""
    return (Path(path) / CONFIG_NAME).is_file()


# --- one adapted projection ------------------------------------------------------------------------


@dataclass(eq=False)
class LoRA:
    """The low-rank update of one projection: ``scale * (B (A x) + b)``, DoRA-rescaled per output row with m."""

    A: np.ndarray  # [r, in] float32
    B: np.ndarray  # [out, r] float32
    scale: float
    bias: np.ndarray | None = None  # [out]: lora_B's bias (lora_bias=True), scaled like B A x
    magnitude: np.ndarray | None = None  # [out]: DoRA's m
    _norm: np.ndarray | None = field(default=None, repr=False)  # ||W + scale B A||_row of its one base weight

    def apply(self, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
        """The adapted projection from the base one y = W x.  [T, in], [T, out], [out, in] -> [T, out]"""
        d = (x @ self.A.T) @ self.B.T  # [T, in] -> [T, r] -> [T, out]: never the [out, in] product
        if self.bias is not None:
            d += self.bias
        d *= f32(self.scale)
        if self.magnitude is None:
            return y + d
        return (y + d) * (self.magnitude / self.row_norm(w))  # DoRA: m / ||W + scale B A|| on each output row

    def row_norm(self, w: np.ndarray, rows: int = 1024) -> np.ndarray:
        """||W + scale B A|| of each row, computed a block of rows at a time and kept (it is [out]).  -> [out]

        A LoRA belongs to one projection of one base model (load_adapter), so one norm is kept.
        """
        norm = self._norm
        if norm is None:
            norm = np.empty(w.shape[0], dtype=f32)
            for lo in range(0, w.shape[0], rows):
                v = np.array(w[lo:lo + rows], dtype=f32) + f32(self.scale) * (self.B[lo:lo + rows] @ self.A)
                norm[lo:lo + rows] = np.sqrt(np.sum(v * v, axis=1))
            self._norm = norm
        return norm

    @property
    def rank(self) -> int:
        return self.A.shape[0]


class Adapted:
    """A base weight with its LoRA, as ``Weights.layer`` of an adapted model hands it to ``linear``."""

    __slots__ = ("base", "lora")

    def __init__(self, base: np.ndarray, lora: LoRA):
        self.base, self.lora = base, lora

    @property
    def shape(self) -> tuple[int, ...]:
        return self.base.shape


# --- adapter_config.json ---------------------------------------------------------------------------


@dataclass
class AdapterConfig:
    """The LoRA settings of adapter_config.json that change the forward."""

    path: Path
    r: int
    alpha: float
    use_rslora: bool
    rank_pattern: dict[str, int]
    alpha_pattern: dict[str, float]
    target_modules: list[str] | str | None
    exclude_modules: list[str] | str | None
    layers_to_transform: list[int] | None
    modules_to_save: list[str]
    lora_bias: bool
    use_dora: bool
    ensure_weight_tying: bool
    fan_in_fan_out: bool
    base_model: str | None
    raw: dict[str, Any]

    def rank_alpha(self, module: str) -> tuple[int, float]:
        """r and alpha of one module (its full name), after rank_pattern / alpha_pattern."""
        r = next((v for k, v in self.rank_pattern.items() if re.match(rf"(.*\.)?({k})$", module)), self.r)
        alpha = next((v for k, v in self.alpha_pattern.items() if re.match(rf"(.*\.)?({k})$", module)), self.alpha)
        return int(r), float(alpha)

    def scale(self, module: str) -> float:
        r, alpha = self.rank_alpha(module)
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r

    @property
    def scaling_rule(self) -> str:
        return "lora_alpha / sqrt(r) (rsLoRA)" if self.use_rslora else "lora_alpha / r"

    def targets(self, module: str, layer: int | None) -> bool:
        """Whether PEFT would put a LoRA on `module` (full name), in layer `layer`."""
        if _matches(self.exclude_modules, module):
            return False
        if self.target_modules == "all-linear":
            hit = True  # every linear layer but the output head: the caller offers linear layers only
        elif not _matches(self.target_modules, module):
            return False
        else:
            hit = True
        if self.layers_to_transform is not None and layer not in self.layers_to_transform:
            return False
        return hit


def _matches(spec: list[str] | str | None, module: str) -> bool:
    if spec is None:
        return False
    if isinstance(spec, str):
        return re.fullmatch(spec, module) is not None
    return any(module == t or module.endswith("." + t) for t in spec)


def read_adapter_config(adapter_dir: Path) -> AdapterConfig:
    path = adapter_dir / CONFIG_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read the adapter config: {e}", path) from None
    if not isinstance(raw, dict):
        raise InputError("the adapter config must be a JSON object", path)
    method = str(raw.get("peft_type", "")).upper()
    if method != "LORA":
        raise InputError(f"PEFT method {raw.get('peft_type')!r} is not supported: only LoRA adapters (peft_type LORA) "
                         "are", path, hint="IA3, prompt tuning, prefix tuning, LoHa, LoKr, ... are refused by name")
    for key, what in UNSUPPORTED_OPTIONS.items():
        if raw.get(key):
            raise InputError(f"{what} ({key}) is not supported", path)
    if raw.get("use_dora") and raw.get("lora_bias"):
        raise InputError("use_dora with lora_bias is not a valid LoRA config (PEFT refuses it too)", path)

    def num(key: str, default: Any, kind: type) -> Any:
        v = raw.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and v != int(v)) or v <= 0:
            raise InputError(f"{key} must be a positive number, got {v!r}", path)
        return kind(v)

    def patterns(key: str, kind: type) -> dict:
        v = raw.get(key) or {}
        if not isinstance(v, dict):
            raise InputError(f"{key} must be an object of pattern -> value", path)
        return {str(k): num_value(key, k, x, kind) for k, x in v.items()}

    def num_value(key: str, k: str, x: Any, kind: type) -> Any:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or x <= 0:
            raise InputError(f"{key}[{k!r}] must be a positive number, got {x!r}", path)
        return kind(x)

    targets = raw.get("target_modules")
    if targets is not None and not isinstance(targets, (str, list)):
        raise InputError(f"target_modules must be a list or a regex string, got {targets!r}", path)
    if isinstance(targets, list):
        targets = [str(t) for t in targets]
        if "all-linear" in targets and len(targets) == 1:
            targets = "all-linear"
    if targets is None:
        raise InputError("target_modules is not set: which modules the adapter adapts is unknown", path)
    exclude = raw.get("exclude_modules")
    layers = raw.get("layers_to_transform")
    if layers is not None:
        layers = [layers] if isinstance(layers, int) else layers
        if not isinstance(layers, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
            raise InputError(f"layers_to_transform must be an integer or a list of integers, got {layers!r}", path)
        if isinstance(targets, str) and targets != "all-linear":
            raise InputError("layers_to_transform works only with a list of target_modules, not a regex", path)
    saves = raw.get("modules_to_save") or []
    if not isinstance(saves, list):
        raise InputError(f"modules_to_save must be a list, got {saves!r}", path)
    base = raw.get("base_model_name_or_path")
    return AdapterConfig(
        path=path, r=num("r", 8, int), alpha=num("lora_alpha", 8, float), use_rslora=bool(raw.get("use_rslora")),
        rank_pattern=patterns("rank_pattern", int), alpha_pattern=patterns("alpha_pattern", float),
        target_modules=targets, exclude_modules=exclude, layers_to_transform=layers,
        modules_to_save=[str(s) for s in saves], lora_bias=bool(raw.get("lora_bias")), use_dora=bool(raw.get("use_dora")),
        ensure_weight_tying=bool(raw.get("ensure_weight_tying")), fan_in_fan_out=bool(raw.get("fan_in_fan_out")),
        base_model=base if isinstance(base, str) else None, raw=raw)


def resolve_base(adapter_dir: str | os.PathLike, base: str | os.PathLike | None) -> Path:
    """The base model directory: `base` if given, else the config's base_model_name_or_path if it is local."""
    adapter_dir = Path(adapter_dir)
    if base is not None:
        return Path(base)
    name = read_adapter_config(adapter_dir).base_model
    if name:
        for cand in (Path(name), Path(os.path.normpath(adapter_dir / name))):
            if (cand / "config.json").is_file():
                return cand
    raise InputError(f"this is an adapter for {name or 'an unnamed base model'}, which is not a local directory",
                     adapter_dir, hint="pass the base model's directory with --base DIR (Python: base=...)")


# --- the adapter as a whole --------------------------------------------------------------------------


@dataclass
class Adapter:
    """An adapter checked against its base: each adapted layer projection's LoRA, and saved tables."""

    path: Path
    config: AdapterConfig
    loras: dict[tuple[int, str], LoRA]  # (layer or -1, module inside the layer, e.g. "self_attn.q_proj") -> LoRA
    names: dict[tuple[int, str], str]  # the same keys -> the module's full name in PEFT's model
    embed_tokens: np.ndarray | None = None  # [V, D] trained input table (modules_to_save), stored dtype
    lm_head: np.ndarray | None = None  # [V, D] trained output head, stored dtype
    saved_names: dict[str, str] = field(default_factory=dict)  # "embed_tokens" / "lm_head" -> its tensor's name
    tied_head: str | None = None  # name of a saved lm_head that is the trained embed_tokens' tied copy
    skipped: list[str] = field(default_factory=list)  # adapted modules of other towers
    n_params: int = 0  # trainable parameters saved (LoRA + modules_to_save)

    @property
    def output_table(self) -> np.ndarray | None:
        """The output head's matrix when the adapter changes it (PEFT's rules; see the module docstring)."""
        if self.lm_head is not None:
            return self.lm_head
        if self.embed_tokens is not None and (self.config.ensure_weight_tying or self.tied_head):
            return self.embed_tokens
        return None

    def scan_nonfinite(self) -> list[WeightIssue]:
        """NaN/Inf in the adapter's own tensors: a diverged fine-tune saves them as readily as a base does."""
        file = str(self.path / WEIGHTS_NAME)
        tensors: list[tuple[str, np.ndarray]] = []
        for key, lora in self.loras.items():
            full = self.names[key]
            tensors += [(f"{KEY_PREFIX}{full}.lora_A.weight", lora.A), (f"{KEY_PREFIX}{full}.lora_B.weight", lora.B)]
            if lora.bias is not None:
                tensors.append((f"{KEY_PREFIX}{full}.lora_B.bias", lora.bias))
            if lora.magnitude is not None:
                tensors.append((f"{KEY_PREFIX}{full}.lora_magnitude_vector", lora.magnitude))
        for kind in ("embed_tokens", "lm_head"):
            if getattr(self, kind) is not None:
                tensors.append((self.saved_names[kind], getattr(self, kind)))
        return [WeightIssue("nonfinite", "error", f"adapter tensor {name!r} holds {bad} NaN/Inf values", name, file)
                for name, t in tensors if (bad := count_nonfinite(t))]

    def summary(self) -> dict[str, Any]:
        """What the adapter adapts, for ``inspect``."""
        c = self.config
        modules = sorted({m for _, m in self.loras})
        layers = sorted({i for i, _ in self.loras})
        ranks = sorted({lo.rank for lo in self.loras.values()})
        scales = sorted({round(lo.scale, 6) for lo in self.loras.values()})
        return {
            "adapter": str(self.path), "method": "DoRA" if c.use_dora else "LoRA",
            "base_model_name_or_path": c.base_model, "target_modules": c.target_modules,
            "adapted_modules": modules, "adapted_layers": layers, "n_adapted": len(self.loras),
            "r": c.r, "lora_alpha": c.alpha, "ranks": ranks, "rank_pattern": c.rank_pattern,
            "alpha_pattern": c.alpha_pattern, "scaling_rule": c.scaling_rule, "scales": scales,
            "lora_bias": c.lora_bias, "modules_to_save": c.modules_to_save,
            "output_head": ("trained lm_head" if self.lm_head is not None else
                            "trained embed_tokens (tied)" if self.output_table is not None else "base (tied)"),
            "trainable_parameters": self.n_params, "skipped_other_towers": len(self.skipped),
        }


def load_adapter(adapter_dir: str | os.PathLike, base: Weights) -> Adapter:
    """Read an adapter and check it against the base's weights: InputError on anything that does not fit."""
    adapter_dir = Path(adapter_dir)
    cfg = read_adapter_config(adapter_dir)
    file = adapter_dir / WEIGHTS_NAME
    if not file.is_file():
        pickles = [n for n in PICKLE_NAMES if (adapter_dir / n).is_file()]
        if pickles:
            raise InputError(f"only a pickle {pickles[0]} was found: it is never unpickled (loading a pickle runs "
                             "arbitrary code)", adapter_dir,
                             hint="save the adapter with safe_serialization=True (PEFT's default) to get "
                                  "adapter_model.safetensors")
        raise InputError(f"no {WEIGHTS_NAME} in the adapter directory", adapter_dir)
    infos = read_headers([file])
    mm = np.memmap(file, dtype=np.uint8, mode="r").view(np.ndarray)

    def tensor(name: str) -> np.ndarray:
        info = infos[name]
        if info.dtype not in NUMPY_DTYPES:
            raise InputError(f"tensor {name!r} is stored as {info.dtype}; only BF16, F16 and F32 are read", file)
        return mm[info.start:info.stop].view(NUMPY_DTYPES[info.dtype]).reshape(info.shape)

    shapes = expected_shapes(base.cfg)
    n_layers = base.cfg.num_hidden_layers
    parts: dict[str, dict[str, str]] = {}  # module full name -> part -> tensor name
    saved: dict[str, str] = {}  # modules_to_save module full name -> tensor name
    skipped: list[str] = []
    for name in infos:
        if not name.startswith(KEY_PREFIX):
            raise InputError(f"unexpected tensor {name!r}: PEFT's names start with {KEY_PREFIX!r}", file)
        rest = name[len(KEY_PREFIX):]
        m = LORA_PART.fullmatch(rest)
        if m:
            module, part = m["module"], m["part"].replace(".weight", "") if "magnitude" in m["part"] else m["part"]
            if part.startswith("lora_embedding"):
                raise InputError(f"LoRA on an embedding ({module}) is not supported", file,
                                 hint="adapters that train the embedding whole (modules_to_save) are")
            if FOREIGN.search(module):
                skipped.append(name)
                continue
            parts.setdefault(module, {})[part] = name
        elif rest.endswith(".weight") and rest[:-len(".weight")].rsplit(".", 1)[-1] in ("embed_tokens", "lm_head"):
            saved[rest[:-len(".weight")]] = name
        elif FOREIGN.search(rest):
            skipped.append(name)
        else:
            raise InputError(f"extra tensor {name!r}: neither a LoRA weight nor a saved embedding / head", file,
                             hint="other modules_to_save than embed_tokens / lm_head are not supported")

    # Where the text layers live in PEFT's model ("model.", "model.language_model.", ...), from the adapter's names.
    prefixes = {LAYER_MODULE.fullmatch(mod)["prefix"] for mod in parts if LAYER_MODULE.fullmatch(mod)}
    if len(prefixes) > 1:
        raise InputError(f"the adapter's layers sit under several prefixes: {sorted(prefixes)}", file)
    prefix = prefixes.pop() if prefixes else base.prefix

    # Every module PEFT would have adapted in the base, and what the adapter holds for each.
    loras: dict[tuple[int, str], LoRA] = {}
    names: dict[tuple[int, str], str] = {}
    wanted: dict[str, tuple[int, str, tuple[int, ...]]] = {}
    for rel, shape in shapes.items():
        lm = LAYER_MODULE.fullmatch(rel)
        if len(shape) != 2 or not rel.endswith(".weight"):
            continue
        if lm:
            i, mod = int(lm["i"]), lm["rel"][:-len(".weight")]
            full = f"{prefix}layers.{i}.{mod}"
        elif GLOBAL_ADAPTABLE.fullmatch(rel[:-len(".weight")]):
            i, mod = -1, rel[:-len(".weight")]
            full = prefix + mod
        else:
            continue
        if cfg.targets(full, i if i >= 0 else None):
            wanted[full] = (i, mod, shape)
    for mod in list(parts):  # Gemma 4 KV-shared layers keep k_proj / v_proj that no forward runs: nor does the LoRA
        lm = LAYER_MODULE.fullmatch(mod)
        if mod not in wanted and lm and _unused_by_design(base.cfg, f"layers.{lm['i']}.{lm['rel']}.weight"):
            skipped += list(parts.pop(mod).values())
    extra = [mod for mod in parts if mod not in wanted]
    if extra:
        lm = LAYER_MODULE.fullmatch(extra[0])
        in_base = lm is not None and f"layers.{lm['i']}.{lm['rel']}.weight" in shapes
        why = ("is in the base but target_modules does not select it" if in_base else
               f"is not a linear layer of the base ({n_layers} layers)")
        raise InputError(f"{len(extra)} adapted module(s) the base does not account for: {extra[0]!r} {why}", file,
                         hint="an adapter for another base model, or a config that does not match its tensors")
    if not wanted:
        raise InputError(f"target_modules {cfg.target_modules!r} match nothing in the base's text layers",
                         cfg.path, hint="an adapter for another architecture, or target names that never matched")
    n_params = 0
    for full, (i, mod, (n_out, n_in)) in wanted.items():
        have = parts.get(full, {})
        need = {"lora_A.weight", "lora_B.weight"} | ({"lora_magnitude_vector"} if cfg.use_dora else set()) | (
            {"lora_B.bias"} if cfg.lora_bias else set())
        if have.keys() != need:
            missing, surplus = sorted(need - have.keys()), sorted(have.keys() - need)
            what = (f"missing {', '.join(missing)}" if missing else "") + ("; " if missing and surplus else "") + (
                f"unexpected {', '.join(surplus)}" if surplus else "")
            raise InputError(f"module {full!r}: {what} (use_dora={cfg.use_dora}, lora_bias={cfg.lora_bias})", file)
        if mod not in ADAPTABLE and not GLOBAL_ADAPTABLE.fullmatch(mod):
            raise InputError(f"a LoRA on {mod!r} is not supported by gemma_ref (adapted: {', '.join(ADAPTABLE)})", file)
        A, B = tensor(have["lora_A.weight"]), tensor(have["lora_B.weight"])
        if A.ndim != 2 or B.ndim != 2 or A.shape[1] != n_in or B.shape[0] != n_out:
            raise InputError(f"module {full!r}: lora_A {list(A.shape)} / lora_B {list(B.shape)} do not fit the base's "
                             f"[{n_out}, {n_in}] weight", file, hint="an adapter made for another base model")
        r, _ = cfg.rank_alpha(full)
        if A.shape[0] != r or B.shape[1] != r:
            raise InputError(f"module {full!r}: the config gives rank {r} but lora_A is {list(A.shape)} and lora_B "
                             f"{list(B.shape)}", file, hint="r / rank_pattern disagree with the saved tensors")
        bias = mag = None
        if cfg.lora_bias:
            bias = np.array(tensor(have["lora_B.bias"]), dtype=f32)
            if bias.shape != (n_out,):
                raise InputError(f"module {full!r}: lora_B.bias is {list(bias.shape)}, not [{n_out}]", file)
        if cfg.use_dora:
            mag = np.array(tensor(have["lora_magnitude_vector"]), dtype=f32)
            if mag.shape != (n_out,):
                raise InputError(f"module {full!r}: lora_magnitude_vector is {list(mag.shape)}, not [{n_out}]", file)
        loras[(i, mod)] = LoRA(np.array(A, dtype=f32), np.array(B, dtype=f32), cfg.scale(full), bias, mag)
        names[(i, mod)] = full
        n_params += A.size + B.size + (bias.size if bias is not None else 0) + (mag.size if mag is not None else 0)

    adapter = Adapter(adapter_dir, cfg, loras, names, skipped=skipped)
    table_shape = shapes["embed_tokens.weight"]
    tied_copy = None  # an lm_head saved beside a trained embed_tokens without being listed: its tied copy?
    for module, name in saved.items():
        kind = module.rsplit(".", 1)[-1]
        t = tensor(name)
        if t.shape != table_shape:
            raise InputError(f"saved {kind} is {list(t.shape)}, the base's is {list(table_shape)}", file,
                             hint="an adapter made for another base model")
        if not any(module == s or module.endswith("." + s) for s in cfg.modules_to_save):
            if kind == "lm_head" and any(s.rsplit(".", 1)[-1] == "embed_tokens" for s in cfg.modules_to_save):
                tied_copy = (name, t)  # PEFT's ensure_weight_tying save: checked against embed_tokens below
                continue
            raise InputError(f"extra tensor {name!r}: {kind} is not in modules_to_save {cfg.modules_to_save}", file)
        setattr(adapter, kind, t)
        adapter.saved_names[kind] = name
        adapter.n_params += t.size
    if tied_copy is not None and adapter.embed_tokens is not None:
        name, head = tied_copy
        _check_tied_copy(head, adapter.embed_tokens, name, adapter.saved_names["embed_tokens"], file)
        adapter.tied_head = name
    for s in cfg.modules_to_save:
        kind = s.rsplit(".", 1)[-1]
        if kind not in ("embed_tokens", "lm_head"):
            raise InputError(f"modules_to_save {s!r} is not supported (only embed_tokens and lm_head are)", cfg.path)
        if getattr(adapter, kind) is None:
            raise InputError(f"modules_to_save lists {s!r} but the adapter holds no {kind} tensor", file,
                             hint="the trained module was not saved: its training is lost")
    adapter.n_params += n_params
    return adapter


def _check_tied_copy(head: np.ndarray, table: np.ndarray, head_name: str, table_name: str, file: Path,
                     block_rows: int = 4096) -> None:
    """A saved lm_head must equal the trained embed_tokens it is tied to, bit for bit (same values when the
    dtypes differ); else the output head is not the table the config ties it to, and nothing tells which is right."""
    for start in range(0, len(table), block_rows):
        a = np.asarray(head[start:start + block_rows])
        b = np.asarray(table[start:start + block_rows])
        same = (np.array_equal(a.view(np.uint8), b.view(np.uint8)) if a.dtype == b.dtype else
                np.array_equal(a.astype(f32), b.astype(f32), equal_nan=True))
        if same:
            continue
        a32, b32 = a.astype(f32), b.astype(f32)
        differs = ~((a32 == b32) | (np.isnan(a32) & np.isnan(b32)))  # [rows, D]
        rows = np.flatnonzero(differs.any(axis=1))
        row = start + int(rows[0]) if len(rows) else start  # same values, other bits (-0.0, NaN payloads)
        with np.errstate(invalid="ignore"):
            delta = float(np.nanmax(np.abs(a32 - b32), initial=0.0))
        raise InputError(f"{head_name!r} is saved beside a trained embed_tokens ({table_name!r}) but differs from it "
                         f"(first at row {row}, max |Δ| {delta:.3g}); modules_to_save lists only "
                         f"embed_tokens, so the output head should be its tied copy", file,
                         hint="save the adapter again with ensure_weight_tying=True, or list lm_head in modules_to_save "
                              "if the head was trained on its own")


# --- the base's weights, adapted ------------------------------------------------------------------------


class AdaptedWeights:
    """A base model's Weights with an adapter on top: what ``forward`` reads in place of the base's.

    ``layer(i)`` hands each adapted projection out as an :class:`Adapted` (base view + LoRA), which
    ``model.linear`` applies on the fly; the embedding tables come from the adapter when it saved them.
    Everything else is the base's.
    """

    def __init__(self, base: Weights, adapter: Adapter):
        self.base, self.adapter = base, adapter

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)

    def per_layer_projection(self) -> tuple[Any, np.ndarray]:
        W, norm = self.base.per_layer_projection()
        lora = self.adapter.loras.get((-1, "per_layer_model_projection"))
        return (W if lora is None else Adapted(W, lora)), norm

    def altup_projections(self) -> list[Any]:
        return self._global_list("altup_projections", self.base.altup_projections())

    def altup_unembed_projections(self) -> list[Any]:
        return self._global_list("altup_unembed_projections", self.base.altup_unembed_projections())

    def _global_list(self, name: str, ws: list[np.ndarray]) -> list[Any]:
        """Gemma 3n's AltUp stream projections `name`.0, .1, ..., each with its LoRA when adapted."""
        loras = [self.adapter.loras.get((-1, f"{name}.{j}")) for j in range(len(ws))]
        return [w if lora is None else Adapted(w, lora) for w, lora in zip(ws, loras)]

    def layer(self, i: int) -> dict[str, Any]:
        w = self.base.layer(i)
        for (j, mod), lora in self.adapter.loras.items():
            if j == i:
                key = mod + ".weight"
                w[key] = Adapted(w[key], lora)
        return w

    def embedding_rows(self, ids: np.ndarray) -> np.ndarray:
        if self.adapter.embed_tokens is None:
            return self.base.embedding_rows(ids)
        return np.array(self.adapter.embed_tokens[ids], dtype=f32)

    def embedding_blocks(self, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        E = self.adapter.output_table
        if E is None:
            yield from self.base.embedding_blocks(block_rows)
            return
        for start in range(0, self.base.cfg.vocab_size, block_rows):
            yield start, E[start:start + block_rows]

    def parameter_count(self) -> int:
        return self.base.parameter_count() + self.adapter.n_params

    def scan_nonfinite(self) -> list[WeightIssue]:
        """The base's tensors and the adapter's."""
        return self.base.scan_nonfinite() + self.adapter.scan_nonfinite()

