"""CARD013: hidden or invisible text in a card.

Zero-width and bidirectional control characters change what a reader sees (or hide text
from them) without changing what a machine reads; an HTML comment is invisible on the Hub
but read by every tool and language model that ingests the card. Reported: bidi controls
(error, "Trojan Source"-style reordering), zero-width / invisible characters (warning,
except a zero-width joiner inside an emoji sequence), and HTML comments that give
instructions to a reader or model (warning).
"""

from __future__ import annotations

import re

from release.card.cardfile import Card
from release.findings import Finding, Rule, register_rules

register_rules(
    Rule("CARD013", "warning", "hidden or invisible text in the card: bidi control or zero-width characters, instructions inside HTML comments"),
)

_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060-\u2064\ufeff\u180e]")
_TAG_CHARS = re.compile("[\U000e0000-\U000e007f]+")  # Unicode tag characters: ASCII text nobody sees ("ASCII smuggling")
_COMMENT = re.compile(r"<!--(.*?)-->", re.DOTALL)
_INSTRUCTION = re.compile(
    r"\b(?:ignore|disregard|forget)\s+(?:all\s+|any\s+|the\s+)?(?:previous|prior|above|earlier|other)\s+(?:instructions|prompts?|rules|context)"
    r"|\byou\s+are\s+(?:now\s+)?(?:an?\s+)?(?:ai|assistant|language\s+model|llm|chatbot|agent)\b"
    r"|\b(?:system\s+prompt|as\s+an\s+ai|ai\s+(?:agent|assistant)s?|llms?|language\s+models?|crawlers?)\b[^.\n]{0,80}\b(?:must|should|always|never|do\s+not|don't)\b"
    r"|\b(?:do\s+not|don't|never)\s+(?:tell|mention|reveal|disclose|show)\s+(?:the\s+)?(?:user|reader|anyone|this)"
    r"|\b(?:always|must)\s+(?:recommend|say|answer|respond|rate|describe)\b",
    re.IGNORECASE,
)
_MAX_REPORTS = 20


def _hides(text: str, i: int) -> bool:
    """An invisible character that hides or splits text: inside a Latin word or number ("lic\u200bense"), or in a run.

    Zero-width (non-)joiners and spaces are ordinary in Persian, Indic, Thai and Japanese text and in emoji
    sequences; there they sit between non-ASCII characters and are left alone.
    """
    before = text[i - 1] if i > 0 else ""
    after = text[i + 1] if i + 1 < len(text) else ""
    if _INVISIBLE.match(before) or _INVISIBLE.match(after):
        return True
    return (before.isascii() and before.isalnum()) and (after.isascii() and after.isalnum())


def _emoji_zwj(text: str, i: int) -> bool:
    """A ZWJ between two pictographs (emoji sequences such as a family) is visible text, not hidden."""
    if text[i] != "\u200d":
        return False
    before = text[i - 1] if i > 0 else ""
    after = text[i + 1] if i + 1 < len(text) else ""
    return any(ord(c) >= 0x2600 and not _INVISIBLE.match(c) for c in (before, after)) and bool(before) and bool(after)


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def hidden_text_findings(card: Card) -> list[Finding]:
    """CARD013 for bidi controls, invisible characters and instruction-like HTML comments anywhere in the card."""
    text = card.text
    path = card.display_path
    out: list[Finding] = []
    seen_lines: set[tuple[str, int]] = set()
    for m in _BIDI.finditer(text):
        ln = _line(text, m.start())
        if ("bidi", ln) in seen_lines:
            continue
        seen_lines.add(("bidi", ln))
        out.append(Finding("CARD013", "error", f"bidirectional control character U+{ord(m.group()):04X} in the card: it reorders what readers see "
                                               "(the text a tool reads differs from the text shown); remove it", path, ln))
        if len(out) >= _MAX_REPORTS:
            return out
    for m in _TAG_CHARS.finditer(text):
        hidden = "".join(chr(ord(c) - 0xE0000) for c in m.group() if 0x20 <= ord(c) - 0xE0000 < 0x7F)
        out.append(Finding("CARD013", "error", f"{len(m.group())} invisible Unicode tag character(s) in the card encode hidden text "
                                               f"({hidden[:60]!r}); remove them", path, _line(text, m.start())))
        if len(out) >= _MAX_REPORTS:
            return out
    for m in _INVISIBLE.finditer(text):
        if _emoji_zwj(text, m.start()) or (m.start() == 0 and m.group() == "\ufeff") or not _hides(text, m.start()):
            continue
        ln = _line(text, m.start())
        if ("zw", ln) in seen_lines:
            continue
        seen_lines.add(("zw", ln))
        out.append(Finding("CARD013", "warning", f"invisible character U+{ord(m.group()):04X} in the card: it hides or splits text "
                                                 "(a word a reader sees is not the word a tool matches); remove it", path, ln))
        if len(out) >= _MAX_REPORTS:
            return out
    for m in _COMMENT.finditer(text):
        body = m.group(1)
        hit = _INSTRUCTION.search(body)
        if hit:
            out.append(Finding("CARD013", "warning", f"an HTML comment (invisible on the Hub) gives instructions: {hit.group(0).strip()[:80]!r}; "
                                                     "text that readers cannot see should not instruct the tools or models that read the card",
                               path, _line(text, m.start() + 4 + hit.start())))
            if len(out) >= _MAX_REPORTS:
                break
    return out
