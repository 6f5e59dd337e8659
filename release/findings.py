"""One Finding type for every check, and the reporters that print them.

Every checker (card rules, Terms of Use, variant tables, weight structure,
logit comparison) returns a list of :class:`Finding`. Checkers collect every
problem first; the CLI reports them all at once, location first, as
check-jsonschema does::

    README.md:12 $.license_name [CARD005] error: license is 'other' but ...

Reporters: ``text`` (for people), ``json`` (a list of objects, stable keys) and
``sarif`` (SARIF 2.1.0, so CI systems annotate the offending lines).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Literal

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")
_SEVERITY_ORDER = {s: i for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Finding:
    """One problem (or note) found by a check."""

    rule: str  # stable rule id, e.g. "CARD005", "GEMMA002", "WEIGHTS003"
    severity: Severity  # "error" fails the command (exit 1); "warning" / "info" do not
    message: str  # one sentence saying what is wrong and, where possible, how to fix it
    path: str | None = None  # the file the finding is about
    line: int | None = None  # 1-based line in `path`, where it applies
    pointer: str | None = None  # JSON Pointer into the card metadata / config, where it applies
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # rule-specific data (JSON-safe)

    def __post_init__(self) -> None:
        if self.severity not in _SEVERITY_ORDER:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")

    def location(self) -> str:
        """``path:line pointer`` as far as known (used as the text prefix)."""
        loc = self.path or "-"
        if self.line is not None:
            loc += f":{self.line}"
        if self.pointer is not None:
            loc += f" {self.pointer or '/'}"
        return loc

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["extra"]:
            del d["extra"]
        return {k: v for k, v in d.items() if v is not None}


@dataclass(frozen=True)
class Rule:
    """One check: a stable id, its default severity and a one-line description.

    Every area registers its rules once (:func:`register_rules`); ``--help`` text,
    the SARIF ``rules`` array and the docs table are all derived from :data:`RULES`.
    """

    id: str
    severity: Severity
    description: str

    def __post_init__(self) -> None:
        if self.severity not in _SEVERITY_ORDER:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")


RULES: dict[str, Rule] = {}


def register_rules(*rules: Rule) -> None:
    """Add rules to the registry; re-registering the same rule is harmless, a conflicting one is a bug."""
    for r in rules:
        known = RULES.get(r.id)
        if known is not None and known != r:
            raise ValueError(f"rule {r.id} registered twice with different definitions")
        RULES[r.id] = r


# Every module that registers rules; `card rules` and the docs list the registry after importing them all.
RULE_MODULES = (
    "release.card.rules", "release.card.terms", "release.card.variants", "release.card.hidden", "release.card.filechecks",
    "release.releaseset", "release.publish.plan", "release.weights.verify", "release.weights.gguf_reader",
    "release.weights.gguf_tokenizer", "release.secrets",
)


def load_all_rules() -> dict[str, Rule]:
    """Import every module that registers rules, so :data:`RULES` holds every rule the tool can report."""
    import importlib

    for name in RULE_MODULES:
        importlib.import_module(name)
    return RULES


def rules_help() -> dict[str, str]:
    """``{rule id: description}`` for every registered rule (feeds SARIF ``rules``)."""
    return {r.id: r.description for r in RULES.values()}


def rules_table(prefixes: tuple[str, ...] = ()) -> str:
    """The registry as a Markdown table (for README / ``card rules``), optionally filtered by id prefix."""
    rows = ["| rule | severity | what it finds |", "|------|----------|---------------|"]
    for r in sorted(RULES.values(), key=lambda r: r.id):
        if not prefixes or r.id.startswith(prefixes):
            rows.append(f"| {r.id} | {r.severity} | {r.description} |")
    return "\n".join(rows)


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Stable order: by file, then line, then severity, then rule."""
    return sorted(
        findings,
        key=lambda f: (f.path or "", f.line if f.line is not None else -1, _SEVERITY_ORDER[f.severity], f.rule),
    )


def summary_line(findings: list[Finding]) -> str:
    counts = {s: sum(1 for f in findings if f.severity == s) for s in SEVERITIES}
    if not findings:
        return "ok: no findings"
    parts = [f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items() if n]
    verdict = "FAIL" if counts["error"] else "ok"
    return f"{verdict}: " + ", ".join(parts)


# C0 controls, DEL, C1 controls and the bidirectional overrides (which reorder what a terminal shows).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_KEEP_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape_char(m: re.Match) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: str, keep_lines: bool = False) -> str:
    """``text`` with control characters taken from input shown as escapes (ESC -> ``\\x1b``); other unicode kept.

    Text output goes to terminals and CI logs: a raw ESC or BEL from a card, a YAML key or a
    file name could recolour, retitle or hide output. ``keep_lines`` keeps newlines and tabs
    (for text that is already laid out in lines).
    """
    return (_CONTROL_KEEP_LINES if keep_lines else _CONTROL).sub(_escape_char, text)


def render_text(findings: list[Finding]) -> str:
    lines = [f"{printable(f.location())} [{printable(f.rule)}] {f.severity}: {printable(f.message)}" for f in sort_findings(findings)]
    lines.append(summary_line(findings))
    return "\n".join(lines)


def render_json(findings: list[Finding]) -> str:
    return json.dumps([f.to_dict() for f in sort_findings(findings)], indent=2, ensure_ascii=False)


_SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def render_sarif(findings: list[Finding], tool_version: str | None = None, rules_help: dict[str, str] | None = None) -> str:
    """SARIF 2.1.0 log with one run; each finding a result located at its file and line."""
    from release import __version__

    if rules_help is None:  # default: descriptions from the rule registry
        rules_help = {r.id: r.description for r in RULES.values()}
    rule_ids = sorted({f.rule for f in findings})
    results = []
    for f in sort_findings(findings):
        result: dict[str, Any] = {
            "ruleId": f.rule,
            "ruleIndex": rule_ids.index(f.rule),
            "level": _SARIF_LEVEL[f.severity],
            "message": {"text": f.message},
        }
        if f.path:
            phys: dict[str, Any] = {"artifactLocation": {"uri": f.path.replace("\\", "/")}}
            if f.line is not None:
                phys["region"] = {"startLine": max(1, f.line)}
            loc: dict[str, Any] = {"physicalLocation": phys}
            if f.pointer is not None:
                loc["logicalLocations"] = [{"fullyQualifiedName": f.pointer or "/", "kind": "member"}]
            result["locations"] = [loc]
        results.append(result)
    log = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "gemma-release",
                        "version": tool_version or __version__,
                        "informationUri": "https://ai.google.dev/gemma/terms",
                        "rules": [
                            {
                                "id": r,
                                **({"shortDescription": {"text": rules_help[r]}} if r in rules_help else {}),
                                **({"defaultConfiguration": {"level": _SARIF_LEVEL[RULES[r].severity]}} if r in RULES else {}),
                            }
                            for r in rule_ids
                        ],
                    }
                },
                "results": results,
            }
        ],
    }
    return json.dumps(log, indent=2, ensure_ascii=False)


def render(findings: list[Finding], fmt: str) -> str:
    if fmt == "text":
        return render_text(findings)
    if fmt == "json":
        return render_json(findings)
    if fmt == "sarif":
        return render_sarif(findings)
    raise ValueError(f"unknown format {fmt!r}; choose text, json or sarif")
