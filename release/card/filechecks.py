"""Checks of a release set's files that concern what the card promises (CARD014-CARD016).

* CARD014 - a chat template that differs from the base generation's: the turn markers
  missing or renamed (Gemma 1-3 ``<start_of_turn>``/``<end_of_turn>``, Gemma 4
  ``<|turn>``/``<turn|>``) or a template that injects a system prompt of its own. Read
  from every place a template can live: ``tokenizer_config.json`` ``chat_template`` (a
  string or a list of named templates), ``chat_template.jinja``, ``chat_template.json``
  and each GGUF's ``tokenizer.chat_template`` (metadata only; no tensor is read).
* CARD015 - a GGUF's ``general.license`` that contradicts the card's license.
* CARD016 - a checksum file (``SHA256SUMS``, ``*.sha256``, ``checksums.txt``, ...) whose
  entries do not match the files of the release set (hashed with a bounded streaming read).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Iterator

from release.card.cardfile import Card
from release.findings import Finding, Rule, register_rules
from release.releaseset import ReleaseSet

register_rules(
    Rule("CARD014", "warning", "chat template differs from the base generation's: turn markers missing or renamed, or a system prompt injected"),
    Rule("CARD015", "error", "a GGUF's general.license contradicts the card's license"),
    Rule("CARD016", "error", "a checksum file (SHA256SUMS, *.sha256, checksums.txt) does not match the release's files"),
)

TURN_MARKERS = {
    1: ("<start_of_turn>", "<end_of_turn>"),
    2: ("<start_of_turn>", "<end_of_turn>"),
    3: ("<start_of_turn>", "<end_of_turn>"),
    4: ("<|turn>", "<turn|>"),
}
_MAX_TEMPLATE = 1 << 20
_MAX_CHECKSUM_FILE = 1 << 20
_MAX_ENTRIES = 10_000
_CHUNK = 1 << 20

# --- chat templates -------------------------------------------------------------------------------


def templates_in(rs: ReleaseSet) -> Iterator[tuple[str, str]]:
    """(where, template) for every chat template the release set carries."""
    raw = rs.read_text("tokenizer_config.json", 16 << 20)
    if raw:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            data = None
        ct = data.get("chat_template") if isinstance(data, dict) else None
        if isinstance(ct, str):
            yield "tokenizer_config.json chat_template", ct
        elif isinstance(ct, list):
            for item in ct[:32]:
                if isinstance(item, dict) and isinstance(item.get("template"), str):
                    yield f"tokenizer_config.json chat_template[{item.get('name', '?')}]", item["template"]
    for name in sorted(rs.names()):
        base = name.rsplit("/", 1)[-1]
        if base == "chat_template.jinja" or base.endswith(".jinja"):
            t = rs.read_text(name, _MAX_TEMPLATE)
            if t is not None:
                yield name, t
        elif base == "chat_template.json":
            t = rs.read_text(name, _MAX_TEMPLATE)
            try:
                data = json.loads(t) if t else None
            except json.JSONDecodeError:
                data = None
            if isinstance(data, dict) and isinstance(data.get("chat_template"), str):
                yield f"{name} chat_template", data["chat_template"]
    for f in rs.with_suffix(".gguf"):
        value = gguf_metadata(f.local, "tokenizer.chat_template")
        if isinstance(value, str):
            yield f"{f.path} tokenizer.chat_template", value


def gguf_metadata(path: Path, key: str):  # noqa: ANN201 - a GGUF value
    """One metadata value of a GGUF file (None when absent or unreadable); tensors are not read."""
    from release.errors import InputError
    from release.weights.gguf_reader import metadata, open_gguf

    try:
        reader = open_gguf(path)
        return metadata(reader, key, path)
    except (InputError, OSError, ValueError):
        return None


_JINJA = re.compile(r"\{%.*?%\}|\{\{.*?\}\}|\{#.*?#\}", re.DOTALL)
_STRING = re.compile(r"'((?:[^'\\]|\\.){0,2000})'|\"((?:[^\"\\]|\\.){0,2000})\"")
_PROSE = re.compile(r"\b(?:you\s+are|you\s+must|always|never|assistant\b|helpful|respond|answer)\b", re.IGNORECASE)


def injected_system_prompt(template: str) -> str | None:
    """Literal instruction text the template adds by itself (a default system prompt), or None."""
    literals = [m.group(1) or m.group(2) or "" for block in _JINJA.findall(template) for m in _STRING.finditer(block)]
    literals.append(_JINJA.sub(" ", template))
    for lit in literals:
        words = re.findall(r"[A-Za-z]{2,}", lit)
        if len(words) >= 5 and _PROSE.search(lit):
            return " ".join(lit.split())[:80]
    if re.search(r"<start_of_turn>\s*system\b", template):
        return "a 'system' turn (Gemma 1-3 have no system role)"
    return None


def template_findings(rs: ReleaseSet, generation: int | None) -> list[Finding]:
    """CARD014 for each chat template that does not follow the base generation's format."""
    if generation not in TURN_MARKERS:
        return []
    start, end = TURN_MARKERS[generation]
    out = []
    for where, template in templates_in(rs):
        path = str(rs.root / where.split(" ", 1)[0])
        missing = [m for m in (start, end) if m not in template]
        if missing:
            other = next((g for g, ms in TURN_MARKERS.items() if ms != (start, end) and all(x in template for x in ms)), None)
            why = f" (it uses Gemma {other}'s markers)" if other else ""
            out.append(Finding("CARD014", "warning",
                               f"{where}: the chat template lacks {' and '.join(missing)}, the Gemma {generation} turn markers{why}; "
                               "prompts will not be formatted as the base model was trained", path))
        injected = injected_system_prompt(template)
        if injected:
            out.append(Finding("CARD014", "warning",
                               f"{where}: the chat template injects a system prompt of its own ({injected!r}); say so in the card or remove it", path))
    return out


# --- GGUF general.license ---------------------------------------------------------------------------


def _license_family(value: str) -> str | None:
    v = value.strip().lower()
    if not v:
        return None
    if "gemma" in v:
        return "gemma"
    if "apache" in v:
        return "apache-2.0"
    return v


def card_license_family(card: Card) -> str | None:
    m = card.metadata
    lic = str(m.license or "").strip().lower()
    if lic == "other":
        name = str(m.license_name or "") + " " + str(m.license_link or "")
        return _license_family(name) if name.strip() else None
    return _license_family(lic) if lic else None


def gguf_license_findings(card: Card, rs: ReleaseSet) -> list[Finding]:
    """CARD015 when a GGUF says one license and the card another."""
    card_lic = card_license_family(card)
    if card_lic is None:
        return []
    out = []
    for f in rs.with_suffix(".gguf")[:64]:
        value = gguf_metadata(f.local, "general.license")
        if not isinstance(value, str):
            continue
        fam = _license_family(value)
        if fam and fam != card_lic:
            out.append(Finding("CARD015", "error",
                               f"{f.path} says general.license {value!r} but the card's license is {card.metadata.license!r}; "
                               "re-write the GGUF metadata or correct the card so they name the same license", str(f.local)))
    return out


# --- checksum files ------------------------------------------------------------------------------------

_CHECKSUM_NAME = re.compile(r"^(?:sha256sums?|checksums?|sha256)(?:\.txt|\.sha256)?$|\.sha256$", re.IGNORECASE)
_LINE_GNU = re.compile(r"^([0-9a-fA-F]{64})\s+\*?(.+?)\s*$")
_LINE_BSD = re.compile(r"^SHA256\s*\((.+)\)\s*=\s*([0-9a-fA-F]{64})\s*$")
_LINE_COLON = re.compile(r"^(.+?)\s*[:=]\s*([0-9a-fA-F]{64})\s*$")


def parse_checksums(text: str, own_name: str) -> list[tuple[str, str]]:
    """(path, sha256) entries of a checksum file (GNU, BSD and 'name: hash' forms; a lone hash in NAME.sha256)."""
    entries: list[tuple[str, str]] = []
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) == 1 and re.fullmatch(r"[0-9a-fA-F]{64}", lines[0].split()[0] if lines[0].split() else "") and own_name.lower().endswith(".sha256") \
            and len(lines[0].split()) == 1:
        return [(own_name[: -len(".sha256")], lines[0].lower())]
    for ln in lines[:_MAX_ENTRIES]:
        m = _LINE_GNU.match(ln)
        if m:
            entries.append((m.group(2), m.group(1).lower()))
            continue
        m = _LINE_BSD.match(ln) or None
        if m:
            entries.append((m.group(1), m.group(2).lower()))
            continue
        m = _LINE_COLON.match(ln)
        if m:
            entries.append((m.group(1).strip().strip("`'\""), m.group(2).lower()))
    return entries


def sha256_of(path: Path, size: int) -> str:
    """sha256 of a file read in bounded chunks (never more than its size at listing time, plus one chunk)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for _ in range(size // _CHUNK + 2):
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def checksum_findings(rs: ReleaseSet) -> list[Finding]:
    """CARD016 for every checksum entry that names a file not in the set or whose hash differs."""
    out = []
    for f in rs.files.values():
        base = f.path.rsplit("/", 1)[-1]
        if not _CHECKSUM_NAME.search(base) or f.size > _MAX_CHECKSUM_FILE:
            continue
        text = rs.read_text(f.path, _MAX_CHECKSUM_FILE) or ""
        folder = f.path.rsplit("/", 1)[0] + "/" if "/" in f.path else ""
        for name, digest in parse_checksums(text, base):
            rel = name.removeprefix("./")
            target = rs.get(folder + rel) or rs.get(rel)
            if target is None:
                out.append(Finding("CARD016", "error", f"{f.path} lists {name!r}, which is not in the release's files", str(f.local)))
                continue
            try:
                real = sha256_of(target.local, target.size)
            except OSError as e:
                out.append(Finding("CARD016", "error", f"{f.path}: cannot read {target.path} to check it ({e.strerror or e})", str(f.local)))
                continue
            if real != digest:
                out.append(Finding("CARD016", "error", f"{f.path} gives {target.path} sha256 {digest[:12]}..., but the file's is {real[:12]}...; "
                                                       "regenerate the checksums after the last change", str(f.local)))
    return out
