"""Is a card Google's own model (the upstream) or a derivative?

Derivative-only rules (GEMMA002-006, CARD010, QUANT008, APACHE*) do not apply to the
original: Google's card says "Authors: Google" because Google made it. A card is the
upstream when

* it is checked as a repo of Google's own namespace (``repo_id`` given by the caller, e.g.
  ``card check --repo-id google/gemma-2-2b-it``, or the release's ``repo: google/...``), or
* it is a bare card that presents itself as Google's model in at least two of these ways:
  the title "Gemma model card" / "Gemma N model card", an "Authors: Google" line near the top,
  the Hub gate asking to accept Google's usage license (``extra_gated_prompt``); and nothing
  in it says it derives from something else (see :func:`_derived_because`).

Google's cards name other Google repos: the Gemma 1 cards link their siblings ("[2B base
model](https://huggingface.co/google/gemma-2b)", which the text rules do not read as a base),
and Google's instruction-tuned cards carry ``base_model: google/<the pre-trained one>``
(google/gemma-3-4b-it: ``base_model: google/gemma-3-4b-pt``). A ``base_model`` is such a sibling
only when the card shows it: the model the card describes (the Google repo its snippets load,
:func:`described_repo`) and the base are the same Gemma family, generation and size, and not the
same repo. Any other base -- outside Google's namespace, another Google model, the described model
itself (a copy of the base's own card), or a base when the card does not show which model it
describes -- makes the card a derivative that copied Google's card.

A copied upstream section inside a derivative's card is still reported: a card whose text says
it derives from a model ("fine-tuned from google/gemma-7b"), or whose metadata names a base
outside Google's namespace, is never the upstream.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from release.card.cardfile import Card
from release.card.terms import generation_from_repo_id
from release.card.text import named_base_models, prose

GOOGLE_NAMESPACES = ("google",)

_TITLE = re.compile(r"^\W{0,4}(?:#+\s*)?gemma(?:[\s-]+\d+n?)?\s+model\s+card\s*$", re.IGNORECASE | re.MULTILINE)
_AUTHORS = re.compile(r"^\W{0,4}authors?\W{0,4}:?\W{0,4}google\b", re.IGNORECASE | re.MULTILINE)
_GATE = re.compile(r"review\s+and\s+agree\s+to\s+google[’']s\s+usage\s+license|access\s+gemma\s+on\s+hugging\s*face", re.IGNORECASE)
# A Google repo id anywhere in the body, code included: `from_pretrained("google/gemma-7b-it")`,
# `returnModelRepoId=google/gemma-1.1-7b-it`, https://huggingface.co/google/gemma-2b.
_GOOGLE_REPO = re.compile(r"(?<![\w.-])google/[\w.-]*\w", re.IGNORECASE)
# The family ("gemma", "codegemma", "paligemma", ...) and the size ("7b", "270m", "e4b") in a repo name.
_FAMILY = re.compile(r"[a-z]*gemma")
_SIZE = re.compile(r"(?<![a-z0-9])(?:\d+(?:\.\d+)?[bm]|e\d+b)(?![a-z0-9])")


@dataclass(frozen=True)
class Subject:
    """What a card describes: the upstream (Google's model) or a derivative, and why."""

    upstream: bool
    why: str


DERIVATIVE = Subject(False, "")


def is_google_repo(repo_id: str | None) -> bool:
    return bool(repo_id) and "/" in repo_id and repo_id.split("/", 1)[0].lower() in GOOGLE_NAMESPACES


def described_repo(card: Card) -> str | None:
    """The Google repo a card describes, as far as its text tells: the one its code snippets and links name
    most (Google's cards load their own repo in every snippet). None when it names none."""
    counts = Counter(m.group(0).lower() for m in _GOOGLE_REPO.finditer(card.body))
    return counts.most_common(1)[0][0] if counts else None


def _variant_key(repo_id: str) -> tuple[str, int | None, str] | None:
    """(family, generation, size) of a Gemma repo id, None when its name tells no family or no size."""
    name = repo_id.rsplit("/", 1)[-1].lower()
    family, size = _FAMILY.match(name), _SIZE.search(name)
    if family is None or size is None:
        return None
    return family.group(0), generation_from_repo_id(repo_id), size.group(0)


def is_sibling(a: str, b: str) -> bool:
    """`a` and `b` are two variants of one Google model (pre-trained / instruction-tuned, ...): both in Google's
    namespace, different repos, same Gemma family, generation and size (google/gemma-3-4b-it, google/gemma-3-4b-pt)."""
    if not (is_google_repo(a) and is_google_repo(b)) or a.lower() == b.lower():
        return False
    ka = _variant_key(a)
    return ka is not None and ka == _variant_key(b)


def self_presentation(card: Card) -> list[str]:
    """The ways a card presents itself as Google's model (title, authors line, gate), as reasons."""
    head = "\n".join(prose(card.body).split("\n")[:60])  # line-wise: a title and an authors line are lines
    meta = card.metadata
    gate_text = " ".join(str(meta.get(k) or "") for k in ("extra_gated_heading", "extra_gated_prompt"))
    signs = []
    if _TITLE.search(head):
        signs.append("its title is 'Gemma model card'")
    if _AUTHORS.search(head):
        signs.append("it says 'Authors: Google'")
    if _GATE.search(gate_text) or _GATE.search(head):
        signs.append("it is gated on Google's usage license")
    return signs


def _derived_because(card: Card) -> str | None:
    """Why a card that presents itself as Google's is still a derivative, or None when nothing says so."""
    named = named_base_models(card.body)
    if named:
        return f"its text says it derives from {named[0][0]}"
    own = described_repo(card)
    for base in card.metadata.base_models:
        if not is_google_repo(base):
            return f"its base_model {base} is not Google's"  # Google builds its models from its own
        if own is not None and base.lower() == own:
            return f"its base_model {base} is the model its own card describes (a copy of the base's card)"
        if own is None or not is_sibling(base, own):
            return f"its base_model {base} is not a variant of the model the card describes ({own or 'not shown'})"
    return None


def subject_of(card: Card, release_repo: str | None = None, repo_id: str | None = None) -> Subject:
    """Upstream or derivative: the repo checked first, then what the bare card says of itself."""
    for rid, where in ((repo_id, "the repo checked"), (release_repo, "release.yaml's repo")):
        if rid:
            if is_google_repo(rid):
                return Subject(True, f"{where} {rid} is Google's")
            return DERIVATIVE
    signs = self_presentation(card)
    if len(signs) < 2:
        return DERIVATIVE
    derived = _derived_because(card)
    if derived is not None:  # Google's card copied into a derivative's
        return Subject(False, f"it presents itself as Google's model, but {derived}")
    why = "a bare card presenting itself as Google's model (" + ", ".join(signs) + ")"
    siblings = card.metadata.base_models
    if siblings:
        why += f"; its base_model {', '.join(siblings)} is a variant of {described_repo(card)}, the model it describes"
    return Subject(True, why)
