"""SentencePiece BPE in pure Python: a reference encoder you can read top to bottom.

Gemma's tokenizer is a SentencePiece model (``tokenizer.model``) of type BPE.
The ``sentencepiece`` library is the fast path; this module does the same work
in plain Python so that every step is visible, and it gives exactly the
library's ids (the tests check it on text of every kind). The steps:

1. **Read the model file.** ``tokenizer.model`` is a protobuf ``ModelProto``:
   a list of pieces (text, score, type) plus a trainer spec and a normalizer
   spec. The wire format is simple enough to read in forty lines, so no
   protobuf package is needed (:func:`parse_model_proto`).
2. **Normalize.** Gemma uses the ``identity`` rule: no Unicode normalization,
   no dummy-prefix space, whitespace kept exactly. The only change is that
   each ASCII space becomes ``▁`` (U+2581), so spaces are ordinary characters
   of the pieces (``"▁the"``). Other normalization rules are refused rather
   than guessed (:meth:`SentencePieceBPE.normalize`).
3. **Split into symbols.** User-defined pieces (``<start_of_turn>``, runs of
   spaces or newlines, ...) are matched first, longest match wins, and are
   frozen: BPE never merges across them. Everything else starts as one symbol
   per Unicode character.
4. **Merge.** Repeatedly merge the adjacent pair whose concatenation is a piece
   with the highest score; among equal scores the leftmost pair goes first.
   Stop when no adjacent pair is a piece (:meth:`SentencePieceBPE._bpe`).
5. **Map to ids.** A symbol that is not a piece is unknown. With byte fallback
   (Gemma) it becomes its UTF-8 bytes as ``<0xXX>`` pieces; without it, it
   becomes ``<unk>``, and a run of unknowns collapses into one ``<unk>``.

Decoding reverses this: pieces are concatenated, runs of byte pieces are
decoded as UTF-8 (an invalid byte becomes U+FFFD), ``▁`` becomes a space and
control pieces (``<bos>``, ``<eos>``, ``<pad>``) decode to nothing.

The facts come from reading sentencepiece's sources (``bpe_model.cc``,
``model_interface.cc``, ``normalizer.cc``, ``sentencepiece_processor.cc``);
the code is written anew for reading.
"""

from __future__ import annotations

import heapq
import operator
import os
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Iterator

from gemma_ref.errors import InputError

SPACE = "\u2581"  # "▁": how SentencePiece writes a space inside pieces


class PieceType(IntEnum):
    """``ModelProto.SentencePiece.Type``: what a piece is and how encoding treats it."""

    NORMAL = 1  # learnt by BPE; a merge target
    UNKNOWN = 2  # <unk>: the id of text no piece covers (without byte fallback)
    CONTROL = 3  # <bos>, <eos>, <pad>, <mask>: never produced from text, decode to nothing
    USER_DEFINED = 4  # <start_of_turn>, whitespace runs: matched verbatim in text, never merged across
    UNUSED = 5  # merged like NORMAL, then split back into its two halves
    BYTE = 6  # <0x00> ... <0xFF>: byte fallback for characters no piece covers


class ModelType(IntEnum):
    """``TrainerSpec.ModelType``: the segmentation algorithm."""

    UNIGRAM = 1
    BPE = 2
    WORD = 3
    CHAR = 4


# ---------------------------------------------------------------------------------------------
# 1. Reading tokenizer.model: the protobuf wire format
# ---------------------------------------------------------------------------------------------
#
# A protobuf message is a sequence of fields. Each field starts with a varint key
# `field_number << 3 | wire_type`; the wire type says how long the value is:
#   0 varint (ints, bools, enums)   1 fixed 8 bytes (double)
#   2 length-delimited (a varint length, then that many bytes: strings, bytes,
#     nested messages)              5 fixed 4 bytes (float)
# A varint is little-endian base 128: 7 bits per byte, high bit set on all but
# the last byte. Unknown fields are skipped. A nested message that occurs more
# than once is merged, which is the same as parsing the concatenation of its
# occurrences; a scalar that occurs more than once takes the last value.


class _WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode the varint at ``buf[pos:]``; return ``(value, position after it)``."""
    value = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise _WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise _WireError("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield ``(field_number, wire_type, value)`` for every field of one message.

    The value is an int for varints and the raw bytes for the other wire types.
    """
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise _WireError("field number 0")
        if wire_type == 0:
            value, pos = _read_varint(buf, pos)
        elif wire_type == 2:
            length, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            value, pos = buf[pos : pos + size], pos + size
        else:  # 3 and 4 are the long-deprecated groups; 6 and 7 do not exist
            raise _WireError(f"unsupported wire type {wire_type}")
        if pos > len(buf):
            raise _WireError("truncated field")
        yield number, wire_type, value


def _int32(value: int) -> int:
    """A varint read as a signed 32-bit int (negative int32 values are sign-extended to 64 bits)."""
    value &= 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >= 1 << 63 else value


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _WireError(f"a string field is not valid UTF-8 ({e.reason})") from None


@dataclass(frozen=True)
class Piece:
    """``ModelProto.SentencePiece``: one vocabulary entry; its id is its index."""

    text: str
    score: float = 0.0  # stored as float32; BPE merges the highest score first
    type: PieceType = PieceType.NORMAL


@dataclass
class TrainerSpec:
    """The fields of ``TrainerSpec`` that encoding and decoding read (defaults as in the .proto)."""

    model_type: int = ModelType.UNIGRAM  # field 3
    treat_whitespace_as_suffix: bool = False  # field 24
    byte_fallback: bool = False  # field 35
    unk_surface: str = " \u2047 "  # field 44: what decode prints for <unk> (" ⁇ ")
    unk_piece: str = "<unk>"  # field 45
    bos_piece: str = "<s>"  # field 46
    eos_piece: str = "</s>"  # field 47
    pad_piece: str = "<pad>"  # field 48


@dataclass
class NormalizerSpec:
    """``NormalizerSpec`` (defaults as in the .proto; Gemma sets the first three flags false/false/true)."""

    name: str = ""  # field 1: the rule's name, e.g. "identity" or "nmt_nfkc"; informational
    precompiled_charsmap: bytes = b""  # field 2: the compiled rule; empty means identity
    add_dummy_prefix: bool = True  # field 3: prepend "▁" to the text
    remove_extra_whitespaces: bool = True  # field 4: strip and squeeze spaces
    escape_whitespaces: bool = True  # field 5: " " -> "▁"


@dataclass
class ModelProto:
    pieces: list[Piece] = field(default_factory=list)  # field 1
    trainer_spec: TrainerSpec = field(default_factory=TrainerSpec)  # field 2
    normalizer_spec: NormalizerSpec = field(default_factory=NormalizerSpec)  # field 3
    denormalizer_spec: NormalizerSpec | None = None  # field 5 (absent in Gemma)


def _parse_piece(buf: bytes) -> Piece:
    text, score, kind = "", 0.0, PieceType.NORMAL
    for number, wire_type, value in _fields(buf):
        if number == 1 and wire_type == 2:
            text = _text(value)
        elif number == 2 and wire_type == 5:
            (score,) = struct.unpack("<f", value)  # float32, exact in a Python float
        elif number == 3 and wire_type == 0:
            try:
                kind = PieceType(value)
            except ValueError:
                raise _WireError(f"unknown piece type {value}") from None
    return Piece(text, score, kind)


# The fields read from the two specs: number -> (attribute, wire type, how to read the value).
_TRAINER_SPEC_FIELDS = {
    3: ("model_type", 0, _int32),
    24: ("treat_whitespace_as_suffix", 0, bool),
    35: ("byte_fallback", 0, bool),
    44: ("unk_surface", 2, _text),
    45: ("unk_piece", 2, _text),
    46: ("bos_piece", 2, _text),
    47: ("eos_piece", 2, _text),
    48: ("pad_piece", 2, _text),
}
_NORMALIZER_SPEC_FIELDS = {
    1: ("name", 2, _text),
    2: ("precompiled_charsmap", 2, bytes),
    3: ("add_dummy_prefix", 0, bool),
    4: ("remove_extra_whitespaces", 0, bool),
    5: ("escape_whitespaces", 0, bool),
}


def _parse_message(buf: bytes, message, fields: dict):
    """Set the attributes of ``message`` that ``fields`` names from ``buf``; skip all other fields."""
    for number, wire_type, value in _fields(buf):
        if number in fields and fields[number][1] == wire_type:
            name, _, read = fields[number]
            setattr(message, name, read(value))
    return message


def parse_model_proto(data: bytes) -> ModelProto:
    """Parse a serialized ``ModelProto`` (the content of a ``tokenizer.model`` file).

    Raises ``ValueError`` when the bytes are not a well-formed message.
    """
    pieces: list[Piece] = []
    nested: dict[int, list[bytes]] = {2: [], 3: [], 5: []}
    for number, wire_type, value in _fields(data):
        if number == 1 and wire_type == 2:
            pieces.append(_parse_piece(value))
        elif number in nested and wire_type == 2:
            nested[number].append(value)
    model = ModelProto(pieces=pieces)
    # Repeated occurrences of a nested message merge: parse their concatenation.
    model.trainer_spec = _parse_message(b"".join(nested[2]), TrainerSpec(), _TRAINER_SPEC_FIELDS)
    model.normalizer_spec = _parse_message(b"".join(nested[3]), NormalizerSpec(), _NORMALIZER_SPEC_FIELDS)
    if nested[5]:
        model.denormalizer_spec = _parse_message(b"".join(nested[5]), NormalizerSpec(), _NORMALIZER_SPEC_FIELDS)
    return model


def byte_piece(byte: int) -> str:
    """The piece that stands for one byte under byte fallback: 10 -> ``"<0x0A>"``."""
    return f"<0x{byte:02X}>"


# Writing one: the inverse of the reader, for vocabularies that arrive in another form (a GGUF's
# tokenizer.ggml.* arrays, a tokenizers tokenizer.json) and must become a tokenizer.model.


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32s are written as 10-byte two's complement, as protobuf does
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _ld(number: int, payload: bytes) -> bytes:  # a length-delimited field
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _vi(number: int, value: int) -> bytes:  # a varint field
    return _varint(number << 3) + _varint(value)


def _piece_bytes(text: str, score: float, kind: PieceType) -> bytes:
    body = _ld(1, text.encode("utf-8")) + _varint(2 << 3 | 5) + struct.pack("<f", score)
    return _ld(1, body + (_vi(3, kind) if kind != PieceType.NORMAL else b""))


def write_model_proto(pieces: list[tuple[str, float, PieceType]], special_ids: dict[str, int | None]) -> bytes:
    """A Gemma-style BPE ``tokenizer.model``: these (piece, score, type) in id order, identity normalizer.

    ``special_ids``: "unk", "bos", "eos", "pad" -> id (or None). Byte fallback is on when all 256
    byte pieces are there. Gemma's normalizer: no dummy prefix, whitespace kept, spaces as "▁".
    """
    n = len(pieces)
    body = b"".join(_piece_bytes(text, score, kind) for text, score, kind in pieces)
    name = {k: pieces[v][0] for k, v in special_ids.items() if isinstance(v, int) and 0 <= v < n}
    byte_fallback = sum(kind == PieceType.BYTE for _, _, kind in pieces) == 256
    trainer = (_vi(3, ModelType.BPE) + _vi(4, n) + _vi(35, int(byte_fallback))
               + b"".join(_vi(num, special_ids[k]) for num, k in ((40, "unk"), (41, "bos"), (42, "eos"), (43, "pad"))
                          if k in name)
               + _ld(44, " \u2047 ".encode())  # unk_surface, SentencePiece's default
               + b"".join(_ld(num, name[k].encode()) for num, k in ((45, "unk"), (46, "bos"), (47, "eos"), (48, "pad"))
                          if k in name))
    normalizer = _ld(1, b"identity") + _vi(3, 0) + _vi(4, 0) + _vi(5, 1)  # no dummy prefix, spaces kept, "▁"
    return body + _ld(2, trainer) + _ld(3, normalizer)


# ---------------------------------------------------------------------------------------------
# User-defined pieces: a character trie for longest-prefix matching
# ---------------------------------------------------------------------------------------------

_END = ""  # marks a node where a user-defined piece ends; never a character, so never a child key


class _PrefixMatcher:
    """Longest match among the user-defined pieces, as sentencepiece's PrefixMatcher does."""

    def __init__(self, words: list[str]):
        self.root: dict = {}
        for word in words:
            node = self.root
            for ch in word:
                node = node.setdefault(ch, {})
            node[_END] = True

    def match(self, text: str, pos: int) -> int:
        """Length of the longest user-defined piece starting at ``text[pos]``, 0 if none."""
        node, best, i = self.root, 0, pos
        while i < len(text):
            node = node.get(text[i])
            if node is None:
                break
            i += 1
            if _END in node:
                best = i - pos
        return best


# ---------------------------------------------------------------------------------------------
# The encoder
# ---------------------------------------------------------------------------------------------


class SentencePieceBPE:
    """A SentencePiece BPE model: ``encode(text) -> ids`` and ``decode(ids) -> text``.

    Build it with :meth:`from_file` (a ``tokenizer.model``) or :meth:`from_bytes`.
    ``encode`` adds no BOS/EOS; the :class:`gemma_ref.Tokenizer` wrapper does that.
    """

    def __init__(self, model: ModelProto, path: str | os.PathLike | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.model = model
        self.pieces = model.pieces
        self.trainer_spec = model.trainer_spec
        self.normalizer_spec = model.normalizer_spec
        self._refuse_unsupported()
        self._index_pieces()

    @classmethod
    def from_bytes(cls, data: bytes, path: str | os.PathLike | None = None) -> "SentencePieceBPE":
        try:
            model = parse_model_proto(data)
        except ValueError as e:
            raise InputError(f"not a SentencePiece model file: {e}", path) from None
        return cls(model, path)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "SentencePieceBPE":
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise InputError(f"cannot read the tokenizer model: {e.strerror or e}", path) from None
        return cls.from_bytes(data, path)

    # --- loading checks ---------------------------------------------------------------------

    def _refuse_unsupported(self) -> None:
        """This reference implements BPE with the identity rule; refuse anything else rather than guess."""
        if self.trainer_spec.model_type != ModelType.BPE:
            try:
                kind = ModelType(self.trainer_spec.model_type).name
            except ValueError:
                kind = str(self.trainer_spec.model_type)
            raise InputError(
                f"the reference tokenizer implements SentencePiece BPE only; this model is {kind}",
                self.path,
                hint="use backend='sentencepiece'",
            )
        for label, spec in (("normalizer", self.normalizer_spec), ("denormalizer", self.model.denormalizer_spec)):
            if spec is not None and spec.precompiled_charsmap:
                raise InputError(
                    f"the model's {label} applies the rule {spec.name or '(unnamed)'!r}; the reference "
                    "tokenizer implements only the identity rule that Gemma uses",
                    self.path,
                    hint="use backend='sentencepiece'",
                )

    def _index_pieces(self) -> None:
        """Build the lookup tables; check the vocabulary as sentencepiece's InitializePieces does."""
        # Two maps, as in sentencepiece: normal, user-defined and unused pieces can come out of
        # BPE merges; control, unknown and byte pieces live apart so that text never merges into
        # them ("<bos>" in text is five characters, not the BOS id).
        self._mergeable: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        self.unk_id = -1
        user_defined: list[str] = []
        for i, p in enumerate(self.pieces):
            if not p.text:
                raise InputError(f"piece {i} is empty", self.path)
            if "\0" in p.text:
                raise InputError(f"piece {i} contains a NUL character", self.path)
            mergeable = p.type in (PieceType.NORMAL, PieceType.USER_DEFINED, PieceType.UNUSED)
            table = self._mergeable if mergeable else self._reserved
            if p.text in table:
                raise InputError(f"piece {p.text!r} is defined twice (ids {table[p.text]} and {i})", self.path)
            table[p.text] = i
            if p.type == PieceType.USER_DEFINED:
                user_defined.append(p.text)
            elif p.type == PieceType.UNKNOWN:
                if self.unk_id >= 0:
                    raise InputError(f"two unknown pieces (ids {self.unk_id} and {i})", self.path)
                self.unk_id = i
        if self.unk_id < 0:
            raise InputError("the model defines no unknown piece", self.path)

        self.byte_fallback = self.trainer_spec.byte_fallback
        self._byte_ids: list[int] = []
        byte_types = [p.text for p in self.pieces if p.type == PieceType.BYTE]
        if byte_types and not self.byte_fallback:
            raise InputError(f"byte piece {byte_types[0]!r} found although byte_fallback is false", self.path)
        if self.byte_fallback:
            for b in range(256):
                i = self._reserved.get(byte_piece(b), -1)
                if i < 0 or self.pieces[i].type != PieceType.BYTE:
                    raise InputError(f"byte_fallback is on but the byte piece {byte_piece(b)} is missing", self.path)
                self._byte_ids.append(i)
            if len(byte_types) != 256:
                raise InputError(f"{len(byte_types)} byte pieces instead of 256", self.path)

        self._matcher = _PrefixMatcher(user_defined)
        self._scores = [p.score for p in self.pieces]
        self._unused = [p.type == PieceType.UNUSED for p in self.pieces]

    # --- vocabulary ---------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def piece_to_id(self, piece: str) -> int:
        """The id of ``piece``; the unknown id when there is no such piece (as sentencepiece)."""
        i = self._reserved.get(piece)
        if i is None:
            i = self._mergeable.get(piece, self.unk_id)
        return i

    def id_to_piece(self, i: int) -> str:
        self._check_id(i)
        return self.pieces[i].text

    def _special_id(self, piece: str, kind: PieceType) -> int:
        i = self.piece_to_id(piece)
        return i if self.pieces[i].type == kind else -1

    @property
    def bos_id(self) -> int:
        return self._special_id(self.trainer_spec.bos_piece, PieceType.CONTROL)

    @property
    def eos_id(self) -> int:
        return self._special_id(self.trainer_spec.eos_piece, PieceType.CONTROL)

    @property
    def pad_id(self) -> int:
        return self._special_id(self.trainer_spec.pad_piece, PieceType.CONTROL)

    def _check_id(self, i: int) -> None:
        if not (isinstance(i, int) and 0 <= i < len(self.pieces)):
            raise InputError(f"token id {i!r} is out of range for a vocabulary of {len(self.pieces)}")

    # --- 2. normalization ---------------------------------------------------------------------

    def normalize(self, text: str) -> str:
        """The text the BPE step sees. With Gemma's settings this is ``text.replace(" ", "▁")``."""
        spec = self.normalizer_spec
        space = SPACE if spec.escape_whitespaces else " "
        suffix = self.trainer_spec.treat_whitespace_as_suffix
        if not spec.remove_extra_whitespaces:
            # Gemma's case. The identity rule copies every character; only ASCII space is
            # escaped (tabs, newlines and other spaces stay as they are: Gemma has pieces for them).
            if not text:
                return ""
            body = text.replace(" ", space)
            if spec.add_dummy_prefix:
                # The dummy prefix makes "world" and " world" alike ("▁world"). Gemma turns it off,
                # so a port that adds it is off by one token at the start of every prompt.
                body = body + space if suffix else space + body
            return body
        return self._normalize_squeezing_spaces(text, space, spec.add_dummy_prefix, suffix)

    def _normalize_squeezing_spaces(self, text: str, space: str, dummy: bool, suffix: bool) -> str:
        """``remove_extra_whitespaces`` (not Gemma's): drop leading, trailing and repeated spaces.

        Follows sentencepiece's order of operations, which matters at the edges: the text is
        walked in units (a user-defined piece, else one character), so a user-defined piece's
        own leading spaces go after a space too; the dummy prefix is added before trailing
        "spaces" are stripped, and what is stripped is the escaped space, so a text made only
        of literal "▁" characters normalizes to nothing.
        """
        pos = 0
        while pos < len(text) and self._prefix(text, pos) == " ":
            pos += 1
        if pos == len(text):
            return ""
        out = [space] if dummy and not suffix else []
        prev_is_space = True
        while pos < len(text):
            unit = self._prefix(text, pos)
            pos += len(unit)
            if prev_is_space:
                unit = unit.lstrip(" ")
            if unit:
                out.append(unit.replace(" ", space))
                prev_is_space = unit.endswith(" ")
        body = "".join(out).rstrip(space)
        return body + space if dummy and suffix else body

    def _prefix(self, text: str, pos: int) -> str:
        """The next unit of ``text``: the longest user-defined piece at ``pos``, else one character."""
        return text[pos : pos + (self._matcher.match(text, pos) or 1)]

    # --- 3. and 4. symbols and merges ---------------------------------------------------------

    def _bpe(self, normalized: str) -> list[str]:
        """Segment normalized text into pieces by BPE merges (sentencepiece's bpe::Model::Encode).

        Symbols are slices of ``normalized``: symbol ``i`` starts at ``start[i]`` and is
        ``length[i]`` characters long. Merging ``left`` and ``right`` grows ``left`` and
        empties ``right``; ``prev``/``next`` link the live symbols as a list.
        """
        # Split into symbols: a user-defined piece (frozen, never merged) or one character.
        start: list[int] = []
        length: list[int] = []
        frozen: list[bool] = []
        pos = 0
        while pos < len(normalized):
            n = self._matcher.match(normalized, pos)
            start.append(pos)
            length.append(n or 1)
            frozen.append(n > 0)
            pos += n or 1
        count = len(start)
        prev = list(range(-1, count - 1))
        next_ = list(range(1, count)) + [-1] if count else []

        # The agenda: candidate merges, best first. heapq pops the smallest tuple, so the key is
        # (-score, left): highest score first and, among equal scores, the leftmost pair, which
        # is how sentencepiece's priority queue breaks ties.
        agenda: list[tuple[float, int, int, int]] = []
        # For UNUSED pieces: how each was made, so it can be split again afterwards. Written when a
        # candidate is proposed, not when it is merged, and the last proposal wins, as in sentencepiece.
        unmerge: dict[str, tuple[str, str]] = {}

        def propose(left: int, right: int) -> None:
            if left < 0 or right < 0 or frozen[left] or frozen[right]:
                return
            size = length[left] + length[right]
            merged = normalized[start[left] : start[left] + size]
            i = self._mergeable.get(merged)
            if i is None:
                return
            heapq.heappush(agenda, (-self._scores[i], left, right, size))
            if self._unused[i]:
                unmerge[merged] = (
                    normalized[start[left] : start[left] + length[left]],
                    normalized[start[right] : start[right] + length[right]],
                )

        for i in range(1, count):
            propose(i - 1, i)

        while agenda:
            _, left, right, size = heapq.heappop(agenda)
            # A candidate goes stale when either side has since been merged into something else.
            if length[left] == 0 or length[right] == 0 or length[left] + length[right] != size:
                continue
            length[left] = size
            length[right] = 0
            next_[left] = next_[right]
            if next_[right] >= 0:
                prev[next_[right]] = left
            propose(prev[left], left)
            propose(left, next_[left])

        pieces: list[str] = []

        def emit(piece: str) -> None:
            # An UNUSED piece may be merged through, but never output: split it back, recursively.
            if self._unused[self.piece_to_id(piece)] and piece in unmerge:
                left, right = unmerge[piece]
                emit(left)
                emit(right)
            else:
                pieces.append(piece)

        i = 0 if count else -1
        while i >= 0:
            emit(normalized[start[i] : start[i] + length[i]])
            i = next_[i]
        return pieces

    # --- 5. ids -----------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS/EOS), exactly as ``SentencePieceProcessor.encode``."""
        check_text(text)
        ids: list[int] = []
        prev_unknown = False
        for piece in self._bpe(self.normalize(text)):
            i = self.piece_to_id(piece)
            unknown = i == self.unk_id
            if unknown and self.byte_fallback:
                # Byte fallback: no piece covers this character, so spell out its UTF-8 bytes.
                ids.extend(self._byte_ids[b] for b in piece.encode("utf-8"))
            elif not (unknown and prev_unknown):
                ids.append(i)
            # else: without byte fallback a run of unknown symbols collapses into one <unk>.
            prev_unknown = unknown
        return ids

    def encode_as_pieces(self, text: str) -> list[str]:
        return [self.pieces[i].text for i in self.encode(text)]

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``, exactly as ``SentencePieceProcessor.decode``."""
        spec = self.normalizer_spec
        out: list[str] = []
        pending = bytearray()  # a run of byte pieces, decoded together as UTF-8
        at_start = True  # no text yet (for stripping the dummy prefix)
        stripped_prefix = False
        for i in ids:
            i = operator.index(i)
            self._check_id(i)
            p = self.pieces[i]
            if p.type == PieceType.BYTE:
                pending.append(int(p.text[3:5], 16))
                continue
            if pending:
                out.append(decode_utf8_bytes(bytes(pending)))
                pending.clear()
            if at_start and (stripped_prefix or any(out)):
                at_start = False
            stripped_prefix = False
            if p.type == PieceType.CONTROL:
                continue  # <bos>, <eos>, <pad> have no surface
            if p.type == PieceType.UNKNOWN:
                out.append(self.trainer_spec.unk_surface)
                continue
            piece = p.text
            if at_start and (spec.add_dummy_prefix or spec.remove_extra_whitespaces) and piece.startswith(SPACE):
                # The "▁" the normalizer added is not part of the text: drop it once. With
                # remove_extra_whitespaces no text begins with a space, so keep dropping until
                # some text appears. (Gemma has neither: its decode drops nothing.)
                piece = piece[1:]
                stripped_prefix = not spec.remove_extra_whitespaces
            out.append(piece.replace(SPACE, " "))
        if pending:
            out.append(decode_utf8_bytes(bytes(pending)))
        return "".join(out)


def decode_utf8_bytes(data: bytes) -> str:
    """UTF-8 decoding as sentencepiece does it: each invalid byte becomes one U+FFFD.

    (Python's ``errors="replace"`` can fold several invalid bytes into one U+FFFD.)
    """
    out: list[str] = []
    pos = 0
    while pos < len(data):
        lead = data[pos]
        n = 1 if lead < 0x80 else 2 if 0xC0 <= lead < 0xE0 else 3 if 0xE0 <= lead < 0xF0 else 4 if 0xF0 <= lead < 0xF8 else 0
        if n and pos + n <= len(data):
            try:
                out.append(data[pos : pos + n].decode("utf-8"))  # strict: no overlongs, no surrogates
                pos += n
                continue
            except UnicodeDecodeError:
                pass
        out.append("\ufffd")
        pos += 1
    return "".join(out)


def check_text(text: str) -> None:
    """Refuse what cannot be UTF-8 encoded (lone surrogates) with a clear message."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(
            f"text contains a lone surrogate U+{ord(text[e.start]):04X} at index {e.start}; "
            "only valid Unicode text can be tokenized"
        ) from None
