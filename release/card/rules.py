"""Model cards: typed metadata, schema validation and the card rules (CARD001-CARD010).

Public API (others call it):

* :func:`load_card` - read a ``README.md`` (or a release directory's) into a :class:`Card`;
* :func:`check_path` - every card and Terms of Use finding for a card or a release directory;
* :func:`fix_card` - add what is missing (license fields, a Terms of Use section, NOTICE),
  changing nothing else in the card, and say what changed.

The metadata is a :class:`CardData`: typed accessors for the Hub's fields over an
ordered mapping that keeps unknown keys, so reading and writing back loses nothing.
Edits to a card are made on its text, line by line, so comments and formatting of
the untouched keys survive a fix.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match, relevance

from release.card import terms
from release.card.text import _prose_lines, google_repo_for_name, named_base_models, prose  # noqa: F401  (re-exported)
from release.card.upstream import Subject, subject_of
from release.errors import InputError
from release.files import atomic_write
from release.findings import Finding, Rule, register_rules
from release.releaseset import ReleaseSet, resolve
from release.card.cardfile import Card, CardData, _card_file, _dump, _read_text, load_card, parse_card  # noqa: F401  (re-exported)
from release.resources import load_schema

SCHEMA_NAME = "model-card.schema.json"

register_rules(
    Rule("CARD001", "error", "no YAML front matter, or not at the very top of README.md (the Hub then ignores it)"),
    Rule("CARD002", "error", "front matter YAML does not parse, is not a mapping, or exceeds the safety limits"),
    Rule("CARD003", "error", "duplicate key in the front matter (PyYAML keeps the last silently; the Hub rejects the card)"),
    Rule("CARD004", "error", "metadata violates the model-card schema (schemas/model-card.schema.json)"),
    Rule("CARD005", "error", "license: other without license_name or license_link (the Hub cannot show which license)"),
    Rule("CARD006", "error", "base_model is not a Hub repo id (a local path or malformed id breaks the model tree)"),
    Rule("CARD007", "warning", "base_model_relation missing where it can be inferred, or inconsistent with the base models / files"),
    Rule("CARD008", "warning", "placeholder left in the card (model-index named 'out', empty results, 'type: unknown', TODO, ...)"),
    Rule("CARD009", "error", "more than one front-matter block (the Hub reads only the first; the rest renders as text)"),
    Rule("CARD010", "warning", "card text names a base model but the metadata has no base_model"),
    Rule("CARD011", "error", "the card links (relatively) to a file that is not in the release, so the link is dead on the Hub"),
    Rule("CARD012", "error", "README.md is not in the release's files: the card would not be uploaded"),
)

# --- schema ---------------------------------------------------------------------------------


def _validator() -> Draft202012Validator:
    return Draft202012Validator(load_schema(SCHEMA_NAME))


def hub_license_ids() -> tuple[str, ...]:
    """The Hub's license identifiers: the one registry, kept in the schema's ``hubLicenseId``."""
    return tuple(load_schema(SCHEMA_NAME)["$defs"]["hubLicenseId"]["enum"])


def _pointer(err: ValidationError) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in err.absolute_path)


def _short(value: Any, limit: int = 60) -> str:
    s = repr(value)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _leaf(err: ValidationError) -> ValidationError:
    """The sub-error that explains an anyOf/oneOf failure: the branch whose type matched, best match first."""
    while err.validator in ("anyOf", "oneOf") and err.context:
        same_type = [e for e in err.context if e.validator != "type"]
        err = best_match(same_type or err.context)
    return err


def _schema_message(err: ValidationError) -> str:
    """check-jsonschema style message; long enum lists and regexes replaced by what the field means."""
    leaf = _leaf(err)
    described = err.schema.get("description") if isinstance(err.schema, dict) else None
    if leaf.validator == "enum" and isinstance(leaf.validator_value, list) and len(leaf.validator_value) > 6:
        options = [str(v) for v in leaf.validator_value]
        close = difflib.get_close_matches(str(leaf.instance), options, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return f"{_short(leaf.instance)} is not one of the {len(options)} allowed values{hint}"
    if leaf.validator in ("pattern", "enum", "not") and described:
        return f"{_short(leaf.instance)} is not valid here: {described}"
    return leaf.message if len(leaf.message) <= 200 else leaf.message[:197] + "..."


def _is_base_model_error(err: ValidationError) -> bool:
    path = list(err.absolute_path)
    return bool(path) and path[0] == "base_model" and isinstance(err.instance, str)


def schema_findings(card: Card) -> list[Finding]:
    """CARD004 for schema violations (best match first, as check-jsonschema orders them); CARD006 for base_model ids."""
    if card.front_matter is None or card.front_matter.data is None:
        return []
    errors = list(_validator().iter_errors(card.metadata.to_dict()))
    if not errors:
        return []
    errors.sort(key=relevance, reverse=True)  # most relevant first (best_match's order), as check-jsonschema reports
    findings: list[Finding] = []
    seen_base: set[str] = set()
    for rank, err in enumerate(errors):
        leaf = _leaf(err)
        pointer = _pointer(leaf)
        line = card.line_of(pointer)
        bm_leaf = leaf if _is_base_model_error(leaf) else (err if _is_base_model_error(err) else None)
        if bm_leaf is not None:
            if _pointer(bm_leaf) not in seen_base:
                seen_base.add(_pointer(bm_leaf))
                findings.append(_bad_base_model(card, bm_leaf.instance, _pointer(bm_leaf)))
            continue
        findings.append(Finding("CARD004", "error", f"{_schema_message(err)}", card.display_path, line, pointer,
                                extra={"validator": str(leaf.validator), "best_match": rank == 0}))
    return findings


_LOCAL_PATH = re.compile(r"^(?:\.{1,2}[\\/]|[\\/]|~|[A-Za-z]:[\\/])|[\\/]{2}|\\")


def _bad_base_model(card: Card, value: str, pointer: str) -> Finding:
    why = "looks like a local path" if _LOCAL_PATH.search(value) or value.count("/") > 1 else "is not a valid Hub repo id"
    return Finding("CARD006", "error", f"base_model {value!r} {why}; use the Hub id of the model you started from (e.g. google/gemma-2-9b)",
                   card.display_path, card.line_of(pointer), pointer)


# --- card rules ---------------------------------------------------------------------------------


def structure_findings(card: Card) -> list[Finding]:
    """CARD001 (no / misplaced / unclosed block), CARD002 (YAML), CARD003 (duplicates), CARD009 (extra blocks)."""
    path = card.display_path
    out: list[Finding] = []
    if card.missing:
        return [Finding("CARD001", "error", "release directory has no README.md (the model card, with its metadata)", path)]
    f = card.fences
    if f.unclosed_open is not None:
        out.append(Finding("CARD001", "error", f"front matter opened with '---' on line {f.unclosed_open + 1} is never closed with a '---' line",
                           path, f.unclosed_open + 1))
    elif card.front_matter is None:
        first = next((ln for ln in f.lines if ln.strip()), "")
        hint = ""
        if first.lstrip().startswith("---") and ":" in first:
            hint = " (line 1 starts with '---' but the block is collapsed onto one line; put '---' and each key on its own line)"
        out.append(Finding("CARD001", "error", f"no YAML front matter at the top of the card{hint}", path, 1))
    elif not card.front_matter.at_top:
        fm = card.front_matter
        out.append(Finding("CARD001", "error",
                           f"front matter on lines {fm.open_line}-{fm.close_line} is not at the top: text comes before it, so the Hub ignores it",
                           path, fm.open_line))
    if card.front_matter is not None:
        for p in card.front_matter.problems:
            rule = "CARD003" if p.kind == "duplicate" else "CARD002"
            out.append(Finding(rule, "error", p.message, path, p.line or card.front_matter.open_line, p.pointer))
    for a, b in card.extra_blocks:
        out.append(Finding("CARD009", "error",
                           f"another front-matter block starts on line {a} (the Hub reads only the first one; merge the keys into it)",
                           path, a))
    return out


def license_findings(card: Card) -> list[Finding]:
    """CARD005: `license: other` needs license_name and license_link."""
    m = card.metadata
    if m.license != "other":
        return []
    missing = [k for k in ("license_name", "license_link") if not m.get(k)]
    if not missing:
        return []
    return [Finding("CARD005", "error", f"license is 'other' but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing; name the license and link its text",
                    card.display_path, card.line_of("/license"), "/license")]


def relation_findings(card: Card, rs: ReleaseSet | None) -> list[Finding]:
    """CARD007: base_model_relation missing where it can be inferred, or inconsistent."""
    m = card.metadata
    bases = m.base_models
    if not bases:
        return []
    rel = m.base_model_relation
    inferred, why = _infer_relation(card, bases, rs)
    path, ptr = card.display_path, "/base_model_relation"
    line = card.line_of(ptr) if rel is not None else card.line_of("/base_model")
    if rel is None and inferred == "quantized":
        return []  # QUANT008 reports a quantized release without base_model_relation: quantized (card check runs both)
    if rel is None and inferred:
        return [Finding("CARD007", "warning", f"base_model_relation is missing; it is '{inferred}' ({why})", path, line, ptr)]
    if rel == "merge" and len(bases) < 2:
        return [Finding("CARD007", "warning", "base_model_relation is 'merge' but only one base_model is listed", path, line, ptr)]
    if rel is not None and inferred and rel != inferred:
        return [Finding("CARD007", "warning", f"base_model_relation is {rel!r} but {why}, so it should be '{inferred}'", path, line, ptr)]
    return []


_QUANT_TAGS = {"gguf", "quantized", "gptq", "awq", "exl2", "4-bit", "8-bit", "bitsandbytes"}
_ADAPTER_TAGS = {"lora", "qlora", "peft", "adapter"}


def _infer_relation(card: Card, bases: list[str], rs: ReleaseSet | None) -> tuple[str | None, str]:
    m = card.metadata
    tags = {t.lower() for t in m.tag_list}
    if len(bases) >= 2:
        return "merge", f"{len(bases)} base models are listed"
    if rs is not None and "adapter_config.json" in rs:
        return "adapter", "the release has adapter_config.json"
    if str(m.library_name or "").lower() == "peft" or tags & _ADAPTER_TAGS:
        return "adapter", "library_name is peft" if str(m.library_name or "").lower() == "peft" else "the tags say it is an adapter"
    if rs is not None and rs.with_suffix(".gguf"):
        return "quantized", "the release holds .gguf files"
    if tags & _QUANT_TAGS or str(m.library_name or "").lower() == "gguf":
        return "quantized", "the tags / library say it is quantized"
    return None, ""


# Trainer output dirs that end up as model-index names when nobody renames the model.
_PLACEHOLDER_NAMES = re.compile(r"^(?:\./)?(?:out|outputs?|results?|tmp_trainer|my[-_]?model|model|test|checkpoint(?:-\d+)?)$", re.IGNORECASE)
_TEXT_PLACEHOLDERS = [
    (re.compile(r"\[More Information Needed\]", re.IGNORECASE), "'[More Information Needed]'"),
    (re.compile(r"\bthe None dataset\b", re.IGNORECASE), "'the None dataset' (the trainer had no dataset name)"),
    (re.compile(r"\bTODO\b|\bTBD\b"), "TODO / TBD"),
    (re.compile(r"\bcoming soon\b", re.IGNORECASE), "'coming soon'"),
    (re.compile(r"<!--\s*[\w -]*PLACEHOLDER[\w -]*-->"), "an unfilled <!-- ...PLACEHOLDER --> marker"),
]


def placeholder_findings(card: Card) -> list[Finding]:
    """CARD008: placeholders in the metadata and in the text (outside code blocks)."""
    path = card.display_path
    out: list[Finding] = []
    mi = card.metadata.model_index
    if isinstance(mi, list):
        for i, entry in enumerate(mi):
            if not isinstance(entry, dict):
                continue
            name = entry.get("name")
            if isinstance(name, str) and _PLACEHOLDER_NAMES.match(name.strip()):
                ptr = f"/model-index/{i}/name"
                out.append(Finding("CARD008", "warning", f"model-index is named {name!r}, the trainer's output directory; use the model's name", path, card.line_of(ptr), ptr))
            if entry.get("results") == []:
                ptr = f"/model-index/{i}/results"
                out.append(Finding("CARD008", "warning", "model-index has no results; fill them in or remove the model-index", path, card.line_of(ptr), ptr))
    for ptr, value in _walk(card.metadata.to_dict(), ""):
        if ptr.endswith("/type") and isinstance(value, str) and value.strip().lower() == "unknown":
            out.append(Finding("CARD008", "warning", "'type: unknown' is a placeholder; give the task / dataset / metric type", path, card.line_of(ptr), ptr))
        elif isinstance(value, str):
            for rx, what in _TEXT_PLACEHOLDERS:
                if rx.search(value):
                    out.append(Finding("CARD008", "warning", f"placeholder {what} in metadata", path, card.line_of(ptr), ptr))
                    break
    for offset, line_text in _prose_lines(card.body):
        for rx, what in _TEXT_PLACEHOLDERS:
            if rx.search(line_text):
                out.append(Finding("CARD008", "warning", f"placeholder {what} in the card text", path, card.body_line + offset))
    return out


def _walk(value: Any, pointer: str, depth: int = 0) -> Iterator[tuple[str, Any]]:
    if depth > 64:  # the loader already limits depth; this only keeps the walk bounded
        return
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{pointer}/{str(k).replace('~', '~0').replace('/', '~1')}", depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{pointer}/{i}", depth + 1)
    else:
        yield pointer, value


# [text](target "title"), ![alt](target), <a href="target">, <img src="target">, [label]: target
_LINKS = [
    re.compile(r"!?\[(?:[^\]\n]|\][^(\n])*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(][^)]*)?\)"),
    re.compile(r"<(?:a|img|link)\b[^>]*?\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE),
    re.compile(r"^\s{0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE),
]
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//|^#|^\?")


def relative_links(body: str) -> list[tuple[str, int]]:
    """(path, 0-based offset) of every link in Markdown/HTML that points into the repo itself."""
    from urllib.parse import unquote

    out = []
    for pattern in _LINKS:
        for m in pattern.finditer(body):
            target = m.group(1).strip()
            if not target or _SCHEME.match(target):
                continue  # absolute URL, mailto:, in-page anchor
            path = unquote(target.split("#", 1)[0].split("?", 1)[0]).removeprefix("./")
            if path.startswith("/"):
                continue  # site-absolute: another page of the Hub
            if path.startswith(("blob/", "resolve/", "tree/", "raw/")):  # `resolve/main/LICENSE` style
                path = path.split("/", 2)[2] if path.count("/") >= 2 else ""
            if not path or ".." in path.split("/") or path.endswith("/"):
                continue  # another repo, or a folder
            out.append((path, m.start(1)))
    return sorted(set(out), key=lambda x: x[1])


def link_findings(card: Card, rs: ReleaseSet) -> list[Finding]:
    """CARD011: a relative link in the card to a file the release does not upload."""
    findings = []
    for target, offset in relative_links(card.body):
        if target in rs:
            continue
        where = "is left out of the release's files" if (rs.root / target).is_file() else "does not exist"
        findings.append(Finding("CARD011", "error", f"the card links to {target!r}, which {where}; the link will be dead on the Hub",
                                card.display_path, card.body_line + terms.line_at(card.body, offset) - 1))
    return findings


def derivative_findings(card: Card) -> list[Finding]:
    """CARD010: the text names a base model but there is no base_model (the suggested base_model in the message)."""
    if card.metadata.base_models or card.missing or card.metadata_unreadable:
        return []
    named = named_base_models(card.body)
    if not named:
        return []
    repo, off = named[0]
    others = f" (also names {', '.join(r for r, _ in named[1:3])})" if len(named) > 1 else ""
    return [Finding("CARD010", "warning", f"the card says the model derives from {repo}{others} but the metadata has no base_model; add base_model: {repo}",
                    card.display_path, card.body_line + off, "/base_model", extra={"suggested_base_model": repo})]


# --- lineage, check, fix -----------------------------------------------------------------------

_FIRST_HEADING = re.compile(r"^\s*#{1,2}\s+(.+)$", re.MULTILINE)


def infer_lineage(card: Card, rs: ReleaseSet | None = None) -> terms.Lineage:
    """The base model's Gemma generation: config.json first (the weights), then base_model, then the card."""
    if rs is not None and "config.json" in rs:
        lin = terms.lineage_from_config(rs.files["config.json"].local)
        if lin.is_gemma:
            return lin
    lin = terms.lineage_from_repo_ids(card.metadata.base_models, "base_model")
    if lin.is_gemma:
        return lin
    lin = terms.lineage_from_repo_ids([r for r, _ in named_base_models(card.body)], "the card text names")
    if lin.is_gemma:
        return lin
    m = card.metadata
    if m.license == "gemma" or m.license_name == terms.TERMS_LICENSE_NAME:
        return terms.Lineage(True, None, "the license metadata")
    if terms.find_terms_copy(card.body) is not None:
        return terms.Lineage(True, None, "the copy of the Gemma Terms of Use in the card")
    text = prose(card.body)
    heading = _FIRST_HEADING.search(text)
    first_line = next((ln.strip().lstrip("#").strip() for ln in text.split("\n") if ln.strip()), "")
    # the title is the first line of the card, or its first heading (a page's first line may be a badge)
    title = next((t for t in (first_line, heading.group(1) if heading else "") if re.search(r"gemma", t, re.IGNORECASE)), "")
    if re.search(r"gemma", title, re.IGNORECASE) and not re.search(r"medgemma", title, re.IGNORECASE):
        gen = re.search(r"gemma[-\s]?([1-4])(?!\d|b)", title, re.IGNORECASE)
        return terms.Lineage(True, int(gen.group(1)) if gen else None, f"the card title {title.strip()[:60]!r}")
    return terms.NOT_GEMMA


def subject(card: Card, rs: ReleaseSet | None = None, repo_id: str | None = None) -> Subject:
    """Upstream (Google's own model) or derivative: the repo checked, release.yaml's repo, then the card itself."""
    release_repo = rs.config.repo if rs is not None and rs.config is not None else None
    return subject_of(card, release_repo, repo_id)


def check_card(card: Card, rs: ReleaseSet | None = None, *, repo_id: str | None = None,
               upstream_files: Iterable[str] | None = None) -> list[Finding]:
    """Every CARD, GEMMA and APACHE finding for a parsed card (and the release set it ships in, if any).

    ``repo_id``: the Hub repo the card is checked as (``card check --repo-id``); a repo of Google's own
    namespace is the upstream, to which the derivative-only rules do not apply.
    ``upstream_files``: file names of the upstream repo when known (APACHE002 looks for its NOTICE).
    """
    from release.card.filechecks import checksum_findings, gguf_license_findings, template_findings
    from release.card.hidden import hidden_text_findings

    who = subject(card, rs, repo_id)
    findings = structure_findings(card)
    findings += schema_findings(card)
    findings += license_findings(card)
    findings += relation_findings(card, rs)
    findings += placeholder_findings(card)
    findings += hidden_text_findings(card)
    if not who.upstream:
        findings += derivative_findings(card)
    lineage = infer_lineage(card, rs)
    if rs is not None:
        findings += link_findings(card, rs)
        findings += template_findings(rs, lineage.generation if lineage.is_gemma else None)
        findings += gguf_license_findings(card, rs)
        findings += checksum_findings(rs)
    findings += terms.check_terms(card, lineage, rs, upstream=who.upstream, upstream_files=upstream_files)
    return findings


def check_text(text: str, path: str = "README.md") -> list[Finding]:
    """Check card text that is not on disk (no release-directory rules)."""
    return check_card(parse_card(text, path))


def check_path(path: Path | str, *, repo_id: str | None = None) -> list[Finding]:
    """All card and Terms of Use findings for a README.md or a release directory.

    Raises :class:`InputError` when the path does not exist or the card cannot be read.
    """
    p = Path(path)
    readme, release_dir = _card_file(p)
    if release_dir is None:
        return check_card(parse_card(_read_text(readme), readme), repo_id=repo_id)
    return check_release_set(resolve(release_dir), repo_id=repo_id)


def check_release_set(rs: ReleaseSet, *, repo_id: str | None = None, upstream_files: Iterable[str] | None = None,
                      allow_secrets: Iterable[str] = ()) -> list[Finding]:
    """Card and Terms of Use findings for a release set: its README.md, judged with the set's files only.

    The card is read from the directory even when the set leaves it out (CARD012 says so):
    a release without its card uploads no licence information at all.
    Also the secret scan of the set's files (PUBLISH004; ``allow_secrets``: ``--allow-secret`` repo paths),
    here so that ``card check`` and ``publish`` (which calls this once) report it alike.
    """
    from release.secrets import scan_release_set

    secrets = scan_release_set(rs, allow_secrets)  # first: a bad --allow-secret fails before the slower checks
    readme = rs.root / "README.md"
    findings: list[Finding] = []
    if not readme.exists():
        card = parse_card("", readme)
        card.missing = True
    else:
        card = parse_card(_read_text(readme), readme)
        if "README.md" not in rs:
            findings.append(Finding("CARD012", "error", "README.md is not in the release's files: the card (and its licence) would not be uploaded",
                                    str(rs.config.path if rs.config else readme)))
    findings += check_card(card, rs, repo_id=repo_id, upstream_files=upstream_files) + secrets
    note = rs.left_out_finding()
    return findings + ([note] if note else [])


def fix_card(path: Path | str) -> list[str]:
    """Add what is missing for the Gemma Terms of Use; return one line per change made.

    Sets the license fields, appends a "Gemma Terms of Use" section with only the
    missing parts (terms link, use-restriction pass-through, modification statement,
    non-endorsement disclaimer) and, for a release directory, writes NOTICE. Nothing
    else in the card changes. A card whose front matter cannot be parsed is not touched.
    """
    p = Path(path)
    readme, release_dir = _card_file(p)
    text = _read_text(readme) if readme.exists() else ""
    card = parse_card(text, readme)
    _refuse_unfixable(card)
    rs = resolve(release_dir) if release_dir is not None else None
    lineage = infer_lineage(card, rs)
    if not lineage.is_gemma:
        return []
    changes: list[str] = []
    new_text = card.text

    updates = _license_updates(card.metadata, lineage)
    if updates:
        new_text = set_metadata(card, updates)
        changes += [f"{readme}: set {k}: {v}" for k, v in updates.items()]

    section = _missing_section(card, lineage, rs)
    if section:
        heading = terms.APACHE_SECTION_HEADING if lineage.generation == 4 else terms.TERMS_SECTION_HEADING
        new_text = _append_section(new_text, section, heading)
        changes.append(f"{readme}: added a '{heading.lstrip('# ')}' section ({_describe_section(section)})")

    # NOTICE first, then the card: an interrupt between the two never leaves a fixed card without its NOTICE.
    if rs is not None and lineage.is_gemma:
        if lineage.under_terms:
            notice_needed = any(f.rule == "GEMMA002" for f in terms.check_terms(parse_card(new_text, readme), lineage, rs))
        else:  # Gemma 4: an Apache-2.0 attribution NOTICE (keeps an upstream NOTICE's content when there is one)
            notice_needed = not any(terms._NOTICE_NAME.match(f.path) and terms.APACHE_NOTICE_TEXT in " ".join((rs.read_text(f.path) or "").split())
                                    for f in rs.top_level())
        if notice_needed:
            notice = terms.write_notice(rs.root, lineage)
            changes.append(f"{notice}: added the required NOTICE {'sentence' if lineage.under_terms else 'text (Apache-2.0 form)'}")
            rel = notice.relative_to(rs.root).as_posix()
            if rs.config is not None and resolve(rs.root).get(rel) is None:
                changes.append(f"{rs.config.path}: add {rel!r} to files, or the NOTICE will not be uploaded (card check reports it until then)")
    if new_text != text:
        try:
            atomic_write(readme, new_text)
        except OSError as e:
            raise InputError(f"cannot write the card: {e}", readme) from None
    return changes


def _refuse_unfixable(card: Card) -> None:
    fm = card.front_matter
    if card.fences.unclosed_open is not None:
        raise InputError(f"front matter opened on line {card.fences.unclosed_open + 1} is never closed; fix it by hand first", card.path)
    if fm is None:
        return
    if not fm.at_top:
        raise InputError(f"front matter on line {fm.open_line} is not at the top of the card; move it there first", card.path)
    problems = [p for p in fm.problems]
    if fm.data is None or problems:
        first = problems[0] if problems else None
        where = f" (line {first.line})" if first and first.line else ""
        raise InputError(f"front matter cannot be fixed automatically: {first.message if first else 'not a mapping'}{where}", card.path,
                         hint="run 'gemma-release card check' and correct the YAML first; the card was not changed")


def _license_updates(meta: CardData, lineage: terms.Lineage) -> dict[str, Any]:
    if terms.license_ok(meta.to_dict(), lineage):
        return {}
    if lineage.generation == 4:
        return {"license": terms.GEMMA4_LICENSE_ID}
    if meta.license == "other":  # keep the author's choice of `other`; complete it
        return {"license_name": terms.TERMS_LICENSE_NAME, "license_link": terms.TERMS_URL}
    return {"license": "gemma"}


def _missing_section(card: Card, lineage: terms.Lineage, rs: ReleaseSet | None) -> str:
    text = card.text
    endorsement = [f for f in terms.check_terms(card, lineage, None) if f.rule == "GEMMA006" and f.severity == "error"]
    derived = bool(card.metadata.base_models) or (rs is not None and terms.adapter_or_gguf(rs))
    if lineage.generation == 4:  # Apache-2.0: the licence named and linked, modified files stated
        linked = any(u in text for u in ("apache.org/licenses/LICENSE-2.0", "ai.google.dev/gemma/apache_2"))
        return terms.apache_section(link=not linked, modification=derived and not terms.says_files_differ(card.body),
                                    disclaimer=bool(endorsement))
    if not lineage.under_terms:
        return terms.terms_section(restrictions=False, modification=False, disclaimer=bool(endorsement), link=False)
    no_copy = rs is not None and any(
        f.rule == "GEMMA003" and f.severity == "error" for f in terms.check_terms(card, lineage, rs))
    return terms.terms_section(
        restrictions=not terms.mentions_use_restrictions(text),
        modification=derived and not terms.says_files_differ(card.body),
        disclaimer=bool(endorsement),
        link=no_copy,  # no copy of the terms in the release and no link to them: link the official page
    )


def _describe_section(section: str) -> str:
    parts = []
    if terms.NOTICE_TEXT in section:
        parts.append("terms notice and link")
    if "Apache License, Version 2.0" in section:
        parts.append("Apache-2.0 licence named and linked")
    for label in ("Use restrictions", "Modified files", "No endorsement"):
        if f"**{label}.**" in section:
            parts.append(label.lower())
    return ", ".join(parts)


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _append_section(text: str, section: str, heading: str = terms.TERMS_SECTION_HEADING) -> str:
    """Append `section` under `heading` (reusing the heading if the card has it)."""
    nl = _newline(text)
    section = section.replace("\n", nl)
    lines = text.split(nl)
    for i, ln in enumerate(lines):
        if ln.strip() == heading:
            return nl.join(lines[: i + 1] + ["", section] + lines[i + 1 :])
    tail = "" if not text or text.endswith(nl) else nl
    return f"{text}{tail}{nl if text.strip() else ''}{heading}{nl}{nl}{section}{nl}"


def set_metadata(card: Card, updates: dict[str, Any]) -> str:
    """Card text with top-level metadata keys set; every other line stays byte for byte.

    Existing keys are replaced where they are; new keys go at the end of the block.
    A card with no front matter gets a new block at the top.
    """
    nl = _newline(card.text)
    lines = card.text.split("\n")
    lines = [ln + "\n" for ln in lines[:-1]] + ([lines[-1]] if lines[-1] else [])  # keep ends, split on LF only
    fm = card.front_matter
    if fm is None:
        block = "---" + nl + _dump(updates).replace("\n", nl) + "---" + nl
        return block + card.text
    if fm.flow_root:  # `{...}` on one line: rewrite the block as block YAML (key order kept)
        data = card.metadata.to_dict()
        data.update(updates)
        lines[fm.open_line : fm.close_line - 1] = [_dump(data).replace("\n", nl)]
        return "".join(lines)
    new_keys = {k: v for k, v in updates.items() if k not in fm.key_spans}
    if new_keys:
        lines.insert(fm.close_line - 1, _dump(new_keys).replace("\n", nl))
    for key in sorted((k for k in updates if k in fm.key_spans), key=lambda k: -fm.key_spans[k][0]):
        first, last = fm.key_spans[key]
        lines[first - 1 : last] = [_dump({key: updates[key]}).replace("\n", nl)]
    return "".join(lines)


def check_release_card(path: Path | str, hub: object = None, *, repo_id: str | None = None,
                       upstream_files: Iterable[str] | None = None, allow_secrets: Iterable[str] = ()) -> list[Finding]:
    """What `card check` reports: card, Terms of Use / Apache-2.0 findings plus the variant-table (QUANT) findings.

    For a release directory both judge its release set (release.yaml's files, or the whole directory),
    and its files are scanned for secrets (``allow_secrets``: ``--allow-secret`` repo paths).
    ``repo_id`` is the Hub repo the card is checked as (Google's own repos are the upstream).
    """
    from release.card.variants import check_variants  # variants builds on card parsing, so import it late

    p = Path(path)
    allow_secrets = tuple(allow_secrets)
    if not p.is_dir():
        if allow_secrets:  # a lone card is not a release: no file set to scan, nothing to allow
            raise InputError("--allow-secret applies to a release directory, not a single card", p)
        return check_path(p, repo_id=repo_id) + check_variants(p, hub=hub, repo_id=repo_id)
    rs = resolve(p)
    return (check_release_set(rs, repo_id=repo_id, upstream_files=upstream_files, allow_secrets=allow_secrets)
            + check_variants(p, rs.config, hub=hub, release_set=rs, repo_id=repo_id))
