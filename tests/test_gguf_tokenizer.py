"""The vocabulary inside a GGUF against the original's tokenizer.model (GGUF006 / GGUF007).

The GGUFs carry a vocabulary written by tests/gguf_fixtures.py the way llama.cpp's
``_set_vocab_sentencepiece`` does, read with the sentencepiece library; the check reads the
original with the reference's own protobuf parser, so the two sides share no code.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import gguf
import pytest

from gemma_ref.config import load_config
from release.weights.gguf_tokenizer import vocab_findings
from release.weights.gguf_verify import verify_gguf
from release.weights.golden import PromptSpec
from tests.conftest import DATA, MODELS, golden_prompts
from tests.gguf_fixtures import write_gguf

TOKENIZER = DATA / "tokenizers" / "gemma3.model"  # 512 pieces, as many as the fixtures' vocab_size
T = gguf.TokenType


@pytest.fixture
def original(model_copy) -> Path:
    """A fixture model directory with the tokenizer it was converted with."""
    d = model_copy("gemma3_1b_style")
    shutil.copy(TOKENIZER, d / "tokenizer.model")
    return d


def findings_for(original: Path, tmp_path: Path, edit=None) -> list:
    path = write_gguf(original, tmp_path / "v.gguf", "F32", tokenizer=TOKENIZER, edit_vocab=edit)
    return vocab_findings(gguf.GGUFReader(path), path, original, load_config(original))


def ids(v: dict, text: str) -> int:
    return v["tokens"].index(text)


def test_a_faithful_conversion_has_no_findings(original, tmp_path):
    assert findings_for(original, tmp_path) == []


def test_the_converters_added_token_conventions_are_accepted(original, tmp_path):
    """tokenizer_config.json's added tokens: special ones become CONTROL, others USER_DEFINED with "▁" as " "."""
    def added_tokens(v):
        for text in ("<start_of_turn>", "<end_of_turn>", "<unk>"):
            i = ids(v, text)
            v["types"][i], v["scores"][i] = T.CONTROL, -1000.0
        i = ids(v, "▁▁")  # a whitespace-run piece of the Gemma vocabulary
        v["tokens"][i], v["types"][i], v["scores"][i] = "  ", T.USER_DEFINED, -1000.0
        v["eos"] = ids(v, "<end_of_turn>")  # chat releases often stop on <end_of_turn>

    assert findings_for(original, tmp_path, added_tokens) == []


def _swap_pieces(v):
    a, b = ids(v, "the"), ids(v, "ing")
    v["tokens"][a], v["tokens"][b] = v["tokens"][b], v["tokens"][a]


def _byte_as_normal(v):
    v["types"][ids(v, "<0x41>")] = T.NORMAL


def _control_as_normal(v):
    v["types"][ids(v, "<eos>")] = T.NORMAL


def _flat_scores(v):
    v["scores"] = [0.0] * len(v["scores"])


def _truncated(v):
    for key in ("tokens", "scores", "types"):
        v[key] = v[key][:400]


@pytest.mark.parametrize("edit, expected", [
    (_swap_pieces, "2 of 512 tokens pieces differ"),
    (_byte_as_normal, "piece type that changes how llama.cpp tokenizes"),
    (_control_as_normal, "piece type that changes how llama.cpp tokenizes"),
    (_flat_scores, "other merge scores"),
    (_truncated, "the GGUF has 400 tokens, the original tokenizer 512"),
    (lambda v: v.update(model="gpt2"), "tokenizer.ggml.model is 'gpt2'"),
    (lambda v: v.update(bos=None), "bos_token_id is missing, so llama.cpp uses its default 1; the original's bos id is 2"),
    (lambda v: v.update(unk=None), "unknown_token_id is missing, so llama.cpp uses its default 0"),
    (lambda v: v.update(eos=5), "eos_token_id is 5; the original's eos id is one of [1,"),
    (lambda v: v.update(types=None), "token_type is missing"),
    (lambda v: v.update(scores=v["scores"][:-1]), "scores has 511 entries for 512 tokens"),
    (lambda v: v.update(tokens=None, scores=None, types=None), "carries no vocabulary"),
])
def test_every_kind_of_vocabulary_damage_is_an_error(original, tmp_path, edit, expected):
    found = findings_for(original, tmp_path, edit)
    errors = [f for f in found if f.rule == "GGUF006" and f.severity == "error"]
    assert errors, found
    assert any(expected in f.message for f in errors), [f.message for f in errors]


def test_the_damaged_ids_are_named(original, tmp_path):
    v_ids = {}

    def swap(v):
        _swap_pieces(v)
        v_ids.update(a=ids(v, "the"), b=ids(v, "ing"))

    (f,) = findings_for(original, tmp_path, swap)
    assert f"ids {min(v_ids.values())}, {max(v_ids.values())}" in f.message


@pytest.mark.parametrize("edit, expected", [
    (lambda v: v.update(add_bos=False), "add_bos_token is false"),
    (lambda v: v.update(add_eos=True), "add_eos_token is true"),
])
def test_tokenizer_settings_are_warnings(original, tmp_path, edit, expected):
    (f,) = findings_for(original, tmp_path, edit)
    assert (f.rule, f.severity) == ("GGUF007", "warning") and expected in f.message


def test_extra_ids_must_be_padding(original, tmp_path):
    def extra(v):  # three more ids than the original tokenizer has: padding is fine, normal pieces are not
        v["tokens"] += ["[PAD512]", "xyz", "zyx"]
        v["scores"] += [-10000.0, 0.0, 0.0]
        v["types"] += [T.UNUSED, T.NORMAL, T.NORMAL]

    (f,) = findings_for(original, tmp_path, extra)
    assert (f.rule, f.severity) == ("GGUF007", "warning")
    assert "2 tokens past the original's 512 are normal pieces, not padding: ids 513, 514" in f.message


def test_no_tokenizer_in_the_original_is_said(tmp_path):
    d = MODELS / "gemma3_1b_style"  # ships no tokenizer.model
    path = write_gguf(d, tmp_path / "v.gguf", "F32", tokenizer=TOKENIZER)
    (f,) = vocab_findings(gguf.GGUFReader(path), path, d, load_config(d))
    assert (f.rule, f.severity) == ("GGUF007", "info") and "no tokenizer.model" in f.message


def test_verify_reports_a_damaged_vocabulary_and_fails(original, tmp_path):
    path = write_gguf(original, tmp_path / "v.gguf", "F32", tokenizer=TOKENIZER, edit_vocab=_swap_pieces)
    prompts = [PromptSpec(f"p{i}", ids=ids_.tolist()) for i, (ids_, _) in enumerate(golden_prompts("gemma3_1b_style"))]
    report = verify_gguf(path, original, prompts)
    assert [f.rule for f in report.findings if f.severity == "error"] == ["GGUF006"]
    assert report.max_abs_diff < 1e-4  # the weights are faithful: only the vocabulary gives it away


def test_cli_verify_shows_the_vocabulary_finding_and_exits_1(cli, original, tmp_path):
    path = write_gguf(original, tmp_path / "v.gguf", "F32", tokenizer=TOKENIZER, edit_vocab=lambda v: v.update(bos=None))
    r = cli("verify", path, "--against", original)  # text prompts: tokenized with the original's tokenizer.model
    assert r.code == 1, r.out + r.err
    assert "GGUF006" in r.out and "bos_token_id is missing" in r.out
    ok = write_gguf(original, tmp_path / "ok.gguf", "F32", tokenizer=TOKENIZER)
    assert cli("verify", ok, "--against", original).code == 0
