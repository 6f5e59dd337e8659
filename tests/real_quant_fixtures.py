"""Quantized variants of the real gemma-3-270m export, written by the formats' own libraries on CPU.

tests/test_real_model_quant.py makes them once per session into pytest's cache, next to the export
(tests/test_real_model.py ``real_export``), keyed by the export, the maker's code and the library's version:

======================  ==================================================================================
variant                 made by
======================  ==================================================================================
``mlx-4bit-g64``        ``mx.quantize`` (affine, group 64) of every linear layer and the embedding, in the
``mlx-8bit-g64``        export's dtype (float32: float32 scales and biases), saved in mlx-lm's layout (config
                        ``quantization`` + its ``quantization_config`` copy). It is what mlx-lm 0.32's
                        ``load_model`` + ``quantize_model`` + ``save_model`` writes for this export, tensor for
                        tensor (mlx-lm calls the same ``mx.quantize``; checked once, and mlx-lm's ``load``
                        reads these files where it is installed); mlx-lm itself is not a test dependency.
``bnb-nf4-dq``          transformers ``from_pretrained(quantization_config=BitsAndBytesConfig(...),
``bnb-int8``            device_map="cpu")`` + ``save_pretrained`` on bitsandbytes' CPU backend: nf4 with
                        double quantization (compute dtype float32), and LLM.int8 (needs accelerate).
``ct-w4a16-g128``       compressed-tensors' own lifecycle: ``apply_quantization_config`` (preset W4A16:
``ct-fp8-channel``      int4 symmetric, group 128; preset FP8_DYNAMIC: FP8 E4M3 weights per channel, the
                        activations per token at run time), min-max scales by ``calculate_qparams`` (what
                        llm-compressor's min-max observer feeds it), ``ModelCompressor.compress_model``,
                        ``save_pretrained`` and ``ModelCompressor.update_config``.
======================  ==================================================================================

The libraries' own dequantization (the exactness oracle) and their own forward passes on CPU (the
runtime's figures) live here too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

#: name -> what it is; the order of the report table.
VARIANTS: dict[str, str] = {
    "mlx-4bit-g64": "mlx affine 4-bit g64",
    "mlx-8bit-g64": "mlx affine 8-bit g64",
    "bnb-nf4-dq": "bitsandbytes nf4 + double quant",
    "bnb-int8": "bitsandbytes LLM.int8",
    "ct-w4a16-g128": "compressed-tensors pack-quantized W4A16 g128",
    "ct-fp8-channel": "compressed-tensors float-quantized FP8 per channel",
}


def library_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    dists = {"mlx": ("mlx",), "bnb": ("bitsandbytes", "transformers", "torch"),
             "ct": ("compressed-tensors", "transformers", "torch")}[name.split("-")[0]]
    out = []
    for d in dists:
        try:
            out.append(f"{d}={version(d)}")
        except PackageNotFoundError:
            out.append(f"{d}=none")
    return ",".join(out)


def cache_key(export: Path, name: str) -> str:
    """The export (its directory name holds the export code's hash), the maker's code, the libraries' versions."""
    import inspect

    maker = {"mlx": make_mlx, "bnb": make_bnb, "ct": make_ct}[name.split("-")[0]]
    h = hashlib.sha256()
    for part in (export.name, name, inspect.getsource(maker), library_version(name)):
        h.update(part.encode())
    return h.hexdigest()[:12]


def cached_variant(cache: Path, export: Path, name: str, make: Callable[[Path, Path], None]) -> tuple[Path, float]:
    """``cache/name-KEY``, made by ``make(export, tmp)`` and renamed into place unless already there.

    Returns the directory and the seconds spent making it (0.0 when cached). Older keys are removed.
    """
    import time

    out = cache / f"{name}-{cache_key(export, name)}"
    if (out / "config.json").is_file():
        return out, 0.0
    for old in cache.glob(f"{name}-*"):
        shutil.rmtree(old, ignore_errors=True)
    tmp = cache / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    t = time.perf_counter()
    make(export, tmp)
    seconds = time.perf_counter() - t
    tmp.rename(out)
    return out, seconds


@contextlib.contextmanager
def hub_offline():
    """The Hugging Face Hub offline for a while: bitsandbytes' CPU backend asks it for an optional kernel
    (kernels-community/quantization-bitsandbytes) when it is imported, and falls back to its own without one.
    huggingface_hub reads HF_HUB_OFFLINE once, at import, so its constant is set too; both are restored."""
    from huggingface_hub import constants

    old_env, old_const = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], constants.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old_const
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


# --- making the variants ---------------------------------------------------------------------------------


def make_mlx(src: Path, dst: Path, bits: int, group: int = 64) -> None:
    """mlx-lm's quantized layout, quantized by ``mx.quantize`` in the source's dtype (see the module docstring)."""
    import mlx.core as mx
    from safetensors import safe_open
    from safetensors.numpy import save_file

    config = json.loads((src / "config.json").read_text())
    out: dict[str, np.ndarray] = {}
    with safe_open(str(src / "model.safetensors"), "np") as f:
        for name in f.keys():  # noqa: SIM118  (safe_open is not iterable)
            t = f.get_tensor(name)
            module = name[: -len(".weight")]
            layer = module.split(".")[-1]
            quantize = name.endswith(".weight") and (layer in LINEARS or layer == "embed_tokens")
            if not quantize or t.shape[-1] % group:  # mlx-lm's predicate
                out[name] = t
                continue
            wq, scales, biases = mx.quantize(mx.array(t), group_size=group, bits=bits)
            out[name], out[module + ".scales"], out[module + ".biases"] = (np.array(wq), np.array(scales),
                                                                          np.array(biases))
    q = {"group_size": group, "bits": bits, "mode": "affine"}
    config["quantization"] = config["quantization_config"] = q  # mlx_lm.utils.save_config writes both
    dst.mkdir(parents=True)
    save_file(out, str(dst / "model.safetensors"), metadata={"format": "mlx"})
    (dst / "config.json").write_text(json.dumps(dict(sorted(config.items())), indent=4))


def make_bnb(src: Path, dst: Path, kind: str) -> None:
    """transformers + bitsandbytes on CPU: kind "nf4-dq" or "int8"."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if kind == "int8":
        qc = BitsAndBytesConfig(load_in_8bit=True)
    else:
        qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.float32)
    with hub_offline():
        model = AutoModelForCausalLM.from_pretrained(src, quantization_config=qc, device_map="cpu", dtype=torch.float32)
    model.save_pretrained(dst)
    (dst / "generation_config.json").unlink(missing_ok=True)


def make_ct(src: Path, dst: Path, kind: str) -> None:
    """compressed-tensors: kind "w4a16" (pack-quantized int4 g128, symmetric) or "fp8" (float-quantized, channel)."""
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationConfig,
        apply_quantization_config,
        preset_name_to_scheme,
    )
    from compressed_tensors.quantization.utils import calculate_qparams
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    if kind == "w4a16":
        scheme = preset_name_to_scheme("W4A16", ["Linear"])  # int4, symmetric, group 128
    else:
        # float8 E4M3 weights per channel, activations quantized per token at run time (RedHatAI's *-FP8-dynamic):
        # nothing of the activations is stored, so the format is float-quantized and the weights are all there is
        scheme = preset_name_to_scheme("FP8_DYNAMIC", ["Linear"])
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"]),
                              show_progress=False)
    with torch.no_grad():
        for _, m in model.named_modules():
            if getattr(m, "quantization_scheme", None) is None:
                continue
            args, w = m.quantization_scheme.weights, m.weight.float()
            view = w.reshape(w.shape[0], -1, args.group_size) if args.strategy == "group" else w.unsqueeze(1)
            # min-max, as llm-compressor's default observer hands them to calculate_qparams
            scale, zero = calculate_qparams(view.amin(-1).clamp(max=0), view.amax(-1).clamp(min=0), args)
            m.weight_scale.copy_(scale.reshape(m.weight_scale.shape))
            if hasattr(m, "weight_zero_point"):
                m.weight_zero_point.copy_(zero.reshape(m.weight_zero_point.shape))
    compressor = ModelCompressor.from_pretrained_model(model)
    compressor.compress_model(model)
    model.save_pretrained(dst)
    compressor.update_config(str(dst))
    (dst / "generation_config.json").unlink(missing_ok=True)


MAKERS: dict[str, Callable[[Path, Path], None]] = {
    "mlx-4bit-g64": lambda s, d: make_mlx(s, d, 4),
    "mlx-8bit-g64": lambda s, d: make_mlx(s, d, 8),
    "bnb-nf4-dq": lambda s, d: make_bnb(s, d, "nf4-dq"),
    "bnb-int8": lambda s, d: make_bnb(s, d, "int8"),
    "ct-w4a16-g128": lambda s, d: make_ct(s, d, "w4a16"),
    "ct-fp8-channel": lambda s, d: make_ct(s, d, "fp8"),
}


# --- damage ----------------------------------------------------------------------------------------------


def tensor_location(path: Path, name: str) -> tuple[str, list[int], int, int]:
    """(dtype, shape, first byte, end byte) of one tensor in a safetensors file, from its header."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    info = header[name]
    start, stop = info["data_offsets"]
    return info["dtype"], info["shape"], 8 + n + start, 8 + n + stop


def damaged_copy(variant: Path, dst: Path, edits: dict[str, Callable[[np.ndarray], np.ndarray]]) -> Path:
    """A copy of ``variant`` with some tensors rewritten in place: ``edits[name](array) -> array`` (same size)."""
    from release.weights.quant.weights import STORED_DTYPES

    shutil.copytree(variant, dst)
    path = dst / "model.safetensors"
    for name, fn in edits.items():
        dtype, shape, a, b = tensor_location(path, name)
        with open(path, "r+b") as f:
            f.seek(a)
            arr = np.frombuffer(f.read(b - a), dtype=STORED_DTYPES[dtype]).reshape(shape)
            new = np.ascontiguousarray(fn(arr.copy()), dtype=arr.dtype)
            assert new.nbytes == b - a
            f.seek(a)
            f.write(new.tobytes())
    return dst


# --- the libraries' own dequantization -------------------------------------------------------------------


def library_dequantize(variant: Path, name: str, module: str, rows: slice = slice(None)) -> np.ndarray:
    """float32 [out, in] of one quantized module (or those rows), by the format's library from the stored tensors."""
    from safetensors import safe_open

    path = str(variant / "model.safetensors")
    fmt = name.split("-")[0]
    if fmt == "mlx":
        import mlx.core as mx

        q = json.loads((variant / "config.json").read_text())["quantization"]
        t = mx.load(path)
        out = mx.dequantize(t[module + ".weight"][rows], t[module + ".scales"][rows], t[module + ".biases"][rows],
                            group_size=q["group_size"], bits=q["bits"])
        return np.array(out.astype(mx.float32))
    import torch

    with safe_open(path, "pt") as f:
        names = [k for k in f.keys() if k.startswith(module + ".")]  # noqa: SIM118
        state = {k[len(module) + 1:]: f.get_tensor(k) for k in names}
    if fmt == "bnb":
        with hub_offline():
            import bitsandbytes.functional as F

        if "SCB" in state:
            return F.int8_vectorwise_dequant(state["weight"], state["SCB"]).float().numpy()[rows]
        parts = {k[len("weight."):]: v for k, v in state.items() if k.startswith("weight.")}
        qs = F.QuantState.from_dict(parts, device=torch.device("cpu"))
        return F.dequantize_4bit(state["weight"], qs).float().numpy()[rows]
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationConfig

    qc = QuantizationConfig.model_validate({k: v for k, v in json.loads((variant / "config.json").read_text())
                                            ["quantization_config"].items() if k in QuantizationConfig.model_fields})
    scheme = qc.config_groups["group_0"]
    compressor = BaseCompressor.get_value_from_registry(qc.format)
    return compressor.decompress(state, scheme)["weight"].float().numpy()[rows]


# --- the formats' own runtimes on CPU --------------------------------------------------------------------


def runtime_logits(kind: str, model_dir: Path, sequences: list[list[int]]) -> list[np.ndarray]:
    """float32 logits [T, V] per sequence from the format's runtime: "mlx" (mlx-lm) or "torch" (transformers,
    eager attention; bitsandbytes' CPU kernels for a bnb directory, compressed-tensors decompressing on load)."""
    if kind == "mlx":
        import mlx.core as mx
        from mlx_lm.utils import load_model

        model, _ = load_model(model_dir)
        return [np.array(model(mx.array(ids)[None])[0].astype(mx.float32)) for ids in sequences]
    import torch
    from transformers import AutoModelForCausalLM

    config = json.loads((model_dir / "config.json").read_text())
    kw = {}
    method = (config.get("quantization_config") or {}).get("quant_method")
    if method == "bitsandbytes":
        kw["device_map"] = "cpu"
    elif method == "compressed-tensors":  # decompressed on load: float32 weights, no activation quantization
        from transformers import CompressedTensorsConfig

        kw["quantization_config"] = CompressedTensorsConfig(dequantize=True)
    with hub_offline(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "You passed `quantization_config`", UserWarning)  # only its load options
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager", **kw)
    model.eval()
    with torch.no_grad():
        return [model(torch.tensor([ids])).logits[0].float().numpy() for ids in sequences]


def compare(ref: list[np.ndarray], got: list[np.ndarray]) -> dict[str, float]:
    """mean KL(ref || got) over all positions, top-1 agreement, max |Δlogit|: verify's measures, in float64."""
    kls, agree, n, worst = [], 0, 0, 0.0
    for r, g in zip(ref, got):
        r, g = r.astype(np.float64), g.astype(np.float64)
        lp = r - r.max(-1, keepdims=True)
        lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
        lq = g - g.max(-1, keepdims=True)
        lq -= np.log(np.exp(lq).sum(-1, keepdims=True))
        kls.append((np.exp(lp) * (lp - lq)).sum(-1))
        agree += int((r.argmax(-1) == g.argmax(-1)).sum())
        n += len(r)
        worst = max(worst, float(np.abs(r - g).max()))
    return {"mean_kl": float(np.concatenate(kls).mean()), "top1": agree / n, "max_abs_diff": worst}
