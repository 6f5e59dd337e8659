"""What a card's text says, independent of the rules: its prose (code blocks out), its paragraphs, and the
base models it names.

Shared by the card rules (CARD010), the Terms of Use rules, upstream detection and the variant rules, so
none of them imports another for it.

Cards are hard-wrapped Markdown: "built on\\n[google/gemma-2-9b-it](...)" is one sentence. The rules that read
sentences (base model named, derivative statement, endorsement) read :func:`paragraph_text`, where each
paragraph is on one line; line numbers are still counted on :func:`prose`, which has the same offsets.
"""

from __future__ import annotations

import bisect
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


# --- paragraphs -----------------------------------------------------------------------------------

# A line that opens a block of its own (CommonMark: these interrupt a paragraph), so the line break before it
# ends the previous paragraph: ATX heading, bullet or ordered list item, table row, blockquote, HTML block
# (a tag, a closing tag, a comment, <!DOCTYPE>/<?...>; an autolink <https://...> is inline, not HTML), and a
# link reference definition ("[terms]: https://..."; Google's cards end with dozens, which are not sentences).
_LINK_DEFINITION = r"[ \t]{0,3}\[[^\]\n]{1,200}\]:"
_BLOCK_START = re.compile(
    r"[ \t]*(?:#{1,6}(?:[ \t]|$)|[-*+](?:[ \t]|$)|\d{1,9}[.)](?:[ \t]|$)|\||>"
    r"|<(?:[A-Za-z][\w-]*(?:[\s/>]|$)|/[A-Za-z]|!|\?))|" + _LINK_DEFINITION
)
# A line after which the paragraph does not go on: an ATX heading, a table row, a link definition is one
# line; a hard break (two trailing spaces, a backslash, an HTML <br>) breaks the line on purpose, as header
# fields ("**Model creator:** Google<br>") do.
_LINE_BLOCK = re.compile(r"[ \t]*(?:#{1,6}(?:[ \t]|$)|\|)|" + _LINK_DEFINITION)
_HARD_BREAK = re.compile(r"(?: {2}|\\|<br\s*/?>[ \t]*)$", re.IGNORECASE)
_QUOTE_MARKS = re.compile(r"[ \t]{0,3}(?:>[ \t]?)+")


def _rule_line(line: str) -> bool:
    """A thematic break or setext underline (---, ***, ___, ===): a block of its own."""
    s = line.strip()
    if not s or s[0] not in "-*_=":
        return False  # most lines: one look at the first character
    s = s.replace(" ", "").replace("\t", "")
    return len(s) >= 2 and s == s[0] * len(s)


def _continues(prev: str, nxt: str) -> bool:
    """The line break between `prev` and `nxt` continues a paragraph (a soft wrap, rendered as a space)."""
    prev = prev.rstrip("\r")
    if not prev.strip() or not nxt.strip():
        return False  # a blank line ends the paragraph
    if _HARD_BREAK.search(prev) or _LINE_BLOCK.match(prev) or _rule_line(prev) or _rule_line(nxt):
        return False
    if prev.lstrip().startswith("<") and _BLOCK_START.match(prev):
        return False  # an HTML block runs to a blank line; its lines are not prose sentences
    q_prev, q_next = _QUOTE_MARKS.match(prev), _QUOTE_MARKS.match(nxt)
    if q_next:
        # "> built on\n> [google/...]": a quoted paragraph goes on inside the quote; any other line
        # starting with '>' opens a quote of its own
        return bool(q_prev) and _continues(prev[q_prev.end():], nxt[q_next.end():])
    return not _BLOCK_START.match(nxt)


def paragraph_text(body: str) -> str:
    """:func:`prose` with each Markdown paragraph on one line: every line break that only wraps a paragraph
    becomes a space.

    Same length and offsets as ``prose(body)``, so a match in this text is at the same offset in the prose,
    and its line is ``prose(body).count("\\n", 0, offset)``. Line breaks that end a block stay: blank lines,
    headings, list items, table rows, blockquotes, HTML blocks, thematic breaks, hard breaks. A list item's
    wrapped continuation lines join the item; two list items never join.
    """
    return _paragraph_text(body)


@functools.lru_cache(maxsize=8)  # the rules of one check ask for the same body several times; bodies can be large
def _paragraph_text(body: str) -> str:
    lines = prose(body).split("\n")
    out: list[str] = []
    for i, ln in enumerate(lines):
        out.append(ln)
        if i + 1 < len(lines):
            out.append(" " if _continues(ln, lines[i + 1]) else "\n")
    return "".join(out)


# --- base models named in the text ------------------------------------------------------------------

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
# What may stand between a cue and the repo it names: up to 80 characters of the same sentence. Paragraphs are
# joined, so a cue must not reach into the next sentence ("...the 7B instruct version of the Gemma model. You can
# also visit ... [2B base model](https://huggingface.co/google/gemma-2b)" names no base). A period followed by a
# non-space ("huggingface.co", "gemma-1.1") does not end a sentence. One character per step: linear.
_SAME_SENTENCE = r"(?:[^.\n]|\.(?=\S)){0,80}?"
_CUE_RX = re.compile(_CUE, re.IGNORECASE)
# What names the base after a cue, each tried (anchored) where a cue ends: a repo id (the owner capped at 96
# characters, so one long word is scanned once), a Hub URL, a Gemma model name ("Gemma-2B-it", "gemma-2-9b-it",
# "CodeGemma 7B": the Google repo it names). Each comes with a substring that must occur within reach of the
# cue, a cheap test that spares the window scan where nothing can match (most cues in a long card).
_NAMES_REPO = re.compile(_SAME_SENTENCE + r"\[?`?(?<![\w./-])([A-Za-z0-9][\w-]{0,95}/[\w.-]*[A-Za-z0-9])")
_NAMES_URL = re.compile(_SAME_SENTENCE + r"(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)/([\w-]+/[\w.-]*[A-Za-z0-9])", re.IGNORECASE)
_NAMES_GEMMA = re.compile(
    _SAME_SENTENCE + r"(?<![\w/.-])((?:code|recurrent|pali)?gemma[-_ ]?(?:(\d(?:\.\d)?n?)[-_ ])?(\d+(?:\.\d+)?[bm]|e\d+b)(?:[-_ ](it|pt|instruct))?)(?![\w/-])",
    re.IGNORECASE,
)
_REACH = 80 + 2 + 97  # window, "[`", owner and "/": a repo's "/" lies this close to its cue's end
_NEEDS: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (_NAMES_REPO, ("/",)),
    (_NAMES_URL, ("huggingface.co/", "hf.co/")),
)


# A link labelled with a model's size and kind, "[2B base model](https://huggingface.co/google/gemma-2b)", points at
# that model's card (Google's Gemma 1 cards list their siblings so); the words "base model" in the label do not say
# this model derives from it. The label's cue words are blanked before matching (a verb outside the link, as in
# "fine-tuned from the [2B base model](...)", still names the base).
_SIZE_LABEL = re.compile(r"\[[ \t]*\d+(?:\.\d+)?[ \t]?[BbMm][ \t]+(base[ \t]+model)[ \t]*\]\(")


def _without_size_labels(text: str) -> str:
    """`text` with the cue words of size-labelled links blanked (same length)."""
    return _SIZE_LABEL.sub(lambda m: m.group(0).replace(m.group(1), " " * len(m.group(1))), text)


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
    """Repo ids the text names as what the model derives from, each with the 0-based line offset (in `body`)
    of the statement naming it (where its cue starts), first named first. Wrapped lines are read as one."""
    return list(_named_base_models(body))


@functools.lru_cache(maxsize=64)  # several rules ask about the same card body
def _named_base_models(body: str) -> tuple[tuple[str, int], ...]:
    text = _without_size_labels(paragraph_text(body))  # sentences are read here; lines counted in prose (same offsets)
    breaks = [m.start() for m in re.finditer("\n", prose(body))]
    cues = list(_CUE_RX.finditer(text))
    found: dict[str, tuple[int, int]] = {}  # repo -> (character offset of the repo, line of the statement)

    def add(repo: str, at: int, cue: re.Match[str]) -> None:
        owner, name = repo.split("/", 1)
        if "." in owner or owner.lower() in ("datasets", "spaces", "docs", "blog", "papers", "models"):
            return  # a domain (github.com/...) or a Hub page, not a model repo
        if not re.search(r"[-_.\d]", name):  # "Korean/English" is prose; model names carry a size, version or dash
            return
        if repo not in found or at < found[repo][0]:
            found[repo] = (at, bisect.bisect_left(breaks, cue.start()))  # line breaks before the cue

    for pattern, needs in _NEEDS:
        for cue, m in _statements(text, cues, pattern, needs):
            add(m.group(1), m.start(1), cue)
    if not found:
        for cue, m in _statements(text, cues, _NAMES_GEMMA, ("gemma",)):
            repo = google_repo_for_name(m.group(1))
            if repo:
                add(repo, m.start(1), cue)
    return tuple((r, line) for r, (_, line) in sorted(found.items(), key=lambda kv: kv[1][0]))


def _statements(text: str, cues: list[re.Match[str]], names: re.Pattern[str],
                needs: tuple[str, ...]) -> Iterator[tuple[re.Match[str], re.Match[str]]]:
    """(cue, what names the base) for each cue that `names` follows, left to right without overlap (a cue
    inside the previous statement is part of it, as in "fine-tuned version of google/gemma-7b")."""
    resume = 0
    for cue in cues:
        if cue.start() < resume:
            continue
        near = text[cue.end(): cue.end() + _REACH].lower()
        if not any(n in near for n in needs):
            continue
        m = names.match(text, cue.end())
        if m:
            resume = m.end()
            yield cue, m
