"""Gemma's tokenizer read from a tokenizer.json (what transformers 5 saves instead of tokenizer.model).

The files under tests/data/tokenizers/*.json/ are transformers 5.24's own conversion of the
SentencePiece fixtures next to them (tests/make_tokenizer_json.py). Oracles: the sentencepiece
library on the original tokenizer.model, and the tokenizers library (which defines the format) on
the tokenizer.json itself. The real 262k vocabulary is tested in test_real_model.py.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path

import pytest
import sentencepiece as spm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gemma_ref.errors import InputError
from gemma_ref.spm_reference import PieceType, parse_model_proto
from gemma_ref.tokenizer import Tokenizer, has_tokenizer, read_model_proto
from make_tokenizers import OUT_DIR

CASES = ("gemma", "gemma3")
BACKENDS = ("sentencepiece", "reference")
CONTROL_TEXT = ("<pad>", "<bos>", "<eos>", "<unk>")
# tokenizer.json cannot tell a CONTROL <mask> from a USER_DEFINED one (transformers flags both special, and
# names it mask_token); gemma_ref reads it as USER_DEFINED, what the real Gemma 3 vocabulary has (its 262,144
# types are compared exactly in test_real_model.py). These fixtures made it CONTROL: texts holding it differ.
AMBIGUOUS = "<mask>"


def strings(sp: spm.SentencePieceProcessor, n: int = 1500, seed: int = 3) -> list[str]:
    """Varied text: the vocabulary's own pieces glued together, scripts, whitespace runs, specials, markup."""
    rng = random.Random(seed)
    pieces = [sp.id_to_piece(i).replace("\u2581", " ") for i in range(sp.get_piece_size())]
    extra = ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<mask>", "<unused3>", "<bos>", "<eos>",
             "\n\n", "   ", "\t", "é", "ß", "日本", "🤖", "12345", "a b", "<", ">", "\u00a0", "\u3000"]
    out = []
    while len(out) < n:
        k = rng.randint(1, 12)
        out.append("".join(rng.choice(pieces if rng.random() < 0.7 else extra) for _ in range(k)))
    return out


@pytest.fixture(scope="module", params=CASES)
def case(request) -> tuple[str, Path, spm.SentencePieceProcessor]:
    name = request.param
    return name, OUT_DIR / f"{name}.json", spm.SentencePieceProcessor(model_file=str(OUT_DIR / f"{name}.model"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_ids_equal_sentencepiece_on_the_original_model(case, backend):
    name, json_dir, sp = case
    tok = Tokenizer(json_dir, backend=backend)
    assert tok.path.name == "tokenizer.json" and tok.vocab_size == sp.get_piece_size()
    texts = [t for t in strings(sp) if AMBIGUOUS not in t]
    bad = [t for t in texts if tok.encode(t, bos=False) != sp.encode(t)]
    assert len(texts) > 1000 and not bad, bad[:3]
    ids = [sp.encode(t) for t in texts[:300]]
    assert all(tok.decode(i) == sp.decode(i) for i in ids)


def test_every_piece_has_its_original_type_and_specials(case):
    name, json_dir, sp = case
    ours = parse_model_proto(read_model_proto(json_dir))
    original = parse_model_proto((OUT_DIR / f"{name}.model").read_bytes())
    differ = [(p.text, p.type, q.type) for p, q in zip(ours.pieces, original.pieces) if (p.text, p.type) != (q.text, q.type)]
    assert len(ours.pieces) == len(original.pieces)
    assert differ == [(AMBIGUOUS, PieceType.USER_DEFINED, PieceType.CONTROL)]
    assert {PieceType.CONTROL, PieceType.USER_DEFINED, PieceType.BYTE} <= {p.type for p in ours.pieces}
    tok, ref = Tokenizer(json_dir), Tokenizer(OUT_DIR / f"{name}.model")
    assert tok.special_ids == ref.special_ids


def test_ids_equal_the_tokenizers_library_where_it_follows_sentencepiece(case):
    """Two places where the tokenizers library departs from the SentencePiece model it was converted from
    (gemma_ref follows SentencePiece, Gemma's reference): it turns the text "<bos>" into the BOS id, and
    it matches user-defined pieces in the raw text, so a whitespace piece written "▁▁▁" never matches
    spaces (these fixtures have such pieces; the real Gemma 3 vocabulary agrees on all 2,738 plain strings)."""
    tokenizers = pytest.importorskip("tokenizers")
    name, json_dir, sp = case
    hf = tokenizers.Tokenizer.from_file(str(json_dir / "tokenizer.json"))
    tok = Tokenizer(json_dir)
    texts = strings(sp, seed=4)
    plain = [t for t in texts if not any(c in t for c in CONTROL_TEXT) and "  " not in t]
    assert len(plain) > 500
    assert [tok.encode(t, bos=False) for t in plain] == [hf.encode(t, add_special_tokens=False).ids for t in plain]
    assert hf.encode("<bos>", add_special_tokens=False).ids == [2] != tok.encode("<bos>", bos=False)


def test_tokenizer_model_wins_when_both_are_there(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(OUT_DIR / "gemma3.json", d)
    assert Tokenizer(d).path.name == "tokenizer.json" and has_tokenizer(d)
    shutil.copy(OUT_DIR / "gemma3.model", d / "tokenizer.model")
    assert Tokenizer(d).path.name == "tokenizer.model"
    assert not has_tokenizer(tmp_path)


def test_tokens_a_fine_tune_added(tmp_path):
    """tokenizer.add_tokens(["<|im_start|>", "<|im_end|>"], special=...) and eos_token set to one of them."""
    d = tmp_path / "m"
    shutil.copytree(OUT_DIR / "gemma3.json", d)
    data = json.loads((d / "tokenizer.json").read_text())
    n = len(data["model"]["vocab"])
    data["added_tokens"] += [{"id": n, "content": "<|im_start|>", "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": False},
                             {"id": n + 1, "content": "<|im_end|>", "single_word": False, "lstrip": False,
                              "rstrip": False, "normalized": False, "special": True}]
    (d / "tokenizer.json").write_text(json.dumps(data))
    config = json.loads((d / "tokenizer_config.json").read_text())
    config["eos_token"] = "<|im_end|>"
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    tok = Tokenizer(d)
    assert tok.vocab_size == n + 2 and tok.eos_id == n + 1
    assert tok.encode("<|im_start|>user", bos=False)[0] == n  # matched verbatim, like <start_of_turn>
    assert n + 1 not in tok.encode("<|im_end|>", bos=False)  # CONTROL: never made from text
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(str(d / "tokenizer.json"))
    assert tok.encode("<|im_start|>user hi", bos=False) == hf.encode("<|im_start|>user hi", add_special_tokens=False).ids


def test_model_directory_with_only_tokenizer_json_verifies_text_prompts(tmp_path, cli):
    """golden with the built-in text prompts, then verify re-tokenizes them: tokens match."""
    d = tmp_path / "model"
    shutil.copytree(Path(__file__).parent / "data" / "models" / "gemma3_1b_style", d)
    for f in (OUT_DIR / "gemma3.json").iterdir():
        shutil.copy(f, d / f.name)
    assert not (d / "tokenizer.model").exists()
    golden = tmp_path / "g.safetensors"
    r = cli("golden", d, "-o", golden)
    assert r.code == 0, r.err
    r = cli("verify", d, "-g", golden, "--json")
    assert r.code == 0, r.out + r.err
    prompts = json.loads(r.out)["prompts"]
    assert prompts and all(p["tokens_match"] is True for p in prompts)


def _edited(tmp_path: Path, edit) -> Path:
    d = tmp_path / "t"
    shutil.copytree(OUT_DIR / "gemma3.json", d)
    data = json.loads((d / "tokenizer.json").read_text())
    edit(data)
    (d / "tokenizer.json").write_text(json.dumps(data) if not isinstance(data, str) else data)
    return d


def _dup_id(t):
    t["model"]["vocab"]["zzz"] = 7


@pytest.mark.parametrize("edit, message", [
    (lambda t: t["model"].update(type="Unigram"), "Gemma's tokenizer is BPE"),
    (lambda t: t.update(normalizer={"type": "NFKC"}), "normalizer"),
    (lambda t: t.update(normalizer={"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"}, t["normalizer"]]}), "normalizer"),
    (lambda t: t.update(pre_tokenizer={"type": "ByteLevel"}), "pre_tokenizer"),
    (_dup_id, "ids must be"),
    (lambda t: t["model"]["merges"].append(["q", "qqqqq"]), "merges"),
    (lambda t: t["model"]["merges"].append(7), "merges"),
    (lambda t: t["added_tokens"].append({"id": 999, "content": "<x>"}), "without a gap"),
    (lambda t: t["added_tokens"].append({"id": 3, "content": "<nope>"}), "not the vocabulary's piece"),
    (lambda t: t["model"].update(unk_token=None) or t["model"]["vocab"].update({"<unk>": 10**6}), "ids must be"),
    (lambda t: t.pop("model"), "no \"model\""),
])
def test_bad_tokenizer_json_is_a_clear_error(tmp_path, edit, message):
    d = _edited(tmp_path, edit)
    with pytest.raises(InputError, match=message) as e:
        Tokenizer(d)
    assert "tokenizer.json" in str(e.value)


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b"\xff\xfe{}", b"[" * 100_000 + b"]" * 100_000])
def test_malformed_json_is_refused_fast(tmp_path, data):
    (tmp_path / "tokenizer.json").write_bytes(data)
    t = time.perf_counter()
    with pytest.raises(InputError, match="tokenizer.json"):
        Tokenizer(tmp_path)
    assert time.perf_counter() - t < 2


def test_oversized_tokenizer_json_is_refused_before_reading(tmp_path, monkeypatch):
    import gemma_ref.tokenizer_json as tj

    monkeypatch.setattr(tj, "MAX_JSON_BYTES", 1000)
    shutil.copytree(OUT_DIR / "gemma3.json", tmp_path / "t")
    with pytest.raises(InputError, match="more than the 1,000"):
        Tokenizer(tmp_path / "t")


def test_cli_tokenize_reads_tokenizer_json_and_exits_2_on_a_bad_one(cli, tmp_path):
    r = cli("tokenize", OUT_DIR / "gemma3.json", "Hello world", "--json")
    assert r.code == 0, r.err
    want = spm.SentencePieceProcessor(model_file=str(OUT_DIR / "gemma3.model")).encode("Hello world")
    assert json.loads(r.out)["ids"][1:] == want
    d = _edited(tmp_path, lambda t: t["model"].update(type="WordPiece"))
    r = cli("tokenize", d, "Hello", "--json")
    assert r.code == 2 and "tokenizer.json" in r.err and "BPE" in r.err


# --- both files shipped: TOKENS002 when they are two tokenizers ---------------------------------------------


def _model_with_both(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    shutil.copytree(Path(__file__).parent / "data" / "models" / "gemma3_1b_style", d)
    for f in (OUT_DIR / "gemma3.json").iterdir():
        shutil.copy(f, d / f.name)
    shutil.copy(OUT_DIR / "gemma3.model", d / "tokenizer.model")
    return d


def test_verify_warns_when_tokenizer_json_and_model_disagree(tmp_path, cli):
    d = _model_with_both(tmp_path)
    golden = tmp_path / "g.safetensors"
    assert cli("golden", d, "-o", golden).code == 0
    r = cli("verify", d, "-g", golden, "--json")
    assert r.code == 0 and not [f for f in json.loads(r.out)["findings"] if f["rule"] == "TOKENS002"]

    # A fine-tune added a token to tokenizer.json (what transformers saves) but shipped the base's tokenizer.model.
    data = json.loads((d / "tokenizer.json").read_text())
    n = len(data["model"]["vocab"])
    data["added_tokens"].append({"id": n, "content": "<|im_start|>", "special": False})
    (d / "tokenizer.json").write_text(json.dumps(data))
    r = cli("verify", d, "-g", golden, "--json")
    found = [f for f in json.loads(r.out)["findings"] if f["rule"] == "TOKENS002"]
    assert r.code == 0 and len(found) == 1 and found[0]["severity"] == "warning"
    assert "'<|im_start|>'" in found[0]["message"] and found[0]["path"].endswith("tokenizer.json")

    (d / "tokenizer.json").write_text("{")  # unreadable next to a good tokenizer.model: still verified, and said
    r = cli("verify", d, "-g", golden, "--json")
    found = [f for f in json.loads(r.out)["findings"] if f["rule"] == "TOKENS002"]
    assert r.code == 0 and len(found) == 1 and "cannot be read" in found[0]["message"]


def test_renamed_piece_is_a_difference(tmp_path):
    from gemma_ref.tokenizer_json import differences

    d = _model_with_both(tmp_path)
    assert differences((d / "tokenizer.model").read_bytes(), d / "tokenizer.json") == []
    data = json.loads((d / "tokenizer.json").read_text())
    for tok in data["added_tokens"]:
        if tok["content"] == "<start_of_turn>":
            tok["content"] = "<|turn>"
            data["model"]["vocab"]["<|turn>"] = data["model"]["vocab"].pop("<start_of_turn>")
    (d / "tokenizer.json").write_text(json.dumps(data))
    found = differences((d / "tokenizer.model").read_bytes(), d / "tokenizer.json")
    assert len(found) == 1 and "1 piece(s) differ" in found[0] and "'<|turn>'" in found[0]


# --- hostile input: any mutation of a real tokenizer.json is read or refused, nothing else ---------------------

_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
                     max_leaves=12)
_BASE = json.loads((OUT_DIR / "gemma3.json" / "tokenizer.json").read_text())


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in list(node.items())[:40]:
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node[:40]):
            yield from _paths(v, prefix + (i,))


_ALL_PATHS = [p for p in _paths(_BASE) if p]


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 150)), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(_ALL_PATHS), value=_JSON)
def test_mutated_tokenizer_json_is_read_or_refused(tmp_path_factory, where, value):
    import copy

    data = copy.deepcopy(_BASE)
    node = data
    for k in where[:-1]:
        node = node[k]
    node[where[-1]] = value
    d = tmp_path_factory.mktemp("mut")
    (d / "tokenizer.json").write_text(json.dumps(data))
    t = time.perf_counter()
    try:
        Tokenizer(d).encode("Hello <start_of_turn>user\n  wörld 🤖", bos=True)
    except InputError as e:  # refused when read, or (no <bos> left) when asked for a BOS
        assert "tokenizer.json" in str(e)
    assert time.perf_counter() - t < 2


def test_oversized_tokenizer_model_is_refused_before_reading(tmp_path, monkeypatch):
    import gemma_ref.tokenizer as T

    monkeypatch.setattr(T, "MAX_MODEL_BYTES", 1000)
    shutil.copy(OUT_DIR / "gemma3.model", tmp_path / "tokenizer.model")
    with pytest.raises(InputError, match="a tokenizer.model is a few MB"):
        Tokenizer(tmp_path)
