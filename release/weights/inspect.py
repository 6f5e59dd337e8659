"""`gemma-release inspect`: what a checkpoint is, from its config and safetensors headers only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gemma_ref.config import load_config, match_variant
from gemma_ref.weights import Weights
from release.files import check_model_files


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


def inspect_model(model_dir: str | Path) -> dict[str, Any]:
    """A JSON-safe summary; reads headers, never tensor data."""
    model_dir = Path(model_dir)
    check_model_files(model_dir)  # a FIFO among them would block gemma_ref's readers
    cfg = load_config(model_dir)
    w = Weights(model_dir, cfg, check=False)
    try:
        params = w.parameter_count()
        return {
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
    finally:
        w.close()


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
    for k, v in rows:
        t.add_row(k, v)
    for e in info["errors"]:
        t.add_row("[red]error[/]", e)
    for wmsg in info["warnings"]:
        t.add_row("[yellow]warning[/]", wmsg)
    return t
