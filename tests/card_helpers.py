"""Shared helpers for the card / terms tests: a compliant release and finding assertions."""

from __future__ import annotations

import json
from pathlib import Path

from release.findings import RULES, SEVERITIES, Finding
from release.card.terms import NOTICE_TEXT

CARDS = Path(__file__).parent / "data" / "cards"

COMPLIANT_README = """---
license: gemma
language:
- en
library_name: transformers
pipeline_tag: text-generation
base_model: google/gemma-2-9b
base_model_relation: finetune
tags:
- gemma2
- sft
datasets:
- HuggingFaceH4/ultrachat_200k
model-index:
- name: acme-gemma-2-9b-chat
  results:
  - task:
      type: text-generation
    dataset:
      type: HuggingFaceH4/ultrachat_200k
      name: UltraChat 200k
    metrics:
    - type: loss
      value: 1.19
    source:
      name: own evaluation
      url: https://example.org/eval
---

# acme-gemma-2-9b-chat

A chat model by ACME Labs: a fine-tuned version of [google/gemma-2-9b](https://huggingface.co/google/gemma-2-9b)
on UltraChat.

## Gemma Terms of Use

This model is a Model Derivative of Gemma, used under the Gemma Terms of Use. You must not use it for
the restricted uses in the [Gemma Prohibited Use Policy](https://ai.google.dev/gemma/prohibited_use_policy);
these restrictions apply to anyone you distribute it to.

The model files in this repository were modified from the original Gemma weights by ACME Labs
(supervised fine-tuning).
"""

TERMS_COPY = """Gemma Terms of Use

Last modified: March 24, 2025

By using, reproducing, modifying, distributing, performing or displaying any portion or element of Gemma ...
"""


def make_release(root: Path, readme: str = COMPLIANT_README, *, notice: bool = True, terms_copy: str | None = TERMS_COPY,
                 config: dict | None = None) -> Path:
    """A release directory that passes every rule (each keyword removes one part)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text(readme, encoding="utf-8")
    if notice:
        (root / "NOTICE").write_text(NOTICE_TEXT + "\n", encoding="utf-8")
    if terms_copy is not None:
        (root / "LICENSE").write_text(terms_copy, encoding="utf-8")
    (root / "config.json").write_text(json.dumps(config or {"model_type": "gemma2", "hidden_size": 3584}), encoding="utf-8")
    return root


def problems(findings: list[Finding]) -> set[str]:
    """Rule ids of findings that are not mere information."""
    return {f.rule for f in findings if f.severity != "info"}


def assert_well_formed(findings: list[Finding], n_lines: int) -> None:
    for f in findings:
        assert f.rule in RULES, f
        assert f.severity in SEVERITIES
        assert isinstance(f.message, str) and f.message
        assert f.line is None or 1 <= f.line <= max(1, n_lines + 1), (f, n_lines)
        assert f.pointer is None or f.pointer == "" or f.pointer.startswith("/")
        json.dumps(f.to_dict())
