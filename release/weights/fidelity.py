"""Every local variant of a release measured against the original, which runs once: ``variants fidelity``.

``verify VARIANT --against ORIGINAL`` runs two forward passes, the original's and the variant's; for the N
variants of a release that is 2N, N of them the same. :func:`measure_release` runs the original once on the
prompts, keeps its logits (:class:`ReferenceLogits`) and hands them to :func:`release.weights.gguf_verify.verify_gguf`
and :func:`release.weights.quant_verify.verify_quant` as ``reference``: N + 1 forward passes. Every check of
``verify --against`` still runs per variant (structure, GGUF metadata and vocabulary, norms, bounds per quant
type), and each report is the JSON ``verify --against --out`` writes, so ``variants table --fidelity`` reads them.

Which variants: those release.yaml lists whose files are here (:func:`local_variants`) -- a GGUF in the release
directory itself, or a GGUF / quantized safetensors directory under a variant's ``local_dir``. Variants on the
Hub only, EXL2 (no reader) and float copies (``format: hf``: checked with ``verify --golden``) are skipped and
listed. release.yaml names no original: the release directory is it, unless ``against`` says otherwise.

How the original's logits are kept, and what that does to the numbers
-------------------------------------------------------------------------
Like ``golden`` decides (:func:`release.weights.golden.auto_storage`): full rows while all positions fit in
64 MB of float32 (the tiny 512-wide test vocabularies always do), then the top ``k`` logits per position plus the
row's log-sum-exp (:func:`release.weights.golden.make_prompt`; the log-sum-exp kept in float64 here), k =
:data:`DEFAULT_TOPK` unless given.

* Full rows: the comparison is ``verify --against``'s own -- the same :func:`compare_prompt` on the same arrays
  (the original's forward is deterministic), so every number of every report equals what ``verify --against``
  gives, to the last bit.
* Top-k (Gemma's 262,144-wide vocabulary on more than 64 positions): top-1 agreement stays exact for any k (the
  original's argmax is kept). ``compare_prompt``'s top-k KL sums over the k ids plus one bucket holding the rest
  of both distributions; merging outcomes never raises a KL (the log-sum inequality), so it is a lower bound of
  the full KL, exact at k = V; what is lost is the tail's own divergence. Measured on the real gemma-3-270m
  (the built-in prompts, 184 positions; Q8_0, Q4_0 GGUFs and an MLX 4-bit copy of it) against full rows: top-64
  gives 14-16% less, top-256 8%, top-1024 3.5%, top-4096 1.3-1.5%, top-16384 0.1-0.45%, top-65536 0.05%. On top
  of that, ``compare_prompt`` rounds the variant's log-sum-exp to float32, which moves each position's KL by up
  to a few 1e-6 nats (Q8_0 at top-65536: +0.3% = 2.5e-6 nats instead of -0.06%): noise far below a quantized
  variant's KL, not below a float copy's. ``--storage full`` keeps every row (1 MB a position at 262k, what
  ``verify --against`` holds anyway, twice).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from release.errors import InputError
from release.weights.golden import (
    GoldenPrompt,
    PromptSpec,
    auto_storage,
    logsumexp,
    make_prompt,
)
from release.weights.verify import VerifyReport

#: k of the original's top-k logits when full rows would pass the 64 MB of ``golden``'s automatic choice: the KL is
#: then ~1.5% under the full one on the real gemma-3-270m (module docstring), for 48 KB a position instead of 1 MB.
DEFAULT_TOPK = 4096
#: Reports go here, relative to the release directory, unless ``--out-dir`` says otherwise.
DEFAULT_OUT_DIR = "fidelity"

Progress = Callable[[str, int, int], None]


# --- which variants ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalVariant:
    """One variant of release.yaml with its files here."""

    spec: Any  # release_yaml.Variant
    path: Path  # the .gguf (first part of a split one) or the quantized directory
    kind: str  # "gguf" | "quant": verify's report kind

    @property
    def name(self) -> str:
        """The report's ``variant.file``: how ``variants table --fidelity`` finds the row."""
        return self.path.name

    @property
    def label(self) -> str:
        return f"{self.spec.repo}: {self.spec.file or self.spec.shards or self.spec.revision}"


def local_variants(cfg) -> tuple[list[LocalVariant], list[tuple[str, str]]]:  # noqa: ANN001 - ReleaseConfig
    """(the variants with local files, [(variant, why it is skipped)]); InputError for a listed file that is missing."""
    from release.card.variants import (
        _missing_shards,
        _variant_files,
        _weights_dir,
        local_listing,
        variant_root,
    )

    found: list[LocalVariant] = []
    skipped: list[tuple[str, str]] = []
    for v in cfg.variants:
        what = f"{v.repo}: {v.file or v.shards or v.revision}"
        root = variant_root(v, cfg)
        if root is None:
            skipped.append((what, "no local copy (give it a local_dir in release.yaml)"))
            continue
        if v.format == "exl2":
            skipped.append((what, "EXL2 is not read by verify"))
            continue
        files = local_listing({v.repo: root})(v.repo, v.revision)
        if files is None:
            raise InputError(f"variant {what}: its local_dir is not a directory", path=root)
        chosen = _variant_files(v, files)
        if not chosen:
            raise InputError(f"variant {what}: {v.file or v.shards or 'weights'} not found", path=root)
        missing = _missing_shards(files, chosen)
        if missing:
            raise InputError(f"variant {what}: shard set incomplete, missing {', '.join(missing[:5])}", path=root)
        ggufs = sorted(p for p in chosen if p.endswith(".gguf"))
        if ggufs:
            found.append(LocalVariant(v, (root / ggufs[0]).resolve(), "gguf"))
            continue
        folder = _weights_dir(chosen)
        if folder is None:
            skipped.append((what, "no .gguf or safetensors weights (" + ", ".join(chosen[:3]) + ")"))
            continue
        d = (root / folder).resolve() if folder else root.resolve()
        if d == cfg.root.resolve():
            skipped.append((what, "its files are the release's own (not a separate variant)"))
            continue
        found.append(LocalVariant(v, d, "quant"))
    names: dict[str, LocalVariant] = {}
    for lv in found:
        if lv.name in names:
            raise InputError(f"two local variants are named {lv.name} ({names[lv.name].path} and {lv.path}): their "
                             "reports would have one name, and `variants table --fidelity` matches reports by it",
                             path=cfg.path)
        names[lv.name] = lv
    return found, skipped


def _check_variant(lv: LocalVariant, cfg) -> int:  # noqa: ANN001 - GemmaConfig
    """The vocabulary rows a variant holds, checked before any forward pass: a quantized directory is opened as its
    verify opens it (every structure problem: InputError, exit 2); a GGUF's header is read (:func:`gguf_rows`)."""
    if lv.kind == "gguf":
        return gguf_rows(lv.path, cfg)
    from release.files import check_model_files
    from release.weights.quant import detect
    from release.weights.quant.weights import QuantWeights

    check_model_files(lv.path)
    found = detect(lv.path)
    if found is None:
        if lv.spec.format == "hf":
            return -1  # a float copy: skipped by the caller
        raise InputError(f"release.yaml lists it as {lv.spec.format} {lv.spec.quant}, but the directory is not "
                         "quantized (config.json declares no quantization)", lv.path)
    q = QuantWeights(lv.path, cfg, *found)
    q.close()
    return cfg.vocab_size


# --- a GGUF's vocabulary rows, from its header -------------------------------------------------------------------

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}  # GGUF value types


def _gguf_header(path: Path) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """(scalar and string metadata, tensor name -> GGML dims) of a little-endian GGUF v2/v3, skipping arrays.

    gguf's GGUFReader builds an object per vocabulary entry: for Gemma's 262,144 tokens that is ~20 s and ~700 MB
    per file, which ``verify_gguf`` pays once per variant anyway; this walk over the same bytes takes well under a
    second. ValueError for anything it does not read (the caller then opens the file as verify does).
    """
    import mmap
    import struct

    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        def take(fmt: str, at: int) -> tuple[Any, int]:
            return struct.unpack_from("<" + fmt, buf, at)[0], at + struct.calcsize(fmt)

        def text(at: int) -> tuple[str, int]:
            n, at = take("Q", at)
            if at + n > len(buf):
                raise ValueError("string past the end of the file")
            return bytes(buf[at:at + n]).decode("utf-8", "replace"), at + n

        if bytes(buf[:4]) != b"GGUF":
            raise ValueError("no GGUF magic")
        version, at = take("I", 4)
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version}")
        n_tensors, at = take("Q", at)
        n_kv, at = take("Q", at)
        kv: dict[str, Any] = {}
        for _ in range(n_kv):
            key, at = text(at)
            vtype, at = take("I", at)
            if vtype == 8:
                kv[key], at = text(at)
            elif vtype in _SCALARS:
                kv[key], at = take(_SCALARS[vtype], at)
            elif vtype == 9:
                itype, at = take("I", at)
                count, at = take("Q", at)
                if itype == 8:
                    for _ in range(count):
                        n, at = take("Q", at)
                        at += n
                elif itype in _SCALARS:
                    at += count * struct.calcsize(_SCALARS[itype])
                else:
                    raise ValueError(f"array of value type {itype}")
            else:
                raise ValueError(f"value type {vtype}")
        tensors: dict[str, list[int]] = {}
        for _ in range(n_tensors):
            name, at = text(at)
            n_dims, at = take("I", at)
            tensors[name] = [take("Q", at + 8 * i)[0] for i in range(n_dims)]
            at += 8 * n_dims + 4 + 8  # dims, type, offset
    return kv, tensors


def gguf_rows(path: Path, cfg) -> int:  # noqa: ANN001 - GemmaConfig
    """The vocabulary rows a GGUF holds (``GGUFWeights.vocab_rows``: the embedding's, or the output head's when fewer),
    from the header alone; the architecture, layer count and width are checked against the original, so a GGUF
    of another model is bad input (exit 2) before any forward pass. Whatever the header walk cannot read is
    opened as verify opens it, for its own errors."""
    from release.weights.gguf_reader import GGUFWeights, cfg_arch_name

    parts = [path]
    try:
        kv, tensors = _gguf_header(path)
        count = kv.get("split.count")
        if isinstance(count, int) and count > 1:
            m = re.fullmatch(r"(.+)-00001-of-(\d{5})\.gguf", path.name)
            if m is None:
                raise ValueError("not a first part")
            parts = [path.with_name(f"{m.group(1)}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
            for part in parts[1:]:
                tensors.update(_gguf_header(part)[1])
    except (OSError, ValueError, UnicodeDecodeError, OverflowError):
        w = GGUFWeights(path, cfg)  # raises verify's own InputError
        try:
            return w.vocab_rows
        finally:
            w.close()
    arch = kv.get("general.architecture")
    embd, head = tensors.get("token_embd.weight"), tensors.get("output.weight")
    problems = []
    if arch != cfg_arch_name(cfg):
        problems.append(f"its architecture is {arch!r}, the original's {cfg_arch_name(cfg)!r}")
    if kv.get(f"{arch}.block_count") not in (None, cfg.num_hidden_layers):
        problems.append(f"{kv.get(f'{arch}.block_count')} blocks, the original has {cfg.num_hidden_layers} layers")
    if embd is None or len(embd) != 2 or embd[0] != cfg.hidden_size or embd[1] > cfg.vocab_size:
        problems.append(f"token_embd.weight is {embd} (GGML order), the original needs [{cfg.hidden_size}, "
                        f"<= {cfg.vocab_size}]")
    if problems:
        raise InputError("GGUF does not fit the original's config.json: " + "; ".join(problems), path,
                         hint="is it a variant of this release's model?")
    rows = embd[1]
    if head is not None and len(head) == 2 and head[0] == cfg.hidden_size:
        rows = min(rows, head[1])
    return int(rows)


# --- the original's logits, kept once --------------------------------------------------------------------


class ReferenceLogits:
    """The original's logits for every variant: per vocabulary width the variants need (a Gemma 3 GGUF holds only
    the tokenizer's rows), one golden prompt per prompt -- full rows, or top-k + log-sum-exp."""

    def __init__(self, specs: list[PromptSpec], sequences: list[np.ndarray], logits: list[np.ndarray],
                 widths: set[int], storage: str, topk: int):
        self.storage = storage
        self.topk = min(topk, min(widths)) if storage == "topk" else None
        self._goldens = {w: [_keep(s.name, ids, lg[:, :w], storage, topk) for s, ids, lg in zip(specs, sequences, logits)]
                         for w in sorted(widths)}

    def __call__(self, rows: int) -> list[GoldenPrompt]:
        try:
            return self._goldens[rows]
        except KeyError:
            raise RuntimeError(f"no reference logits were kept for a vocabulary of {rows} rows") from None

    @property
    def nbytes(self) -> int:
        arrays = [a for gs in self._goldens.values() for g in gs for a in (g.logits, g.topk_ids, g.topk_logits, g.lse)
                  if a is not None]
        return sum({id(a): a.nbytes for a in arrays}.values())


def _keep(name: str, ids: np.ndarray, logits: np.ndarray, storage: str, topk: int) -> GoldenPrompt:
    gp = make_prompt(name, ids, logits, storage, topk)
    if storage == "topk":
        gp.lse = logsumexp(logits, np.float64)  # the golden side of the KL in float64 (a golden file keeps float32)
    return gp


# --- the run --------------------------------------------------------------------------------------------------


@dataclass
class VariantResult:
    variant: LocalVariant
    report: VerifyReport
    out: Path  # the JSON report written
    seconds: float

    def summary(self) -> dict[str, Any]:
        v = self.report.variant or {}
        return {"name": self.variant.name, "kind": self.variant.kind, "repo": self.variant.spec.repo,
                "format": "gguf" if self.variant.kind == "gguf" else v.get("format"), "quant": v.get("quant"),
                "bits_per_weight": v.get("bits_per_weight"), "bytes": v.get("bytes"),
                "mean_kl": self.report.mean_kl, "top1_agreement": self.report.top1_agreement,
                "max_kl": max((p.max_kl for p in self.report.prompts), default=0.0),
                "ok": self.report.ok, "verdict": self.report.verdict(), "report": str(self.out),
                "seconds": round(self.seconds, 3)}


@dataclass
class FidelityRun:
    release: Path
    original: Path
    out_dir: Path
    storage: str
    topk: int | None
    prompts: int
    positions: int
    results: list[VariantResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds_original: float = 0.0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.report.ok for r in self.results)

    @property
    def forwards(self) -> int:
        """Forward passes run: the original once, then each variant."""
        return 1 + len(self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "release": str(self.release), "original": str(self.original), "out_dir": str(self.out_dir),
                "storage": self.storage, "topk": self.topk, "prompts": self.prompts, "positions": self.positions,
                "forwards": self.forwards, "seconds": round(self.seconds, 3),
                "seconds_original": round(self.seconds_original, 3),
                "variants": [r.summary() for r in self.results],
                "skipped": [{"variant": what, "why": why} for what, why in self.skipped]}


def report_name(name: str) -> str:
    """The report's file name for a variant: its file or directory name, plus ``.json``."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name) + ".json"


def measure_release(release_dir: str | os.PathLike, prompts: list[PromptSpec], *, against: str | os.PathLike | None = None,
                    out_dir: str | os.PathLike | None = None, storage: str | None = None, topk: int | None = None,
                    progress: Progress | None = None) -> FidelityRun:
    """Measure every local variant of the release in ``release_dir`` against its original; write one report each.

    ``storage`` None picks as ``golden`` does (full rows up to 64 MB of logits, else top-``topk``, by default
    :data:`DEFAULT_TOPK`); "full" / "topk" force it. Bad input (release.yaml, a variant that does not fit the original ...) is an InputError before any
    forward pass; nothing is written then.
    """
    from gemma_ref.config import load_config
    from gemma_ref.model import forward, validate_ids
    from gemma_ref.weights import Weights
    from release import release_yaml
    from release.files import check_model_files
    from release.weights.gguf_verify import resolve_prompts, verify_gguf
    from release.weights.quant import quantized_variant
    from release.weights.quant_verify import verify_quant
    from release.weights.verify import write_report_json

    started = time.perf_counter()
    if storage not in (None, "full", "topk"):
        raise InputError(f"storage must be full or topk, not {storage!r}")
    topk = DEFAULT_TOPK if topk is None else topk
    if topk < 1:
        raise InputError("--topk must be at least 1")
    release_dir = Path(release_dir)
    cfg = release_yaml.load(release_dir)
    original = Path(against) if against is not None else release_dir
    if not original.is_dir():
        raise InputError("the original model path is not a directory", original)
    check_model_files(original)  # a FIFO among them would block the readers
    found = quantized_variant(original)
    if found is not None:
        raise InputError(f"the original is itself quantized ({found[1].label}): variants are measured against the float "
                         "model they were made from", original,
                         hint="pass it with --against ORIGINAL_DIR" if against is None else None)
    mcfg = load_config(original)
    planned, skipped = local_variants(cfg)
    widths: dict[LocalVariant, int] = {}
    for lv in planned:
        rows = _check_variant(lv, mcfg)
        if rows < 0:
            skipped.append((lv.label, "a float copy, not quantized (check it with `verify --golden`)"))
        else:
            widths[lv] = rows
    planned = [lv for lv in planned if lv in widths]
    if not planned:
        listed = "; ".join(f"{what}: {why}" for what, why in skipped) or "release.yaml lists no variants"
        raise InputError(f"no variant to measure here ({listed})", path=cfg.path,
                         hint="a variant is measured when its files are here: a .gguf in the release directory, or "
                              "a local_dir holding the GGUF or the quantized directory")
    specs = resolve_prompts(prompts, original)
    sequences = [validate_ids(p.ids, mcfg.vocab_size, mcfg.max_position_embeddings) for p in specs]
    positions = sum(len(s) for s in sequences)
    storage = storage or auto_storage(positions, mcfg.vocab_size)
    out = Path(out_dir) if out_dir is not None else release_dir / DEFAULT_OUT_DIR
    if out.exists() and not out.is_dir():
        raise InputError("--out-dir is not a directory", out)

    t = time.perf_counter()
    weights = Weights(original, mcfg, check=True)  # missing tensors, wrong shapes: InputError
    try:
        many = f"{len(planned)} variant{'s' if len(planned) != 1 else ''}"
        step = (lambda i, n: progress(f"original (once, for {many}): forward", i, n)) if progress else None
        logits = forward(weights, mcfg, sequences, step)
    finally:
        weights.close()
    reference = ReferenceLogits(specs, sequences, logits, set(widths.values()), storage, topk)
    del logits
    run = FidelityRun(release=release_dir, original=original, out_dir=out, storage=storage, topk=reference.topk,
                      prompts=len(specs), positions=positions, skipped=skipped,
                      seconds_original=time.perf_counter() - t)

    out.mkdir(parents=True, exist_ok=True)
    for i, lv in enumerate(planned, 1):
        t = time.perf_counter()
        step = _renamed(progress, f"variant {i}/{len(planned)} {lv.name}")
        measure = verify_gguf if lv.kind == "gguf" else verify_quant
        report = measure(lv.path, original, specs, progress=step, reference=reference)
        path = write_report_json(report, out / report_name(lv.name))
        run.results.append(VariantResult(lv, report, path, time.perf_counter() - t))
    run.seconds = time.perf_counter() - started
    return run


def _renamed(progress: Progress | None, prefix: str) -> Progress | None:
    return (lambda what, i, n: progress(f"{prefix}: {what}", i, n)) if progress else None


# --- the summary --------------------------------------------------------------------------------------------


def variant_label(kind: str, fmt: str | None, quant: str | None) -> str:
    """'GGUF Q4_K_M', 'MLX affine 4-bit g64': the format as tables spell it, then the quant label without it."""
    from release.card.variants import FORMATS

    quant = quant or ""
    if kind == "gguf":
        return f"GGUF {quant}".strip()
    fmt = fmt or ""
    if fmt and quant.lower().startswith(fmt.lower()):
        quant = quant[len(fmt):].strip()
    return f"{FORMATS.get(fmt, fmt)} {quant}".strip()


def _size(n: int | None) -> str:
    from release.card.variants import format_size

    return format_size(n) if isinstance(n, int) else "?"


def render_run(run: FidelityRun):
    """A rich renderable: one row per variant (label, bits/weight, size, mean KL, top-1, verdict), then the totals."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    kept = "full rows" if run.storage == "full" else f"top-{run.topk} + log-sum-exp"
    t = Table(title=f"variants of {run.release} against the original {run.original} ({run.prompts} prompts, "
                    f"{run.positions} positions; the original's logits kept as {kept})",
              title_justify="left")
    for col in ("variant", "format / quant", "bits/weight", "size", "mean KL", "top-1", "verdict"):
        t.add_column(col, justify="left" if col in ("variant", "format / quant", "verdict") else "right")
    for r in run.results:
        s = r.summary()
        bpw = s["bits_per_weight"]
        t.add_row(Text(s["name"]), Text(variant_label(s["kind"], s["format"], s["quant"])),
                  f"{bpw:.2f}" if isinstance(bpw, (int, float)) else "?",
                  _size(s["bytes"]), f"{s['mean_kl']:.3g}", f"{s['top1_agreement']:.1%}",
                  "PASS" if s["ok"] else "[red]FAIL[/]")
    parts: list[Any] = [t]
    for what, why in run.skipped:
        parts.append(Text(f"skipped {what}: {why}"))
    n = len(run.results)
    parts.append(Text(f"{n} variant{'s' if n != 1 else ''}, {run.forwards} forward passes (the original once, "
                      f"{run.seconds_original:.1f} s; verify --against per variant would run {2 * n}); "
                      f"{run.seconds:.1f} s in all; reports in {run.out_dir}"))
    parts.append(Text("PASS" if run.ok else "FAIL: " + ", ".join(r.variant.name for r in run.results if not r.report.ok)
                      + " outside its bounds", style="bold green" if run.ok else "bold red"))
    return Group(*parts)


# --- the chart: size (or bits per weight) against mean KL -------------------------------------------------

CHART_HINT = "pip install 'gemma-release[chart]'"
CHART_FORMATS = {".png": "png", ".svg": "svg"}


def _matplotlib():
    """matplotlib with the Agg backend (no display needed), imported only here: it is the optional ``chart`` extra."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise InputError("the chart needs matplotlib, which is not installed", hint=CHART_HINT) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return matplotlib, plt


def point_label(f) -> str:  # noqa: ANN001 - release.card.variants.Fidelity
    """'GGUF Q4_K_M', 'MLX affine 4-bit g64': the format as tables spell it, then the report's quant label."""
    return variant_label(f.kind, f.format, f.quant)


def chart_points(fidelity: list, x: str = "size") -> tuple[list[dict[str, Any]], float]:  # noqa: ANN001
    """One point per report: label, x (bytes or bits per weight), mean KL, y (KL clamped to the floor), verdict.

    A KL of 0 (identical logits: an F32 GGUF) has no place on a log scale: it is drawn at the floor, a tenth of the
    smallest positive KL (1e-12 when none is), and marked ``clamped``.
    """
    if x not in ("size", "bits"):
        raise InputError(f"--x must be size or bits, not {x!r}")
    if not fidelity:
        raise InputError("no fidelity report to chart", hint="make them with `gemma-release variants fidelity RELEASE_DIR`")
    positive = [f.mean_kl for f in fidelity if f.mean_kl > 0]
    floor = min(positive) / 10 if positive else 1e-12
    labels = [point_label(f) for f in fidelity]
    points = []
    for f, label in zip(fidelity, labels):
        value = f.bytes if x == "size" else f.bits_per_weight
        if value is None:
            raise InputError(f"the report of {f.file} has no {'size (variant.bytes)' if x == 'size' else 'bits per weight (variant.bits_per_weight)'}",
                             path=f.source, hint="reports of older versions lack it: measure the variant again")
        if labels.count(label) > 1:
            label = f"{label} ({f.file})"
        points.append({"label": label, "file": f.file, "x": value, "mean_kl": f.mean_kl, "y": max(f.mean_kl, floor),
                       "clamped": f.mean_kl <= 0, "ok": f.ok, "top1": f.top1})
    return points, floor


def write_chart(fidelity: list, out: str | os.PathLike, x: str = "size", title: str | None = None) -> dict[str, Any]:  # noqa: ANN001
    """Draw size (or bits per weight) against mean KL (log) for every report into ``out`` (.png or .svg), atomically.

    Deterministic: Agg, fixed SVG ids (``svg.hashsalt``), no date in the SVG and no software tag in the PNG, so the
    same reports give the same bytes. SVG text stays text (``svg.fonttype: none``). Returns what was drawn.
    """
    from release.files import atomic_path

    out = Path(out)
    fmt = CHART_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise InputError("the chart is written as .png or .svg (by the file name's suffix)", out)
    points, floor = chart_points(fidelity, x)
    matplotlib, plt = _matplotlib()
    with matplotlib.rc_context({"svg.hashsalt": "gemma-release", "svg.fonttype": "none", "font.size": 9}):
        fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=150)
        try:
            scale, unit = _size_unit(max(p["x"] for p in points)) if x == "size" else (1, "")
            for ok, colour, marker, name in ((True, "#1f6fb4", "o", "within its bounds"),
                                             (False, "#c62828", "X", "outside its bounds")):
                group = [p for p in points if p["ok"] == ok]
                if group:
                    ax.scatter([p["x"] / scale for p in group], [p["y"] for p in group], s=42, c=colour, marker=marker,
                               label=name, zorder=3,
                               edgecolors=[colour for _ in group], linewidths=1.2)
            for p, (dx, dy, ha) in zip(points, _label_sides(points)):
                ax.annotate(p["label"] + (" (KL 0)" if p["clamped"] else ""), (p["x"] / scale, p["y"]), ha=ha,
                            xytext=(dx, dy), textcoords="offset points", fontsize=8)
            ax.set_yscale("log")
            ax.set_xlabel(f"size of the variant's files ({unit})" if x == "size"
                          else "bits per weight (quantized tensors, scales included)")
            ax.set_ylabel("mean KL(original ‖ variant), nats")
            ax.set_title(title or "Quantized variants: size against fidelity", loc="left")
            ax.grid(True, which="major", linewidth=0.5, alpha=0.5)
            lo, hi = min(p["y"] for p in points), max(p["y"] for p in points)
            ax.set_ylim(lo / 3, hi * 3)
            xs = [p["x"] / scale for p in points]
            pad = (max(xs) - min(xs)) * 0.25 or max(xs) * 0.25 or 1  # room for the labels on either side
            ax.set_xlim(max(0, min(xs) - pad), max(xs) + pad)
            ax.legend(loc="upper right", fontsize=8, frameon=False)
            if any(p["clamped"] for p in points):
                fig.text(0.01, 0.01, f"KL 0 (identical logits) is drawn at {floor:.0e}, the floor of the log scale",
                         fontsize=7, color="#555555")
            fig.tight_layout()
            metadata = {"Date": None} if fmt == "svg" else {"Software": None}
            with atomic_path(out, "chart") as tmp:
                fig.savefig(tmp, format=fmt, metadata=metadata)
        finally:
            plt.close(fig)
    return {"out": str(out), "format": fmt, "x": x, "floor": floor, "points": points}


def _label_sides(points: list[dict[str, Any]]) -> list[tuple[int, int, str]]:
    """(x offset, y offset in points, alignment) of each label: away from the point's nearest neighbour (in the
    axes' own scale, log for the KL), so two close points never swap labels."""
    import math

    xs = [p["x"] for p in points]
    ys = [math.log10(p["y"]) for p in points]
    wx, wy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    out = []
    for i in range(len(points)):
        others = [j for j in range(len(points)) if j != i]
        if not others:
            out.append((6, 6, "left"))
            continue
        j = min(others, key=lambda j: ((xs[j] - xs[i]) / wx) ** 2 + ((ys[j] - ys[i]) / wy) ** 2)
        below = ys[j] > ys[i] or (ys[j] == ys[i] and j > i)
        left = xs[j] > xs[i]
        out.append((-6 if left else 6, -11 if below else 6, "right" if left else "left"))
    return out


def _size_unit(largest: float) -> tuple[float, str]:
    for unit, factor in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if largest >= factor:
            return factor, unit
    return 1, "bytes"
