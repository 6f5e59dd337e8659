"""Keep docs/architecture.md true: its links to model.py lines, and the measured size of each bug.

    python tests/make_architecture_doc.py          # rewrite the links' line numbers and the effects table
    python tests/make_architecture_doc.py --check  # exit 1 if a link points at a line without its text

A link is written [`some code`](../gemma_ref/model.py#L123) (or into vision.py): the code must appear on line
123. After an edit of the file, rerunning this script moves each link to the line holding its code (the nearest one).
The effects table (between the bug-effects markers) is every bug switched on over every tiny fixture's
golden prompts (tests/data/goldens), compared with the correct logits.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DOC = ROOT / "docs" / "architecture.md"
LINK = re.compile(r"\[`([^`]+)`\]\(\.\./gemma_ref/(model|vision)\.py#L(\d+)\)")
BEGIN, END = "<!-- bug-effects:begin -->", "<!-- bug-effects:end -->"


def sources() -> dict[str, list[str]]:
    """The lines of each file the doc links into."""
    return {name: (ROOT / "gemma_ref" / f"{name}.py").read_text().splitlines() for name in ("model", "vision")}


def bad_links(doc: str, files: dict[str, list[str]] | None = None) -> list[str]:
    """Links whose line does not hold their code."""
    files = files or sources()
    out = []
    for m in LINK.finditer(doc):
        code, name, n = m.group(1), m.group(2), int(m.group(3))
        lines = files[name]
        if not (1 <= n <= len(lines) and code in lines[n - 1]):
            out.append(f"{name}.py L{n} does not contain {code!r}")
    return out


def fix_links(doc: str, files: dict[str, list[str]] | None = None) -> str:
    files = files or sources()

    def repl(m: re.Match) -> str:
        code, name, n = m.group(1), m.group(2), int(m.group(3))
        hits = [i + 1 for i, line in enumerate(files[name]) if code in line]
        if not hits:
            raise SystemExit(f"docs/architecture.md links `{code}`, which is nowhere in gemma_ref/{name}.py")
        best = min(hits, key=lambda h: abs(h - n))
        return f"[`{code}`](../gemma_ref/{name}.py#L{best})"
    return LINK.sub(repl, doc)


def effects_table() -> str:
    from gemma_ref import bugs as B
    from gemma_ref import load_model, vision
    from release.weights.golden import read_golden
    from tests.conftest import CASES, GOLDENS, golden_prompts

    rows: dict[str, list[tuple[str, float, float]]] = {b: [] for b in B.BUGS}
    for case in CASES:
        if not (GOLDENS / f"{case}.safetensors").is_file():
            continue
        model = load_model(ROOT / "tests" / "data" / "models" / case)
        prompts = [(ids, None) for ids, _ in golden_prompts(case)]  # text prompts
        vc = tower = None
        pictured = [(gp.ids, gp.images) for gp in read_golden(GOLDENS / f"{case}.safetensors").prompts if gp.images]
        if pictured:  # image prompts, from the raw images: the image path's bugs (preprocessing too) are measured
            vc = vision.load_vision_config(model.weights.dir)
            tower = vision.TowerWeights(model.weights, vc)
            prompts += pictured
        refs = [B.forward_with(model.weights, model.config, [], ids, tower, imgs) for ids, imgs in prompts]
        for bug in B.applicable(model.config, vc):
            try:
                outs = [B.forward_with(model.weights, model.config, [bug], ids, tower, imgs) for ids, imgs in prompts]
            except KeyError:
                continue
            d = max(float(np.abs(o - r).max()) for o, r in zip(outs, refs))
            top1 = float(np.mean(np.concatenate([np.argmax(o, -1) == np.argmax(r, -1) for o, r in zip(outs, refs)])))
            rows[bug].append((case, d, top1))
        model.close()
    lines = ["| bug | fixtures where it applies | max \\|Δlogit\\| (min – max over them) | top-1 agreement (worst) |",
             "|---|---|---|---|"]
    for bug, r in rows.items():
        if not r:
            lines.append(f"| `{bug}` | none of the fixtures | – | – |")
            continue
        lo, hi = min(x[1] for x in r), max(x[1] for x in r)
        names = f" ({', '.join(x[0] for x in r)})" if len(r) <= 4 else ""
        lines.append(f"| `{bug}` | {len(r)}{names} | {lo:.2g} – {hi:.2g} | "
                     f"{min(x[2] for x in r):.0%} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    doc = DOC.read_text()
    if "--check" in argv:
        bad = bad_links(doc)
        print("\n".join(bad) or "links ok")
        return 1 if bad else 0
    doc = fix_links(doc)
    a, b = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    doc = doc[:a] + "\n" + effects_table() + "\n" + doc[b:]
    DOC.write_text(doc)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
