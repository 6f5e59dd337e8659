"""Gemma's tokenizer from a Hugging Face ``tokenizer.json``, when no ``tokenizer.model`` came with it.

transformers 5 saves a Gemma tokenizer as ``tokenizer.json`` + ``tokenizer_config.json`` only, so
many fine-tunes ship no SentencePiece model. Their ``tokenizer.json`` is the one transformers
converted from Gemma's SentencePiece BPE model, and it converts back without loss:

=====================  ==================================================================================
tokenizer.json         SentencePiece
=====================  ==================================================================================
``model.vocab``        the pieces, by id (ids must be 0..n-1, each once)
``model.merges``       BPE priority: SentencePiece merges the adjacent pair whose joined piece scores
                       highest, the tokenizers library the pair listed first. A piece's score is minus
                       the rank of the first merge that makes it, so both pick the same pair. Pieces
                       no merge makes score below every merge (SentencePiece could still join them).
``added_tokens``       USER_DEFINED (matched verbatim: ``<start_of_turn>``, whitespace runs, ``<unusedN>``,
                       ``<mask>``), but CONTROL (never made from text) for the bos/eos/pad tokens and for
                       ``special: true`` ones that tokenizer_config.json does not name: transformers
                       marks every token the config names (``mask_token``, extra special tokens) special,
                       whatever its SentencePiece type was, so the flag alone would turn <mask> into CONTROL
``model.unk_token``    UNKNOWN
``<0x00>``..``<0xFF>``  BYTE, with ``model.byte_fallback``
normalizer             must be Gemma's: spaces written as "▁", nothing else (no NFKC, no prefix space)
=====================  ==================================================================================

Anything else (a Unigram or WordPiece model, another normalizer, a pre-tokenizer that splits text)
is not Gemma's tokenizer and is refused with what was found. Special ids (bos/eos/pad/unk) come
from ``tokenizer_config.json`` when it names them, else from Gemma's piece names.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gemma_ref.errors import InputError
from gemma_ref.spm_reference import SPACE, PieceType, byte_piece, write_model_proto

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
MAX_JSON_BYTES = 256 << 20  # Gemma 3's is 33 MB; a file past this is not a tokenizer
MAX_PIECES = 1 << 22  # 4M pieces (Gemma: 256,000 / 262,144)
MAX_MERGES = 1 << 23
SPECIAL_NAMES = {"unk": "<unk>", "bos": "<bos>", "eos": "<eos>", "pad": "<pad>"}


def _read_json(path: Path, limit: int) -> Any:
    try:
        if not path.is_file():
            raise InputError("not a regular file", path)
        size = path.stat().st_size
        if size > limit:
            raise InputError(f"is {size:,} bytes, more than the {limit:,} a tokenizer file may have", path)
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"not valid JSON: {e}", path) from None
    except RecursionError:
        raise InputError("JSON nested too deeply", path) from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}", path) from None


def _only_space_to_meta(normalizer: Any, path: Path) -> None:
    """The normalizer must be Gemma's: Replace " " -> "▁" (alone or as the only step of a Sequence)."""
    steps = normalizer.get("normalizers") if isinstance(normalizer, dict) and normalizer.get("type") == "Sequence" \
        else [normalizer]
    ok = (isinstance(steps, list) and len(steps) == 1 and isinstance(steps[0], dict)
          and steps[0].get("type") == "Replace" and steps[0].get("pattern") == {"String": " "}
          and steps[0].get("content") == SPACE)
    if not ok:
        raise InputError(f"normalizer {json.dumps(normalizer)[:120]} is not Gemma's (spaces written as \"▁\", "
                         "nothing else)", path, hint="not a Gemma tokenizer; a tokenizer.model would say more")


def _pre_tokenizer_is_harmless(pre: Any, path: Path) -> None:
    """None, or transformers' Split on " " (a no-op: the normalizer has turned every space into "▁")."""
    if pre is None:
        return
    if isinstance(pre, dict) and pre.get("type") == "Split" and pre.get("pattern") == {"String": " "}:
        return
    raise InputError(f"pre_tokenizer {json.dumps(pre)[:120]} splits the text, which Gemma's tokenizer does not",
                     path, hint="not a Gemma tokenizer")


def _merge_pair(entry: Any, rank: int, path: Path) -> tuple[str, str]:
    """A merges entry: ["a", "b"] (tokenizers >= 0.20) or "a b" (older files)."""
    if isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry):
        return entry[0], entry[1]
    if isinstance(entry, str) and entry.count(" ") == 1:
        a, b = entry.split(" ")
        return a, b
    raise InputError(f"model.merges[{rank}] is {json.dumps(entry)[:60]}, not a pair of pieces", path)


def _special_ids(config: Any, index: dict[str, int]) -> dict[str, int | None]:
    """bos/eos/pad/unk from tokenizer_config.json's *_token (a string or {"content": ...}), else by Gemma's names."""
    out: dict[str, int | None] = {}
    for key, default in SPECIAL_NAMES.items():
        value = config.get(f"{key}_token") if isinstance(config, dict) else None
        if isinstance(value, dict):
            value = value.get("content")
        out[key] = index.get(value) if isinstance(value, str) and value in index else index.get(default)
    return out


def _named_in_config(config: Any) -> set[str]:
    """Every token tokenizer_config.json names: *_token values and the extra / additional special tokens."""
    if not isinstance(config, dict):
        return set()
    out: set[str] = set()
    for key, value in config.items():
        values = value if isinstance(value, list) and key.endswith("special_tokens") else [value] if key.endswith("_token") else []
        for v in values[:100_000]:
            v = v.get("content") if isinstance(v, dict) else v
            if isinstance(v, str):
                out.add(v)
    return out


def model_proto_from_tokenizer_json(path: str | os.PathLike) -> bytes:
    """A serialised SentencePiece ``tokenizer.model`` equivalent to this ``tokenizer.json``.

    Gemma's is 33 MB of JSON (about 2 s to read): the result is kept per file, its size, mtime and
    the tokenizer_config.json beside it, so verify's several tokenizers of one release read it once.
    """
    return _load(Path(path)).proto


def _load(path: Path) -> _Converted:
    """The conversion of this file, from the cache while it and the config beside it are unchanged."""
    try:
        key = (os.fspath(path.resolve()), _stamp(path), _stamp(path.parent / TOKENIZER_CONFIG))
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}", path) from None
    return _converted(*key)


@dataclass(frozen=True)
class _Converted:
    proto: bytes  # the serialised tokenizer.model
    guessed: frozenset[int]  # ids read as USER_DEFINED that may have been CONTROL (special and named in the config)


def _stamp(p: Path) -> tuple[int, int] | None:
    if not p.is_file():
        return None
    st = p.stat()
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=4)
def _converted(path: str, stamp: tuple[int, int] | None, config_stamp: tuple[int, int] | None) -> _Converted:
    return _convert(Path(path))


def _convert(path: Path) -> _Converted:
    data = _read_json(path, MAX_JSON_BYTES)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        raise InputError("no \"model\" object: not a tokenizers tokenizer.json", path)
    if model.get("type", "BPE") != "BPE":
        raise InputError(f"model type {model.get('type')!r}: Gemma's tokenizer is BPE", path, hint="not a Gemma tokenizer")
    for key in ("continuing_subword_prefix", "end_of_word_suffix", "dropout"):
        if model.get(key):
            raise InputError(f"model.{key} is set ({model[key]!r}); Gemma's BPE has none", path, hint="not a Gemma tokenizer")
    _only_space_to_meta(data.get("normalizer"), path)
    _pre_tokenizer_is_harmless(data.get("pre_tokenizer"), path)

    vocab, merges = model.get("vocab"), model.get("merges", [])
    if not isinstance(vocab, dict) or not vocab:
        raise InputError("model.vocab is missing or empty", path)
    if len(vocab) > MAX_PIECES or not isinstance(merges, list) or len(merges) > MAX_MERGES:
        raise InputError(f"model.vocab ({len(vocab):,}) or model.merges is too large or malformed", path)
    pieces: list[str | None] = [None] * len(vocab)
    for piece, i in vocab.items():
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(vocab) or pieces[i] is not None:
            raise InputError(f"model.vocab gives {piece!r} the id {i!r}: ids must be 0..{len(vocab) - 1}, each once", path)
        pieces[i] = piece

    added = data.get("added_tokens") or []
    if not isinstance(added, list) or len(added) > MAX_PIECES:
        raise InputError("added_tokens is not a list (or is too long)", path)
    # Tokens a fine-tune added (tokenizer.add_tokens) take the ids after the vocabulary's, in order.
    vocab = dict(vocab)
    for tok in sorted((t for t in added if isinstance(t, dict) and isinstance(t.get("id"), int)
                       and t["id"] >= len(pieces)), key=lambda t: t["id"]):
        if tok["id"] != len(pieces) or not isinstance(tok.get("content"), str) or not tok["content"] \
                or tok["content"] in vocab:
            raise InputError(f"added token {json.dumps(tok)[:80]}: ids past the vocabulary must follow it without a "
                             "gap, each a new piece", path)
        vocab[tok["content"]] = tok["id"]
        pieces.append(tok["content"])

    config_path = path.parent / TOKENIZER_CONFIG
    config = _read_json(config_path, 16 << 20) if config_path.is_file() else None
    special = _special_ids(config, vocab)  # after the added tokens: a fine-tune's eos may be one of them
    control = {special[k] for k in ("bos", "eos", "pad") if special[k] is not None}
    named = _named_in_config(config)
    kinds = [PieceType.NORMAL] * len(pieces)
    guessed: set[int] = set()
    for tok in added:
        i = tok.get("id") if isinstance(tok, dict) else None
        if not isinstance(i, int) or not 0 <= i < len(pieces) or tok.get("content") != pieces[i]:
            raise InputError(f"added token {json.dumps(tok)[:80]} is not the vocabulary's piece of that id", path)
        special_named = tok.get("special") is True and pieces[i] in named  # <mask>: either type (module docstring)
        if special_named and i not in control:
            guessed.add(i)
        is_control = i in control or (tok.get("special") is True and not special_named)  # bos/eos/pad: always
        kinds[i] = PieceType.CONTROL if is_control else PieceType.USER_DEFINED
    for i in control:  # SentencePiece's bos/eos/pad are control pieces, whether or not added_tokens lists them
        kinds[i] = PieceType.CONTROL
    if model.get("byte_fallback"):
        for b in range(256):
            i = vocab.get(byte_piece(b))
            if i is not None and kinds[i] == PieceType.NORMAL:
                kinds[i] = PieceType.BYTE
    unk = model.get("unk_token")
    if isinstance(unk, str) and unk in vocab:
        special["unk"] = vocab[unk]  # the model's own unknown piece before the config's name for it
    if special["unk"] is None:
        raise InputError("no unknown piece (model.unk_token, or a \"<unk>\" piece)", path)
    kinds[special["unk"]] = PieceType.UNKNOWN  # SentencePiece needs exactly this one

    # Scores: minus the rank of the first merge making the piece; unmade pieces below every merge.
    scores = [-float(len(merges) + i) for i in range(len(pieces))]
    made = [False] * len(pieces)
    for rank, entry in enumerate(merges):
        a, b = _merge_pair(entry, rank, path)
        i = vocab.get(a + b)
        if i is None or a not in vocab or b not in vocab:
            raise InputError(f"model.merges[{rank}] joins {a!r} and {b!r} into a piece the vocabulary does not hold",
                             path)
        if not made[i]:
            made[i], scores[i] = True, -float(rank)
    for i, kind in enumerate(kinds):
        if kind != PieceType.NORMAL:
            scores[i] = 0.0  # matched or looked up by id, never merged: SentencePiece's own value for them

    proto = write_model_proto([(p, s, k) for p, s, k in zip(pieces, scores, kinds)], special)  # type: ignore[misc]
    return _Converted(proto, frozenset(guessed))


def differences(model_proto: bytes, json_path: str | os.PathLike, limit: int = 3) -> list[str]:
    """How a release's tokenizer.json and tokenizer.model disagree (empty when they are the same tokenizer).

    transformers reads tokenizer.json; sentencepiece users and llama.cpp's converter read tokenizer.model:
    a fine-tune that added tokens to one and not the other gives two tokenizers. Compared: the number of
    pieces, each piece's text, and its type, except CONTROL vs USER_DEFINED where tokenizer.json cannot
    tell them apart (see the module docstring).
    """
    from gemma_ref.spm_reference import parse_model_proto

    converted = _load(Path(json_path))
    ours, theirs = parse_model_proto(converted.proto).pieces, parse_model_proto(model_proto).pieces
    loose = {PieceType.CONTROL, PieceType.USER_DEFINED}
    out = []
    if len(ours) != len(theirs):
        longer, name = (ours, TOKENIZER_JSON) if len(ours) > len(theirs) else (theirs, "tokenizer.model")
        extra = ", ".join(repr(p.text) for p in longer[min(len(ours), len(theirs)):][:limit])
        out.append(f"{TOKENIZER_JSON} has {len(ours):,} pieces, tokenizer.model {len(theirs):,} (only in {name}: {extra})")
    bad = [(i, a, b) for i, (a, b) in enumerate(zip(ours, theirs))
           if a.text != b.text or (a.type != b.type and not ({a.type, b.type} <= loose and i in converted.guessed))]
    if bad:
        shown = "; ".join(f"id {i}: {a.text!r} ({a.type.name}) vs {b.text!r} ({b.type.name})" for i, a, b in bad[:limit])
        out.append(f"{len(bad):,} piece(s) differ ({TOKENIZER_JSON} vs tokenizer.model): {shown}")
    return out
