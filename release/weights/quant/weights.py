"""A quantized safetensors directory as a weights source for the reference forward pass.

:class:`QuantWeights` duck-types :class:`gemma_ref.weights.Weights` -- ``cfg``, ``layer(i)``,
``embedding_rows(ids)``, ``embedding_blocks(n)``, ``final_norm()``, the Gemma 4 / 3n extras,
``close()`` -- so ``gemma_ref.model.forward`` runs a quantized variant (MLX, bitsandbytes, GPTQ ...)
unchanged, as :class:`release.weights.gguf_reader.GGUFWeights` does for GGUF:

=============================  ==========================================================
quantized linear layers        dequantized to float32 by the format module
                               (``release/weights/quant/<format>.py``), one layer at a time
quantized embedding (MLX)      rows dequantized on lookup; as the tied output head, in
                               blocks of rows
everything else                the stored floats (bf16/f16/f32 views of the memory-mapped
                               file), exactly as :class:`Weights` hands them out
structure                      every tensor the config needs is present: a float one with
                               the config's shape, or a quantized module whose stored tensors
                               fit it (the format's ``validate``); all problems in one
                               InputError (exit 2), before any forward pass
=============================  ==========================================================

The tensors are memory-mapped; ``get(name)`` hands a format module one stored tensor as a NumPy view in
its stored dtype (uint8, int8, uint32, float8 ... as well as floats), so only the pages a layer needs
are read. Only safetensors is read, never a pickle.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import ml_dtypes
import numpy as np

from gemma_ref.config import GemmaConfig
from gemma_ref.weights import (
    FOREIGN_PREFIXES,
    SAFETENSORS_DTYPES,
    detect_prefix,
    expected_shapes,
    list_checkpoint_files,
    read_headers,
)
from release.errors import InputError
from release.findings import Finding
from release.weights.quant.base import Scheme

#: safetensors dtype code -> NumPy dtype, for every dtype a quantized checkpoint stores.
STORED_DTYPES: dict[str, Any] = {
    "BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "U16": np.uint16, "I16": np.int16, "U32": np.uint32,
    "I32": np.int32, "U64": np.uint64, "I64": np.int64, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F32": np.float32, "F64": np.float64, "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
}
_SHOWN = 8  # problems listed in the one InputError


class QuantWeights:
    """Lazy float32 access to a quantized checkpoint's text-model tensors, under their HF names."""

    def __init__(self, model_dir: str | os.PathLike, cfg: GemmaConfig,
                 fmt: ModuleType | None = None, scheme: Scheme | None = None):
        from gemma_ref.config import read_config_json
        from release.weights.quant import recognise

        self.dir = Path(model_dir)
        self.cfg = cfg
        self.files = list_checkpoint_files(self.dir)
        self.infos = read_headers(self.files)  # safetensors validates every header: a truncated file stops here
        self.names = set(self.infos)
        if fmt is None or scheme is None:
            config, path = read_config_json(self.dir)
            found = recognise(config, self.names, path)
            if found is None:
                raise InputError("no quantization recognised (config.json declares none)", self.dir)
            fmt, scheme = found
        self.format, self.scheme = fmt, scheme
        self.prefix = detect_prefix(self.infos, self.dir)
        self._shapes = expected_shapes(cfg)
        self.modules = fmt.quantized_modules(scheme, self.names)  # full stored prefixes
        self._maps: dict[Path, np.ndarray] = {}
        self.findings: list[Finding] = []
        self.used = self._check()  # the quantized modules the text model reads: module -> [out, in]

    # --- raw access ----------------------------------------------------------------------------------

    def get(self, name: str) -> np.ndarray:
        """One stored tensor, memory-mapped, in its stored dtype (KeyError when absent)."""
        info = self.infos[name]
        m = self._maps.get(info.file)
        if m is None:
            m = self._maps[info.file] = np.memmap(info.file, dtype=np.uint8, mode="r").view(np.ndarray)
        dtype = STORED_DTYPES.get(info.dtype)
        if dtype is None:
            raise InputError(f"tensor {name!r} is stored as {info.dtype}, a dtype this reader does not know", info.file)
        return m[info.start:info.stop].view(dtype).reshape(info.shape)

    def _module(self, rel: str) -> str | None:
        """The quantized module holding tensor ``rel`` (name without prefix), or None when it is stored as floats."""
        if rel.endswith(".weight"):
            m = self.prefix + rel[:-len(".weight")]
            if m in self.modules:
                return m
        return None

    # --- structure -------------------------------------------------------------------------------------

    def _check(self) -> dict[str, tuple[int, int]]:
        """Every tensor the config needs, float or quantized, fits; else one InputError listing every problem."""
        problems: list[str] = []
        used: dict[str, tuple[int, int]] = {}
        for rel, shape in self._shapes.items():
            module = self._module(rel)
            if module is not None:
                if len(shape) != 2:
                    problems.append(f"{module} is quantized with shape {list(shape)}: only 2-D quantized matrices are "
                                    f"read ({self.scheme.format} packed experts are not supported yet)")
                    continue
                used[module] = (shape[0], shape[1])
                problems += self._validate(module, used[module])
                continue
            name = self.prefix + rel
            info = self.infos.get(name)
            if info is None:
                problems.append(f"tensor {name!r} is missing")
            elif info.shape != shape:
                problems.append(f"tensor {name!r} has shape {list(info.shape)}, the config implies {list(shape)}")
            elif info.dtype not in SAFETENSORS_DTYPES:
                problems.append(f"tensor {name!r} is stored as {info.dtype} but is not one the "
                                f"{self.scheme.format} quantization covers (expected BF16, F16 or F32)")
        if problems:
            shown = "; ".join(problems[:_SHOWN]) + (f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else "")
            raise InputError(f"{self.scheme.format} variant does not fit the original's config.json: {shown}", self.dir,
                             hint="is --against the model this variant was made from?")
        self._unused_findings(used)
        return used

    def _validate(self, module: str, shape: tuple[int, int]) -> list[str]:
        """The format's own structure check, or a dequantized last row as the probe."""
        check = getattr(self.format, "validate", None)
        if check is not None:
            return check(self.scheme, module, self.get, shape)
        try:
            self.format.dequantize(self.scheme, module, self.get, shape, rows=np.array([shape[0] - 1]))
        except KeyError as e:
            return [f"tensor {e.args[0]} is missing ({self.scheme.format} module {module})"]
        except (InputError, ValueError, IndexError) as e:
            return [getattr(e, "message", str(e))]
        return []

    def _unused_findings(self, used: dict[str, tuple[int, int]]) -> None:
        """WEIGHTS004/006 for stored tensors the text model does not read (as verify reports them for a float model)."""
        read = {self.prefix + rel for rel in self._shapes if self._module(rel) is None}
        for module in used:
            read |= self.format.stored_names(self.scheme, module, self.names)
        rest = sorted(self.names - read)
        foreign = [n for n in rest if n.startswith(FOREIGN_PREFIXES) or (self.prefix and not n.startswith(self.prefix)
                                                                          and not n.startswith("lm_head."))]
        rest = [n for n in rest if n not in foreign]
        where = str(self.dir)
        if foreign:
            self.findings.append(Finding("WEIGHTS006", "info", f"{len(foreign)} tensors of other towers "
                                         "(vision/audio/projector) ignored", path=where))
        head = [n for n in rest if n.startswith(("lm_head.", self.prefix + "lm_head."))]
        if head:
            self.findings.append(Finding("WEIGHTS004", "warning", f"{', '.join(head[:3])} present: Gemma's output head "
                                         "is the tied embedding, so it is ignored", path=where))
        rest = [n for n in rest if n not in head]
        if rest:
            self.findings.append(Finding("WEIGHTS004", "warning", f"{len(rest)} tensors not used by the text model "
                                         f"({', '.join(rest[:5])}{' …' if len(rest) > 5 else ''})", path=where))

    # --- what the forward pass asks for -------------------------------------------------------------------

    def _stored(self, rel: str) -> np.ndarray:
        return self.get(self.prefix + rel)

    def _matrix(self, rel: str, rows: np.ndarray | slice | None = None) -> np.ndarray:
        """A matrix for ``linear``: dequantized float32 when quantized, else the stored view (its rows)."""
        module = self._module(rel)
        if module is not None:
            return self.format.dequantize(self.scheme, module, self.get, self._shapes[rel], rows)
        w = self._stored(rel)
        return w if rows is None else w[rows]

    def tensor(self, rel: str) -> np.ndarray:
        """One tensor (name without prefix) in float32, in fresh memory."""
        return np.array(self._matrix(rel), dtype=np.float32)

    def layer(self, i: int) -> dict[str, np.ndarray]:
        """All tensors of layer i: quantized matrices dequantized now (float32), the rest as stored views."""
        p = f"layers.{i}."
        return {rel[len(p):]: self._matrix(rel) if len(shape) >= 2 else self.tensor(rel)
                for rel, shape in self._shapes.items() if rel.startswith(p)}

    def embedding_rows(self, ids: np.ndarray) -> np.ndarray:
        """E[ids] in float32, only those rows read (dequantized).  [T] -> [T, hidden]"""
        return np.array(self._matrix("embed_tokens.weight", np.asarray(ids)), dtype=np.float32)

    def embedding_blocks(self, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """The tied output head in blocks of rows (float32 when quantized): yields (first row, [n, hidden])."""
        for start in range(0, self.cfg.vocab_size, block_rows):
            yield start, self._matrix("embed_tokens.weight", slice(start, min(start + block_rows, self.cfg.vocab_size)))

    def final_norm(self) -> np.ndarray:
        return self.tensor("norm.weight")

    def per_layer_rows(self, ids: np.ndarray) -> np.ndarray:
        """Gemma 4 / 3n PLE rows in float32.  [T] -> [T, L*P]"""
        return np.array(self._matrix("embed_tokens_per_layer.weight", np.asarray(ids)), dtype=np.float32)

    def per_layer_projection(self) -> tuple[np.ndarray, np.ndarray]:
        return self._matrix("per_layer_model_projection.weight"), self.tensor("per_layer_projection_norm.weight")

    def altup_projections(self) -> list[np.ndarray]:
        return [self._matrix(f"altup_projections.{j}.weight") for j in range(self.cfg.altup_num_inputs - 1)]

    def altup_unembed_projections(self) -> list[np.ndarray]:
        return [self._matrix(f"altup_unembed_projections.{j}.weight") for j in range(self.cfg.altup_num_inputs - 1)]

    def close(self) -> None:
        self._maps.clear()  # the mappings close when the last view of them is gone

    # --- reporting -----------------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Format, scheme, which tensors are quantized and the effective bits per weight, for reports and inspect."""
        return describe(self.dir, self.format, self.scheme, self.infos, self.used, self.files)


def describe(model_dir: Path, fmt: ModuleType, scheme: Scheme, infos: dict, used: dict[str, tuple[int, int]],
             files: list[Path]) -> dict[str, Any]:
    """The variant's summary: effective bits = stored bytes of the quantized modules * 8 / weights they hold."""
    names = set(infos)
    stored = sorted({n for m in used for n in fmt.stored_names(scheme, m, names)})
    nbytes = sum(infos[n].stop - infos[n].start for n in stored)
    weights = sum(o * i for o, i in used.values())
    types: dict[str, int] = {}
    for n in stored:
        types[infos[n].dtype] = types.get(infos[n].dtype, 0) + 1
    return {
        "path": str(model_dir),
        "file": model_dir.name,
        "format": scheme.format,
        "method": scheme.method,
        "scheme": scheme.label,
        "quant": scheme.label,  # the report's "quant" field, as for a GGUF
        "bits": scheme.bits,
        "group_size": scheme.group_size,
        "details": {k: v for k, v in scheme.details.items() if k != "overrides"},
        "quantized_modules": len(used),
        "quantized_tensors": len(stored),
        "quantized_weights": weights,
        "quantized_bytes": nbytes,
        "bits_per_weight": round(nbytes * 8 / weights, 4) if weights else None,
        "bytes": sum(f.stat().st_size for f in files),
        "tensor_types": types,  # stored dtype -> quantized modules' tensors in it (the report's tensor line)
        "modules": sorted(used),
    }
