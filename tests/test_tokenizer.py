"""gemma_ref.Tokenizer: loading, special ids, BOS handling, fit to a model, chat templates, the CLI."""

from __future__ import annotations

import json
import shutil
import sys
import warnings

import pytest

from gemma_ref.errors import InputError
from gemma_ref.tokenizer import (
    MAX_EMBEDDING_PADDING,
    DoubledBOSWarning,
    Tokenizer,
    chat_template_family,
    printable_piece,
)
from make_tokenizers import OUT_DIR, corpus_lines

GEMMA = OUT_DIR / "gemma.model"  # Gemma 1/2 style
GEMMA3 = OUT_DIR / "gemma3.model"  # with Gemma 3's image pieces
BACKENDS = ("sentencepiece", "reference")


@pytest.fixture(scope="module", params=BACKENDS)
def tok(request) -> Tokenizer:
    return Tokenizer(GEMMA, backend=request.param)


@pytest.fixture(scope="module", params=BACKENDS)
def tok3(request) -> Tokenizer:
    return Tokenizer(GEMMA3, backend=request.param)


# --- loading ---------------------------------------------------------------------------------------


def test_loads_from_a_model_directory(tmp_path):
    shutil.copy(GEMMA, tmp_path / "tokenizer.model")
    t = Tokenizer(tmp_path)
    assert t.path == tmp_path / "tokenizer.model" and t.vocab_size == 1200


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_tokenizer_is_a_clear_error(tmp_path, backend):
    with pytest.raises(InputError, match=r"no tokenizer.model \(nor tokenizer.json\) in this directory"):
        Tokenizer(tmp_path, backend=backend)
    (tmp_path / "tokenizer.json").write_text("{}")  # read when there is no tokenizer.model (test_tokenizer_json.py)
    with pytest.raises(InputError, match=r"tokenizer.json: no \"model\" object"):
        Tokenizer(tmp_path, backend=backend)
    with pytest.raises(InputError, match="no such file"):
        Tokenizer(tmp_path / "nope.model", backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("data", [b"", b"not a model at all \xff\xfe", GEMMA.read_bytes()[:5000]])
def test_corrupt_tokenizer_is_a_clear_error(tmp_path, backend, data):
    path = tmp_path / "tokenizer.model"
    path.write_bytes(data)
    with pytest.raises(InputError) as e:
        Tokenizer(path, backend=backend)
    assert str(path) in str(e.value)


def test_unknown_backend():
    with pytest.raises(InputError, match="unknown tokenizer backend 'fast'"):
        Tokenizer(GEMMA, backend="fast")


# --- special ids -------------------------------------------------------------------------------------


def test_special_ids_by_name(tok, tok3):
    assert tok.special_ids == {"pad": 0, "eos": 1, "bos": 2, "unk": 3, "start_of_turn": 5, "end_of_turn": 6}
    assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.special_id("start_of_turn") == 5
    with pytest.raises(InputError, match="no 'start_of_image' piece"):
        tok.special_id("start_of_image")
    assert {k: tok3.special_ids[k] for k in ("start_of_image", "end_of_image", "image_soft_token")} == {
        "start_of_image": 7, "end_of_image": 8, "image_soft_token": 9}


# --- encode / decode -----------------------------------------------------------------------------------


def test_encode_adds_bos_and_eos_as_asked(tok):
    body = tok.encode("Hello world", bos=False)
    assert tok.encode("Hello world") == [2, *body]
    assert tok.encode("Hello world", eos=True) == [2, *body, 1]
    assert tok.encode("", bos=True) == [2] and tok.encode("", bos=False) == []
    assert tok.pieces(tok.encode("Hello")) == ["<bos>", "Hello"]  # no dummy-prefix "▁Hello"


def test_decode_drops_control_ids_and_round_trips(tok):
    for text in corpus_lines(n_lines=100) + ["  two  spaces\n\n\n\ttab", "☃ 🙂 한국어"]:
        assert tok.decode(tok.encode(text, eos=True)) == text


def test_backends_agree():
    lib, ref = Tokenizer(GEMMA3), Tokenizer(GEMMA3, backend="reference")
    texts = corpus_lines(seed=5, n_lines=300)
    assert [lib.encode(t) for t in texts] == [ref.encode(t) for t in texts]
    assert [lib.pieces(lib.encode(t)) for t in texts[:20]] == [ref.pieces(ref.encode(t)) for t in texts[:20]]


def test_text_starting_with_bos_warns(tok):
    with pytest.warns(DoubledBOSWarning, match="BOS would be doubled"):
        ids = tok.encode("<bos>Hi")
    assert ids[0] == 2 and ids.count(2) == 1  # the characters "<bos>" are text, never the id
    with pytest.warns(DoubledBOSWarning, match="not as the BOS id"):
        tok.encode("<bos>Hi", bos=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok.encode("Hi <bos>")


def test_lone_surrogates_are_refused(tok):
    with pytest.raises(InputError, match="lone surrogate U\\+DC80"):
        tok.encode("ok \udc80")


def test_bad_ids_are_refused(tok):
    with pytest.raises(InputError, match="token id 1200 is out of range"):
        tok.decode([2, 1200])
    with pytest.raises(InputError, match="out of range"):
        tok.pieces([-1])
    with pytest.raises(InputError, match="integers"):
        tok.decode([1.5])


def test_numpy_ids_decode(tok):
    np = pytest.importorskip("numpy")
    ids = np.array(tok.encode("Hello world"), dtype=np.int64)
    assert tok.decode(ids) == "Hello world"


# --- fit to a model ---------------------------------------------------------------------------------


def test_check_vocab_rule(tok):
    tok.check_vocab(1200)  # exact
    tok.check_vocab(1200 + 64)  # padded like Gemma 3 (262144 pieces, 262208 rows)
    tok.check_vocab(1200 + MAX_EMBEDDING_PADDING)
    with pytest.raises(InputError, match="1199 rows"):
        tok.check_vocab(1199)
    with pytest.raises(InputError, match="more than padding"):
        tok.check_vocab(1200 + MAX_EMBEDDING_PADDING + 1)


def test_check_vocab_with_real_gemma_sizes(monkeypatch):
    t = Tokenizer(GEMMA)
    monkeypatch.setattr(t, "vocab_size", 262144)
    t.check_vocab(262208)  # Gemma 3
    monkeypatch.setattr(t, "vocab_size", 256000)
    t.check_vocab(256000)  # Gemma 1 and 2
    with pytest.raises(InputError, match="6144 unused rows"):
        t.check_vocab(262144)  # a Gemma 2 tokenizer with a Gemma 3 model


# --- chat templates -----------------------------------------------------------------------------------


def expected(tok: Tokenizer, rendered: str) -> list[int]:
    """What encoding the rendered template text gives (the text after the leading <bos>)."""
    assert rendered.startswith("<bos>")
    return [tok.bos_id, *tok.encode(rendered[len("<bos>"):], bos=False)]


CONVERSATION = [
    {"role": "user", "content": "  Hello there \n"},
    {"role": "assistant", "content": "Hi! How can I help?"},
    {"role": "user", "content": "Tell me about 42."},
]


@pytest.mark.parametrize("generation", [1, 2, "gemma2"])
def test_gemma_1_and_2_template(tok, generation):
    ids = tok.apply_chat_template(CONVERSATION, generation)
    assert ids == expected(tok, "<bos><start_of_turn>user\nHello there<end_of_turn>\n"
                                "<start_of_turn>model\nHi! How can I help?<end_of_turn>\n"
                                "<start_of_turn>user\nTell me about 42.<end_of_turn>\n<start_of_turn>model\n")
    assert ids[:2] == [2, 5] and ids.count(5) == 4 and ids.count(6) == 3
    no_prompt = tok.apply_chat_template(CONVERSATION, generation, add_generation_prompt=False)
    assert ids[: len(no_prompt)] == no_prompt and ids[len(no_prompt)] == 5


def test_gemma_1_and_2_have_no_system_role(tok):
    with pytest.raises(InputError, match="no system role"):
        tok.apply_chat_template([{"role": "system", "content": "Be brief."}, *CONVERSATION], 2)


def test_gemma3_folds_the_system_text_into_the_first_user_turn(tok3):
    messages = [{"role": "system", "content": "Be brief. "}, *CONVERSATION]
    ids = tok3.apply_chat_template(messages)  # generation from the vocabulary: it has image pieces
    assert ids == expected(tok3, "<bos><start_of_turn>user\nBe brief. \n\nHello there<end_of_turn>\n"
                                 "<start_of_turn>model\nHi! How can I help?<end_of_turn>\n"
                                 "<start_of_turn>user\nTell me about 42.<end_of_turn>\n<start_of_turn>model\n")
    assert ids == tok3.apply_chat_template(messages, generation=3)


def test_gemma3_text_parts(tok3):
    parts = [{"role": "user", "content": [{"type": "text", "text": " a "}, {"type": "text", "text": "b"}]}]
    assert tok3.apply_chat_template(parts) == expected(tok3, "<bos><start_of_turn>user\nab<end_of_turn>\n<start_of_turn>model\n")
    with pytest.raises(InputError, match="only text content.*'image'"):
        tok3.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}])


@pytest.mark.parametrize("messages, message", [
    ([{"role": "assistant", "content": "hi"}], "must alternate"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "must alternate"),
    ("hello", "list of"),
    ([{"content": "no role"}], "'role'"),
    ([{"role": "user", "content": 3}], "string or a list"),
])
def test_bad_conversations(tok, messages, message):
    with pytest.raises(InputError, match=message):
        tok.apply_chat_template(messages, 2)


def test_template_family_names():
    assert {chat_template_family(g) for g in (1, 2, "1", "gemma", "gemma2", "Gemma-2", "codegemma")} == {"gemma"}
    assert {chat_template_family(g) for g in (3, "gemma3", "gemma3_text", "gemma-3")} == {"gemma3"}
    with pytest.raises(InputError, match="no chat template for Gemma generation 5"):
        chat_template_family(5)


def test_chat_template_missing_markers(tmp_path):
    ref = OUT_DIR / "dummy_prefix.model"
    with pytest.raises(InputError, match="no 'start_of_turn' piece"):
        Tokenizer(ref).apply_chat_template(CONVERSATION, 2)


# Hugging Face's chat templates (tokenizer_config.json of google/gemma-2-2b-it and google/gemma-3-1b-it),
# rendered with jinja2 when it is installed: the ids must equal encoding the rendered text.
HF_GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
HF_GEMMA3_TEMPLATE = (
    "{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n{%- endif -%}\n{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n    {%- if (message['role'] == 'assistant') -%}\n        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n        {%- set role = message['role'] -%}\n    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n        {%- endfor -%}\n    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n    {%- endif -%}\n    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n{%- if add_generation_prompt -%}\n    {{'<start_of_turn>model\n'}}\n{%- endif -%}\n"
)


@pytest.mark.parametrize("family, system", [("gemma", None), ("gemma3", None), ("gemma3", "You are terse."),
                                            ("gemma3", "  padded system \n")])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_matches_hugging_face_templates(tok3, family, add_generation_prompt, system):
    jinja2 = pytest.importorskip("jinja2")
    messages = ([{"role": "system", "content": system}] if system else []) + CONVERSATION + [
        {"role": "assistant", "content": "\t42 is <b>the</b> answer.\n\n"}, {"role": "user", "content": "Thanks 🙂"}]
    env = jinja2.Environment()
    env.globals["raise_exception"] = lambda m: (_ for _ in ()).throw(ValueError(m))
    template = env.from_string(HF_GEMMA_TEMPLATE if family == "gemma" else HF_GEMMA3_TEMPLATE)
    rendered = template.render(messages=messages, bos_token="<bos>", add_generation_prompt=add_generation_prompt)
    got = tok3.apply_chat_template(messages, 2 if family == "gemma" else 3, add_generation_prompt)
    assert got == expected(tok3, rendered)


# --- printing pieces --------------------------------------------------------------------------------


def test_printable_piece():
    assert printable_piece("\n\n") == "\\n\\n"
    assert printable_piece("▁the") == "▁the"
    assert printable_piece("a\\b\x00\t") == "a\\\\b\\x00\\t"
    assert printable_piece("안녕") == "안녕"


# --- the CLI: gemma-release tokenize ------------------------------------------------------------------


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from release import cli

    monkeypatch.setattr(sys, "argv", ["gemma-release", *args])
    with pytest.raises(SystemExit) as e:
        cli.main()
    captured = capsys.readouterr()
    return e.value.code, captured.out, captured.err


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_tokenize_json(monkeypatch, capsys, tmp_path, backend):
    shutil.copy(GEMMA, tmp_path / "tokenizer.model")
    code, out, _ = run_cli(monkeypatch, capsys, "tokenize", str(tmp_path), "Hello  world\n", "--json", "--backend", backend)
    assert code == 0
    data = json.loads(out)
    t = Tokenizer(GEMMA)
    assert data["ids"] == t.encode("Hello  world\n") and data["pieces"] == t.pieces(data["ids"])
    assert data["pieces"][:3] == ["<bos>", "Hello", "▁▁"]


def test_cli_tokenize_table_no_bos_and_chat(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "tokenize", str(GEMMA), "a\n\nb", "--no-bos")
    assert code == 0 and "<bos>" not in out and "\\n\\n" in out and "3 tokens" in out
    code, out, _ = run_cli(monkeypatch, capsys, "tokenize", str(GEMMA), "Hi", "--chat", "--json")
    t = Tokenizer(GEMMA)
    assert code == 0 and json.loads(out)["ids"] == t.apply_chat_template([{"role": "user", "content": "Hi"}])


def test_cli_tokenize_warns_on_doubled_bos(monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "tokenize", str(GEMMA), "<bos>Hi")
    assert code == 0 and "warning:" in err and "doubled" in err


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_tokenize_bad_input_exits_2(monkeypatch, capsys, tmp_path, backend):
    code, out, err = run_cli(monkeypatch, capsys, "tokenize", str(tmp_path), "x", "--backend", backend)
    assert code == 2 and "no tokenizer.model" in err and "Traceback" not in err
    (tmp_path / "tokenizer.model").write_bytes(b"\x0a\xff\xff\xff")
    code, out, err = run_cli(monkeypatch, capsys, "tokenize", str(tmp_path), "x", "--backend", backend)
    assert code == 2 and "error:" in err and "Traceback" not in err
