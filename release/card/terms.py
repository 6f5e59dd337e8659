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
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from gemma_ref.config import GENERATION_OF_MODEL_TYPE
from release.card.cardfile import Card
from release.releaseset import ReleaseSet
from release.errors import InputError
from release.files import atomic_write, read_text_file
from release.findings import Finding, Rule, register_rules


NOTICE_TEXT = "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms"
TERMS_URL = "https://ai.google.dev/gemma/terms"
PROHIBITED_USE_URL = "https://ai.google.dev/gemma/prohibited_use_policy"
GEMMA4_LICENSE_ID = "apache-2.0"
TERMS_LICENSE_NAME = "gemma-terms-of-use"

# Published versions of the Gemma Terms of Use by their "Last modified" line.
# Sources (checked with the search tool): the Feb 2024 text is the one Ollama inlines
# (tests/data/cards/002); the Mar 2025 text is the current ai.google.dev/gemma/terms page
# of the Gemma 3 era; the Apr 2026 text was seen in a Hub copy (LICENSE_GEMMA.md) that
# points Gemma 4 users to the Apache-2.0 license.
KNOWN_TERMS_VERSIONS: dict[str, str] = {
    "2024-02-21": "February 21, 2024",
    "2025-03-24": "March 24, 2025",
    "2026-04-01": "April 1, 2026",
}

register_rules(
    Rule("GEMMA001", "error", "license metadata does not match the base model's terms (Gemma 1-3: Gemma Terms of Use; Gemma 4: apache-2.0)"),
    Rule("GEMMA002", "error", "release has no NOTICE file, or it lacks the exact sentence required by Section 3.1"),
    Rule("GEMMA003", "error", "release carries no copy of the Gemma Terms of Use (a link only is a warning)"),
    Rule("GEMMA004", "error", "card does not pass on the Section 3.2 use restrictions (no mention, no Prohibited Use Policy link)"),
    Rule("GEMMA005", "error", "weights were modified (fine-tune, merge, quantization, conversion) but nothing states the files were modified"),
    Rule("GEMMA006", "error", "text suggests Google authored or endorses the derivative (Section 4.2); a warning once a disclaimer is present"),
    Rule("GEMMA007", "warning", "copy of the Gemma Terms of Use found: reports its 'Last modified' date, warns when it is not a known version"),
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

_USE_RESTRICTIONS = re.compile(r"prohibited[_ -]use[_ -]policy|use restrictions|section\s*3\.2", re.IGNORECASE)
# A statement that files/weights were modified ("prominent notices stating that you modified the files").
_MODIFIED_STATEMENT = re.compile(
    r"\b(?:files?|weights|models?|checkpoints?|parameters|tensors)\b[^.\n]{0,60}?\b(?:were|was|have\s+been|has\s+been|are|is)\s+modified\b"
    r"|\b(?:we|I)\s+(?:have\s+)?modified\b"
    r"|\bmodified\s+(?:version|copy|files|weights)\s+of\b"
    r"|^\s*(?:#+\s*|\*\*)?modifications?\b",
    re.IGNORECASE | re.MULTILINE,
)
# Text that says the weights were changed: fine-tuned / merged / quantized / converted / continued pre-training.
_MODIFYING_VERB = re.compile(
    r"\b(?:fine[- ]?tuned|finetuned|fine-tune|finetune|continual(?:ly)?[- ]pre-?trained|continued[- ]pre-?training|"
    r"merged?|quantized|quantised|converted|distilled|abliterated)\b"
    r"\s+(?:\w+\s+)?(?:version|model|on|from|of|with|using|based|to|checkpoint|variant)\b",
    re.IGNORECASE,
)
# Section 4.2: a base card's authorship or description pasted in as this model's own.
_ENDORSEMENT = [
    (re.compile(r"\b(?:authors?|developers?|developed\s+by|created\s+by|model\s+creators?)\b\W{0,4}:\W{0,4}google\b(?!\s*(?:'s|/))", re.IGNORECASE),
     "says Google authored this model"),
    (re.compile(r"^#\s*gemma(?:\s+\d+n?)?\s+model\s+card\b", re.IGNORECASE | re.MULTILINE),
     "uses the base model's card title as this model's title"),
    (re.compile(r"this model card corresponds to the [\w.-]+ (?:base|instruct|pre-?trained|instruction-tuned) version of the gemma(?: \d+n?)? model\b", re.IGNORECASE),
     "copies the base model's card description as this model's"),
]
_DISCLAIMER = re.compile(r"not\s+(?:[\w,]+\s+){0,3}(?:endorsed|affiliated|sponsored)\b[^.\n]{0,40}\bgoogle", re.IGNORECASE)
_TERMS_TITLE = re.compile(r"gemma\s+terms\s+of\s+use", re.IGNORECASE)
_LAST_MODIFIED = re.compile(r"last\s+modified\s*:?\s*([A-Z][a-z]+)\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})", re.IGNORECASE)
_MONTHS = {m: i for i, m in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december"], 1)}


def line_at(text: str, offset: int) -> int:
    """1-based line of a character offset."""
    return text.count("\n", 0, offset) + 1


def terms_copy_date(text: str) -> tuple[str | None, str | None, int | None]:
    """A copy of the terms in `text`: (ISO date, date as written, line), or Nones when none.

    A copy is recognised by its title followed (within a few lines) by a "Last modified" date.
    """
    for title in _TERMS_TITLE.finditer(text):
        m = _LAST_MODIFIED.search(text, title.end(), title.end() + 400)
        if not m:
            continue
        month = _MONTHS.get(m.group(1).lower())
        written = f"{m.group(1)} {m.group(2)}, {m.group(3)}"
        iso = f"{int(m.group(3)):04d}-{month:02d}-{int(m.group(2)):02d}" if month else None
        return iso, written, line_at(text, m.start())
    return None, None, None


def mentions_use_restrictions(text: str) -> bool:
    return bool(_USE_RESTRICTIONS.search(text))


def states_modification(text: str) -> bool:
    return bool(_MODIFIED_STATEMENT.search(text))


def says_weights_modified(text: str) -> bool:
    return bool(_MODIFYING_VERB.search(text))


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


def check_terms(card: Card, lineage: Lineage, rs: ReleaseSet | None = None) -> list[Finding]:
    """Every GEMMA rule for `card` (and, for a release, the files of its release set)."""
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

    findings.extend(_endorsement_findings(card))
    if not lineage.under_terms:
        return findings  # Gemma 4: Apache-2.0, none of the Terms of Use obligations below

    if not mentions_use_restrictions(text):
        findings.append(Finding("GEMMA004", "error",
                                f"card does not pass on the Section 3.2 use restrictions; link the Prohibited Use Policy ({PROHIBITED_USE_URL}) and say it applies to this model",
                                path, card.body_line))
    modified = bool(meta.get("base_model")) or says_weights_modified(card.body) or (rs is not None and adapter_or_gguf(rs))
    if modified and not states_modification(text):
        findings.append(Finding("GEMMA005", "error",
                                "the weights are modified from Gemma but nothing states that the files were modified (Section 3.1 asks for a prominent notice)",
                                path, card.body_line))

    iso, written, line = terms_copy_date(text)
    if iso or written:
        findings.append(_version_finding(iso, written, path, line))
    if rs is not None:
        findings.extend(_release_files(rs, card, has_copy_in_card=bool(written)))
    return findings


def _version_finding(iso: str | None, written: str | None, path: str | None, line: int | None) -> Finding:
    if iso in KNOWN_TERMS_VERSIONS:
        return Finding("GEMMA007", "info", f"copy of the Gemma Terms of Use found, Last modified: {written} (a published version)",
                       path, line, extra={"last_modified": iso})
    known = ", ".join(KNOWN_TERMS_VERSIONS.values())
    return Finding("GEMMA007", "warning", f"copy of the Gemma Terms of Use says Last modified: {written}, which is not a known version ({known})",
                   path, line, extra={"last_modified": iso or written})


def _endorsement_findings(card: Card) -> list[Finding]:
    body = card.body
    disclaimed = bool(_DISCLAIMER.search(card.text))
    findings = []
    for pattern, what in _ENDORSEMENT:
        for m in pattern.finditer(body):
            sev = "warning" if disclaimed else "error"
            hint = "the card disclaims endorsement, but review this line" if disclaimed else "describe the base model as Google's and this model as yours"
            findings.append(Finding("GEMMA006", sev, f"text {what} ({m.group(0).strip()!r}); {hint}",
                                    card.display_path, card.body_line + line_at(body, m.start()) - 1))
    return findings


_NOTICE_NAME = re.compile(r"^notice(?:\.(?:txt|md))?$", re.IGNORECASE)
_TERMS_FILE = re.compile(r"^(?:license|licence|terms|gemma|copying|notice|use[_-]?policy)[\w.-]*$|\.(?:md|txt)$", re.IGNORECASE)
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
        iso, written, line = terms_copy_date(rs.read_text(f.path, _MAX_SCAN) or "")
        if written:
            copy_found = True
            findings.append(_version_finding(iso, written, str(release_dir / f.path), line))
    if not copy_found:
        left = [p for p, _ in rs.left_out if "/" not in p and _TERMS_FILE.search(p) and (rs.root / p).is_file()
                and (rs.root / p).stat().st_size <= _MAX_SCAN and terms_copy_date(_read_left_out(rs.root / p))[1]]
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


# --- fixes ----------------------------------------------------------------------------------------


def write_notice(directory: Path | str) -> Path:
    """Make sure `directory` has a NOTICE file with the required sentence; return its path.

    An existing NOTICE (``NOTICE``, ``NOTICE.txt``, ``NOTICE.md``; any case) keeps its
    content (other models' notices, the publisher's own statement) and gets the
    sentence appended when it lacks it. Nothing is changed when it is already right.
    """
    d = Path(directory)
    if not d.is_dir():
        raise InputError("not a directory", d, hint="gemma-release notice takes the release directory")
    existing = sorted(p for p in d.iterdir() if p.is_file() and _NOTICE_NAME.match(p.name))
    target = existing[0] if existing else d / "NOTICE"
    if existing:
        try:
            current = target.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read the existing notice: {e}", target) from None
        if notice_ok(current):
            return target
        new = current + ("" if current.endswith("\n") or not current else "\n") + NOTICE_TEXT + "\n"
    else:
        new = NOTICE_TEXT + "\n"
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
