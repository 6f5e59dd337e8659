"""Name the known Gemma port bug a wrong model's logits match.

The candidate's logits (a golden file, or an ``.npz`` with ``input_ids`` [T] or [N, T] and ``logits``
[T, V] or [N, T, V], as people dump them from other engines) are compared with the reference and with
the reference run with each applicable bug of :mod:`gemma_ref.bugs` switched on, on the same ids. The
variants are ranked by max |Δlogit| (then mean KL(candidate || variant) over all positions).

Verdict (``best``):

* ``none``: the candidate matches the reference within verify's tolerance;
* a bug id, or a pair ``a+b`` when two bugs together explain it far better than any one (pairs are
  tried among the top few single bugs when the best single bug does not match within tolerance);
* ``unexplained``: the best explanation is neither within tolerance, nor ≥ 10x closer than the reference
  (in max |Δlogit|, or in mean KL while also closer in max |Δlogit|): something outside the catalogue.

Ranking is by max |Δlogit| (then KL): on small or peaked vocabularies the KL of very different logits
can be ~0, while a bug reproduced exactly leaves float32 noise (~1e-5) in every logit. When the candidate
is within tolerance of the reference, a bug variant that is itself within tolerance and ≥ 10x closer
still wins (e.g. exact GELU, whose effect is often below verify's tolerance).
"""

from __future__ import annotations

import itertools
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gemma_ref import bugs as B
from release.errors import InputError
from release.weights.golden import GoldenPrompt, read_golden, sniff_golden
from release.weights.verify import Tolerance, compare_prompt

MAX_NPZ_BYTES = 4 << 30  # uncompressed size of all arrays in a candidate .npz
EXPLAIN_FACTOR = 10.0  # a bug explains the candidate when this many times closer than the reference
PAIR_POOL = 4
NOISE_ABS = 1e-5  # max |Δlogit| of two float32 runs of the same model: below it, nothing is left to explain
KL_FLOOR = 1e-9  # KL of two float32 runs of the same model is about this: the margin divides by no less  # pairs are tried among this many best single bugs


@dataclass
class Distance:
    id: str  # "reference", a bug id, or "a+b"
    kl: float  # mean KL(candidate || variant) over every position of every prompt
    max_abs: float  # max |Δlogit| (top-k goldens: over the stored logits and the log-sum-exp)
    within: bool  # within verify's tolerance on every prompt
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"id": self.id, "kl": self.kl, "max_abs": self.max_abs, "within_tolerance": self.within}
        return d | ({"note": self.note} if self.note else {})


def read_candidate(path: str | os.PathLike, vocab_size: int) -> list[GoldenPrompt]:
    """The candidate's prompts (ids and logits) from a golden file or an .npz; InputError when malformed."""
    path = Path(path)
    if not path.is_file():
        raise InputError("candidate file not found", str(path))
    if sniff_golden(path):
        prompts = read_golden(path).prompts
    else:
        prompts = _read_npz(path)
    for p in prompts:
        width = p.logits.shape[-1] if p.logits is not None else None
        if width is not None and width != vocab_size:
            raise InputError(f"candidate logits have {width} columns but the model's vocabulary has {vocab_size}", str(path))
        if p.ids.size and (p.ids.min() < 0 or p.ids.max() >= vocab_size):
            raise InputError(f"candidate input_ids fall outside the vocabulary [0, {vocab_size})", str(path))
    return prompts


def _read_npz(path: Path) -> list[GoldenPrompt]:
    try:
        with zipfile.ZipFile(path) as z:
            total = sum(i.file_size for i in z.infolist())
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"candidate is neither a golden file nor an .npz ({e})", str(path)) from None
    if total > MAX_NPZ_BYTES:
        raise InputError(f"candidate .npz holds {total / 2**30:.1f} GiB uncompressed, over the 4 GiB limit", str(path))
    try:
        with np.load(path, allow_pickle=False) as z:
            if "input_ids" not in z.files or "logits" not in z.files:
                raise InputError(f"candidate .npz needs arrays 'input_ids' and 'logits' (has {', '.join(z.files) or 'none'})",
                                 str(path))
            ids, logits = z["input_ids"], z["logits"]
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise InputError(f"cannot read the candidate .npz ({e})", str(path)) from None
    if ids.dtype.kind not in "iu" or ids.ndim not in (1, 2) or ids.size == 0:
        raise InputError(f"input_ids must be a non-empty integer array [T] or [N, T], got {ids.dtype} {list(ids.shape)}",
                         str(path))
    if logits.dtype.kind != "f" or logits.ndim != ids.ndim + 1 or logits.shape[:-1] != ids.shape:
        raise InputError(f"logits must be float [T, V] or [N, T, V] matching input_ids {list(ids.shape)}, "
                         f"got {logits.dtype} {list(logits.shape)}", str(path))
    if not np.all(np.isfinite(logits)):
        raise InputError("candidate logits hold NaN or Inf", str(path))
    ids, logits = ids.reshape(-1, ids.shape[-1]), logits.reshape(-1, *logits.shape[-2:])
    return [GoldenPrompt(f"npz-{i}", ids[i].astype(np.int64), logits[i].astype(np.float32)) for i in range(len(ids))]


def distance(name: str, outs: list[np.ndarray], prompts: list[GoldenPrompt], tol: Tolerance) -> Distance:
    res = [compare_prompt(o, p, tol) for o, p in zip(outs, prompts)]
    n = sum(r.n_tokens for r in res)
    kl = sum(r.mean_kl * r.n_tokens for r in res) / n
    return Distance(name, float(kl), max(r.max_abs_diff for r in res), all(r.within_tolerance for r in res))


def diagnose(model_dir: str | os.PathLike, candidate: str | os.PathLike, tol: Tolerance | None = None,
             progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Rank the reference and every applicable bug (and pairs of the best ones) by distance to the candidate."""
    from gemma_ref import load_model

    tol = tol or Tolerance()
    with load_model(model_dir) as model:
        cfg, weights = model.config, model.weights
        prompts = read_candidate(candidate, cfg.vocab_size)
        vision = tower = None
        if any(p.images for p in prompts):  # image prompts: the tower's bugs are candidates too
            from gemma_ref import vision as V

            vision = V.load_vision_config(weights.dir)
            if vision is None:
                raise InputError("the candidate's prompts hold images, but this checkpoint has no vision tower "
                                 "gemma_ref runs", candidate)
            tower = V.TowerWeights(weights, vision)

        def run(bug_ids: list[str]) -> list[np.ndarray]:  # image prompts: the producer's pixels when recorded
            return [B.forward_with(weights, cfg, bug_ids, p.ids, tower, p.pixels or p.images) for p in prompts]

        ref_out = run([])
        ref = distance("reference", ref_out, prompts, tol)
        notes = []
        if any(p.ids[0] != cfg.bos_token_id for p in prompts):
            notes.append(f"some input_ids do not start with <bos> ({cfg.bos_token_id}): if the candidate ran them so, "
                         "its engine or tokenizer dropped BOS (bos_missing)")
        singles: list[Distance] = []
        skipped: list[dict[str, str]] = []
        ids = B.applicable(cfg, vision)
        for n, bug in enumerate(ids):
            try:
                outs = run([bug])
            except KeyError as e:  # the checkpoint lacks what the buggy port would read
                skipped.append({"id": bug, "why": str(e).strip("'\"")})
                continue
            d = distance(bug, outs, prompts, tol)
            same = all(float(np.abs(o - r).max()) <= 10 * NOISE_ABS for o, r in zip(outs, ref_out))
            if same:
                d.note = "no effect on these ids (indistinguishable from the reference)"
            singles.append(d)
            if progress:
                progress(n + 1, len(ids))
        key = lambda d: (d.max_abs, d.kl)
        singles.sort(key=key)
        live = [d for d in singles if not d.note]
        pairs: list[Distance] = []
        if not ref.within and live and live[0].max_abs > 10 * NOISE_ABS:
            # the best single bug plus each other one, and every pair among the top few
            order = lambda a, b: (a, b) if ids.index(a) < ids.index(b) else (b, a)
            tried = {order(live[0].id, d.id) for d in live[1:]}
            tried |= {order(a, b) for a, b in itertools.combinations([d.id for d in live[:PAIR_POOL]], 2)}
            tried = {p for p in tried if B.compatible(*p, cfg)}
            for a, b in sorted(tried, key=lambda p: (ids.index(p[0]), ids.index(p[1]))):
                pairs.append(distance(f"{a}+{b}", run([a, b]), prompts, tol))
        pairs.sort(key=key)

    ranking = sorted(singles + pairs, key=key)
    top = live[0] if live else None
    p = pairs[0] if pairs else None
    if p and top and (p.max_abs * EXPLAIN_FACTOR <= top.max_abs or (p.within and not top.within)):
        top = pairs[0]  # a pair only wins when it is much better than the best single bug
    if ref.within:
        # verify would pass it; still name a bug that reproduces it ten times more closely than the reference
        # (float32 reruns differ by ~1e-6-1e-5, a real bug's trace stays exact)
        closer = top is not None and top.within and top.max_abs * EXPLAIN_FACTOR <= ref.max_abs
        best, explained = (top.id if closer else "none"), True
    else:
        explained = bool(top and (top.within or top.max_abs * EXPLAIN_FACTOR <= ref.max_abs
                                  or (top.kl * EXPLAIN_FACTOR <= ref.kl and top.max_abs < ref.max_abs)))
        best = top.id if explained else "unexplained"
    margin = margin_kl = second = None
    mine_ids = set(best.split("+"))
    others = [d for d in ranking if not d.note and not mine_ids <= set(d.id.split("+"))]  # not best plus a bug
    if best not in ("none", "unexplained") and others:
        mine, second = next(d for d in ranking if d.id == best), others[0].id
        margin = float(others[0].max_abs / max(mine.max_abs, NOISE_ABS / 10))  # times closer than the runner-up
        margin_kl = float(max(others[0].kl, KL_FLOOR) / max(mine.kl, KL_FLOOR))
    return {
        "model": str(model_dir), "candidate": str(candidate), "best": best,
        "explained": explained, "second": second, "margin": margin, "margin_kl": margin_kl,
        "reference": ref.to_dict(),
        "ranking": [d.to_dict() for d in ranking],
        "skipped": skipped, "notes": notes,
        "positions": sum(len(p.ids) for p in prompts), "prompts": len(prompts),
        "tolerance": {"atol": tol.atol, "rtol": tol.rtol, "row_rtol": tol.row_rtol},
    }


def render(report: dict[str, Any]) -> str:
    """The report as text: the verdict, then the ranking."""
    best = report["best"]
    ref = report["reference"]
    lines = []
    if best == "none":
        lines.append(f"candidate matches the reference (max |Δ| {ref['max_abs']:.3g}, mean KL {ref['kl']:.3g})")
    elif best == "unexplained":
        lines.append(f"candidate differs from the reference (max |Δ| {ref['max_abs']:.3g}, mean KL {ref['kl']:.3g}) "
                     "and no known bug, alone or in a pair, explains it")
    else:
        m = report["margin"]
        lines.append(f"best explanation: {best}" + (f" ({m:.3g}x closer in max |Δlogit| than {report['second']})" if m else ""))
        for b in best.split("+"):
            lines.append(f"  {b}: {B.BUGS[b].what}")
        lines.append(f"  reference: max |Δ| {ref['max_abs']:.3g}, mean KL {ref['kl']:.3g}")
    lines.append("")
    lines.append(f"{'rank':>4}  {'variant':<44} {'mean KL':>10} {'max |Δ|':>10}")
    for i, d in enumerate(report["ranking"], 1):
        lines.append(f"{i:>4}  {d['id']:<44} {d['kl']:>10.3g} {d['max_abs']:>10.3g}"
                     + ("  ok" if d["within_tolerance"] else "") + (f"  ({d['note']})" if d.get("note") else ""))
    for s in report["skipped"]:
        lines.append(f"      {s['id']}: not run ({s['why']})")
    lines.extend(f"note: {n}" for n in report["notes"])
    return "\n".join(lines)
