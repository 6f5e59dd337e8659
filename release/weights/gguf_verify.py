"""Measured fidelity of a GGUF variant: its logits against the original's, prompt by prompt.

``gemma-release verify VARIANT.gguf --against MODEL_DIR`` runs the same prompts
through the reference forward pass twice -- once on the original safetensors,
once on the GGUF's dequantized tensors (:mod:`release.gguf_weights`) -- and
compares the two with verify's own code: KL(original ‖ variant) per position,
top-1 agreement, max |Δlogit|. The verdict uses bounds per quant-type family
(:data:`BOUNDS`), which ``--max-mean-kl`` / ``--min-top1`` / ``--max-kl`` override.

The config always comes from the original directory (GGUF metadata lacks e.g.
``query_pre_attn_scalar``); the metadata is cross-checked against it, and every
disagreement is a finding.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import numpy as np

from release.errors import InputError
from release.findings import Finding
from release.weights.golden import GoldenPrompt, PromptSpec
from release.weights.verify import Tolerance, VerifyReport, compare_prompt, overall_findings, prompt_findings

#: Quant-type family -> (max mean KL in nats over all positions, min top-1 agreement over all positions).
#: Starting points, with headroom, in the range llama.cpp's `llama-perplexity --kl-divergence` runs show in
#: its pull requests (ggml-org/llama.cpp #10714: F16 vs BF16, mean KLD 0.00000 and same top token 100%;
#: #5081's example: 0.0106 and 95.3%; #12557: an IQ4_XS at 0.043 and 89.9%; #19661: a run at 0.61 and 70%).
#: Small models lose more to quantization than big ones, hence the loose top-1 bounds. The tiny test
#: checkpoints measure far below these (README, "GGUF variants"); they calibrate nothing.
BOUNDS: dict[str, tuple[float, float]] = {
    "float": (1e-3, 0.98),  # F32, F16, BF16: rounding only
    "8-bit": (5e-3, 0.95),  # Q8_0
    "6-bit": (0.02, 0.92),  # Q6_K
    "5-bit": (0.04, 0.90),  # Q5_0, Q5_1, Q5_K_*
    "4-bit": (0.10, 0.85),  # Q4_0, Q4_1, Q4_K_*, IQ4_*, MXFP4
    "3-bit": (0.30, 0.78),  # Q3_K_*, IQ3_*
    "2-bit": (1.0, 0.65),  # Q2_K*, IQ2_*, TQ2_0
    "1-bit": (2.5, 0.50),  # IQ1_*, TQ1_0, Q1_0
}
_FLOATS = ("F64", "F32", "F16", "BF16")


def family(label: str) -> str:
    """The bound family of a quant label (Q4_K_M -> "4-bit", F16 -> "float"); "4-bit" rules for unknown FP4 names."""
    u = label.upper()
    if u in _FLOATS:
        return "float"
    m = re.match(r"^(?:I?Q|TQ)(\d)", u)
    if m and f"{m.group(1)}-bit" in BOUNDS:
        return f"{m.group(1)}-bit"
    if "FP4" in u:
        return "4-bit"
    raise InputError(f"no default fidelity bounds for quant type {label!r}",
                     hint="give --max-mean-kl and --min-top1 explicitly")


def gguf_tolerance(label: str, max_mean_kl: float | None = None, min_top1: float | None = None,
                   max_kl: float | None = None) -> Tolerance:
    """The verdict's bounds for a variant of quant type ``label``, with explicit values taking precedence."""
    if max_mean_kl is None or min_top1 is None:
        d_kl, d_top1 = BOUNDS[family(label)]
        max_mean_kl = d_kl if max_mean_kl is None else max_mean_kl
        min_top1 = d_top1 if min_top1 is None else min_top1
    return Tolerance(atol=None, max_kl=max_kl, max_mean_kl=max_mean_kl, min_overall_top1=min_top1)


def resolve_prompts(specs: list[PromptSpec], model_dir: Path) -> list[PromptSpec]:
    """Ids for every prompt: text and chat prompts need the original's tokenizer (tokenizer.model or .json)."""
    from gemma_ref.tokenizer import has_tokenizer

    if all(p.ids is not None for p in specs):
        return specs
    if not has_tokenizer(model_dir):
        raise InputError("the original has no tokenizer.model (nor tokenizer.json) to encode the prompts with", model_dir,
                         hint="pass token ids instead, e.g. --ids 2,651,6037 (repeatable), or put the model's "
                              "tokenizer.model in that directory")
    from release.weights.golden import resolve_prompt_ids

    return resolve_prompt_ids(specs, model_dir)


def norm_findings(variant, original, path: str) -> list[Finding]:  # noqa: ANN001 - GGUFWeights, Weights
    """GGUF005: compare every norm vector with the original's, which tells a missing +1 apart from a wrong file.

    Each norm is classified by the nearest of three explanations, which lie exactly 1 apart in every
    element: as expected (r = w), +1 missing in the file (r = w - 1), +1 left in by the reader (r = w + 1).
    Gemma 4's converter stores norms as they are (its RMSNorm is x * w), so there r = w + 1 means a file
    written with the Gemma 1-3 convention: llama.cpp would scale by 1 + w.
    """
    from release.weights.gguf_reader import is_norm, model_label, norm_shift_of

    gemma4 = norm_shift_of(variant.cfg) == 0.0  # Gemma 4 and Gemma 3n: the converter stores w as it is
    label = model_label(variant.cfg)

    cases: dict[str, list[str]] = {"missing": [], "extra": [], "differs": []}
    for rel in (r for r in variant.names if is_norm(r)):
        r, w = variant.tensor(rel), np.asarray(original.tensor(rel), dtype=np.float32)
        dist = {"ok": np.max(np.abs(r - w)), "missing": np.max(np.abs(r + 1 - w)), "extra": np.max(np.abs(r - 1 - w))}
        best = min(dist, key=dist.get)
        if dist[best] > 0.25:  # a quarter of the way to the next explanation: these are other weights
            best = "differs"
        if best != "ok":
            cases[best].append(variant.names[rel])
    out = []
    if gemma4:
        if cases["extra"]:
            out.append(Finding("GGUF005", "error", f"{len(cases['extra'])} norm weights ({_some(cases['extra'])}) are "
                               f"stored as 1 + w: {label}'s RMSNorm multiplies by w and llama.cpp's {label} converter "
                               "stores it as is (the +1 is Gemma 1-3's), so llama.cpp would scale by 1 + w", path=path))
        if cases["missing"]:
            out.append(Finding("GGUF005", "error", f"{len(cases['missing'])} norm weights ({_some(cases['missing'])}) "
                               f"are stored as w - 1: llama.cpp would scale {label}'s norms by w - 1", path=path))
        cases["extra"] = cases["missing"] = []
    if cases["missing"]:
        out.append(Finding("GGUF005", "error", f"{len(cases['missing'])} norm weights ({_some(cases['missing'])}) are "
                           "stored without the +1 llama.cpp's Gemma converters add: llama.cpp would scale by w instead "
                           "of 1 + w", path=path))
    if cases["extra"]:
        out.append(Finding("GGUF005", "error", f"{len(cases['extra'])} norm weights ({_some(cases['extra'])}) were read "
                           "with llama.cpp's +1 still in them (the reader's +1 correction is off)", path=path))
    if cases["differs"]:
        out.append(Finding("GGUF005", "error", f"{len(cases['differs'])} norm weights ({_some(cases['differs'])}) differ "
                           "from the original's: was this GGUF made from these weights?", path=path))
    return out


def _some(names: list[str]) -> str:
    return ", ".join(names[:3]) + (" …" if len(names) > 3 else "")


def verify_gguf(
    gguf_path: str | os.PathLike,
    model_dir: str | os.PathLike,
    prompts: list[PromptSpec],
    max_mean_kl: float | None = None,
    min_top1: float | None = None,
    max_kl: float | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    norm_plus_one: bool = True,
    reference: Reference | None = None,
) -> VerifyReport:
    """Compare a GGUF variant's logits with its original's on ``prompts``; every problem in the report.

    ``reference``: the original's logits computed beforehand (``variants fidelity`` runs the original once for all
    variants), ``reference(rows)`` giving one golden prompt per prompt over ids 0..rows-1; the original is then
    not run here. Its prompts must be ``prompts`` (their ids), else RuntimeError.
    """
    from gemma_ref.config import load_config
    from gemma_ref.model import forward, validate_ids
    from gemma_ref.weights import Weights
    from release.weights.gguf_tokenizer import vocab_findings
    from release.weights.gguf_reader import GGUFWeights

    gguf_path, model_dir = Path(gguf_path), Path(model_dir)
    if not model_dir.is_dir():
        raise InputError("the original model path is not a directory", model_dir,
                         hint="--against takes the directory holding config.json and the safetensors")
    from release.files import check_model_files

    check_model_files(model_dir)  # a FIFO among them would block gemma_ref's readers
    cfg = load_config(model_dir)
    variant = GGUFWeights(gguf_path, cfg, norm_plus_one)  # structure problems: InputError, exit 2
    try:
        specs = resolve_prompts(prompts, model_dir)
        sequences = [validate_ids(p.ids, cfg.vocab_size, cfg.max_position_embeddings) for p in specs]
        info = variant.describe()
        info["bits_per_weight"] = bits_per_weight(variant)
        tol = gguf_tolerance(info["quant"], max_mean_kl, min_top1, max_kl)
        report = VerifyReport(model=str(gguf_path), golden=str(model_dir), golden_producer="gemma_ref on the original",
                              storage="full", tolerance=tol, kind="gguf", variant=info)
        report.findings += variant.findings
        report.findings += vocab_findings(variant.reader, gguf_path, model_dir, cfg)  # llama.cpp tokenizes with these
        original = Weights(model_dir, cfg, check=True)
        try:
            report.findings += norm_findings(variant, original, str(gguf_path))
            logits = None if reference is not None else forward(original, cfg, sequences, _step(progress, "original"))
        finally:
            original.close()
        ours = forward(variant, cfg, sequences, _step(progress, f"GGUF ({info['quant']})"))
        rows = variant.vocab_rows
    finally:
        variant.close()

    # Only the ids both hold are compared (Gemma 3 GGUFs drop the padding rows of the vocabulary).
    goldens = reference_prompts(specs, sequences, logits, reference, rows)
    report.storage = storage_of(goldens)
    for golden, var in zip(goldens, ours):
        res = compare_prompt(var[:, :rows], golden, tol)
        report.prompts.append(res)
        report.findings += prompt_findings(res, tol, str(gguf_path))
    report.findings += overall_findings(report, str(gguf_path))
    return report


#: ``reference(rows)``: the original's logits over ids 0..rows-1, one golden prompt (full rows, or top-k + log-sum-exp)
#: per prompt, computed beforehand (release.weights.fidelity).
Reference = Callable[[int], "list[GoldenPrompt]"]


def reference_prompts(specs: list[PromptSpec], sequences: list[np.ndarray], logits: list[np.ndarray] | None,
                      reference: Reference | None, rows: int) -> list[GoldenPrompt]:
    """The golden side of the comparison: the original's logits just computed (``logits``) cut to ``rows`` ids, or
    the precomputed ``reference(rows)``, checked to hold the prompts that were run."""
    if reference is None:
        assert logits is not None
        return [GoldenPrompt(s.name, ids, logits=lg[:, :rows]) for s, ids, lg in zip(specs, sequences, logits)]
    goldens = reference(rows)
    if len(goldens) != len(sequences) or any(not np.array_equal(g.ids, ids) for g, ids in zip(goldens, sequences)):
        raise RuntimeError("the precomputed reference logits are for other prompts than the ones run")
    return goldens


def storage_of(goldens: list[GoldenPrompt]) -> str:
    """The report's ``storage``, as a golden file's: "full", or "topk" when the reference keeps the top k only."""
    return "full" if not goldens or goldens[0].logits is not None else "topk"


def bits_per_weight(variant) -> float | None:  # noqa: ANN001 - GGUFWeights
    """Stored bits per weight of the text model's quantized tensors (types other than F32/F16/BF16), as
    :func:`release.weights.quant.weights.describe` counts them for a quantized directory; for an all-float
    file, of its matrices. From the tensor headers; no data read."""
    tensors = [variant.tensors[n] for n in set(variant.names.values()) if n in variant.tensors]
    quantized = [t for t in tensors if t.tensor_type.name not in _FLOATS]
    chosen = quantized or [t for t in tensors if len(t.shape) >= 2]
    weights = sum(int(t.n_elements) for t in chosen)
    return round(sum(int(t.n_bytes) for t in chosen) * 8 / weights, 4) if weights else None


def _step(progress: Callable[[str, int, int], None] | None, what: str) -> Callable[[int, int], None] | None:
    return (lambda i, n: progress(f"forward: {what}", i, n)) if progress else None
