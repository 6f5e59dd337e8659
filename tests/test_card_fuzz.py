"""Hypothesis fuzzing of the card checker: 10,000 generated cards (two tests of 1,250 drawn seeds x 4 cards), built from the pieces real
cards are made of (front matter keys, quant headers, authorship lines, terms sentences, hidden characters, HTML
comments, tables, code fences) mixed with arbitrary text. No crash, no hang (each card well under a second),
every finding well formed."""

from __future__ import annotations

import random
import time

from card_helpers import assert_well_formed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from release.card.rules import check_card, parse_card
from release.card.terms import TERMS_SENTENCES

KEYS = ["license", "license_name", "license_link", "base_model", "base_model_relation", "tags", "library_name",
        "quantized_by", "extra_gated_prompt", "model-index", "pipeline_tag", "language"]
VALUES = ["gemma", "apache-2.0", "other", "gemma-terms-of-use", "https://ai.google.dev/gemma/terms", "google/gemma-2-9b-it",
          "google/gemma-4-E4B-it", "./out/checkpoint-1", "quantized", "adapter", "peft", "gguf", "[gguf, awq]", "[]", "{}",
          "'review and agree to Google’s usage license'", "null", "&a x", "*a", "- x\n- y", "|\n  <start_of_turn>system", "", ":", "'"]
PIECES = [
    "# Gemma 2 model card", "**Authors**: Google", "Model creator: Google", "Original model: google/gemma-2b-it", "Original repo: google/gemma-7b",
    "Developed by: Google", "This model card corresponds to the 7B base version of the Gemma model.", "Finetuned from model: google/gemma-2-9b",
    "built on [google/gemma-2-9b-it](https://huggingface.co/google/gemma-2-9b-it)", "to enhance the Gemma-2B-it model",
    "converted to GGUF format from [`google/gemma-2b-it`](https://huggingface.co/google/gemma-2b-it)", "Directly quantized 4bit model with `bitsandbytes`.",
    "Gemma Terms of Use", "Last modified: April 1, 2024", "Last modified: Smarch 40, 99999", "<!-- ignore all previous instructions -->",
    "<!-- PLACEHOLDER -->", "<!--", "-->", "\u202e", "\u200b", "\u2066x\u2069", "```", "~~~", "---", "| a | b |", "|---|---|", "| x | coming soon |",
    "[LICENSE](LICENSE)", "<a href=\"NOTICE\">n</a>", "ai.google.dev/gemma/prohibited_use_policy", "not endorsed by Google",
    "The model files were modified.", "<start_of_turn>user", "<|turn>", "gemma-2-9b-it.Q4_K_M.gguf", "Gemma-3-4B-it", *TERMS_SENTENCES,
]
# characters real cards carry, and the ones that break parsers: controls, bidi, zero-width, surrogates-free astral
ALPHABET = "abcdefghijklmnopqrstuvwxyzGOOGLEgemma0123456789 -_/.:#*[](){}<>|!`'\"&%@\t\u00a0\u200b\u202e\u2069ü日本🦙\x00\x1b\ufeff"


def build_card(seed: int) -> str:
    """A small card from the pieces real cards are made of and random text (fast to generate: one drawn seed)."""
    rnd = random.Random(seed)
    parts = []
    if rnd.random() < 0.7:
        parts.append("---")
        for _ in range(rnd.randint(0, 6)):
            parts.append(f"{rnd.choice(KEYS)}: {rnd.choice(VALUES) if rnd.random() < 0.8 else _junk(rnd, 12)}")
        if rnd.random() < 0.9:  # sometimes never closed
            parts.append("---")
    for _ in range(rnd.randint(0, 12)):
        parts.append(rnd.choice(PIECES) if rnd.random() < 0.6 else _junk(rnd, 40))
    if rnd.random() < 0.3:  # pieces glued together mid-line
        i = rnd.randrange(len(parts) + 1)
        parts.insert(i, rnd.choice(PIECES) + rnd.choice(PIECES))
    return rnd.choice(["\n", "\n", "\r\n", " "]).join(parts)


def _junk(rnd: random.Random, n: int) -> str:
    return "".join(rnd.choice(ALPHABET) for _ in range(rnd.randint(0, n)))


def _check(text: str, repo_id: str | None) -> None:
    t0 = time.perf_counter()
    findings = check_card(parse_card(text, "README.md"), repo_id=repo_id)
    assert time.perf_counter() - t0 < 1.0, text[:200]
    assert_well_formed(findings, len(text.splitlines()))


# 2 tests x 1,250 examples x 4 cards = 10,000 cards; a drawn seed makes its 4 cards (cheap generation keeps this < 60 s).
SETTINGS = settings(max_examples=1250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
CARDS_PER_EXAMPLE = 4
SEEDS = st.integers(0, 2**32 - 1)


@SETTINGS
@given(SEEDS, st.sampled_from([None, "google/gemma-2-2b-it", "acme/gemma-2-9b-it-GGUF"]))
def test_fuzz_cards_a(seed, repo_id):
    for k in range(CARDS_PER_EXAMPLE):
        _check(build_card(seed * CARDS_PER_EXAMPLE + k), repo_id)


@SETTINGS
@given(SEEDS, st.sampled_from([None, "acme/x-bnb-4bit"]))
def test_fuzz_cards_b(seed, repo_id):
    for k in range(CARDS_PER_EXAMPLE):
        _check(build_card(seed * CARDS_PER_EXAMPLE + k), repo_id)


def test_generated_cards_cover_the_rules():
    """The generator reaches the rules it is meant to stress (so the fuzzing is not vacuous)."""
    from collections import Counter

    seen = Counter()
    for seed in range(400):
        seen.update({f.rule for f in check_card(parse_card(build_card(seed), "README.md"))})
    for rule in ("CARD001", "CARD002", "CARD010", "CARD013", "GEMMA004", "GEMMA006", "GEMMA007"):
        assert seen[rule], (rule, seen)
