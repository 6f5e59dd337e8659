"""Gemma Terms of Use obligations, as the release rules see them (rules GEMMA001-GEMMA007).

Gemma 1, 1.1, 2, 3 and their family (CodeGemma, PaliGemma, RecurrentGemma, ...)
are under the Gemma Terms of Use; Gemma 4 is under Apache-2.0. Section 3.1 of
the terms asks every distribution of a model derivative to

* pass on the Section 3.2 use restrictions (the Prohibited Use Policy) and tell
  recipients about them                                   -> GEMMA004
* give recipients a copy of the agreement                 -> GEMMA003 / GEMMA007
* mark modified files prominently                         -> GEMMA005
* ship a "Notice" text file with exactly :data:`NOTICE_TEXT` -> GEMMA002

and Section 4.2 forbids suggesting endorsement by Google  -> GEMMA006.
The license metadata must name the right terms            -> GEMMA001.

The project does not ship the text of the terms; it recognises a copy by its
title and "Last modified" date and knows the published versions by date.

Cards are hard-wrapped Markdown, so statements (what was done to the weights,
authorship claims, disclaimers) are read on paragraphs joined onto one line
(:func:`release.card.text.paragraph_text`), and reported on the line where they start.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from gemma_ref.config import GENERATION_OF_MODEL_TYPE
from release.card.cardfile import Card
from release.card.text import paragraph_text, prose
from release.releaseset import ReleaseSet
from release.errors import InputError
from release.files import atomic_write, read_text_file
from release.findings import Finding, Rule, register_rules


NOTICE_TEXT = "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms"
TERMS_URL = "https://ai.google.dev/gemma/terms"
PROHIBITED_USE_URL = "https://ai.google.dev/gemma/prohibited_use_policy"
GEMMA4_LICENSE_ID = "apache-2.0"
TERMS_LICENSE_NAME = "gemma-terms-of-use"

# Published versions of the Gemma Terms of Use by their "Last modified" line, and where each
# date was confirmed (search tool, stored public copies; checked for issue 14):
# * February 21, 2024 - the text Ollama inlines on its Gemma pages (tests/data/cards/002, "Gemma Terms
#   of Use Last modified: February 21, 2024 By using, reproducing, ...").
# * April 1, 2024 - cited by the Hub and by Ollama (issue 14); find_string "Last modified: April 1, 2024"
#   finds an app bundling a "Gemma Terms of Use / Last modified: April 1, 2024" text (its wording is
#   paraphrased, so only the date is taken from it). Its definition of Gemma still reads "identified at
#   ai.google.dev/gemma", as the February text does.
# * March 24, 2025 - find_string "Last modified: March 24, 2025": a FlutterFlow app embedding the terms
#   and a public README inlining them (tests/data/cards/012); "Gemma" is now "identified in the Appendix".
# * April 1, 2026 - ../shared/GEMMA4.md 1.2: LICENSE_GEMMA.md in stabilityai/stable-audio-3-optimized
#   (commit 5af4bc3) opens with "The terms below apply to Gemma models listed in the Appendix ... For
#   Gemma 4 terms, see the Gemma 4 license" - the Gemma 4 carve-out (Gemma 4 is Apache-2.0).
KNOWN_TERMS_VERSIONS: dict[str, str] = {
    "2024-02-21": "February 21, 2024",
    "2024-04-01": "April 1, 2024",
    "2025-03-24": "March 24, 2025",
    "2026-04-01": "April 1, 2026",
}
APACHE_LICENSE_URL = "https://www.apache.org/licenses/LICENSE-2.0"
GEMMA4_LICENSE_URL = "https://ai.google.dev/gemma/apache_2"

register_rules(
    Rule("GEMMA001", "error", "license metadata does not match the base model's terms (Gemma 1-3: Gemma Terms of Use; Gemma 4: apache-2.0)"),
    Rule("GEMMA002", "error", "release has no NOTICE file, or it lacks the exact sentence required by Section 3.1"),
    Rule("GEMMA003", "error", "release carries no copy of the Gemma Terms of Use (.md/.txt/.html/LICENSE or inline, recognised by its text; a link only is a warning)"),
    Rule("GEMMA004", "error", "card does not pass on the Section 3.2 use restrictions (no mention, no Prohibited Use Policy link)"),
    Rule("GEMMA005", "error", "a derivative's card says nothing of what was done to the weights (fine-tuned, merged, quantized, converted, ...) or that the files were modified"),
    Rule("GEMMA006", "error", "text claims Google made or endorses this derivative (Section 4.2); sentences about the original model are not claims; a warning once a disclaimer is present"),
    Rule("GEMMA007", "warning", "copy of the Gemma Terms of Use found: reports its version (date, or the text where the date is missing), warns when it is not a known version"),
    Rule("APACHE001", "error", "Gemma 4 derivative release carries no copy of the Apache License 2.0 (Apache-2.0 section 4(a); a link only is a warning)"),
    Rule("APACHE002", "error", "the upstream NOTICE file is not passed on in the release (Apache-2.0 section 4(d))"),
    Rule("APACHE003", "error", "Gemma 4 derivative's card says nothing of what was done to the files (Apache-2.0 section 4(b): modified files carry prominent notices)"),
)

# --- which Gemma is this? ---------------------------------------------------------------------

def generation_of_model_type(model_type: str) -> int | None:
    """Generation of a HF ``model_type`` (``gemma2`` -> 2), or None when it is not a Gemma."""
    return GENERATION_OF_MODEL_TYPE.get(model_type)


# `gemma-2-9b` -> 2, `gemma-3n-E4B` -> 3, `codegemma-1.1-7b` -> 1, `gemma-7b` -> 1 (the 7 is a size).
_GEMMA_VERSION = re.compile(r"gemma[-_]?(\d+)(\.\d+)?([a-z]*)", re.IGNORECASE)
# Gemma-named models that are *not* under the Gemma Terms of Use (e.g. MedGemma: HAI-DEF terms).
_NOT_TERMS_FAMILIES = ("medgemma",)


@dataclass(frozen=True)
class Lineage:
    """What the release derives from, as far as it can be told."""

    is_gemma: bool
    generation: int | None  # 1-4, None when Gemma but the version cannot be told
    source: str  # where it was inferred from, for messages

    @property
    def license_expected(self) -> str:
        return GEMMA4_LICENSE_ID if self.generation == 4 else "gemma"

    @property
    def under_terms(self) -> bool:
        """Gemma Terms of Use apply (Gemma 1-3 and family; unknown version counts as the terms)."""
        return self.is_gemma and self.generation != 4


NOT_GEMMA = Lineage(False, None, "")


def generation_from_repo_id(repo_id: str) -> int | None:
    """Gemma generation named by a Hub repo id, or None when the id names no Gemma version."""
    name = repo_id.rsplit("/", 1)[-1].lower()
    if "gemma" not in name:
        return None
    m = _GEMMA_VERSION.search(name)
    if not m:
        return 1 if repo_id.lower().startswith("google/") else None
    major, minor, suffix = int(m.group(1)), m.group(2), m.group(3)
    if not minor and suffix[:1] in ("b", "m"):  # a size such as 7b / 270m: Gemma 1 naming
        return 1
    return major if 1 <= major <= 9 else None


def lineage_from_repo_ids(repo_ids: Iterable[str], source: str) -> Lineage:
    ids = [r for r in repo_ids if "gemma" in r.lower() and not any(f in r.lower() for f in _NOT_TERMS_FAMILIES)]
    if not ids:
        return NOT_GEMMA
    gens = {generation_from_repo_id(r) for r in ids} - {None}
    return Lineage(True, max(gens) if gens else None, f"{source} {', '.join(ids)}")


def lineage_from_config(config_path: Path) -> Lineage:
    """Generation from a release's ``config.json``: ``model_type``, else ``text_config.model_type``."""
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return NOT_GEMMA  # verify/weights checks report an unreadable config; here it only informs
    if not isinstance(raw, dict):
        return NOT_GEMMA
    candidates = [raw.get("model_type")]
    if isinstance(raw.get("text_config"), dict):
        candidates.append(raw["text_config"].get("model_type"))
    for mt in candidates:
        if isinstance(mt, str):
            gen = generation_of_model_type(mt)
            if gen is not None:
                return Lineage(True, gen, f"config.json model_type {mt!r}")
    return NOT_GEMMA


# --- recognising what a card or file says -----------------------------------------------------

# Whitespace between the words may be a line break: cards are hard-wrapped ("the Prohibited Use\nPolicy").
_USE_RESTRICTIONS = re.compile(r"prohibited[_\s-]{1,8}use[_\s-]{1,8}policy|use\s{1,8}restrictions|section\s*3\.2", re.IGNORECASE)
# A statement that files/weights were modified ("prominent notices stating that you modified the files").
_MODIFIED_STATEMENT = re.compile(
    r"\b(?:files?|weights|models?|checkpoints?|parameters|tensors)\b[^.\n]{0,60}?\b(?:were|was|have\s+been|has\s+been|are|is)\s+modified\b"
    r"|\b(?:we|I)\s+(?:have\s+)?modified\b"
    r"|\bmodified\s+(?:version|copy|files|weights)\s+of\b"
    r"|^\s*(?:#+\s*|\*\*)?modifications?\b",
    re.IGNORECASE | re.MULTILINE,
)
# Text that says what was done to the weights: any of these tells a reader the files differ from the original.
_WHAT_WAS_DONE = re.compile(
    r"\b(?:fine[- ]?tun(?:ed|ing)|finetun(?:ed|ing)|fine[- ]?tune\s+of|sft(?:'d)?\s+(?:on|of)|"
    r"continual(?:ly)?[- ]pre-?train(?:ed|ing)|continued[- ]pre-?train(?:ed|ing)|further\s+(?:pre-?)?trained|"
    r"merged?\s+(?:with|of|from|using|version|model)|merge\s+of|(?:slerp|ties|dare)[- ]merge|"
    r"quanti[sz](?:ed|ations?)|re-?quanti[sz]ed|gguf\s+quanti[sz]ation|"
    r"converted\s+(?:to|from|into)|conversion\s+(?:of|from|to)|"
    r"distill(?:ed)?\s+(?:from|on|version|model)|pruned|abliterated|uncensored\s+version|"
    r"obtained\s+by|packaged\s+into|(?:q)?lora\s+(?:adapter|fine|weights|trained)|(?:q)?lora\b[^.\n]{0,40}\badapter|adapter\s+(?:for|on|trained)|"
    r"trained\s+(?:with|using)\s+(?:q?lora|sft|dpo|orpo|grpo|trl|axolotl|unsloth)|(?:dpo|orpo|kto|grpo)[- ](?:trained|tuned|aligned))",
    re.IGNORECASE,
)
# Section 4.2: a claim that Google made *this* model. Authorship lines, the base card's title and description.
_AUTHOR_LINE = re.compile(
    r"\b(?P<label>authors?|developers?|developed\s+by|created\s+by|model\s+creators?|made\s+by|publisher)\b\W{0,4}:?\W{0,4}"
    r"(?:\[\s*)?google\b(?!\s*(?:'s|’s|/))(?:\s*(?:deepmind|llc))?",
    re.IGNORECASE,
)
_ENDORSEMENT = [
    (re.compile(r"^\s*#\s*gemma(?:\s+\d+n?)?\s+model\s+card\b", re.IGNORECASE | re.MULTILINE),
     "uses the base model's card title as this model's title"),
    # read on joined paragraphs, where a wrapped, indented line leaves several spaces between two words
    (re.compile(r"this\s+model\s+card\s+corresponds\s+to\s+the\s+[\w.-]+\s+(?:base|instruct|pre-?trained|instruction-tuned)\s+version\s+of\s+"
                r"the\s+gemma(?:\s+\d+n?)?\s+model\b", re.IGNORECASE),
     "copies the base model's card description as this model's"),
]
# Around an authorship line, words that show it describes the original (quant headers, "Original model:").
_ABOUT_ORIGINAL = re.compile(
    r"original\s+(?:model|repo|repository|weights|card)|base\s+model|quantiz|quantis|gguf|awq|gptq|exl2|llamafile|"
    r"converted|conversion|based\s+on|finetuned\s+from|fine-tuned\s+from|upstream",
    re.IGNORECASE,
)
_DISCLAIMER = re.compile(r"not\s+(?:[\w,]+\s+){0,3}(?:endorsed|affiliated|sponsored)\b[^.\n]{0,40}\bgoogle", re.IGNORECASE)
_TERMS_TITLE = re.compile(r"gemma\s+terms\s+of\s+use", re.IGNORECASE)
_LAST_MODIFIED = re.compile(r"last\s+modified\s*:?\s*([A-Z][a-z]+)\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})", re.IGNORECASE)
_MONTHS = {m: i for i, m in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december"], 1)}

# Sentences only the terms contain (every published version), to recognise a copy by its content.
TERMS_SENTENCES = (
    "by using, reproducing, modifying, distributing, performing or displaying any portion or element of gemma",
    "model derivatives means all (i) modifications to gemma, (ii) works based on gemma",
    "means the information content output of gemma or a model derivative",
    "or any other machine learning model which is created by transfer of patterns of the weights, parameters, operations, or output of gemma",
    "google claims no rights in outputs you generate using gemma",
    "you must cause any modified files to carry prominent notices stating that you modified the files",
    "google reserves the right to restrict (remotely or otherwise) usage of any of the gemma services",
)
# What tells the versions apart when the date is missing.
_VERSION_BY_TEXT = (
    ("2026-04-01", re.compile(r"for gemma 4 terms, see|the terms below apply to gemma models listed in the appendix")),
    ("2025-03-24", re.compile(r"parameters identified in the appendix")),
    ("2024", re.compile(r"parameters identified at ai\.google\.dev/gemma")),
)
_TAG = re.compile(r"<[^>\n]{0,500}>")
_APACHE_TEXT = (re.compile(r"apache license\s*,?\s*version 2\.0", re.IGNORECASE),
                re.compile(r"terms and conditions for use, reproduction,? and distribution", re.IGNORECASE))


def line_at(text: str, offset: int) -> int:
    """1-based line of a character offset."""
    return text.count("\n", 0, offset) + 1


def plain_text(text: str) -> str:
    """`text` with HTML tags removed and entities decoded (line breaks kept), for matching a copy's wording."""
    import html

    return html.unescape(_TAG.sub(" ", text)).replace("\u00a0", " ")


def _normalise(text: str) -> str:
    t = plain_text(text).lower()
    t = t.translate(str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'", "*": " ", "_": " ", "\\": " "}))
    t = t.replace('"', "")
    return re.sub(r"\s+", " ", t)


@dataclass(frozen=True)
class TermsCopy:
    """A copy of the Gemma Terms of Use found in a text."""

    iso: str | None  # the version: "2024-02-21" ..., "2024" (one of the 2024 texts), None when unknown
    written: str  # the date as written, or how the version was told
    line: int | None
    by_text: bool  # the version was told by the wording, not a "Last modified" date


def find_terms_copy(text: str) -> TermsCopy | None:
    """A copy of the terms in `text` (Markdown, plain text or HTML), recognised by its title and date or by
    its distinctive sentences; None when the text holds none."""
    if len(text) < 40:
        return None
    norm = _normalise(text)
    sentences = [s for s in TERMS_SENTENCES if s in norm]
    text = plain_text(text) if "<" in text or "&" in text else text  # HTML copies: tags out, lines kept
    dated = None
    for title in _TERMS_TITLE.finditer(text):
        m = _LAST_MODIFIED.search(text, title.end(), title.end() + 600)
        if m:
            dated = m
            break
    if dated is None and len(sentences) < 2:
        return None
    if dated is None and sentences:  # a copy without the title near the date: any "Last modified" line in it
        m = _LAST_MODIFIED.search(text)
        dated = m
    if dated is not None:
        month = _MONTHS.get(dated.group(1).lower())
        written = f"{dated.group(1)} {dated.group(2)}, {dated.group(3)}"
        iso = f"{int(dated.group(3)):04d}-{month:02d}-{int(dated.group(2)):02d}" if month else None
        return TermsCopy(iso, written, line_at(text, dated.start()), False)
    version = next((v for v, rx in _VERSION_BY_TEXT if rx.search(norm)), None)
    first = sentences[0].split()[:6]
    loose = re.compile(r"(?:\W|<[^>]*>)+".join(re.escape(w.strip("(),")) for w in first if w.strip("(),")), re.IGNORECASE)
    hit = loose.search(text)
    return TermsCopy(version, "no date; told by its text", line_at(text, hit.start()) if hit else None, True)


def terms_copy_date(text: str) -> tuple[str | None, str | None, int | None]:
    """A copy of the terms in `text`: (ISO date, date as written, line), or Nones when none."""
    copy = find_terms_copy(text)
    if copy is None:
        return None, None, None
    return copy.iso, copy.written, copy.line


def is_apache_license(text: str) -> bool:
    return all(rx.search(text[:20000]) for rx in _APACHE_TEXT)


def mentions_use_restrictions(text: str) -> bool:
    return bool(_USE_RESTRICTIONS.search(text))


def _search_text_and_paragraphs(pattern: re.Pattern[str], text: str) -> bool:
    """`pattern` matches `text` as written or its prose with each paragraph joined onto one line.

    The joined prose reads a statement wrapped over lines ("the weights were\\nmodified"); the text as
    written keeps what matched before joining (code blocks, line-anchored labels such as "Modifications:"
    after another line of the same paragraph), so joining only ever adds matches.
    """
    return bool(pattern.search(text)) or bool(pattern.search(paragraph_text(text)))


def states_modification(text: str) -> bool:
    return _search_text_and_paragraphs(_MODIFIED_STATEMENT, text)


def says_weights_modified(text: str) -> bool:
    """The text says what was done to the weights (fine-tuned, merged, quantized, converted, ...)."""
    return _search_text_and_paragraphs(_WHAT_WAS_DONE, text)


def says_files_differ(text: str) -> bool:
    """Anything in the text tells a reader the files differ from the original (GEMMA005 / APACHE003 satisfied)."""
    return states_modification(text) or says_weights_modified(text)


def notice_ok(text: str) -> bool:
    """The NOTICE carries the required sentence verbatim (line wrapping tolerated)."""
    return NOTICE_TEXT in " ".join(text.split())


# --- the rules ----------------------------------------------------------------------------------


def license_ok(meta: dict[str, Any], lineage: Lineage) -> bool:
    """Gemma 1-3: `gemma`, or `other` + `gemma-terms-of-use` + the terms link. Gemma 4: `apache-2.0`."""
    lic = meta.get("license")
    if lineage.generation == 4:
        return lic == GEMMA4_LICENSE_ID
    if lic == "gemma":
        return True
    link = str(meta.get("license_link") or "").rstrip("/")
    return lic == "other" and meta.get("license_name") == TERMS_LICENSE_NAME and link.split("://")[-1] == TERMS_URL.split("://")[-1]


def check_terms(card: Card, lineage: Lineage, rs: ReleaseSet | None = None, *, upstream: bool = False,
                upstream_files: Iterable[str] | None = None) -> list[Finding]:
    """Every GEMMA / APACHE rule for `card` (and, for a release, the files of its release set).

    ``upstream``: the card is Google's own model (see :mod:`release.card.upstream`); only the license
    metadata is checked then, since the derivative obligations do not apply to the original.
    ``upstream_files``: the upstream repo's file names when known (APACHE002 looks for its NOTICE).
    """
    findings: list[Finding] = []
    if not lineage.is_gemma:
        return findings
    path = card.display_path
    meta = card.metadata.to_dict()
    text = card.text
    gen = f"Gemma {lineage.generation}" if lineage.generation else "Gemma (version not stated)"

    if not license_ok(meta, lineage) and not card.metadata_unreadable:  # CARD002 already says why
        want = (
            f"license: {GEMMA4_LICENSE_ID}"
            if lineage.generation == 4
            else f"license: gemma (or license: other, license_name: {TERMS_LICENSE_NAME}, license_link: {TERMS_URL})"
        )
        have = f"license: {meta['license']}" if "license" in meta else "no license"
        findings.append(Finding("GEMMA001", "error", f"base model is {gen} ({lineage.source}) but the card has {have}; use {want}",
                                path, card.line_of("/license"), "/license"))
    if upstream:
        return findings

    findings.extend(_endorsement_findings(card))
    derived = bool(card.metadata.base_models) or (rs is not None and adapter_or_gguf(rs))
    if not lineage.under_terms:  # Gemma 4: Apache-2.0
        if derived and not says_files_differ(card.body):
            findings.append(Finding("APACHE003", "error",
                                    "this Gemma 4 derivative's card does not say what was done to the files (fine-tuned, quantized, converted, ...); "
                                    "Apache-2.0 section 4(b) asks modified files to carry prominent notices that they were changed",
                                    path, card.body_line))
        if rs is not None:
            findings.extend(_apache_release_files(rs, card, upstream_files))
        return findings

    if not mentions_use_restrictions(text):
        findings.append(Finding("GEMMA004", "error",
                                f"card does not pass on the Section 3.2 use restrictions; link the Prohibited Use Policy ({PROHIBITED_USE_URL}) and say it applies to this model",
                                path, card.body_line))
    if derived and not says_files_differ(card.body):
        findings.append(Finding("GEMMA005", "error",
                                "nothing in the card says what was done to the Gemma weights (fine-tuned, merged, quantized, converted, ...) "
                                "or that the files were modified (Section 3.1 asks for a prominent notice)",
                                path, card.body_line))

    copy = find_terms_copy(text)
    if copy is not None:
        findings.append(_version_finding(copy, path))
    if rs is not None:
        findings.extend(_release_files(rs, card, has_copy_in_card=copy is not None))
    return findings


def _version_finding(copy: TermsCopy, path: str | None) -> Finding:
    if copy.iso in KNOWN_TERMS_VERSIONS:
        how = "told by its text" if copy.by_text else f"Last modified: {copy.written}"
        return Finding("GEMMA007", "info", f"copy of the Gemma Terms of Use found, {how} ({KNOWN_TERMS_VERSIONS[copy.iso]}, a published version)",
                       path, copy.line, extra={"last_modified": copy.iso, "by_text": copy.by_text})
    if copy.by_text:
        what = ("one of the 2024 texts (February 21 or April 1, 2024)" if copy.iso == "2024"
                else "a version its text does not tell")
        return Finding("GEMMA007", "info", f"copy of the Gemma Terms of Use found without a 'Last modified' date: {what}",
                       path, copy.line, extra={"last_modified": copy.iso, "by_text": True})
    known = ", ".join(KNOWN_TERMS_VERSIONS.values())
    return Finding("GEMMA007", "warning", f"copy of the Gemma Terms of Use says Last modified: {copy.written}, which is not a known version ({known})",
                   path, copy.line, extra={"last_modified": copy.iso or copy.written})


def _about_original(body: str, start: int, end: int) -> bool:
    """The authorship text at body[start:end] sits in a header describing the original: "Original model:",
    quantization or conversion words within a few lines (160 characters) of it, or a "Model creator:" line
    (the quantizers' convention for naming the original's creator) in a card about a quantization."""
    a = body.rfind("\n", 0, max(0, start - 160))
    window = body[max(0, start - 160, a): end + 160]
    if _ABOUT_ORIGINAL.search(window):
        return True
    label = re.match(r"\W*model\s+creators?", body[start:end], re.IGNORECASE)
    return bool(label) and bool(re.search(r"original\s+model|quantiz|quantis|gguf|awq|gptq|exl2", body, re.IGNORECASE))


def _endorsement_findings(card: Card) -> list[Finding]:
    lines = prose(card.body)  # code blocks are not claims; findings' lines are counted here ...
    body = paragraph_text(card.body)  # ... and claims read here, a wrapped sentence on one line (same offsets)
    disclaimed = bool(_DISCLAIMER.search(card.text)) or bool(_DISCLAIMER.search(body))
    hits: list[tuple[int, str, str]] = []
    for m in _AUTHOR_LINE.finditer(body):
        if _about_original(body, m.start(), m.end()):
            continue
        hits.append((m.start(), "says Google authored this model", m.group(0)))
    for pattern, what in _ENDORSEMENT:
        for m in pattern.finditer(body):
            hits.append((m.start(), what, m.group(0)))
    findings = []
    for start, what, matched in sorted(hits):
        sev = "warning" if disclaimed else "error"
        hint = "the card disclaims endorsement, but review this line" if disclaimed else "describe the base model as Google's and this model as yours"
        findings.append(Finding("GEMMA006", sev, f"text {what} ({matched.strip()!r}); {hint}",
                                card.display_path, card.body_line + line_at(lines, start) - 1))
    return findings


_NOTICE_NAME = re.compile(r"^notice(?:\.(?:txt|md))?$", re.IGNORECASE)
_TERMS_FILE = re.compile(r"^(?:license|licence|terms|gemma|copying|notice|use[_-]?policy)[\w.-]*$|\.(?:md|txt|html?|markdown|rst)$", re.IGNORECASE)
_MAX_SCAN = 2 * 1024 * 1024  # license files are small; don't read weights or datasets


def _read_left_out(p: Path) -> str:
    try:
        return read_text_file(p, _MAX_SCAN)
    except InputError:
        return ""


def adapter_or_gguf(rs: ReleaseSet) -> bool:
    return "adapter_config.json" in rs or bool(rs.with_suffix(".gguf"))


def _release_files(rs: ReleaseSet, card: Card, has_copy_in_card: bool) -> list[Finding]:
    """GEMMA002 (NOTICE) and GEMMA003/GEMMA007 (copy of the terms) among the files the release uploads."""
    findings: list[Finding] = []
    release_dir = rs.root
    files = rs.top_level()
    notices = [f for f in files if _NOTICE_NAME.match(f.path)]
    not_in_set = sorted(p for p, _ in rs.left_out if "/" not in p and _NOTICE_NAME.match(p))
    if not notices:
        left = f"; {', '.join(not_in_set)} is in the directory but not in the release's files" if not_in_set else ""
        findings.append(Finding("GEMMA002", "error", f"no NOTICE file in the release{left}; add one containing: {NOTICE_TEXT} (gemma-release notice DIR writes it)",
                                str(release_dir / (not_in_set[0] if not_in_set else "NOTICE"))))
    elif not any(notice_ok(rs.read_text(f.path) or "") for f in notices):
        findings.append(Finding("GEMMA002", "error", f"NOTICE lacks the exact sentence: {NOTICE_TEXT}", str(notices[0].local), 1))

    copy_found = has_copy_in_card
    for f in files:
        if f.path == card.path_name or not _TERMS_FILE.search(f.path):
            continue
        copy = find_terms_copy(rs.read_text(f.path, _MAX_SCAN) or "")
        if copy is not None:
            copy_found = True
            findings.append(_version_finding(copy, str(release_dir / f.path)))
    if not copy_found:
        left = [p for p, _ in rs.left_out if "/" not in p and _TERMS_FILE.search(p) and (rs.root / p).is_file()
                and (rs.root / p).stat().st_size <= _MAX_SCAN and find_terms_copy(_read_left_out(rs.root / p)) is not None]
        if left:
            findings.append(Finding("GEMMA003", "error",
                                    f"the copy of the Gemma Terms of Use ({', '.join(left)}) is in the directory but not in the release's files; add it to files in release.yaml",
                                    str(rs.config.path if rs.config else release_dir / left[0])))
            return findings
        links = TERMS_URL.split("://")[-1] in card.text
        if links:
            findings.append(Finding("GEMMA003", "warning",
                                    f"no copy of the Gemma Terms of Use in the release, only a link; Section 3.1 asks to give recipients a copy (e.g. a LICENSE file with the text of {TERMS_URL})",
                                    str(release_dir)))
        else:
            findings.append(Finding("GEMMA003", "error",
                                    f"no copy of the Gemma Terms of Use in the release and no link to {TERMS_URL}",
                                    str(release_dir)))
    return findings


def _apache_release_files(rs: ReleaseSet, card: Card, upstream_files: Iterable[str] | None) -> list[Finding]:
    """APACHE001 (a copy of the licence) and APACHE002 (the upstream NOTICE passed on) for a Gemma 4 release set."""
    findings: list[Finding] = []
    files = rs.top_level()
    has_copy = any(_TERMS_FILE.search(f.path) and f.path != card.path_name and is_apache_license(rs.read_text(f.path, _MAX_SCAN) or "")
                   for f in files)
    if not has_copy:
        linked = any(u in card.text for u in ("apache.org/licenses/LICENSE-2.0", "ai.google.dev/gemma/apache_2", "gemma_4_license"))
        sev = "warning" if linked else "error"
        what = "only a link to it" if linked else "no copy of it and no link"
        findings.append(Finding("APACHE001", sev,
                                f"Gemma 4 is under Apache-2.0, whose section 4(a) asks redistributors to give recipients a copy of the licence: "
                                f"the release has {what}; add a LICENSE file with the text of {APACHE_LICENSE_URL}", str(rs.root)))
    notices = [f for f in files if _NOTICE_NAME.match(f.path)]
    left = sorted(p for p, _ in rs.left_out if "/" not in p and _NOTICE_NAME.match(p))
    upstream_notice = upstream_files is not None and any(_NOTICE_NAME.match(str(p).rsplit("/", 1)[-1]) for p in upstream_files if "/" not in str(p))
    if not notices and (left or upstream_notice):
        where = f"{', '.join(left)} is in the directory but not in the release's files" if left else "the upstream repository has a NOTICE file"
        findings.append(Finding("APACHE002", "error",
                                f"{where}; Apache-2.0 section 4(d) asks that the upstream NOTICE be passed on with the derivative (gemma-release notice DIR writes one)",
                                str(rs.root / (left[0] if left else "NOTICE"))))
    return findings


# --- fixes ----------------------------------------------------------------------------------------


APACHE_NOTICE_TEXT = (
    "This model is a derivative of Gemma 4 by Google, licensed under the Apache License, Version 2.0 "
    f"({APACHE_LICENSE_URL}). The model files were modified by the publisher of this repository."
)


def _lineage_of_directory(d: Path) -> Lineage:
    """The Gemma generation of a release directory (config.json, else its card's base models / license), for `notice`."""
    if (d / "config.json").is_file():
        lin = lineage_from_config(d / "config.json")
        if lin.is_gemma:
            return lin
    readme = d / "README.md"
    if readme.is_file():
        from release.card.cardfile import load_card
        from release.card.text import named_base_models

        try:
            card = load_card(readme)
        except InputError:
            return NOT_GEMMA
        for ids, source in ((card.metadata.base_models, "base_model"), ([r for r, _ in named_base_models(card.body)], "the card text names")):
            lin = lineage_from_repo_ids(ids, source)
            if lin.is_gemma:
                return lin
    return NOT_GEMMA


def notice_sentence(lineage: Lineage) -> str:
    """What NOTICE must say: the Gemma Terms of Use sentence, or the Apache-2.0 attribution for Gemma 4."""
    return APACHE_NOTICE_TEXT if lineage.generation == 4 else NOTICE_TEXT


def write_notice(directory: Path | str, lineage: Lineage | None = None) -> Path:
    """Make sure `directory` has a NOTICE file with the required text; return its path.

    Gemma 1-3 (and an unknown generation): the Gemma Terms of Use sentence. Gemma 4 (Apache-2.0,
    told by ``lineage`` or, when None, by the directory's config.json / card): an attribution
    notice naming the Apache License 2.0 and saying the files were modified.
    An existing NOTICE (``NOTICE``, ``NOTICE.txt``, ``NOTICE.md``; any case) keeps its
    content (other models' notices, the upstream NOTICE, the publisher's own statement) and gets
    the text appended when it lacks it. Nothing is changed when it is already right.
    """
    d = Path(directory)
    if not d.is_dir():
        raise InputError("not a directory", d, hint="gemma-release notice takes the release directory")
    if lineage is None:
        lineage = _lineage_of_directory(d)
    sentence = notice_sentence(lineage)
    existing = sorted(p for p in d.iterdir() if p.is_file() and _NOTICE_NAME.match(p.name))
    target = existing[0] if existing else d / "NOTICE"
    if existing:
        try:
            current = target.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read the existing notice: {e}", target) from None
        if sentence in " ".join(current.split()):
            return target
        new = current + ("" if current.endswith("\n") or not current else "\n") + sentence + "\n"
    else:
        new = sentence + "\n"
    try:
        atomic_write(target, new)
    except OSError as e:
        raise InputError(f"cannot write the notice: {e}", target) from None
    return target


TERMS_SECTION_HEADING = "## Gemma Terms of Use"


def terms_section(*, restrictions: bool, modification: bool, disclaimer: bool, link: bool) -> str:
    """Markdown for the parts of a Terms of Use section a card is missing (empty when none)."""
    parts: list[str] = []
    if link:
        parts.append(f"{NOTICE_TEXT}. A copy of the terms is at <{TERMS_URL}>.")
    if restrictions:
        parts.append(
            "**Use restrictions.** This model is a Model Derivative of Gemma and is subject to the use restrictions "
            "in Section 3.2 of the Gemma Terms of Use: you must not use it for the restricted uses set forth in the "
            f"[Gemma Prohibited Use Policy]({PROHIBITED_USE_URL}), and any agreement under which you distribute it or "
            "its derivatives must include these restrictions as an enforceable provision."
        )
    if modification:
        parts.append(
            "**Modified files.** The model files in this repository were modified from the original Gemma files "
            "by the publisher of this repository (see the description above for how)."
        )
    if disclaimer:
        parts.append(
            "**No endorsement.** This model is not made, endorsed or supported by Google. Text quoted from the "
            "Gemma model card describes the base model, not this derivative."
        )
    return "\n\n".join(parts)


APACHE_SECTION_HEADING = "## License (Apache-2.0)"


def apache_section(*, link: bool, modification: bool, disclaimer: bool) -> str:
    """Markdown for the parts of the Apache-2.0 section a Gemma 4 derivative's card is missing (empty when none)."""
    parts: list[str] = []
    if link:
        parts.append(f"This model is a derivative of Gemma 4 and is licensed under the [Apache License, Version 2.0]({APACHE_LICENSE_URL}); "
                     "a copy of the licence is in the LICENSE file of this repository.")
    if modification:
        parts.append("**Modified files.** The model files in this repository were modified from the original Gemma 4 files "
                     "by the publisher of this repository (see the description above for how).")
    if disclaimer:
        parts.append("**No endorsement.** This model is not made, endorsed or supported by Google. Text quoted from the "
                     "Gemma model card describes the base model, not this derivative.")
    return "\n\n".join(parts)
