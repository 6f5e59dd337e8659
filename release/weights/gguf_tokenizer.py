"""The vocabulary inside a GGUF, against the original's ``tokenizer.model``.

llama.cpp does not read the original's tokenizer: it tokenizes with the vocabulary stored
in the GGUF (``tokenizer.ggml.*``). A GGUF whose pieces, merge scores, piece types or
special ids differ turns the same prompt into other ids, and perfect weights then answer
another question -- which no logit comparison on shared ids can see.

What ``convert_hf_to_gguf.py`` writes for Gemma (``TextModel._set_vocab_sentencepiece``,
used by ``GemmaModel``, ``Gemma2Model`` and ``Gemma3Model``), and what is therefore allowed:

=========================  ===================================================================
tokenizer.ggml.model       ``"llama"`` (SentencePiece)
tokenizer.ggml.tokens      every piece of the SentencePiece model, in id order; then
                           ``[PAD{i}]`` pieces of type UNUSED up to the config's vocab_size
tokenizer.ggml.token_type  NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6
                           (the same numbers as SentencePiece's own piece types); tokens the
                           HF ``tokenizer_config.json`` lists as added become CONTROL when
                           special, else USER_DEFINED with "▁" written as a space
tokenizer.ggml.scores      the piece scores (a BPE model merges the highest first); -1000
                           for those added tokens
special ids, add_bos       from the HF tokenizer files; llama.cpp's defaults for a missing
                           id are bos 1, eos 2, unk 0 -- not Gemma's (bos 2, eos 1, unk 3)
=========================  ===================================================================

So pieces are compared exactly (a USER_DEFINED one modulo "▁" vs space), types by what
each one does in llama.cpp's tokenizer, scores where they decide merges (NORMAL and UNUSED
pieces), and every special id against what the original uses. Every difference is
collected, counted and reported with the first few ids; no piece text is printed.
"""

from __future__ import annotations

from pathlib import Path

import gguf

from gemma_ref.config import GemmaConfig
from gemma_ref.generate import stop_ids
from gemma_ref.spm_reference import SPACE, PieceType, parse_model_proto
from gemma_ref.tokenizer import TOKENIZER_FILE, find_tokenizer_file, has_tokenizer, read_model_proto
from release.errors import InputError
from release.findings import Finding, Rule, register_rules
from release.weights.gguf_reader import metadata

register_rules(
    Rule("GGUF006", "error", "the GGUF's vocabulary differs from the original tokenizer.model (pieces, piece types, "
                             "merge scores or special ids): llama.cpp would turn prompts into other ids"),
    Rule("GGUF007", "warning", "the GGUF's tokenizer settings differ from how the original is used (no BOS added, "
                               "EOS appended, extra non-padding pieces), or the vocabulary could not be compared"),
)

KEY = gguf.Keys.Tokenizer

#: SentencePiece piece type -> the GGUF token types a faithful conversion may give it.
#: Added tokens of the HF tokenizer become CONTROL (special) or USER_DEFINED; <unk> is listed as special.
ALLOWED_TYPES: dict[int, frozenset[int]] = {
    PieceType.NORMAL: frozenset({PieceType.NORMAL, PieceType.USER_DEFINED, PieceType.CONTROL}),
    PieceType.USER_DEFINED: frozenset({PieceType.USER_DEFINED, PieceType.CONTROL, PieceType.NORMAL}),
    PieceType.UNUSED: frozenset({PieceType.UNUSED, PieceType.USER_DEFINED, PieceType.CONTROL}),
    PieceType.CONTROL: frozenset({PieceType.CONTROL}),
    PieceType.UNKNOWN: frozenset({PieceType.UNKNOWN, PieceType.CONTROL}),
    PieceType.BYTE: frozenset({PieceType.BYTE}),
}
MERGED = (PieceType.NORMAL, PieceType.UNUSED)  # the types whose scores decide BPE merges
LLAMA_CPP_SPM_DEFAULTS = {"bos": 1, "eos": 2, "unk": 0, "pad": None}  # llama-vocab.cpp, LLAMA_VOCAB_TYPE_SPM
SPECIAL_KEYS = {"bos": KEY.BOS_ID, "eos": KEY.EOS_ID, "unk": KEY.UNK_ID, "pad": KEY.PAD_ID}


def vocab_findings(reader: gguf.GGUFReader, gguf_path: Path, model_dir: Path, cfg: GemmaConfig) -> list[Finding]:
    """Every way the GGUF's vocabulary differs from ``model_dir/tokenizer.model``, all of them collected."""
    where = str(gguf_path)
    if not has_tokenizer(model_dir):
        return [Finding("GGUF007", "info", f"the GGUF's vocabulary was not compared: the original directory has no "
                                           f"{TOKENIZER_FILE} (nor tokenizer.json)", path=where)]
    tok_file = find_tokenizer_file(model_dir)
    try:
        proto = parse_model_proto(read_model_proto(tok_file))  # a tokenizer.json: the model it converts back to
    except ValueError as e:
        raise InputError(f"not a readable SentencePiece model ({e})", tok_file) from None
    pieces = proto.pieces

    model = metadata(reader, KEY.MODEL, gguf_path)
    tokens = metadata(reader, KEY.LIST, gguf_path)
    if tokens is None:
        return [Finding("GGUF006", "error", f"the GGUF carries no vocabulary ({KEY.LIST} is missing): llama.cpp "
                                            "cannot load it", path=where)]
    out: list[Finding] = []
    # Gemma4Model.set_vocab (llama.cpp conversion/gemma.py @ 061b8c5f) writes "gemma4" (pieces from
    # tokenizer.json via LlamaHfVocab); GemmaModel..Gemma3Model write "llama" (SentencePiece).
    want_model = "gemma4" if cfg.generation >= 4 else "llama"
    if model != want_model:
        out.append(Finding("GGUF006", "error", f"{KEY.MODEL} is {model!r}; llama.cpp's converter writes {want_model!r} "
                                               f"for Gemma {cfg.generation}'s tokenizer", path=where))
    types = _per_token(reader, KEY.TOKEN_TYPE, gguf_path, len(tokens), out)  # [] when unusable (then reported)
    scores = _per_token(reader, KEY.SCORES, gguf_path, len(tokens), out)

    n = min(len(tokens), len(pieces))
    if len(tokens) < len(pieces):
        out.append(Finding("GGUF006", "error", f"the GGUF has {len(tokens)} tokens, the original tokenizer "
                                               f"{len(pieces)}: ids {len(tokens)}.. cannot be tokenized", path=where))
    text_diff, type_diff, score_diff = [], [], []
    for i in range(n):
        piece, have = pieces[i], tokens[i]
        kind = types[i] if types else None
        if have != piece.text and not (kind == PieceType.USER_DEFINED and have == piece.text.replace(SPACE, " ")):
            text_diff.append(i)
        if kind is not None and kind not in ALLOWED_TYPES.get(piece.type, frozenset()):
            type_diff.append(i)
        if scores and kind in MERGED and piece.type in MERGED and not _same_score(scores[i], piece.score):
            score_diff.append(i)
    for ids, what in ((text_diff, "pieces differ from the original's"),
                      (type_diff, "have a piece type that changes how llama.cpp tokenizes them (e.g. a byte or "
                                  "control piece stored as a normal one)"),
                      (score_diff, "have other merge scores than the original's (BPE merges in another order)")):
        if ids:
            out.append(Finding("GGUF006", "error", f"{len(ids)} of {n} tokens {what}: ids {_first(ids)}", path=where))
    extra = [i for i in range(n, len(tokens)) if types and types[i] not in (PieceType.UNUSED, PieceType.CONTROL,
                                                                           PieceType.USER_DEFINED)]
    if extra:
        out.append(Finding("GGUF007", "warning", f"{len(extra)} tokens past the original's {len(pieces)} are normal "
                                                 f"pieces, not padding: ids {_first(extra)}", path=where))
    out += _special_findings(reader, gguf_path, proto, cfg)
    return out


def _per_token(reader: gguf.GGUFReader, key: str, gguf_path: Path, n_tokens: int, out: list[Finding]) -> list:
    """A per-token array (types, scores): the values, or [] with a finding when missing or of another length."""
    values = metadata(reader, key, gguf_path)
    if values is None:
        out.append(Finding("GGUF006", "error", f"{key} is missing: llama.cpp would treat every piece alike",
                           path=str(gguf_path)))
    elif len(values) != n_tokens:
        out.append(Finding("GGUF006", "error", f"{key} has {len(values)} entries for {n_tokens} tokens",
                           path=str(gguf_path)))
    else:
        return values
    return []


def _special_findings(reader: gguf.GGUFReader, gguf_path: Path, proto, cfg: GemmaConfig) -> list[Finding]:  # noqa: ANN001
    """bos / eos / unk / pad ids and the add_bos / add_eos flags, against how the original is used."""
    where = str(gguf_path)
    index = {p.text: i for i, p in enumerate(proto.pieces)}
    # The ids the SentencePiece model names (Gemma: <pad> 0, <eos> 1, <bos> 2, <unk> 3).
    want = {name: index.get(getattr(proto.trainer_spec, f"{name}_piece")) for name in SPECIAL_KEYS}
    if want["bos"] is None:
        want["bos"] = cfg.bos_token_id
    # An instruction-tuned release may well stop on <end_of_turn>: any id the original stops on is fine.
    eos_ok = set(stop_ids(cfg)) | {i for i in (want["eos"], index.get("<end_of_turn>")) if i is not None}

    out: list[Finding] = []
    for name, key in SPECIAL_KEYS.items():
        have = metadata(reader, key, gguf_path)
        effective = LLAMA_CPP_SPM_DEFAULTS[name] if have is None else int(have)
        target = want[name]
        ok = effective in eos_ok if name == "eos" else effective == target
        if name == "pad" and have is None:
            continue  # no pad id: llama.cpp needs none for generation
        if not ok and target is not None:
            src = f"is missing, so llama.cpp uses its default {effective}" if have is None else f"is {effective}"
            expect = f"one of {sorted(eos_ok)}" if name == "eos" else str(target)
            out.append(Finding("GGUF006", "error", f"{key} {src}; the original's {name} id is {expect}", path=where))
    add_bos, add_eos = metadata(reader, KEY.ADD_BOS, gguf_path), metadata(reader, KEY.ADD_EOS, gguf_path)
    if add_bos is False:
        out.append(Finding("GGUF007", "warning", f"{KEY.ADD_BOS} is false: llama.cpp will not start prompts with "
                                                 "<bos>, and Gemma degrades badly without it", path=where))
    if add_eos is True:
        out.append(Finding("GGUF007", "warning", f"{KEY.ADD_EOS} is true: llama.cpp will end every prompt with <eos>",
                           path=where))
    return out


def _same_score(have: float, want: float) -> bool:
    """Equal at float32 precision (both sides are stored as float32)."""
    return abs(float(have) - want) <= 1e-6 * max(1.0, abs(want))


def _first(ids: list[int], k: int = 5) -> str:
    return ", ".join(map(str, ids[:k])) + (f" … ({len(ids) - k} more)" if len(ids) > k else "")
