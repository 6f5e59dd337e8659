"""Quantized-checkpoint formats: which one a directory is in (:func:`detect`), and the registry of them.

Each format is one module of this package (see :mod:`release.weights.quant.base` for what it provides).
:data:`FORMATS` holds those present, in the order they are asked: MLX first, since its ``quantization``
key is its own, then the ``quantization_config.quant_method`` formats.

==========================  ==============================================  =================================
module                      recognised by                                   methods
==========================  ==============================================  =================================
``mlx``                     ``quantization: {group_size, bits[, mode]}``    affine 1-8-bit, mxfp4, nvfp4, mxfp8
``bitsandbytes``            ``quant_method: bitsandbytes``                  nf4, fp4 (± double quant), int8
``gptq``, ``awq``,          their ``quant_method``                          (their own module docstrings)
``compressed_tensors``,
``fp8``
==========================  ==============================================  =================================
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from release.errors import InputError
from release.weights.quant.base import Scheme

#: Format modules, in the order they are asked; a module not (yet) in the tree is skipped.
MODULE_NAMES = ("mlx", "bitsandbytes", "gptq", "awq", "compressed_tensors", "fp8")


def _load() -> list[ModuleType]:
    found = []
    for name in MODULE_NAMES:
        full = f"{__name__}.{name}"
        try:
            found.append(importlib.import_module(full))
        except ModuleNotFoundError as e:
            if e.name != full:  # the module is there but imports something missing: a real error
                raise
    return found


FORMATS: list[ModuleType] = _load()

#: Tensor-name endings only quantized checkpoints have (for a directory whose config declares nothing).
QUANT_SUFFIXES = (".scales", ".biases", ".qweight", ".qzeros", ".g_idx", ".SCB", ".absmax", ".weight_scale",
                  ".weight_packed", ".weight_scale_inv", ".input_scale")


def quantization_declared(config: dict[str, Any]) -> dict[str, Any] | None:
    """The ``quantization_config`` / ``quantization`` object config.json declares (top level or text_config)."""
    for c in (config, config.get("text_config")):
        if not isinstance(c, dict):
            continue
        for key in ("quantization", "quantization_config"):
            if key in c and c[key] not in (None, False, {}):
                return c[key] if isinstance(c[key], dict) else {"": c[key]}
    return None


def supported() -> str:
    return ", ".join(m.NAME for m in FORMATS)


def recognise(config: dict[str, Any], names: set[str], where: str | os.PathLike | None = None
              ) -> tuple[ModuleType, Scheme] | None:
    """The format module and scheme of a checkpoint from its config dict and tensor names; None: not quantized.

    InputError (exit 2) names the format for a declared quantization nobody reads, or one a module
    recognises but cannot undo (its bits, mode, quant type), and for tensors that look quantized
    under a config that declares nothing.
    """
    for mod in FORMATS:
        try:
            scheme = mod.recognise(config, names)
        except InputError as e:
            raise InputError(e.message, e.path or where, hint=e.hint) from None
        if scheme is not None:
            return mod, scheme
    declared = quantization_declared(config)
    if declared is not None:
        method = declared.get("quant_method")
        what = (f"quantization_config.quant_method {method!r}" if method is not None
                else f"the declared quantization {sorted(declared)!r}")
        raise InputError(f"{what} is not supported (supported: {supported()})", where,
                         hint="verify measures the formats listed; a dequantized float copy can be verified as a "
                              "model directory")
    odd = sorted(n for n in names if n.endswith(QUANT_SUFFIXES))
    if odd:
        raise InputError(f"{len(odd)} tensors look quantized ({', '.join(odd[:3])}{' …' if len(odd) > 3 else ''}) "
                         "but config.json declares no quantization", where,
                         hint="a quantized variant's config.json says how it is quantized (quantization_config)")
    return None


def detect(model_dir: str | os.PathLike) -> tuple[ModuleType, Scheme] | None:
    """The format of a model directory from config.json and its safetensors headers (no tensor data read)."""
    from gemma_ref.config import read_config_json
    from gemma_ref.weights import list_checkpoint_files, read_headers

    model_dir = Path(model_dir)
    config, path = read_config_json(model_dir)
    names = set(read_headers(list_checkpoint_files(model_dir)))
    return recognise(config, names, path)


def quantized_variant(model_dir: str | os.PathLike) -> tuple[ModuleType, Scheme] | None:
    """:func:`detect` for a directory that may be anything: None when it is no readable quantized checkpoint.

    A quantization config.json declares but nobody reads still raises (naming it): better than the
    structure errors a float reader would give.
    """
    from gemma_ref.config import read_config_json

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        return None
    try:
        return detect(model_dir)
    except InputError:
        try:
            config, _ = read_config_json(model_dir)
        except InputError:
            return None
        if quantization_declared(config) is not None:
            raise
        return None
