"""Gemma Terms of Use facts: NOTICE, generations, terms versions, write_notice."""

from __future__ import annotations

import json

import pytest

from release.errors import InputError
from release.card.terms import (
    KNOWN_TERMS_VERSIONS,
    NOTICE_TEXT,
    generation_from_repo_id,
    lineage_from_config,
    notice_ok,
    states_modification,
    terms_copy_date,
    write_notice,
)


def test_notice_text_is_the_required_sentence():
    assert NOTICE_TEXT == "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms"
    assert notice_ok(f"Llama 3.1 is licensed under its license.\n{NOTICE_TEXT}\n")
    assert notice_ok("Gemma is provided under and subject to the Gemma Terms of Use\nfound at ai.google.dev/gemma/terms")
    assert not notice_ok("Gemma is provided under the Gemma Terms of Use found at ai.google.dev/gemma/terms")


@pytest.mark.parametrize(
    "repo, gen",
    [
        ("google/gemma-7b", 1), ("google/gemma-2b-it", 1), ("google/gemma-1.1-7b-it", 1), ("google/codegemma-7b", 1),
        ("google/gemma-2-9b", 2), ("google/gemma-2-27b-it", 2), ("google/paligemma2-3b-pt-224", 2),
        ("google/gemma-3-1b-it", 3), ("google/gemma-3-270m", 3), ("google/gemma-3n-E4B-it", 3),
        ("google/gemma-4-31b", 4), ("HuggingFaceH4/zephyr-7b-gemma-sft-v0.1", None), ("mistralai/Mistral-7B-v0.1", None),
    ],
)
def test_generation_from_repo_id(repo, gen):
    assert generation_from_repo_id(repo) == gen


@pytest.mark.parametrize("config, gen", [({"model_type": "gemma"}, 1), ({"model_type": "gemma2"}, 2),
                                         ({"model_type": "gemma3", "text_config": {"model_type": "gemma3_text"}}, 3),
                                         ({"model_type": "paligemma", "text_config": {"model_type": "gemma2"}}, 2),
                                         ({"model_type": "gemma4"}, 4), ({"model_type": "llama"}, None)])
def test_generation_from_config(tmp_path, config, gen):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(config))
    lin = lineage_from_config(p)
    assert lin.generation == gen and lin.is_gemma == (gen is not None)


def test_terms_copy_date_known_and_unknown():
    assert terms_copy_date("Gemma Terms of Use\n\nLast modified: March 24, 2025\n\nBy using")[:2] == ("2025-03-24", "March 24, 2025")
    iso, written, line = terms_copy_date("intro\nGemma Terms of Use Last modified: February 21, 2024 By using")
    assert iso in KNOWN_TERMS_VERSIONS and line == 2
    assert terms_copy_date("Gemma Terms of Use, see the link")[1] is None


def test_modification_statements():
    assert states_modification("The model files in this repository were modified from Gemma.")
    assert states_modification("We modified the weights by merging.")
    # the terms' own wording is an obligation, not a statement
    assert not states_modification("You must cause any modified files to carry prominent notices stating that you modified the files.")


def test_write_notice_creates_then_leaves_alone(tmp_path):
    p = write_notice(tmp_path)
    assert p == tmp_path / "NOTICE" and p.read_text() == NOTICE_TEXT + "\n"
    mtime = p.stat().st_mtime_ns
    assert write_notice(tmp_path) == p and p.stat().st_mtime_ns == mtime


def test_write_notice_keeps_existing_content(tmp_path):
    (tmp_path / "Notice.txt").write_text("Llama 3.1 is licensed under the Llama 3.1 Community License.")
    p = write_notice(tmp_path)
    assert p.name == "Notice.txt"
    assert p.read_text().splitlines() == ["Llama 3.1 is licensed under the Llama 3.1 Community License.", NOTICE_TEXT]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["Notice.txt"]  # no temp file left


def test_write_notice_bad_input(tmp_path):
    with pytest.raises(InputError, match="not a directory"):
        write_notice(tmp_path / "missing")
