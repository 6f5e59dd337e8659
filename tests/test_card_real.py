"""The real-world cards (tests/data/cards; where each came from: SOURCES.md), checked against labels
written by reading each card before running the tool (labels.json: the expected problem rules, why,
and the rules that must not fire).

Line numbers below are lines of the fixtures (000-003 restored from ../shared/cards, see restore_cards.py).
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from card_helpers import CARDS, assert_well_formed, problems

from release.card.rules import check_path, check_release_card, load_card

LABELS = {k: v for k, v in json.loads((CARDS / "labels.json").read_text(encoding="utf-8")).items() if not k.startswith("_")}


def by_rule(findings):
    return Counter(f.rule for f in findings)


def test_every_real_card_is_labelled():
    cards = {p.name for p in CARDS.glob("[0-9][0-9][0-9]_*.md")} - {"000_raw_collapsed.md"}
    assert cards == set(LABELS)
    sources = (CARDS / "SOURCES.md").read_text(encoding="utf-8")
    assert all(name in sources for name in LABELS)


@pytest.mark.parametrize("name", sorted(LABELS))
def test_real_card_matches_its_label(name):
    label = LABELS[name]
    path = CARDS / name
    findings = check_release_card(path, repo_id=label.get("repo_id"))
    assert_well_formed(findings, len(path.read_text(encoding="utf-8").splitlines()))
    got = problems(findings)
    assert got == set(label["expect"]), (sorted(got), [(f.rule, f.line, f.message[:100]) for f in findings])
    assert not got & set(label.get("not", {}))


def test_000_sauerkraut_finetune_without_base_model():
    # "finetuned Model based on google/gemma-7b" but no base_model; the variant table says "coming soon" (line 21);
    # the "finetuned" sentence says what was done, so GEMMA005 does not fire.
    findings = check_path(CARDS / "000_sauerkraut_gemma_7b.md")
    assert problems(findings) == {"CARD010", "CARD008", "GEMMA004"}
    (placeholder,) = [f for f in findings if f.rule == "CARD008"]
    assert placeholder.line == 21 and "coming soon" in placeholder.message
    (missing_base,) = [f for f in findings if f.rule == "CARD010"]
    assert "add base_model: google/gemma-7b" in missing_base.message and missing_base.extra["suggested_base_model"] == "google/gemma-7b"


def test_001_axolotl_out_card():
    # license: other alone (line 8); model-index named "out" (6) with results: [] (7); library_name peft but no
    # base_model_relation; a stray second '---' (12); the pasted base card: "# Gemma Model Card" (13), "Authors: Google"
    # and "This model card corresponds to the 7B base version of the Gemma model" (17): a copied upstream section in a
    # derivative's card is still reported.
    findings = check_path(CARDS / "001_axolotl_out.md")
    counts = by_rule(findings)
    assert set(counts) == {"CARD005", "GEMMA001", "CARD008", "GEMMA006", "CARD007", "CARD009"}
    assert counts["CARD008"] == 3 and counts["GEMMA006"] == 3
    lines = {(f.rule, f.line) for f in findings}
    assert {("CARD005", 8), ("GEMMA001", 8), ("CARD008", 6), ("CARD008", 7), ("CARD008", 17), ("CARD009", 12), ("GEMMA006", 13)} <= lines
    assert any(f.rule == "GEMMA006" and "Google authored" in f.message for f in findings)


def test_001_metadata_is_typed_and_kept():
    card = load_card(CARDS / "001_axolotl_out.md")
    m = card.metadata
    assert m.license == "other" and m.base_models == ["google/gemma-7b-it"] and m.library_name == "peft"
    assert list(m) == ["tags", "base_model", "model-index", "license", "pipeline_tag", "library_name"]
    assert m.model_index == [{"name": "out", "results": []}]


def test_002_ollama_terms_version():
    (version,) = [f for f in check_path(CARDS / "002_ollama_discopop.md") if f.rule == "GEMMA007"]
    assert version.severity == "info" and version.extra["last_modified"] == "2024-02-21" and version.line == 18


def test_004_upstream_google_card_is_recognised():
    from release.card.rules import subject

    card = load_card(CARDS / "004_google_gemma_2_2b_it.md")
    who = subject(card)
    assert who.upstream and "Authors: Google" in who.why
    # checked as a derivative's repo, the same text is a derivative's copied card
    findings = check_release_card(CARDS / "004_google_gemma_2_2b_it.md", repo_id="someone/gemma-2-2b-it-copy")
    assert {"GEMMA004", "GEMMA006"} <= problems(findings)
    # checked as Google's repo it is the upstream whatever it says
    assert problems(check_release_card(CARDS / "004_google_gemma_2_2b_it.md", repo_id="google/gemma-2-2b-it")) == {"CARD001", "GEMMA001"}


def test_quant_headers_are_not_authorship_claims():
    for name in ("007_lmstudio_gemma_2_2b_it_gguf.md", "013_jartine_gemma_2_9b_it_llamafile.md"):
        assert "GEMMA006" not in problems(check_path(CARDS / name)), name


def test_quant008_suggests_the_base_model():
    fs = [f for f in check_release_card(CARDS / "005_gguf_my_repo_gemma_2b_it.md") if f.rule == "QUANT008" and f.pointer == "/base_model"]
    assert fs and fs[0].extra["suggested_base_model"] == "google/gemma-2b-it"
    fs = [f for f in check_release_card(CARDS / "008_unsloth_gemma_2_2b_it_bnb_4bit.md", repo_id="unsloth/gemma-2-2b-it-bnb-4bit")
          if f.rule == "QUANT008" and f.pointer == "/base_model"]
    assert fs and fs[0].extra["suggested_base_model"] == "google/gemma-2-2b-it"


def test_012_inlined_terms_version():
    (version,) = [f for f in check_path(CARDS / "012_serenitypc_terms_inlined.md") if f.rule == "GEMMA007"]
    assert version.extra["last_modified"] == "2025-03-24"


def test_raw_collapsed_card_is_reported_cleanly():
    path = CARDS / "000_raw_collapsed.md"
    findings = check_path(path)
    assert_well_formed(findings, len(path.read_text(encoding="utf-8").splitlines()))
    (no_fm,) = [f for f in findings if f.rule == "CARD001"]
    assert no_fm.line == 1 and "collapsed" in no_fm.message
    assert not any(f.rule in ("CARD002", "CARD003", "CARD004") for f in findings)
