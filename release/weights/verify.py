"""Verify a checkpoint: structural checks on its files, then its logits against a golden file.

Order of work, so that the cheap checks speak first:

1. the golden file is read and validated (schema, tensor shapes);
2. config.json is parsed and the safetensors headers checked against it (every
   tensor present, right shape, float dtype; unexpected ones reported);
3. optionally every weight is scanned for NaN/Inf;
4. the prompts' token ids are run through the NumPy reference and compared
   with the golden logits: max |Δlogit|, top-1 agreement, KL divergence.

Bad input (unreadable files, a golden for another vocabulary, missing tensors)
raises :class:`InputError` (exit 2). Logits outside tolerance and non-finite
weights are error findings (exit 1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from release.errors import InputError
from release.files import check_model_files
from release.findings import Finding, Rule, has_errors, register_rules
from release.weights.golden import Golden, GoldenPrompt, logsumexp, read_golden

register_rules(
    Rule("WEIGHTS001", "error", "a tensor the config requires is missing"),
    Rule("WEIGHTS002", "error", "a tensor's shape does not fit the config"),
    Rule("WEIGHTS003", "error", "a tensor's dtype is not BF16/F16/F32 (a warning when it only differs from the config's declared dtype)"),
    Rule("WEIGHTS004", "warning", "a tensor the text model does not use (or an lm_head, which Gemma ties to the embedding)"),
    Rule("WEIGHTS005", "error", "NaN or Inf values in a weight tensor"),
    Rule("WEIGHTS006", "info", "tensors of other towers (vision, audio) present and not verified (no golden prompt "
                               "with an image ran them, or gemma_ref does not run that tower)"),
    Rule("VISION001", "info", "the vision tower and projector ran on the golden's images: their tensors are verified "
                              "through the logits"),
    Rule("VISION002", "warning", "gemma_ref's preprocessing of a golden image gives other pixel values than the "
                                 "golden's producer fed its model (resize filter, Pillow version, torchvision backend)"),
    Rule("VISION003", "info", "soft tokens (the projector's output) against the golden's: localises a mismatch to the "
                              "tower or to the text model"),
    Rule("LOGITS001", "error", "logits differ from the golden file by more than the tolerance"),
    Rule("LOGITS002", "error", "KL divergence or top-1 agreement outside the requested bounds"),
    Rule("TOKENS001", "error", "the model's tokenizer gives other ids for a golden prompt's text than the golden recorded"),
    Rule("TOKENS002", "warning", "tokenizer.json and tokenizer.model disagree: transformers reads the one, "
                                 "sentencepiece and llama.cpp's converter the other"),
)
_ISSUE_RULE = {"missing": "WEIGHTS001", "shape": "WEIGHTS002", "dtype": "WEIGHTS003", "mixed_dtype": "WEIGHTS003",
               "unexpected": "WEIGHTS004", "lm_head": "WEIGHTS004", "nonfinite": "WEIGHTS005", "foreign": "WEIGHTS006"}


#: Default ``row_rtol``: on the real gemma-3-270m export against transformers float32 eager
#: (tests/make_goldens_real.py --measure), max |Δlogit| / max |row| is <= 4.4e-6 on short prompts and
#: transformers' own sdpa and eager paths differ by about 0.6x that; the error grows with length, so the
#: default leaves ~10x; tests/test_real_model.py holds it on prompts up to 4,113 tokens.
ROW_RTOL = 5e-5


@dataclass(frozen=True)
class Tolerance:
    """When two logit arrays count as the same: |Δ| <= atol + rtol * |golden| everywhere, plus optional bounds.

    Lossy variants (quantized GGUFs) set ``atol`` to None and are judged by the distribution
    instead: the mean KL and the top-1 agreement over all positions of all prompts.
    """

    atol: float | None = 1e-4  # absolute; float32 reruns differ by ~1e-6 at Gemma's magnitudes. None: no per-logit bound
    rtol: float = 1e-5  # relative to the golden value (soft-capped logits reach ±30, uncapped ones more)
    # relative to the row's scale, max |golden| of the position (top-k storage: of the stored logits and the
    # log-sum-exp): float32 error in the final hidden state reaches every logit of the row in proportion to the
    # row's size, not to the logit's own value (see README "How close is close enough").
    row_rtol: float = ROW_RTOL
    max_kl: float | None = None  # optional bound on the largest per-position KL(golden || ours), per prompt
    min_top1: float | None = None  # optional bound on the fraction of a prompt's positions whose argmax agrees
    max_mean_kl: float | None = None  # optional bound on the mean KL over every position of every prompt
    min_overall_top1: float | None = None  # optional bound on the top-1 agreement over every position of every prompt


@dataclass
class PromptResult:
    """How one prompt's logits compare with the golden file."""

    name: str
    n_tokens: int
    max_abs_diff: float  # largest |ours - golden| over every compared logit (and log-sum-exp for top-k)
    worst_position: int  # position of that largest difference
    top1_agreement: float  # fraction of positions where both argmaxes agree
    mean_kl: float  # mean over positions of KL(golden || ours), nats
    max_kl: float
    within_tolerance: bool
    tokens_match: bool | None = None  # None: the golden recorded no text, or no tokenizer to check with


@dataclass
class VerifyReport:
    model: str
    golden: str
    golden_producer: str
    storage: str
    tolerance: Tolerance
    prompts: list[PromptResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    kind: str = "golden"  # "golden": a model against a golden file; "gguf": a GGUF variant against its original
    variant: dict[str, Any] | None = None  # for kind "gguf": file, bytes, quant label, tensor types

    @property
    def ok(self) -> bool:
        return not has_errors(self.findings)

    @property
    def max_abs_diff(self) -> float:
        return max((p.max_abs_diff for p in self.prompts), default=0.0)

    @property
    def n_positions(self) -> int:
        return sum(p.n_tokens for p in self.prompts)

    @property
    def mean_kl(self) -> float:
        """Mean KL over every compared position of every prompt (prompts weighted by their length)."""
        return sum(p.mean_kl * p.n_tokens for p in self.prompts) / max(1, self.n_positions)

    @property
    def top1_agreement(self) -> float:
        """Fraction of all compared positions whose argmax agrees."""
        return sum(p.top1_agreement * p.n_tokens for p in self.prompts) / max(1, self.n_positions)

    def verdict(self) -> str:
        head = "PASS" if self.ok else "FAIL"
        if not self.prompts:
            return f"{head}: logits not compared ({len([f for f in self.findings if f.severity == 'error'])} errors)"
        tol = self.tolerance
        bad = sum(not p.within_tolerance for p in self.prompts)
        text = f"{head}: {len(self.prompts)} prompts, {self.n_positions} positions, max |Δlogit| {self.max_abs_diff:.3g}"
        if tol.atol is not None:
            text += f" (tolerance {tol.atol:g} + {tol.rtol:g}·|golden| + {tol.row_rtol:g}·max|row|)"
        if tol.atol is None or tol.max_mean_kl is not None or tol.min_overall_top1 is not None:
            text += f", mean KL {self.mean_kl:.3g}" + (f" (bound {tol.max_mean_kl:g})" if tol.max_mean_kl is not None else "")
            text += f", top-1 {self.top1_agreement:.1%}" + (
                f" (bound {tol.min_overall_top1:.0%})" if tol.min_overall_top1 is not None else "")
        return (text + (f", {bad} prompts outside tolerance" if bad else "")
                + (f", {sum(f.severity == 'error' for f in self.findings)} errors" if not self.ok else ""))

    def to_dict(self) -> dict[str, Any]:
        d = {
            "ok": self.ok,
            "verdict": self.verdict(),
            "kind": self.kind,
            "model": self.model,
            "golden": self.golden,
            "golden_producer": self.golden_producer,
            "storage": self.storage,
            "tolerance": asdict(self.tolerance),
            "max_abs_diff": self.max_abs_diff,
            "overall": {"positions": self.n_positions, "mean_kl": self.mean_kl, "top1_agreement": self.top1_agreement,
                        "max_kl": max((p.max_kl for p in self.prompts), default=0.0), "max_abs_diff": self.max_abs_diff},
            "prompts": [asdict(p) for p in self.prompts],
            "findings": [f.to_dict() for f in self.findings],
        }
        if self.variant is not None:
            d["variant"] = self.variant
        return d


# --- comparing one prompt ----------------------------------------------------------------------


def _log_softmax(x: np.ndarray) -> np.ndarray:
    """log p in float64 (KL of nearly equal distributions needs the precision).  [T, V] -> [T, V]"""
    return x.astype(np.float64) - logsumexp(x, np.float64)[..., None]


def compare_prompt(ours: np.ndarray, golden: GoldenPrompt, tol: Tolerance) -> PromptResult:
    """Compare our logits [T, V] with one golden prompt (full rows or top-k + log-sum-exp)."""
    if golden.logits is not None:
        g = golden.logits
        diff = np.abs(ours - g)  # [T, V]
        scale = np.abs(g).max(axis=-1, keepdims=True)  # [T, 1]
        within = tol.atol is None or bool(np.all(diff <= tol.atol + tol.rtol * np.abs(g) + tol.row_rtol * scale))
        lp_g, lp_o = _log_softmax(g), _log_softmax(ours)
        kl = np.sum(np.exp(lp_g) * (lp_g - lp_o), axis=-1)  # [T]
        top1 = np.argmax(ours, axis=-1) == np.argmax(g, axis=-1)
        per_pos = diff.max(axis=-1)
    else:
        ids, g_top, g_lse = golden.topk_ids, golden.topk_logits, golden.lse
        o_top = np.take_along_axis(ours, ids, axis=1)  # [T, k]
        o_lse = logsumexp(ours)  # [T]
        d_top = np.abs(o_top - g_top)
        d_lse = np.abs(o_lse - g_lse)
        scale = np.maximum(np.abs(g_top).max(axis=-1), np.abs(g_lse))  # [T]: what the golden holds of each row
        within = tol.atol is None or bool(
            np.all(d_top <= tol.atol + tol.rtol * np.abs(g_top) + tol.row_rtol * scale[:, None])
            and np.all(d_lse <= tol.atol + tol.rtol * np.abs(g_lse) + tol.row_rtol * scale))
        per_pos = np.maximum(d_top.max(axis=-1), d_lse)
        # KL over the top-k ids plus one bucket for the rest: a lower bound of the full KL, exact when k = V.
        lp_g = g_top.astype(np.float64) - g_lse[:, None]
        lp_o = o_top.astype(np.float64) - o_lse[:, None].astype(np.float64)
        r_g = np.clip(1.0 - np.exp(lp_g).sum(axis=-1), 1e-300, 1.0)
        r_o = np.clip(1.0 - np.exp(lp_o).sum(axis=-1), 1e-300, 1.0)
        kl = np.sum(np.exp(lp_g) * (lp_g - lp_o), axis=-1) + r_g * (np.log(r_g) - np.log(r_o))
        top1 = np.argmax(ours, axis=-1) == ids[:, 0]
    kl = np.maximum(kl, 0.0)  # rounding can give -1e-17
    worst = int(np.argmax(per_pos))
    return PromptResult(
        name=golden.name, n_tokens=int(len(golden.ids)), max_abs_diff=float(per_pos[worst]), worst_position=worst,
        top1_agreement=float(np.mean(top1)), mean_kl=float(np.mean(kl)), max_kl=float(np.max(kl)),
        within_tolerance=within,
    )


def prompt_findings(res: PromptResult, tol: Tolerance, golden_path: str) -> list[Finding]:
    out = []
    if not res.within_tolerance:
        out.append(Finding("LOGITS001", "error",
                           f"prompt {res.name!r}: max |Δlogit| {res.max_abs_diff:.3g} at position {res.worst_position} "
                           f"exceeds {tol.atol:g} + {tol.rtol:g}·|golden| + {tol.row_rtol:g}·max|row|",
                           path=golden_path))
    if tol.max_kl is not None and res.max_kl > tol.max_kl:
        out.append(Finding("LOGITS002", "error",
                           f"prompt {res.name!r}: max KL {res.max_kl:.3g} exceeds {tol.max_kl:g}", path=golden_path))
    if tol.min_top1 is not None and res.top1_agreement < tol.min_top1:
        out.append(Finding("LOGITS002", "error",
                           f"prompt {res.name!r}: top-1 agreement {res.top1_agreement:.1%} below {tol.min_top1:.1%}",
                           path=golden_path))
    return out


def overall_findings(report: VerifyReport, path: str) -> list[Finding]:
    """LOGITS002 for the bounds over every position of every prompt (mean KL, top-1 agreement)."""
    n, tol = report.n_positions, report.tolerance
    if not n:
        return []
    mean_kl, top1 = report.mean_kl, report.top1_agreement
    out = []
    if tol.max_mean_kl is not None and mean_kl > tol.max_mean_kl:
        out.append(Finding("LOGITS002", "error", f"mean KL {mean_kl:.3g} over {n} positions exceeds {tol.max_mean_kl:g}",
                           path=path))
    if tol.min_overall_top1 is not None and top1 < tol.min_overall_top1:
        out.append(Finding("LOGITS002", "error", f"top-1 agreement {top1:.1%} over {n} positions is below "
                                                 f"{tol.min_overall_top1:.1%}", path=path))
    return out


def write_report_json(report: VerifyReport, path: str | Path) -> Path:
    """The JSON report in a file, written atomically (temp file + rename)."""
    import json

    from release.files import atomic_write

    atomic_write(path, json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return Path(path)


# --- structure -----------------------------------------------------------------------------------


def structure_findings(issues, model_dir: str) -> list[Finding]:
    """WeightIssues (gemma_ref) as Findings."""
    return [Finding(_ISSUE_RULE.get(i.code, "WEIGHTS004"), i.severity, i.message, path=i.file or model_dir)
            for i in issues]


# --- the whole verification ------------------------------------------------------------------------


def verify_model(
    model_dir: str | Path,
    golden_path: str | Path,
    tol: Tolerance = Tolerance(),
    scan_nonfinite: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
    base: str | Path | None = None,
) -> VerifyReport:
    """Run every check on ``model_dir`` against ``golden_path`` and return the report.

    ``model_dir`` may be a LoRA adapter (adapter_config.json) on ``base`` (gemma_ref/adapters.py).
    """
    from gemma_ref import adapters
    from gemma_ref.config import load_config
    from gemma_ref.model import forward, validate_ids
    from gemma_ref.weights import Weights

    model_dir = Path(model_dir)
    golden = read_golden(golden_path)
    if not model_dir.is_dir():
        raise InputError("model path is not a directory", model_dir)
    adapter_dir = None
    if adapters.is_adapter_dir(model_dir):  # an adapter: the checks run on its base, the forward with the adapter
        adapter_dir, model_dir = model_dir, adapters.resolve_base(model_dir, base)
    elif base is not None:
        raise InputError("--base is for adapters, but this directory has no adapter_config.json", model_dir)
    check_model_files(model_dir)  # a FIFO among them would block gemma_ref's readers
    cfg = load_config(model_dir)
    if golden.vocab_size != cfg.vocab_size:
        raise InputError(f"golden file was made for a vocabulary of {golden.vocab_size}, "
                         f"but the model's config says {cfg.vocab_size}", golden.path,
                         hint="a golden belongs to one model family; make a new one with `gemma-release golden`")
    report = VerifyReport(model=str(model_dir) if adapter_dir is None else f"{adapter_dir} on {model_dir}", golden=str(golden.path), golden_producer=
                          f"{golden.producer} {golden.producer_version}", storage=golden.storage, tolerance=tol)

    weights = Weights(model_dir, cfg, check=True)  # missing tensors / wrong shapes: InputError, exit 2
    try:
        if adapter_dir is not None:
            weights = adapters.AdaptedWeights(weights, adapters.load_adapter(adapter_dir, weights))
        report.findings += structure_findings([i for i in weights.issues if i.code != "foreign"], str(model_dir))
        has_images = any(gp.images for gp in golden.prompts)
        if not has_images:
            from release.weights.vision_checks import towers_not_run

            report.findings += towers_not_run(weights, model_dir)  # which towers went unverified, said plainly
        if scan_nonfinite:
            if progress:
                progress("scanning weights for NaN/Inf", 0, 1)
            report.findings += structure_findings(weights.scan_nonfinite(), str(model_dir))
            if has_errors(report.findings):
                return report  # logits of non-finite weights say nothing more

        token_checks = _token_checks(golden, model_dir)
        sequences = [validate_ids(p.ids, cfg.vocab_size, cfg.max_position_embeddings) for p in golden.prompts]
        step = (lambda i, n: progress("forward", i, n)) if progress else None
        images = None
        if has_images:  # image prompts: the tower runs first, then the text model
            from release.weights.vision_checks import golden_image_tokens

            images, found = golden_image_tokens(weights, model_dir, golden, sequences, progress, scan_nonfinite)
            report.findings += found
            if has_errors(found):
                return report  # NaN/Inf in the tower: the logits say nothing more
        if sum(len(s) for s in sequences) * cfg.vocab_size * 4 <= LOGITS_IN_MEMORY:
            results = [compare_prompt(ours, gp, tol) for ours, gp in zip(forward(weights, cfg, sequences, step,
                                                                                 images=images), golden.prompts)]
        else:  # long prompts at a 262k vocabulary: 1 MB of logits a position, so never all of them at once
            results = [_compare_in_chunks(weights, cfg, ids, gp, tol, step, im)
                       for ids, gp, im in zip(sequences, golden.prompts, images or [None] * len(sequences))]
    finally:
        weights.close()

    for res, gp in zip(results, golden.prompts):
        res.tokens_match = token_checks.get(gp.name)
        report.prompts.append(res)
        report.findings += prompt_findings(res, tol, str(golden.path))
        if res.tokens_match is False:
            report.findings.append(Finding(
                "TOKENS001", "error",
                f"prompt {gp.name!r}: the model's tokenizer encodes the recorded text to other ids than the golden's "
                "(a tokenizer change, separate from the logits)", path=str(model_dir)))
    report.findings += tokenizer_file_findings(model_dir)
    report.findings += overall_findings(report, str(golden.path))
    return report


def tokenizer_file_findings(model_dir: Path) -> list[Finding]:
    """TOKENS002 when a model directory ships both tokenizer files and they are not the same tokenizer."""
    from gemma_ref.tokenizer import TOKENIZER_FILE, read_model_proto
    from gemma_ref.tokenizer_json import TOKENIZER_JSON, differences

    model_file, json_file = model_dir / TOKENIZER_FILE, model_dir / TOKENIZER_JSON
    if not (model_file.is_file() and json_file.is_file()):
        return []
    model_proto = read_model_proto(model_file)  # bounded; the one the checks above already read
    try:
        found = differences(model_proto, json_file)
    except InputError as e:  # a broken tokenizer.json next to a good tokenizer.model: transformers users get it
        found = [f"{TOKENIZER_JSON} cannot be read as Gemma's tokenizer: {e.message}"]
    except ValueError as e:  # parse_model_proto: a tokenizer.model the wire format rejects
        found = [f"{TOKENIZER_FILE} cannot be read: {e}"]
    return [Finding("TOKENS002", "warning", f"{d}; transformers reads {TOKENIZER_JSON}, sentencepiece and llama.cpp's "
                                           "converter read tokenizer.model", path=str(json_file)) for d in found]


#: Logits verify_model holds at once: beyond this, each prompt runs in chunks of CHUNK_POSITIONS positions
#: through the KV cache (a 4,096-token prompt at Gemma 3's vocabulary is 4.3 GB of float32 logits).
LOGITS_IN_MEMORY = 1 << 30
CHUNK_POSITIONS = 1024


def golden_rows(gp: GoldenPrompt, start: int, stop: int) -> GoldenPrompt:
    """Positions start..stop-1 of a golden prompt."""
    cut = (lambda a: None if a is None else a[start:stop])
    return GoldenPrompt(gp.name, gp.ids[start:stop], logits=cut(gp.logits), topk_ids=cut(gp.topk_ids),
                        topk_logits=cut(gp.topk_logits), lse=cut(gp.lse), text=gp.text, messages=gp.messages)


def merge_results(parts: list[tuple[int, PromptResult]]) -> PromptResult:
    """One prompt's result from the results of its consecutive chunks [(first position, result)]."""
    n = sum(r.n_tokens for _, r in parts)
    start, worst = max(parts, key=lambda p: p[1].max_abs_diff)
    return PromptResult(
        name=worst.name, n_tokens=n, max_abs_diff=worst.max_abs_diff, worst_position=start + worst.worst_position,
        top1_agreement=sum(r.top1_agreement * r.n_tokens for _, r in parts) / n,
        mean_kl=sum(r.mean_kl * r.n_tokens for _, r in parts) / n, max_kl=max(r.max_kl for _, r in parts),
        within_tolerance=all(r.within_tolerance for _, r in parts))


def _compare_in_chunks(weights, cfg, ids: np.ndarray, gp: GoldenPrompt, tol: Tolerance,  # noqa: ANN001
                       step: Callable[[int, int], None] | None, images=None) -> PromptResult:  # noqa: ANN001
    """compare_prompt for one prompt run CHUNK_POSITIONS positions at a time, the earlier ones in the KV cache.

    `images` (vision.ImageTokens): a chunk never ends inside an image, whose tokens attend to each other both ways.
    """
    from gemma_ref.model import forward, new_cache

    cache = new_cache(cfg, capacity=len(ids))
    parts = []
    start = 0
    while start < len(ids):
        stop = min(start + CHUNK_POSITIONS, len(ids))
        if images is not None:
            stop = images.chunk_end(start, stop)
        chunk = ids[start:stop]
        (ours,) = forward(weights, cfg, [chunk], step, caches=[cache],
                          images=None if images is None else [images.window(start, stop)])
        parts.append((start, compare_prompt(ours, golden_rows(gp, start, stop), tol)))
        del ours
        start = stop
    return merge_results(parts)


def _token_checks(golden: Golden, model_dir: Path) -> dict[str, bool]:
    """Re-tokenize text prompts when the model ships a tokenizer; {} when nothing can be checked."""
    if not any(p.text is not None or p.messages is not None for p in golden.prompts):
        return {}
    from gemma_ref.tokenizer import has_tokenizer

    if not has_tokenizer(model_dir):
        return {}
    from release.weights.prompts import encode_golden_prompt  # the tokenizer stack, only when there is text to check

    return encode_golden_prompt(golden, model_dir)


def render_report(report: VerifyReport):
    """A rich renderable: findings, one table row per prompt, and the verdict line."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from release.findings import render_text

    parts: list[Any] = []
    shown = [f for f in report.findings if f.rule != "LOGITS001"]  # the table shows LOGITS001 as MISMATCH
    if shown:
        parts.append(Text(render_text(shown).rsplit("\n", 1)[0]))
    if report.variant:
        v = report.variant
        types = ", ".join(f"{k}×{n}" for k, n in sorted(v.get("tensor_types", {}).items()))
        parts.append(Text(f"{v.get('file')}: {v.get('quant')}, {v.get('bytes', 0):,} bytes, tensors {types}"))
    if report.prompts:
        t = Table(title=f"{report.model} vs {report.golden} ({report.golden_producer}, {report.storage})",
                  title_justify="left")
        for col in ("prompt", "tokens", "max |Δlogit|", "at pos", "top-1 agree", "mean KL", "max KL", ""):
            t.add_column(col, justify="left" if col in ("prompt", "") else "right")
        for p in report.prompts:
            status = "ok" if p.within_tolerance else "[red]MISMATCH[/]"
            if p.tokens_match is False:
                status += " [red]ids differ[/]"
            t.add_row(p.name, str(p.n_tokens), f"{p.max_abs_diff:.3g}", str(p.worst_position),
                      f"{p.top1_agreement:.1%}", f"{p.mean_kl:.3g}", f"{p.max_kl:.3g}", status)
        parts.append(t)
    parts.append(Text(report.verdict(), style="bold green" if report.ok else "bold red"))
    return Group(*parts)
