"""Make the GPTQ and AWQ oracle fixtures under tests/data/quant/ by running the quantization libraries' own code.

Run once by a developer (torch, safetensors, transformers; no GPU). Neither GPTQModel, AutoGPTQ nor
AutoAWQ installs on a CPU-only machine without building CUDA extensions, so this script reads their
*source checkouts* and runs the few pure-torch functions that define the stored layout:

    python tests/make_quant_oracles.py --gptqmodel ~/src/GPTQModel --autogptq ~/src/AutoGPTQ \\
        --autoawq ~/src/AutoAWQ

* GPTQ packing: AutoGPTQ ``auto_gptq/nn_modules/qlinear/qlinear_cuda.py`` ``QuantLinear.pack`` (v1
  layout: ``zeros - 1`` stored, 2/3/4/8-bit, g_idx honoured); v2 qzeros from GPTQModel's own v1->v2
  load-time conversion ``_correct_gptq_v1_qzeros`` (``gptqmodel/utils/model_dequant.py``), and v1 with a
  zero of 0 from its v2->v1 export ``_revert_gptq_v1_qzeros_correction``.
* GPTQ expected weights: GPTQModel ``convert_gptq_file`` (same file), run on the packed safetensors with the
  case's quantization_config, float32.
* AWQ packing: AutoAWQ ``awq/modules/linear/gemm.py`` and ``gemv.py`` ``from_linear``; AWQ GEMM expected
  weights: ``awq/utils/packing_utils.py`` ``dequantize_gemm`` (float32 scales: exact; the fp16 result it gives
  with fp16 scales is stored too). GEMV has no CPU dequantizer in AutoAWQ (only the CUDA kernel
  ``gemv_cuda.cu`` of AutoAWQ_kernels, read, not run), so its expected weight is the float weight that
  ``from_linear`` packed, built so that it is exactly representable.

* compressed-tensors 0.12 (``--compressed-tensors-012 DIR``: a ``pip install --target DIR --no-deps
  compressed-tensors==0.12.2``; run in a child process so the installed release does not shadow it): its
  ``PackedQuantizationCompressor.compress_weight`` / ``decompress_weight`` with ``weight_g_idx`` (actorder
  "group", which 0.20 no longer reads), symmetric only (0.12 cannot decompress packed zero points).

Every GPTQ / AWQ case starts from random codes, zeros and fp16 scales and the float32 weight they define exactly; the
script asserts that the oracle gives that weight back, then stores the packed tensors, the oracle's
output and the case's ``quantization_config`` (metadata) in ``tests/data/quant/{gptq,awq}_oracle.safetensors``.
Commits of the sources used for the committed fixtures: GPTQModel f4c327a1, AutoGPTQ 9f7d3707,
AutoAWQ 88e4c76b; compressed-tensors 0.12.2 from PyPI.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import types
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors import safe_open
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file as save_torch
from torch import nn

OUT = Path(__file__).resolve().parent / "data" / "quant"


def load_functions(path: Path, names: list[str], namespace: dict, cls: str | None = None) -> dict:
    """Compile the named top-level functions (or methods of `cls`) of a library file into `namespace`."""
    tree = ast.parse(path.read_text())
    body = tree.body
    if cls is not None:
        body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls).body
    found = [n for n in body if isinstance(n, ast.FunctionDef) and n.name in names]
    missing = set(names) - {n.name for n in found}
    assert not missing, f"{path}: {missing} not found"
    for n in found:
        n.decorator_list = []  # torch.inference_mode() and the like: not needed on CPU here
    exec(compile(ast.Module(body=found, type_ignores=[]), str(path), "exec"), namespace)
    return namespace


# --------------------------------------------------------------------------------------------------------
# GPTQ
# --------------------------------------------------------------------------------------------------------


def gptq_oracles(gptqmodel: Path, autogptq: Path) -> dict:
    ns = {"torch": torch, "np": np, "math": math, "logging": logging, "Path": Path, "defaultdict": defaultdict,
          "safe_open": safe_open, "LOG": logging.getLogger("oracle"), "PLANAR_BITS": (5, 6, 7),
          "Iterable": object, "Optional": object, "Dict": dict, "Tuple": tuple}
    load_functions(gptqmodel / "gptqmodel/utils/model_dequant.py", [
        "finalize_for_save", "_tensor_key_matches_ignored_layer", "_is_quant_auxiliary_tensor_key",
        "_handle_ignored_tensor", "unpack_cols", "pack_cols", "unpack_rows", "_require_int32_words_for_3bit",
        "_unpack_cols_3bit", "_pack_cols_3bit", "_unpack_rows_3bit", "_uses_gptq_v1_qzeros",
        "_shift_gptq_qzeros", "_correct_gptq_v1_qzeros", "_revert_gptq_v1_qzeros_correction",
        "convert_gptq_file"], ns)
    pack_ns = {"torch": torch, "np": np, "nn": nn, "transformers": transformers, "math": math}
    load_functions(autogptq / "auto_gptq/nn_modules/qlinear/qlinear_cuda.py", ["pack"], pack_ns, cls="QuantLinear")
    ns["autogptq_pack"] = pack_ns["pack"]
    return ns


def gptq_case(ns: dict, rng: np.random.Generator, name: str, out: int, in_: int, bits: int, group_size: int,
              sym: bool, desc_act: bool, fmt: str, zero_floor: int = 1) -> tuple[dict, dict, np.ndarray]:
    maxq = 2 ** bits - 1
    gs = in_ if group_size == -1 else group_size
    groups = math.ceil(in_ / gs)
    if desc_act:  # GPTQ's act-order: columns visited in a permuted order, groups cut along that order
        perm = rng.permutation(in_)
        g_idx = np.empty(in_, np.int64)
        g_idx[perm] = np.arange(in_) // gs
    else:
        g_idx = np.arange(in_) // gs
    q = rng.integers(0, maxq + 1, (in_, out))
    zeros = np.full((groups, out), (maxq + 1) // 2) if sym else rng.integers(zero_floor, maxq + 1, (groups, out))
    scales = rng.uniform(0.002, 0.05, (groups, out)).astype(np.float16)
    w = ((q - zeros[g_idx]) * scales[g_idx].astype(np.float32)).T.astype(np.float32)  # [out, in], exact

    # AutoGPTQ's packer (a v1 checkpoint) on a stub module
    me = types.SimpleNamespace(infeatures=in_, outfeatures=out, bits=bits, group_size=gs, maxq=maxq,
                               g_idx=torch.tensor(g_idx, dtype=torch.int32))
    # AutoGPTQ's packer would OR zero - 1 = -1 into every field of a word: with zeros of 0 it packs the codes
    # against zeros of at least 1 (the codes come out the same), and the zeros are stored the way GPTQModel does.
    v1_zeros = np.maximum(zeros, 1) if zero_floor == 0 else zeros
    linear = nn.Linear(in_, out, bias=False)
    linear.weight.data = torch.tensor(((q - v1_zeros[g_idx]) * scales[g_idx].astype(np.float32)).T.astype(np.float32))
    ns["autogptq_pack"](me, linear, torch.tensor(scales.T.astype(np.float32)), torch.tensor(v1_zeros.T),
                        torch.tensor(g_idx, dtype=torch.int32))
    qweight, qzeros = me.qweight, me.qzeros
    if zero_floor == 0:  # the real zeros, packed by GPTQModel (v2), then its v2 -> v1 export when v1 is wanted
        qzeros = ns["pack_cols"](torch.tensor(zeros, dtype=torch.int32), bits, pack_dtype=torch.int32)
        if fmt == "gptq":
            qzeros = ns["_revert_gptq_v1_qzeros_correction"](qzeros, bits)
    elif fmt == "gptq_v2":
        qzeros = ns["_correct_gptq_v1_qzeros"](qzeros, bits)
    tensors = {"qweight": qweight.to(torch.int32), "qzeros": qzeros.to(torch.int32),
               "scales": torch.tensor(scales), "g_idx": torch.tensor(g_idx, dtype=torch.int32)}
    config = {"quant_method": "gptq", "bits": bits, "group_size": group_size, "desc_act": desc_act, "sym": sym,
              "checkpoint_format": fmt, "shape": [out, in_]}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.safetensors"
        save_torch({f"layer.{k}": v.contiguous() for k, v in tensors.items()}, str(path))
        got = ns["convert_gptq_file"](path, torch.float32, config, "cpu")["layer.weight"].numpy()
    assert got.shape == (out, in_) and np.array_equal(got, w), f"{name}: GPTQModel does not give the weight back"
    return {k: v.numpy() for k, v in tensors.items()}, config, got


GPTQ_CASES = [  # name, out, in, bits, group_size, sym, desc_act, format, lowest zero
    ("b4_g32_sym_v1", 64, 128, 4, 32, True, False, "gptq", 1),
    ("b4_g128_asym_v1", 96, 256, 4, 128, False, False, "gptq", 1),
    ("b4_perchannel_sym_v1", 64, 128, 4, -1, True, False, "gptq", 1),
    ("b4_g32_asym_descact_v1", 96, 256, 4, 32, False, True, "gptq", 1),
    ("b4_g32_asym_zero0_v1", 64, 128, 4, 32, False, False, "gptq", 0),
    ("b3_g32_sym_descact_v1", 64, 128, 3, 32, True, True, "gptq", 1),
    ("b3_g64_asym_v2", 64, 256, 3, 64, False, False, "gptq_v2", 0),
    ("b2_g64_asym_v2", 32, 256, 2, 64, False, False, "gptq_v2", 0),
    ("b8_g64_asym_descact_v2", 96, 256, 8, 64, False, True, "gptq_v2", 0),
    ("b8_perchannel_sym_v1", 64, 128, 8, -1, True, False, "gptq", 1),
]


def make_gptq(ns: dict) -> None:
    rng = np.random.default_rng(2024)
    arrays, meta = {}, {}
    for name, *args, floor in GPTQ_CASES:
        tensors, config, expected = gptq_case(ns, rng, name, *args, zero_floor=floor)
        for k, v in tensors.items():
            arrays[f"{name}.{k}"] = v
        arrays[f"{name}.expected"] = expected
        meta[name] = json.dumps(config)
    save_numpy(arrays, str(OUT / "gptq_oracle.safetensors"), metadata=meta)


# --------------------------------------------------------------------------------------------------------
# AWQ
# --------------------------------------------------------------------------------------------------------


def awq_oracles(autoawq: Path) -> dict:
    """AutoAWQ's gemm.py / gemv.py / packing_utils.py as modules, without its package __init__ (transformers-heavy)."""
    for pkg, sub in (("awq", "awq"), ("awq.modules", "awq/modules"), ("awq.modules.linear", "awq/modules/linear")):
        m = types.ModuleType(pkg)
        m.__path__ = [str(autoawq / sub)]
        sys.modules[pkg] = m
    mods = {}
    for name, rel in (("awq.utils.packing_utils", "awq/utils/packing_utils.py"),
                      ("awq.modules.linear.gemm", "awq/modules/linear/gemm.py"),
                      ("awq.modules.linear.gemv", "awq/modules/linear/gemv.py")):
        spec = importlib.util.spec_from_file_location(name, autoawq / rel)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        mods[name.rsplit(".", 1)[1]] = mod
    return mods


def awq_case(mods: dict, rng: np.random.Generator, name: str, version: str, out: int, in_: int,
             group_size: int) -> tuple[dict, dict, dict]:
    gs = in_ if group_size == -1 else group_size
    groups = in_ // gs
    q = rng.integers(0, 16, (out, in_))
    zeros = rng.integers(0, 16, (out, groups))  # AutoAWQ's zero_point quantizer: zeros in 0..15
    scales = rng.uniform(0.002, 0.05, (out, groups)).astype(np.float16)
    gi = np.arange(in_) // gs
    w = ((q - zeros[:, gi]) * scales[:, gi].astype(np.float32)).astype(np.float32)  # [out, in], exact
    linear = nn.Linear(in_, out, bias=False)
    linear.weight.data = torch.tensor(w)
    if version == "gemm":  # _apply_quant transposes scales/zeros to [groups, out] for GEMM
        q_linear = mods["gemm"].WQLinear_GEMM.from_linear(linear, 4, gs, scales=torch.tensor(scales.T).contiguous(),
                                                          zeros=torch.tensor(zeros.T).contiguous())
    else:
        q_linear = mods["gemv"].WQLinear_GEMV.from_linear(linear, 4, gs, scales=torch.tensor(scales),
                                                          zeros=torch.tensor(zeros))
    tensors = {k: getattr(q_linear, k).detach().contiguous() for k in ("qweight", "qzeros", "scales")}
    expected = {"expected": w}
    if version == "gemm":
        pu = mods["packing_utils"]
        f32 = pu.dequantize_gemm(tensors["qweight"], tensors["qzeros"], tensors["scales"].float(), 4, gs)
        f16 = pu.dequantize_gemm(tensors["qweight"], tensors["qzeros"], tensors["scales"], 4, gs)
        assert np.array_equal(f32.T.numpy(), w), f"{name}: AutoAWQ dequantize_gemm does not give the weight back"
        expected = {"expected": f32.T.contiguous().numpy(), "expected_fp16": f16.T.contiguous().numpy()}
    config = {"quant_method": "awq", "bits": 4, "group_size": group_size, "zero_point": True, "version": version,
              "shape": [out, in_]}
    return {k: v.numpy() for k, v in tensors.items()}, config, expected


AWQ_CASES = [  # name, version, out, in, group_size
    ("gemm_g32", "gemm", 64, 128, 32),
    ("gemm_g64", "gemm", 96, 256, 64),
    ("gemm_g128", "gemm", 64, 256, 128),
    ("gemm_perchannel", "gemm", 64, 128, -1),
    ("gemv_g32", "gemv", 64, 128, 32),
    ("gemv_g64", "gemv", 96, 256, 64),
    ("gemv_g128", "gemv", 64, 256, 128),
]


def make_awq(mods: dict) -> None:
    rng = np.random.default_rng(2025)
    arrays, meta = {}, {}
    for name, *args in AWQ_CASES:
        tensors, config, expected = awq_case(mods, rng, name, *args)
        for k, v in {**tensors, **expected}.items():
            arrays[f"{name}.{k}"] = np.ascontiguousarray(v)
        meta[name] = json.dumps(config)
    save_numpy(arrays, str(OUT / "awq_oracle.safetensors"), metadata=meta)


# --------------------------------------------------------------------------------------------------------
# compressed-tensors 0.12: weight_g_idx
# --------------------------------------------------------------------------------------------------------

CT012_CASES = [  # name, bits, group size, activation order
    ("b4_g32_gidx", 4, 32, True), ("b8_g64_gidx", 8, 64, True), ("b2_g32_gidx", 2, 32, True),
    ("b4_g32_columns", 4, 32, False),
]


def make_ct012() -> None:
    """Runs under compressed-tensors 0.12 (the child process): packed layers with g_idx and their decompression."""
    import compressed_tensors
    from compressed_tensors.compressors import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationArgs

    assert compressed_tensors.__version__.startswith("0.12"), compressed_tensors.__version__
    gen = torch.Generator().manual_seed(2026)
    out, in_ = 48, 256
    arrays, meta = {}, {}
    for name, bits, gs, act in CT012_CASES:
        args = QuantizationArgs(num_bits=bits, type="int", symmetric=True, strategy="group", group_size=gs,
                                actorder="group" if act else None)
        w = torch.randn(out, in_, generator=gen)
        g_idx = (torch.randperm(in_, generator=gen) // gs).to(torch.int32) if act else None
        scale = (torch.rand(out, in_ // gs, generator=gen) * 0.05 + 0.01).to(torch.bfloat16)
        comp = dict(PackedQuantizationCompressor().compress_weight(weight=w.to(torch.bfloat16), scale=scale,
                                                                   g_idx=g_idx, quantization_args=args))
        comp["weight_scale"] = scale
        if g_idx is not None:
            comp["weight_g_idx"] = g_idx
        lib = PackedQuantizationCompressor().decompress_weight(compressed_data=comp, quantization_args=args)
        for k, v in comp.items():
            arrays[f"{name}.{k}"] = v.view(torch.int16).numpy() if v.dtype == torch.bfloat16 else v.numpy()
        arrays[f"{name}.expected"] = lib.view(torch.int16).numpy()  # bfloat16 bits (safetensors.numpy has no bf16)
        meta[name] = json.dumps({"weights": args.model_dump(), "shape": [out, in_], "bf16_as_int16": True})
    save_numpy(arrays, str(OUT / "ct012_oracle.safetensors"), metadata=meta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gptqmodel", type=Path, required=True, help="GPTQModel source checkout")
    ap.add_argument("--autogptq", type=Path, required=True, help="AutoGPTQ source checkout")
    ap.add_argument("--autoawq", type=Path, required=True, help="AutoAWQ source checkout")
    ap.add_argument("--compressed-tensors-012", type=Path, help="a directory holding compressed-tensors 0.12.x")
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    make_gptq(gptq_oracles(a.gptqmodel, a.autogptq))
    make_awq(awq_oracles(a.autoawq))
    if a.compressed_tensors_012:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(a.compressed_tensors_012),
                                                            os.environ.get("PYTHONPATH", "")])}
        subprocess.run([sys.executable, __file__, "--ct012-child"], env=env, check=True)
    for p in sorted(OUT.glob("*_oracle.safetensors")):
        print(p.relative_to(OUT.parent.parent.parent), p.stat().st_size, "bytes")


if __name__ == "__main__":
    make_ct012() if sys.argv[1:] == ["--ct012-child"] else main()
