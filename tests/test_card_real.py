"""The real-world cards (tests/data/cards, restored from ../shared/cards): expected findings worked out by reading them.

Line numbers below are lines of the restored fixtures (see restore_cards.py there).
"""

from __future__ import annotations

from collections import Counter

from card_helpers import CARDS, assert_well_formed, problems

from release.card.rules import check_path, load_card


def by_rule(findings):
    return Counter(f.rule for f in findings)


def test_000_sauerkraut_finetune_without_base_model():
    # Front matter: license other + gemma-terms-of-use + the terms link (right for Gemma 1), de/en, tags.
    # Text: "finetuned Model based on google/gemma-7b" but no base_model; the variant table says
    # "coming soon" (line 21); nothing about the Prohibited Use Policy; nothing says files were modified.
    findings = check_path(CARDS / "000_sauerkraut_gemma_7b.md")
    assert problems(findings) == {"CARD010", "CARD008", "GEMMA004", "GEMMA005"}
    (placeholder,) = [f for f in findings if f.rule == "CARD008"]
    assert placeholder.line == 21 and "coming soon" in placeholder.message
    (missing_base,) = [f for f in findings if f.rule == "CARD010"]
    assert "google/gemma-7b" in missing_base.message
    assert not any(f.rule == "GEMMA001" for f in findings)  # its license metadata is right for Gemma 1


def test_001_axolotl_out_card():
    # license: other alone (line 8); model-index named "out" (6) with results: [] (7); library_name peft
    # but no base_model_relation; a stray second '---' (12) opening another block; the pasted base card:
    # "# Gemma Model Card" (13), "Authors: Google" and "This model card corresponds to the 7B base
    # version of the Gemma model" (17, collapsed line), "on the None dataset" (17).
    findings = check_path(CARDS / "001_axolotl_out.md")
    counts = by_rule(findings)
    assert set(counts) == {"CARD005", "GEMMA001", "CARD008", "GEMMA006", "CARD007", "CARD009", "GEMMA005"}
    assert counts["CARD008"] == 3 and counts["GEMMA006"] == 3
    lines = {(f.rule, f.line) for f in findings}
    assert {("CARD005", 8), ("GEMMA001", 8), ("CARD008", 6), ("CARD008", 7), ("CARD008", 17), ("CARD009", 12), ("GEMMA006", 13)} <= lines
    assert any(f.rule == "GEMMA006" and "Google authored" in f.message for f in findings)
    # the card links the Prohibited Use Policy (copied from the base card), so no GEMMA004
    assert "GEMMA004" not in counts


def test_001_metadata_is_typed_and_kept():
    card = load_card(CARDS / "001_axolotl_out.md")
    m = card.metadata
    assert m.license == "other" and m.base_models == ["google/gemma-7b-it"] and m.library_name == "peft"
    assert list(m) == ["tags", "base_model", "model-index", "license", "pipeline_tag", "library_name"]
    assert m.model_index == [{"name": "out", "results": []}]


def test_002_ollama_page_without_front_matter():
    # Ollama page text: no front matter; the terms inlined (Last modified: February 21, 2024, line 18);
    # "fine-tuned version of HuggingFaceH4/zephyr-7b-gemma-sft-v0.1" (line 28) and no metadata at all.
    findings = check_path(CARDS / "002_ollama_discopop.md")
    assert problems(findings) == {"CARD001", "GEMMA001", "CARD010", "GEMMA005"}
    (version,) = [f for f in findings if f.rule == "GEMMA007"]
    assert version.severity == "info" and version.extra["last_modified"] == "2024-02-21" and version.line == 18


def test_003_gemma_mling_without_front_matter():
    # Hub page text: no front matter; titled "Gemma-Mling: Multilingual Gemma", "continual pretrained";
    # links the Prohibited Use Policy (so no GEMMA004), never names its base repo (so no CARD010).
    findings = check_path(CARDS / "003_gemma_mling.md")
    assert problems(findings) == {"CARD001", "GEMMA001", "GEMMA005"}


def test_raw_collapsed_card_is_reported_cleanly():
    path = CARDS / "000_raw_collapsed.md"
    findings = check_path(path)
    assert_well_formed(findings, len(path.read_text(encoding="utf-8").splitlines()))
    (no_fm,) = [f for f in findings if f.rule == "CARD001"]
    assert no_fm.line == 1 and "collapsed" in no_fm.message
    assert not any(f.rule in ("CARD002", "CARD003", "CARD004") for f in findings)
