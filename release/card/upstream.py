"""Is a card Google's own model (the upstream) or a derivative?

Derivative-only rules (GEMMA002-006, CARD010, QUANT008, APACHE*) do not apply to the
original: Google's card says "Authors: Google" because Google made it. A card is the
upstream when

* it is checked as a repo of Google's own namespace (``repo_id`` given by the caller, e.g.
  ``card check --repo-id google/gemma-2-2b-it``, or the release's ``repo: google/...``), or
* it is a bare card: no base model in its metadata or text, and it presents itself as
  Google's model in at least two of these ways: the title "Gemma N model card", an
  "Authors: Google" line near the top, the Hub gate asking to accept Google's usage license.

A copied upstream section inside a derivative's card is still reported: a card that names
a base model is never the upstream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from release.card.cardfile import Card
from release.card.text import named_base_models, prose

GOOGLE_NAMESPACES = ("google",)

_TITLE = re.compile(r"^\W{0,4}(?:#+\s*)?gemma(?:[\s-]+\d+n?)?\s+model\s+card\s*$", re.IGNORECASE | re.MULTILINE)
_AUTHORS = re.compile(r"^\W{0,4}authors?\W{0,4}:?\W{0,4}google\b", re.IGNORECASE | re.MULTILINE)
_GATE = re.compile(r"review\s+and\s+agree\s+to\s+google[’']s\s+usage\s+license|access\s+gemma\s+on\s+hugging\s*face", re.IGNORECASE)


@dataclass(frozen=True)
class Subject:
    """What a card describes: the upstream (Google's model) or a derivative, and why."""

    upstream: bool
    why: str


DERIVATIVE = Subject(False, "")


def is_google_repo(repo_id: str | None) -> bool:
    return bool(repo_id) and "/" in repo_id and repo_id.split("/", 1)[0].lower() in GOOGLE_NAMESPACES


def subject_of(card: Card, release_repo: str | None = None, repo_id: str | None = None) -> Subject:
    """Upstream or derivative: the repo checked first, then what the bare card says of itself."""
    for rid, where in ((repo_id, "the repo checked"), (release_repo, "release.yaml's repo")):
        if rid:
            if is_google_repo(rid):
                return Subject(True, f"{where} {rid} is Google's")
            return DERIVATIVE
    if card.metadata.base_models:
        return DERIVATIVE
    body = prose(card.body)
    if named_base_models(body):
        return DERIVATIVE
    head = "\n".join(body.split("\n")[:60])
    meta = card.metadata
    gate_text = " ".join(str(meta.get(k) or "") for k in ("extra_gated_heading", "extra_gated_prompt"))
    signs = []
    if _TITLE.search(head):
        signs.append("its title is 'Gemma model card'")
    if _AUTHORS.search(head):
        signs.append("it says 'Authors: Google'")
    if _GATE.search(gate_text) or _GATE.search(head):
        signs.append("it is gated on Google's usage license")
    if len(signs) >= 2:
        return Subject(True, "a bare card presenting itself as Google's model (" + ", ".join(signs) + ")")
    return DERIVATIVE
