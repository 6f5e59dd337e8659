"""Measured fidelity of a quantized safetensors variant (MLX, bitsandbytes, GPTQ, AWQ, ...) against its original.

``gemma-release verify VARIANT_DIR --against ORIGINAL_DIR`` is GGUF's measurement (:mod:`release.weights.gguf_verify`)
for a quantized directory: the format is recognised from config.json and the tensor names
(:func:`release.weights.quant.detect`), each quantized linear layer is dequantized to float32 in NumPy one
layer at a time (:class:`release.weights.quant.weights.QuantWeights`), and the same float32 reference forward
runs on both. Per prompt: max |Δlogit|, top-1 agreement, mean and max KL(original ‖ variant); the verdict
uses :data:`QUANT_BOUNDS` by the scheme's bit width (the fewest bits any quantized module has, for mixed
precision), which ``--max-mean-kl`` / ``--min-top1`` / ``--max-kl`` override.

The bounds are GGUF's families (:data:`release.weights.gguf_verify.BOUNDS`: a 4-bit MLX or nf4 variant is held
to what a Q4 GGUF is) except LLM.int8, whose one scale per row of thousands of weights rounds coarser than
Q8_0's one per 32 (about 1.6x the error on Gaussian rows, 2.5x the KL): it gets the 6-bit family's bound.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from release.errors import InputError
from release.weights.gguf_verify import BOUNDS, Reference, _step, reference_prompts, resolve_prompts, storage_of
from release.weights.golden import PromptSpec
from release.weights.quant.base import Scheme
from release.weights.verify import (
    Tolerance,
    VerifyReport,
    compare_prompt,
    overall_findings,
    prompt_findings,
)

#: Bound family -> (max mean KL in nats over all positions, min top-1 agreement): GGUF's, see the module docstring.
QUANT_BOUNDS: dict[str, tuple[float, float]] = dict(BOUNDS)
#: (format, method) -> family, where the bit width alone would be too tight. LLM.int8: one scale per row of
#: thousands of weights rounds ~1.6x coarser than Q8_0's one per 32. FP8 E4M3: a 3-bit mantissa rounds like a
#: 6-bit integer grid, not like Q8_0 (the real gemma-3-270m, FP8 per channel: mean KL 0.015 where Q8_0 gives 8e-4).
FAMILY_OVERRIDES: dict[tuple[str, str], str] = {
    ("bitsandbytes", "int8"): "6-bit",
    ("compressed-tensors", "float-quantized"): "6-bit",
    ("fp8", "fbgemm_fp8"): "6-bit", ("fp8", "fp8-block"): "6-bit", ("fp8", "fp8-tensor"): "6-bit",
    ("mlx", "mxfp8"): "6-bit",
}


def quant_family(scheme: Scheme) -> str:
    """The bound family of a scheme: its bit width's ("4-bit"), or an override (LLM.int8: "6-bit")."""
    fam = FAMILY_OVERRIDES.get((scheme.format, scheme.method), f"{scheme.bits}-bit")
    if fam not in QUANT_BOUNDS:
        raise InputError(f"no default fidelity bounds for {scheme.label}", hint="give --max-mean-kl and --min-top1 explicitly")
    return fam


def quant_tolerance(scheme: Scheme, max_mean_kl: float | None = None, min_top1: float | None = None,
                    max_kl: float | None = None) -> Tolerance:
    """The verdict's bounds for a variant of ``scheme``, explicit values taking precedence."""
    if max_mean_kl is None or min_top1 is None:
        d_kl, d_top1 = QUANT_BOUNDS[quant_family(scheme)]
        max_mean_kl = d_kl if max_mean_kl is None else max_mean_kl
        min_top1 = d_top1 if min_top1 is None else min_top1
    return Tolerance(atol=None, max_kl=max_kl, max_mean_kl=max_mean_kl, min_overall_top1=min_top1)


def not_quantized_error(variant_dir: Path) -> InputError:
    return InputError("no quantization recognised in this directory (config.json declares no quantization_config "
                      "or quantization)", variant_dir,
                      hint="--against measures a quantized variant (MLX, bitsandbytes, GPTQ, AWQ, compressed-tensors, "
                           "FP8) or a .gguf; a float model directory is checked with --golden FILE")


def verify_quant(
    variant_dir: str | os.PathLike,
    original_dir: str | os.PathLike,
    prompts: list[PromptSpec],
    max_mean_kl: float | None = None,
    min_top1: float | None = None,
    max_kl: float | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    reference: Reference | None = None,
) -> VerifyReport:
    """Compare a quantized variant's logits with its original's on ``prompts``; every problem in the report.

    ``reference``: the original's logits computed beforehand, as for :func:`release.weights.gguf_verify.verify_gguf`
    (``reference(vocab_size)``); the original is then not run here.
    """
    from gemma_ref.config import load_config
    from gemma_ref.model import forward, validate_ids
    from gemma_ref.weights import Weights
    from release.files import check_model_files
    from release.weights.quant import detect
    from release.weights.quant.weights import QuantWeights

    variant_dir, original_dir = Path(variant_dir), Path(original_dir)
    for d, what in ((variant_dir, "the variant"), (original_dir, "the original model")):
        if not d.is_dir():
            raise InputError(f"{what} path is not a directory", d,
                             hint="verify VARIANT_DIR --against ORIGINAL_DIR takes two model directories")
        check_model_files(d)  # a FIFO among them would block the readers
    found = detect(variant_dir)
    if found is None:
        raise not_quantized_error(variant_dir)
    fmt, scheme = found
    cfg = load_config(original_dir)  # the original's config drives both forwards, as for a GGUF
    tol = quant_tolerance(scheme, max_mean_kl, min_top1, max_kl)
    variant = QuantWeights(variant_dir, cfg, fmt, scheme)  # structure problems: InputError, exit 2
    try:
        specs = resolve_prompts(prompts, original_dir)
        sequences = [validate_ids(p.ids, cfg.vocab_size, cfg.max_position_embeddings) for p in specs]
        info = variant.describe()
        report = VerifyReport(model=str(variant_dir), golden=str(original_dir), golden_producer="gemma_ref on the original",
                              storage="full", tolerance=tol, kind="quant", variant=info)
        report.findings += variant.findings
        logits = None
        if reference is None:
            original = Weights(original_dir, cfg, check=True)
            try:
                logits = forward(original, cfg, sequences, _step(progress, "original"))
            finally:
                original.close()
        ours = forward(variant, cfg, sequences, _step(progress, scheme.label))
    finally:
        variant.close()

    goldens = reference_prompts(specs, sequences, logits, reference, cfg.vocab_size)
    report.storage = storage_of(goldens)
    for golden, var in zip(goldens, ours):
        res = compare_prompt(var, golden, tol)
        report.prompts.append(res)
        report.findings += prompt_findings(res, tol, str(variant_dir))
    report.findings += overall_findings(report, str(variant_dir))
    return report
