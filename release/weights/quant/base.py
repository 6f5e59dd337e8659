"""What every quantized-checkpoint format provides: recognition from the files, and NumPy dequantization.

A quantized variant of a Gemma release (MLX, bitsandbytes, GPTQ, AWQ, compressed-tensors, FP8) is a
directory with ``config.json`` and safetensors, like the original, where some linear layers' ``weight``
is replaced by packed integers plus scales (and zero points, biases, lookup tables ...), each format
with its own tensor names and bit layout. A format module (one file per format in this package) gives:

* ``recognise(config, names) -> Scheme | None``: whether the directory is in this format, from
  ``config.json`` (``quantization_config`` / ``quantization``) and the tensor names;
* ``dequantize(scheme, module, get, shape, rows=None)``, which rebuilds one linear layer's float32
  ``[out, in]`` weight (or some of its rows) from the stored tensors, one layer at a time
  (``get(name)`` reads one stored tensor, memory-mapped, in its stored dtype);
* ``quantized_modules(scheme, names)`` and ``stored_names(scheme, module, names)``: which layers are
  quantized, and which stored tensors belong to one (so nothing stored goes unaccounted for);
* optionally ``validate(scheme, module, get, shape) -> list[str]``: the module's structure problems
  (missing scales, a packed tensor of the wrong shape ...) from headers and small tensors only, so a
  broken file is refused before any forward pass. Without it, ``QuantWeights`` dequantizes the
  module's last row as the probe.

``recognise`` raises :class:`release.errors.InputError` (exit 2) for a directory that is in its format
but in a variant it cannot undo (bits, mode, quant type), naming it; ``dequantize`` raises it for tensors
that do not fit, naming the tensor. Neither ever returns a number it is unsure of.

Names: ``module`` is the full tensor-name prefix of one quantized layer as stored, e.g.
``model.layers.0.mlp.down_proj`` (its tensors are ``{module}.qweight``, ``{module}.scales`` ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

Getter = Callable[[str], np.ndarray]  # stored tensor name -> array (memory-mapped, stored dtype)


@dataclass(frozen=True)
class Scheme:
    """One recognised quantization: what it is, and how to undo it."""

    format: str  # "mlx", "bitsandbytes", "gptq", "awq", "compressed-tensors", "fp8"
    method: str  # e.g. "affine", "nf4", "fp4", "int8", "gptq", "awq-gemm", "pack-quantized", "float-quantized", "fbgemm_fp8"
    bits: int  # weight bits (4, 8, ...)
    group_size: int | None  # weights per scale along the input dimension; None: per channel / per tensor
    details: dict[str, Any] = field(default_factory=dict)  # format-specific (sym, desc_act, double_quant, block size ...)

    @property
    def label(self) -> str:
        """Short label for reports and variant tables, e.g. ``gptq 4-bit g128``."""
        g = f" g{self.group_size}" if self.group_size else ""
        return f"{self.format} {self.method} {self.bits}-bit{g}"


class Format(Protocol):
    """A format module's interface (release/weights/quant/<format>.py)."""

    NAME: str

    def recognise(self, config: dict[str, Any], names: set[str]) -> "Scheme | None": ...

    def quantized_modules(self, scheme: Scheme, names: set[str]) -> set[str]: ...

    def dequantize(self, scheme: Scheme, module: str, get: Getter, shape: tuple[int, int],
                   rows: np.ndarray | slice | None = None) -> np.ndarray:
        """float32 [out, in] (or only `rows` of it: an embedding lookup, a block of the output head)."""
        ...

    def stored_names(self, scheme: Scheme, module: str, names: set[str]) -> set[str]: ...

    # optional:
    # def validate(self, scheme: Scheme, module: str, get: Getter, shape: tuple[int, int]) -> list[str]: ...


def problems_of(check: Callable[[], object], missing: Callable[[str], str]) -> list[str]:
    """A format's ``validate``: run `check` (reads headers and small states only) and turn what it raises into
    messages; a KeyError is a missing tensor, described by ``missing(name)``. Empty: the module will dequantize."""
    from release.errors import InputError

    try:
        check()
    except KeyError as e:
        return [missing(e.args[0])]
    except InputError as e:
        return [e.message]
    return []
