"""One-off: how the fixtures in this directory were made from ../shared/cards (kept for provenance).

The shared cards are Hub page text whose line breaks were lost. Restored here: the
front matter, written out by hand below (one key or list item per line; the YAML
structure is unambiguous), and the tables (rows split by the column count of their
separator row). Everything else - prose, headings, code - is kept as it was. 002 and 003 kept their line breaks and
have no front matter; they are copied unchanged. 000 is also kept raw, collapsed,
as ``000_raw_collapsed.md``.

Run from the repo root: ``python tests/data/cards/restore_cards.py /work/shared/cards``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

FRONT_000 = """---
license: other
license_name: gemma-terms-of-use
license_link: https://ai.google.dev/gemma/terms
language:
- de
- en
tags:
- sft
- dpo
- laserRMT
- laser-QLoRa
- finetune
- work in progress
- alpha
---
"""

FRONT_001 = """---
tags:
- generated_from_trainer
base_model: google/gemma-7b-it
model-index:
- name: out
  results: []
license: other
pipeline_tag: question-answering
library_name: peft
---
---
"""


_SEPARATOR = re.compile(r"\|(?:[ \t]*:?-{3,}:?[ \t]*\|)+")


def split_tables(text: str) -> str:
    """Put the header, separator and each row of every collapsed Markdown table on its own line.

    A table is found by its separator row (``|---|---|``); its column count says how many
    pipes make a row, so the header is the row just before it and the body rows follow
    for as long as only whitespace separates one row from the next.
    """
    out, pos = [], 0
    for sep in _SEPARATOR.finditer(text):
        if sep.start() < pos:
            continue
        ncols = sep.group(0).count("|") - 1
        before = [i for i in range(sep.start()) if text[i] == "|"]
        if len(before) < ncols + 1:
            continue
        head_start = before[-(ncols + 1)]
        rows = [text[head_start : sep.start()].strip(), sep.group(0)]
        i = sep.end()
        while True:
            m = re.match(r"[ \t]*(\|(?:[^|\n]*\|){%d})" % ncols, text[i:])
            if not m:
                break
            rows.append(m.group(1).strip())
            i += m.end()
        out.append((text[pos:head_start].strip() if pos else text[:head_start].rstrip()) + "\n\n" + "\n".join(rows) + "\n\n")
        pos = i
    out.append(text[pos:].lstrip() if pos else text[pos:])
    return "".join(out)


def main(src: Path) -> None:
    raw000 = (src / "000_47204bda0fa59dce.txt").read_text(encoding="utf-8")
    raw001 = (src / "001_29eda1489c334a10.txt").read_text(encoding="utf-8")
    (HERE / "000_raw_collapsed.md").write_text(raw000, encoding="utf-8")
    body000 = raw000.split("--- ", 2)[2]  # after "--- <metadata> ---"
    (HERE / "000_sauerkraut_gemma_7b.md").write_text(FRONT_000 + split_tables(body000), encoding="utf-8")
    body001 = raw001.split("library_name: peft --- --- ", 1)[1]
    (HERE / "001_axolotl_out.md").write_text(FRONT_001 + split_tables(body001), encoding="utf-8")
    for name, dest in (("002_ceb9a26f0940136e.txt", "002_ollama_discopop.md"), ("003_b2789bd9984adb27.txt", "003_gemma_mling.md")):
        (HERE / dest).write_text((src / name).read_text(encoding="utf-8"), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/cards"))
