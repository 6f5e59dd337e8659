"""`gemma-release inspect`: what a checkpoint is, from its config and safetensors headers only.

``inspect --json`` keys (every generation): path, model_type, generation, variant (the
``gemma_ref.config.KNOWN_VARIANTS`` name with exactly these shapes, or null), architectures,
nested_multimodal_config, tensor_prefix, vocab_size, hidden_size, intermediate_size,
num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim, attention (summary),
query_pre_attn_scalar, attn_logit_softcapping, final_logit_softcapping, rope_global / rope_local
(theta, linear_factor), parameters (counted in the files' headers), parameters_human,
parameters_expected_from_config, storage_dtypes, declared_dtype, files, bytes_on_disk(_human),
float32_bytes, errors, warnings.

A quantized variant (MLX, bitsandbytes, GPTQ, ... : :mod:`release.weights.quant`) adds ``quantization``: format,
method, scheme (label), bits, group_size, details, quantized_modules, quantized_tensors, quantized_weights,
quantized_bytes, bits_per_weight (effective: stored bytes of the quantized modules' tensors * 8 / the weights
they represent), tensor_types, modules; its ``parameters`` are the config's shapes (the logical weights) and
its ``storage_dtypes`` count the float tensors plus the quantized modules. Reading it reads the small
per-module quant states (bitsandbytes' JSON) besides the headers.

Models with per-layer geometry (Gemma 4; Gemma 3n too) add ``per_layer`` (see :func:`per_layer_summary`):

* ``attention_scale``: the factor on q.k (Gemma 4: 1.0; no query_pre_attn_scalar, no head_dim**-0.5);
* ``layer_types``: per type ("sliding_attention", "full_attention"): ``layers`` (indices),
  ``head_dim``, ``num_key_value_heads``, ``k_eq_v`` (no v_proj: V is the raw k_proj output),
  ``intermediate_size`` (each an int, or a sorted list when the layers of the type differ),
  ``rope`` {type "default" | "linear" | "proportional", theta, linear_factor,
  partial_rotary_factor, rotated_dims (of head_dim)}, ``sliding_window`` (sliding only);
* ``per_layer_embeddings``: null, or {hidden_size_per_layer_input, vocab_size_per_layer_input,
  table_parameters} (the ``embed_tokens_per_layer`` table);
* ``kv_sharing``: null, or {num_kv_shared_layers, sources: {layer: the layer whose K/V it reuses}};
* ``double_wide_mlp``: null, or {layers, intermediate_size} (E2B's KV-shared layers);
* ``moe``: null, or {num_experts, top_k_experts, moe_intermediate_size, dense_intermediate_size,
  expert_parameters (one expert, one layer)};
* ``parameters_active_per_token``: parameters one token runs through (MoE: the top-k experts of
  each layer; else all of them), from the files' counts; ``parameters_active_expected_from_config``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gemma_ref.config import (
    FULL,
    SLIDING,
    GemmaConfig,
    Rope,
    load_config,
    match_variant,
)
from gemma_ref.weights import Weights
from release.errors import InputError
from release.files import check_model_files
from release.weights.quant import quantized_variant


def _human_count(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _human_bytes(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


def _one_or_all(values: list[int]) -> int | list[int]:
    """The value the layers share, or every distinct value (sorted) when they differ."""
    distinct = sorted(set(values))
    return distinct[0] if len(distinct) == 1 else distinct


def _rope(rope: Rope, head_dim: int | list[int]) -> dict[str, Any]:
    kind = "proportional" if rope.proportion < 1.0 else "linear" if rope.linear_factor != 1.0 else "default"
    hd = head_dim if isinstance(head_dim, int) else max(head_dim)
    # the reference's rope_inv_freq: the first int(p * Hd // 2) pairs rotate, the others stay put
    return {"type": kind, "theta": rope.theta, "linear_factor": rope.linear_factor,
            "partial_rotary_factor": rope.proportion, "rotated_dims": 2 * int(rope.proportion * hd // 2)}


def per_layer_summary(cfg: GemmaConfig, parameters: int) -> dict[str, Any]:
    """The per-layer geometry of a Gemma 4 config, by layer type, plus PLE, KV sharing, MLP width, MoE."""
    types: dict[str, Any] = {}
    for t, rope in ((SLIDING, cfg.rope_local), (FULL, cfg.rope_global)):
        idx = [i for i, s in enumerate(cfg.layers) if s.type == t]
        if not idx:
            continue
        specs = [cfg.layers[i] for i in idx]
        head_dim = _one_or_all([s.head_dim for s in specs])
        types[t] = {"layers": idx, "head_dim": head_dim,
                    "num_key_value_heads": _one_or_all([s.num_key_value_heads for s in specs]),
                    "k_eq_v": any(s.k_eq_v for s in specs),
                    "intermediate_size": _one_or_all([s.intermediate_size for s in specs]),
                    "rope": _rope(rope, head_dim)}
        if t == SLIDING:
            types[t]["sliding_window"] = cfg.sliding_window
    P = cfg.hidden_size_per_layer_input
    sources = {str(i): s.kv_source for i, s in enumerate(cfg.layers) if s.kv_source is not None}
    wide = [i for i, s in enumerate(cfg.layers) if s.intermediate_size != cfg.intermediate_size]
    not_routed = cfg.expected_parameters() - cfg.expected_parameters(active=True)
    return {
        "attention_scale": cfg.query_pre_attn_scalar ** -0.5,  # Gemma 4 stores 1.0: scores are q.k as they are
        "layer_types": types,
        "per_layer_embeddings": {"hidden_size_per_layer_input": P,
                                 "vocab_size_per_layer_input": cfg.vocab_size_per_layer_input,
                                 "table_parameters": cfg.vocab_size_per_layer_input * cfg.num_hidden_layers * P}
        if P else None,
        "kv_sharing": {"num_kv_shared_layers": cfg.num_kv_shared_layers, "sources": sources} if sources else None,
        "double_wide_mlp": {"layers": wide, "intermediate_size": _one_or_all([cfg.layers[i].intermediate_size
                                                                               for i in wide])}
        if cfg.use_double_wide_mlp and wide else None,
        "moe": {"num_experts": cfg.num_experts, "top_k_experts": cfg.top_k_experts,
                "moe_intermediate_size": cfg.moe_intermediate_size, "dense_intermediate_size": cfg.intermediate_size,
                "expert_parameters": 3 * cfg.hidden_size * cfg.moe_intermediate_size}
        if cfg.num_experts else None,
        "parameters_active_per_token": parameters - not_routed,
        "parameters_active_expected_from_config": cfg.expected_parameters(active=True),
    }


def inspect_model(model_dir: str | Path) -> dict[str, Any]:
    """A JSON-safe summary; reads headers, never tensor data."""
    model_dir = Path(model_dir)
    check_model_files(model_dir)  # a FIFO among them would block gemma_ref's readers
    cfg = load_config(model_dir)
    w = Weights(model_dir, cfg, check=False)
    try:
        params = w.parameter_count()
        info = {
            "path": str(model_dir),
            "model_type": cfg.model_type,
            "generation": cfg.generation,
            "variant": match_variant(cfg),
            "architectures": list(cfg.architectures),
            "nested_multimodal_config": cfg.nested,
            "tensor_prefix": w.prefix,
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": cfg.num_key_value_heads,
            "head_dim": cfg.head_dim,
            "attention": cfg.layer_summary(),
            "query_pre_attn_scalar": cfg.query_pre_attn_scalar,
            "attn_logit_softcapping": cfg.attn_logit_softcapping,
            "final_logit_softcapping": cfg.final_logit_softcapping,
            "rope_global": {"theta": cfg.rope_global.theta, "linear_factor": cfg.rope_global.linear_factor},
            "rope_local": {"theta": cfg.rope_local.theta, "linear_factor": cfg.rope_local.linear_factor},
            "parameters": params,
            "parameters_human": _human_count(params),
            "parameters_expected_from_config": cfg.expected_parameters(),
            "storage_dtypes": w.storage_dtypes(),
            "declared_dtype": cfg.storage_dtype,
            "files": [f.name for f in w.files],
            "bytes_on_disk": w.bytes_on_disk(),
            "bytes_on_disk_human": _human_bytes(w.bytes_on_disk()),
            "float32_bytes": params * 4,
            "errors": [i.message for i in w.issues if i.severity == "error"],
            "warnings": [i.message for i in w.issues if i.severity != "error"],
        }
        found = quantized_variant(model_dir)
        if found is not None:  # MLX, bitsandbytes, GPTQ ...: the packed tensors are not the float ones Weights expects
            params = _quantization(info, model_dir, cfg, found)
        if cfg.layers:  # Gemma 4: per-layer geometry
            info["per_layer"] = per_layer_summary(cfg, params)
        vision = vision_summary(model_dir, w)
        if vision is not None:
            info["vision"] = vision
        return info
    finally:
        w.close()


def _quantization(info: dict[str, Any], model_dir: Path, cfg: GemmaConfig, found: tuple) -> int:
    """``info["quantization"]`` for a quantized variant, and the fields a float reading gets wrong; returns parameters.

    The format, scheme, bits and group size, which modules / tensors are quantized and the effective bits per
    weight (stored bytes of the quantized modules' tensors * 8 / the weights they represent). Parameters are
    counted as the config's shapes (a packed tensor's shape is not its weight count). Structure problems are
    the format's own (QuantWeights: exit 2), not the float reader's dtype errors.
    """
    from gemma_ref.weights import expected_shapes
    from release.weights.quant.weights import QuantWeights

    qw = QuantWeights(model_dir, cfg, *found)
    try:
        q = qw.describe()
        float_dtypes: dict[str, int] = {}
        for rel in expected_shapes(cfg):
            if qw._module(rel) is None:
                dt = qw.infos[qw.prefix + rel].dtype
                name = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}.get(dt, dt)
                float_dtypes[name] = float_dtypes.get(name, 0) + 1
        info["storage_dtypes"] = {**float_dtypes, f"quantized ({q['scheme']})": q["quantized_modules"]}
        info["errors"] = []
        info["warnings"] = [f.message for f in qw.findings]
    finally:
        qw.close()
    params = sum(int(np.prod(shape, dtype=np.int64)) for shape in expected_shapes(cfg).values())
    info.update(parameters=params, parameters_human=_human_count(params), float32_bytes=params * 4)
    info["quantization"] = {k: q[k] for k in ("format", "method", "scheme", "bits", "group_size", "details",
                                              "quantized_modules", "quantized_tensors", "quantized_weights",
                                              "quantized_bytes", "bits_per_weight", "tensor_types", "modules")}
    return params


def vision_summary(model_dir: Path, w: Weights) -> dict[str, Any] | None:
    """The vision tower gemma_ref runs (Gemma 3's SigLIP, Gemma 4's encoder), from config and headers; None without one."""
    from gemma_ref import vision

    try:
        vc = vision.load_vision_config(model_dir)
        if vc is None:
            return None
        names = vision.TowerWeights(w, vc).names()
    except InputError as e:  # a tower that does not fit: said, the text summary stands
        return {"error": e.message}
    n = sum(int(np.prod(w.infos[k].shape, dtype=np.int64)) for k in names)
    return {"family": vc.family, "layers": vc.num_hidden_layers, "hidden_size": vc.hidden_size,
            "heads": vc.num_attention_heads, "patch_size": vc.patch_size, "tensors": len(names), "parameters": n,
            "parameters_human": _human_count(n),
            "image_size": vc.image_size or None, "tokens_per_image": vc.mm_tokens_per_image or None,
            "max_soft_tokens": vc.preprocess.max_soft_tokens or None, "pan_and_scan": vc.preprocess.do_pan_and_scan,
            "bidirectional_image_attention": vc.bidirectional, "clipped_linears": vc.clipped,
            "standardize": vc.standardize, "processor_config": vc.preprocess.source or None}


def render_inspect(info: dict[str, Any]):
    from rich.table import Table

    t = Table(show_header=False, title=info["path"], title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    rows = [
        ("generation", f"Gemma {info['generation']} ({info['model_type']})"
         + (f", shaped like {info['variant']}" if info["variant"] else "")),
        ("parameters", f"{info['parameters_human']} ({info['parameters']:,})"),
        ("layers", f"{info['num_hidden_layers']}: {info['attention']}"),
        ("hidden / intermediate", f"{info['hidden_size']} / {info['intermediate_size']}"),
        ("heads", f"{info['num_attention_heads']} query, {info['num_key_value_heads']} key/value, head_dim {info['head_dim']}"),
        ("vocab", str(info["vocab_size"])),
        ("attention scale", f"query_pre_attn_scalar {info['query_pre_attn_scalar']:g} ** -0.5"),
        ("soft-caps", f"attention {info['attn_logit_softcapping']}, final {info['final_logit_softcapping']}"),
        ("rope", f"global base {info['rope_global']['theta']:g} (linear x{info['rope_global']['linear_factor']:g}), "
                 f"local base {info['rope_local']['theta']:g}"),
        ("storage", ", ".join(f"{k} x{v}" for k, v in info["storage_dtypes"].items())
         + (f" (config declares {info['declared_dtype']})" if info["declared_dtype"] else "")),
        ("files", f"{len(info['files'])} safetensors, {info['bytes_on_disk_human']} on disk; "
                  f"float32 would need {info['float32_bytes'] / (1 << 30):.2f} GiB"),
        ("tensor prefix", repr(info["tensor_prefix"])),
    ]
    if info.get("quantization"):
        q = info["quantization"]
        bpw = f"{q['bits_per_weight']:.3f}" if q["bits_per_weight"] is not None else "n/a"
        dq = " + double quantization" if q["details"].get("double_quant") else ""
        rows.insert(1, ("quantization", f"{q['scheme']}{dq}: {q['quantized_modules']} modules quantized "
                        f"({q['quantized_tensors']} tensors), {bpw} bits per weight effective"))
    if info.get("per_layer"):
        rows = _per_layer_rows(info, rows)
    v = info.get("vision")
    if v:
        if "error" in v:
            rows.append(("vision tower", f"cannot be run: {v['error']}"))
        else:
            size = (f"{v['image_size']}px, {v['tokens_per_image']} tokens per image" if v["family"] == "gemma3"
                    else f"aspect kept, up to {v['max_soft_tokens']} soft tokens per image")
            rows.append(("vision tower", f"{'SigLIP' if v['family'] == 'gemma3' else 'Gemma 4 encoder'}, "
                         f"{v['layers']} layers x {v['hidden_size']}, {v['parameters_human']} parameters in "
                         f"{v['tensors']} tensors; {size}; image attention bidirectional on "
                         f"{v['bidirectional_image_attention']} layers (verified by goldens with images)"))
    if info.get("adapter"):
        rows = _adapter_rows(info["adapter"]) + rows
    for k, v in rows:
        t.add_row(k, v)
    for e in info["errors"]:
        t.add_row("[red]error[/]", e)
    for wmsg in info["warnings"]:
        t.add_row("[yellow]warning[/]", wmsg)
    return t


def _per_layer_rows(info: dict[str, Any], rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Gemma 4's rows: its heads, scale, RoPE and MLP per layer type, PLE, KV sharing and experts."""
    g = info["per_layer"]
    out = []
    for k, v in rows:
        if k == "parameters" and g["moe"]:
            v += (f"; {_human_count(g['parameters_active_per_token'])} active per token "
                  f"({g['parameters_active_per_token']:,})")
        if k == "heads":
            v = f"{info['num_attention_heads']} query heads"
            for t, d in g["layer_types"].items():
                kind = "sliding" if t == SLIDING else "full"
                kv = f"{d['num_key_value_heads']} key/value" + (" (K=V: no v_proj, V is the raw k_proj output)"
                                                                if d["k_eq_v"] else "")
                v += f"; {kind}: head_dim {d['head_dim']}, {kv}"
        elif k == "attention scale":
            v = f"{g['attention_scale']:g} (no query_pre_attn_scalar: q_norm / k_norm carry the temperature)"
        elif k == "rope":
            parts = []
            for t, d in g["layer_types"].items():
                r = d["rope"]
                s = f"{'sliding' if t == SLIDING else 'full'}: {r['type']} base {r['theta']:g}"
                if r["type"] == "proportional":
                    s += (f", partial_rotary_factor {r['partial_rotary_factor']:g} "
                          f"({r['rotated_dims']} of {d['head_dim']} dims rotate)")
                if r["linear_factor"] != 1.0:
                    s += f", linear x{r['linear_factor']:g}"
                parts.append(s)
            v = "; ".join(parts)
        elif k == "hidden / intermediate" and g["double_wide_mlp"]:
            w = g["double_wide_mlp"]
            v += f" ({w['intermediate_size']} on the {len(w['layers'])} KV-shared layers: double-wide MLP)"
        out.append((k, v))
        if k == "layers":
            ple, kv, moe = g["per_layer_embeddings"], g["kv_sharing"], g["moe"]
            if ple:
                out.append(("per-layer embeddings", (
                    f"{ple['hidden_size_per_layer_input']} per layer, table {ple['vocab_size_per_layer_input']} rows "
                    f"(vocab_size_per_layer_input) x {info['num_hidden_layers']} layers = "
                    f"{_human_count(ple['table_parameters'])} parameters")))
            if kv:
                by_source: dict[int, list[int]] = {}
                for layer, src in kv["sources"].items():
                    by_source.setdefault(src, []).append(int(layer))
                out.append(("KV sharing", f"the last {kv['num_kv_shared_layers']} layers reuse K/V: " + "; ".join(
                    f"{_ranges(ls)} from layer {src}" for src, ls in sorted(by_source.items()))))
            if moe:
                out.append(("experts", (
                    f"{moe['num_experts']} experts, top-{moe['top_k_experts']} per token, expert width "
                    f"{moe['moe_intermediate_size']}, next to a dense MLP of {moe['dense_intermediate_size']}")))
    return out


def _ranges(layers: list[int]) -> str:
    """[15, 16, 17, 19] -> "layers 15-17, 19"."""
    layers = sorted(layers)
    parts, start = [], layers[0]
    for a, b in zip(layers, layers[1:] + [None]):
        if b != a + 1:
            parts.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ("layer " if len(layers) == 1 else "layers ") + ", ".join(parts)


def _where(layers: list[int]) -> str:
    """Adapted layer indices, -1 standing for projections outside the layers (PLE, AltUp): "layers 0-7 and outside them"."""
    inside = [i for i in layers if i >= 0]
    outside = "the model outside its layers" if -1 in layers else ""
    return " and ".join(x for x in (_ranges(inside) if inside else "", outside) if x)


# --- adapters ------------------------------------------------------------------------------------


def inspect_adapter(adapter_dir: str | Path, base: str | Path | None = None) -> dict[str, Any]:
    """inspect_model of the base, with what the adapter adapts and whether it fits (``info["adapter"]``)."""
    from gemma_ref import adapters
    from gemma_ref.errors import InputError

    adapter_dir = Path(adapter_dir)
    if not adapters.is_adapter_dir(adapter_dir):
        raise InputError("--base is for adapters, but this directory has no adapter_config.json", adapter_dir)
    check_model_files(adapter_dir)
    base_dir = adapters.resolve_base(adapter_dir, base)
    info = inspect_model(base_dir)
    cfg = load_config(base_dir)
    w = Weights(base_dir, cfg, check=False)
    try:
        summary = adapters.load_adapter(adapter_dir, w).summary()
        summary["fits_base"] = True
    except InputError as e:  # the adapter does not fit this base: say why, exit 1 like a checkpoint's errors
        c = adapters.read_adapter_config(adapter_dir)
        summary = {"adapter": str(adapter_dir), "method": "DoRA" if c.use_dora else "LoRA",
                   "base_model_name_or_path": c.base_model, "target_modules": c.target_modules, "r": c.r,
                   "lora_alpha": c.alpha, "scaling_rule": c.scaling_rule, "modules_to_save": c.modules_to_save,
                   "fits_base": False}
        info["errors"].append(f"adapter does not fit the base: {e}")
    finally:
        w.close()
    summary["base"] = str(base_dir)
    info["adapter"] = summary
    return info


def _adapter_rows(a: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("adapter", f"{a['method']} {a['adapter']} on {a['base']}"
             + ("" if a["fits_base"] else " [red](does not fit the base)[/]")),
            ("targets", str(a["target_modules"]) + (f" -> {a['n_adapted']} projections ({', '.join(a['adapted_modules'])}) "
                                                     f"in {_where(a['adapted_layers'])}" if a.get("n_adapted") else "")),
            ("rank / alpha", f"r {a['r']}, lora_alpha {a['lora_alpha']:g}"
             + (f", ranks used {a['ranks']}" if a.get("ranks") else "")),
            ("scaling", a["scaling_rule"] + (f" = {', '.join(f'{s:g}' for s in a['scales'])}" if a.get("scales") else ""))]
    if a.get("trainable_parameters") is not None:
        rows.append(("trainable parameters", f"{_human_count(a['trainable_parameters'])} ({a['trainable_parameters']:,})"))
    rows.append(("modules_to_save", ", ".join(a["modules_to_save"]) or "none"))
    if a.get("output_head"):
        rows.append(("output head", a["output_head"]))
    return rows
