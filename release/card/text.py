"""What a card's text says, independent of the rules: its prose (code blocks out) and the base models it names.

Shared by the card rules (CARD010), the Terms of Use rules, upstream detection and the variant rules, so
none of them imports another for it.
"""

from __future__ import annotations

import functools
import re
from typing import Iterator


def _prose_lines(body: str) -> Iterator[tuple[int, str]]:
    """(0-based line offset, text) of body lines outside fenced code blocks."""
    fence: str | None = None
    for i, ln in enumerate(body.split("\n")):
        s = ln.lstrip()
        if fence is None and (s.startswith("```") or s.startswith("~~~")):
            fence = s[:3]
            continue
        if fence is not None:
            if s.startswith(fence):
                fence = None
            continue
        yield i, ln


def prose(body: str) -> str:
    """The body without fenced code blocks (line count kept)."""
    lines = body.split("\n")
    keep = dict(_prose_lines(body))
    return "\n".join(keep.get(i, "") for i in range(len(lines)))


# "fine-tuned version of [google/gemma-7b]", "based on google/gemma-2-9b", "merge of a/b and c/d", "Original model:",
# "Original repo: google/gemma-2b-it", "Finetuned from model:", "built on [google/gemma-2-9b-it](...)", "converted to GGUF
# format from [`google/gemma-2b-it`](...)", "to enhance the Gemma-2B-it model", ...
_CUE = (
    r"\b(?:fine[- ]?tuned|finetuned|fine-tune|finetune|based\s+on|version\s+of|merge\s+of|merged\s+from|"
    r"quantized|quantised|quantizations?\s+of|derived\s+from|trained\s+from|adapter\s+for|continued\s+pre-?training\s+of|"
    r"original\s+(?:model|repo(?:sitory)?|weights)|finetuned\s+from(?:\s+model)?|fine-tuned\s+from(?:\s+model)?|base\s+model|"
    r"built\s+(?:on|upon|from)|converted\s+(?:to\s+[\w-]+\s+(?:format\s+)?)?from|conversion\s+of|distilled\s+from|"
    r"(?:to\s+)?enhance|on\s+top\s+of|starting\s+from|initiali[sz]ed\s+from)\b"
)
_DERIVES = re.compile(
    _CUE + r"[^\n]{0,80}?\[?`?(?<![\w./-])([A-Za-z0-9][\w-]*/[\w.-]*[A-Za-z0-9])",
    re.IGNORECASE,
)
_DERIVES_URL = re.compile(_CUE + r"[^\n]{0,80}?(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)/([\w-]+/[\w.-]*[A-Za-z0-9])", re.IGNORECASE)
# Gemma model names in prose ("Gemma-2B-it", "gemma-2-9b-it", "CodeGemma 7B") after a cue: the Google repo they name.
_DERIVES_NAME = re.compile(
    _CUE + r"[^\n]{0,80}?(?<![\w/.-])((?:code|recurrent|pali)?gemma[-_ ]?(?:(\d(?:\.\d)?n?)[-_ ])?(\d+(?:\.\d+)?[bm]|e\d+b)(?:[-_ ](it|pt|instruct))?)(?![\w/-])",
    re.IGNORECASE,
)


def google_repo_for_name(name: str) -> str | None:
    """`google/...` id for a Gemma model named in prose ("Gemma-2B-it" -> google/gemma-2b-it), or None."""
    m = re.fullmatch(r"((?:code|recurrent|pali)?gemma)[-_ ]?(?:(\d(?:\.\d)?n?)[-_ ])?(\d+(?:\.\d+)?[bm]|e\d+b)(?:[-_ ](it|pt|instruct))?",
                     name.strip(), re.IGNORECASE)
    if not m:
        return None
    family, gen, size, kind = m.group(1).lower(), m.group(2), m.group(3).lower(), (m.group(4) or "").lower()
    if size.startswith("e"):
        size = size.upper()
    kind = "it" if kind in ("it", "instruct") else kind
    parts = [family] + ([gen.lower()] if gen else []) + [size] + ([kind] if kind else [])
    return "google/" + "-".join(parts)


def named_base_models(body: str) -> list[tuple[str, int]]:
    """Repo ids the text names as what the model derives from, with 0-based line offsets."""
    return list(_named_base_models(body))


@functools.lru_cache(maxsize=64)  # several rules ask about the same card body
def _named_base_models(body: str) -> tuple[tuple[str, int], ...]:
    text = prose(body)
    found: dict[str, tuple[int, int]] = {}  # repo -> (character offset, line)

    def add(repo: str, at: int) -> None:
        owner, name = repo.split("/", 1)
        if "." in owner or owner.lower() in ("datasets", "spaces", "docs", "blog", "papers", "models"):
            return  # a domain (github.com/...) or a Hub page, not a model repo
        if not re.search(r"[-_.\d]", name):  # "Korean/English" is prose; model names carry a size, version or dash
            return
        if repo not in found or at < found[repo][0]:
            found[repo] = (at, text.count("\n", 0, at))

    for m in _DERIVES.finditer(text):
        add(m.group(1), m.start(1))
    for m in _DERIVES_URL.finditer(text):
        add(m.group(1), m.start(1))
    if not found:
        for m in _DERIVES_NAME.finditer(text):
            repo = google_repo_for_name(m.group(1))
            if repo:
                add(repo, m.start(1))
    return tuple((r, line) for r, (_, line) in sorted(found.items(), key=lambda kv: kv[1][0]))
