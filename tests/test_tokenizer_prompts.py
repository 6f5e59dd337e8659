"""Text prompts for golden and verify: the prompts file, the built-in set, ids from the model's tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from gemma_ref.errors import InputError
from gemma_ref.tokenizer import Tokenizer
from make_tokenizers import OUT_DIR
from release.weights.golden import PromptSpec
from release.weights.prompts import (
    DEFAULT_PROMPTS,
    default_prompts,
    encode_golden_prompt,
    encode_prompts,
    load_prompts,
    prompt_specs,
    tokenize_prompt_specs,
    wants_generation_prompt,
)

DATA = Path(__file__).resolve().parent / "data"
GEMMA3 = OUT_DIR / "gemma3.model"  # 512 pieces, like the tiny checkpoints' vocabulary


# --- the prompts file --------------------------------------------------------------------------------


def test_yaml_file_with_text_and_chat(tmp_path):
    path = tmp_path / "prompts.yaml"
    path.write_text(
        "prompts:\n"
        "  - The capital of France is\n"
        "  - name: german\n    text: \"Die Straße  heißt\\n\"\n"
        "  - name: chat\n    messages:\n      - {role: user, content: Hi}\n",
        encoding="utf-8",
    )
    prompts = load_prompts(path)
    assert [p.name for p in prompts] == ["prompt-1", "german", "chat"]
    assert prompts[1].text == "Die Straße  heißt\n"  # verbatim: no stripping
    assert prompts[2].messages == [{"role": "user", "content": "Hi"}] and prompts[2].ids is None


def test_json_file_as_a_bare_list(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(["one", {"name": "two", "text": "2"}]), encoding="utf-8")
    assert [(p.name, p.text) for p in load_prompts(path)] == [("prompt-1", "one"), ("two", "2")]


def test_default_prompts_are_a_valid_prompts_file(tmp_path):
    path = tmp_path / "defaults.yaml"
    path.write_text(yaml.safe_dump({"prompts": DEFAULT_PROMPTS}, allow_unicode=True), encoding="utf-8")
    assert load_prompts(path) == default_prompts() == prompt_specs(None)
    names = [p.name for p in default_prompts()]
    assert names == ["english", "german", "korean", "chinese", "code", "numbers", "whitespace", "chat"]


@pytest.mark.parametrize("content, message", [
    ("prompts: []\n", "/prompts: \\[\\] should be non-empty"),
    ("- name: x\n  text: hi\n  extra: 1\n", "/0"),
    ("- name: chat\n  messages: [{role: robot, content: hi}]\n", "/0/messages/0/role: 'robot' is not one of"),
    ("- {name: 'bad name', text: hi}\n", "/0/name"),
    ("- {name: a, text: x}\n- {name: a, text: y}\n", "prompts 1 and 2 are both named 'a'"),
    ("prompts: [unclosed\n", "not valid YAML.*line"),
    ("42\n", "not a valid prompts file"),
])
def test_bad_prompts_files(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message) as e:
        load_prompts(path)
    assert str(path) in str(e.value)


def test_bad_json_and_missing_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("[1,", encoding="utf-8")
    with pytest.raises(InputError, match="not valid JSON.*line 1"):
        load_prompts(path)
    with pytest.raises(InputError, match="prompts file not found"):
        load_prompts(tmp_path / "missing.yaml")


# --- ids ----------------------------------------------------------------------------------------------


def test_encode_prompts():
    tok = Tokenizer(GEMMA3)
    specs = default_prompts() + [
        PromptSpec("done", messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]),
        PromptSpec("given", ids=[2, 10, 11]),
    ]
    encoded = dict(encode_prompts(tok, specs, generation=3))
    assert encoded["english"] == tok.encode("The capital of France is")
    assert encoded["chat"] == tok.apply_chat_template([{"role": "user", "content": "Write a haiku about the sea."}], 3)
    generation_prompt = [tok.special_id("start_of_turn"), *tok.encode("model\n", bos=False)]
    assert encoded["chat"][-len(generation_prompt):] == generation_prompt
    assert encoded["done"][-1] == tok.encode("\n", bos=False)[-1]  # no generation prompt after the model's turn
    assert encoded["given"] == [2, 10, 11]
    assert all(ids[0] == tok.bos_id and ids.count(tok.bos_id) == 1 for name, ids in encoded.items() if name != "given")


def test_generation_prompt_rule():
    assert wants_generation_prompt([{"role": "user", "content": "x"}])
    assert not wants_generation_prompt([{"role": "user", "content": "x"}, {"role": "model", "content": "y"}])


# --- golden and verify with text prompts (a tiny checkpoint with a tokenizer of its vocabulary) ----------


@pytest.fixture
def model_dir(tmp_path):
    src = DATA / "models" / "gemma3_1b_style"
    if not src.is_dir():
        pytest.skip("tiny checkpoint not present")
    d = tmp_path / "model"
    shutil.copytree(src, d)
    shutil.copy(GEMMA3, d / "tokenizer.model")
    return d


def test_golden_records_ids_and_verify_catches_a_tokenizer_change(model_dir, tmp_path):
    from release.weights.golden import make_golden
    from release.weights.verify import verify_model

    golden_path = tmp_path / "golden.safetensors"
    golden = make_golden(model_dir, golden_path, prompt_specs(None))
    tok = Tokenizer(model_dir)
    for gp, (name, ids) in zip(golden.prompts, encode_prompts(tok, default_prompts(), 3)):
        assert gp.name == name and gp.ids.tolist() == ids
    assert encode_golden_prompt(golden, model_dir) == {p.name: True for p in golden.prompts}

    report = verify_model(model_dir, golden_path)
    assert report.ok and all(p.tokens_match for p in report.prompts)

    # A tokenizer that adds a dummy-prefix space (the classic port bug), same vocabulary size:
    # verify reports the ids as their own finding, not as a logit mismatch.
    data = GEMMA3.read_bytes() + b"\x1a\x02\x18\x01"  # normalizer_spec { add_dummy_prefix: true }, merged
    (model_dir / "tokenizer.model").write_bytes(data)
    assert Tokenizer(model_dir).encode("The", bos=False) != tok.encode("The", bos=False)
    report = verify_model(model_dir, golden_path)
    rules = {f.rule for f in report.findings}
    assert "TOKENS001" in rules and not any(r.startswith("LOGITS") for r in rules)


def test_tokenizer_that_does_not_fit_the_model_is_refused(model_dir):
    shutil.copy(OUT_DIR / "gemma.model", model_dir / "tokenizer.model")  # 1200 pieces, 512 rows
    with pytest.raises(InputError, match="1200 pieces but the model's embedding only 512 rows"):
        tokenize_prompt_specs(default_prompts(), model_dir)
