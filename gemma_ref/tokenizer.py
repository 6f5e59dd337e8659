"""Gemma's tokenizer: text to the ids the released model saw, and back.

Gemma ships a SentencePiece BPE model, ``tokenizer.model`` (releases saved by
transformers 5 carry only its ``tokenizer.json`` form, read by
:mod:`gemma_ref.tokenizer_json` into the same model), configured so that
text is taken exactly as written: no Unicode normalization, no dummy-prefix
space, whitespace kept (runs of spaces, tabs and newlines have pieces of their
own), digits split one per token, and byte fallback for anything else. The
classic port bugs live here, and each is one token off at the start of a prompt:

* adding a dummy-prefix space ("Hello" -> "▁Hello"): Gemma's model turns it off;
* forgetting BOS: every Gemma prompt starts with ``<bos>`` (id 2), and the
  model's outputs without it are garbage;
* doubling BOS: a chat template rendered to text already starts with the
  characters ``<bos>``; encoding that text with ``bos=True`` gives the BOS id
  followed by the *characters* ``<``, ``bos``, ``>`` (SentencePiece never turns
  text into a control id). :meth:`Tokenizer.encode` warns when it sees this.

``Tokenizer(path)`` uses the ``sentencepiece`` library; ``backend="reference"``
uses :mod:`gemma_ref.spm_reference`, a pure-Python encoder that gives the same
ids and can be read. Chat templates (Gemma 1/2, Gemma 3 and Gemma 4) produce ids
directly, so that no template text is ever re-parsed.
"""

from __future__ import annotations

import operator
import os
import unicodedata
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from gemma_ref.errors import InputError
from gemma_ref.spm_reference import SentencePieceBPE, check_text
from gemma_ref.tokenizer_json import TOKENIZER_JSON, model_proto_from_tokenizer_json

TOKENIZER_FILE = "tokenizer.model"
MAX_MODEL_BYTES = 256 << 20  # Gemma's tokenizer.model is 4.7 MB
BACKENDS = ("sentencepiece", "reference")

# Special pieces looked up by name. pad/eos/bos/unk come from the model's own trainer spec
# (Gemma: <pad>=0, <eos>=1, <bos>=2, <unk>=3); these are found by their text when present.
NAMED_PIECES = {
    "start_of_turn": "<start_of_turn>",  # Gemma 1, 2, 3: opens a chat turn
    "end_of_turn": "<end_of_turn>",  # closes one; generation stops on it
    "start_of_image": "<start_of_image>",  # Gemma 3 only
    "end_of_image": "<end_of_image>",  # Gemma 3 only
    "image_soft_token": "<image_soft_token>",  # Gemma 3 only: stands for one image embedding
    "turn_open": "<|turn>",  # Gemma 4 (id 105): opens a chat turn; the Gemma 1-3 markers are gone
    "turn_close": "<turn|>",  # Gemma 4 (id 106): closes one; generation stops on it
}

# check_vocab: how many embedding rows beyond the tokenizer's pieces are still "padding".
# Gemma 3 pads 262144 pieces to 262208 rows (64 more); checkpoints round up to multiples of
# 64..1024. Gemma generations differ by far more (256000 vs 262144 pieces: 6144), so pairing a
# model with another generation's tokenizer is caught.
MAX_EMBEDDING_PADDING = 1024


class DoubledBOSWarning(UserWarning):
    """The text starts with the characters of the BOS piece and a BOS id is added as well."""


def find_tokenizer_file(path: str | os.PathLike) -> Path:
    """``path`` itself when it is a file, else ``path/tokenizer.model``, else ``path/tokenizer.json``;
    InputError when there is none."""
    p = Path(path)
    if p.is_dir():
        for name in (TOKENIZER_FILE, TOKENIZER_JSON):
            if (p / name).is_file():
                return p / name
            if (p / name).exists():  # a FIFO or directory of that name: reading it would block or fail
                raise InputError("not a regular file", p / name)
        raise InputError(f"no {TOKENIZER_FILE} (nor {TOKENIZER_JSON}) in this directory", p)
    if p.is_file():
        return p
    if p.exists():
        raise InputError("not a regular file (expected a tokenizer.model or tokenizer.json)", p)
    raise InputError("no such file or directory (expected a tokenizer.model or tokenizer.json, or a model directory "
                     "holding one)", p)


def has_tokenizer(model_dir: str | os.PathLike) -> bool:
    """Whether a model directory carries a tokenizer this module reads (tokenizer.model or tokenizer.json)."""
    return any((Path(model_dir) / name).is_file() for name in (TOKENIZER_FILE, TOKENIZER_JSON))


def read_model_proto(path: str | os.PathLike) -> bytes:
    """The serialised SentencePiece model of a tokenizer.model, a tokenizer.json, or a directory holding one."""
    f = find_tokenizer_file(path)
    if f.suffix == ".json":
        return model_proto_from_tokenizer_json(f)
    try:
        size = f.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise InputError(f"is {size:,} bytes; a tokenizer.model is a few MB (at most {MAX_MODEL_BYTES:,} are read)", f)
        return f.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read the tokenizer model: {e.strerror or e}", f) from None


class _SentencePieceLibrary:
    """The ``sentencepiece`` library behind the same small interface as :class:`SentencePieceBPE`."""

    def __init__(self, path: Path, proto: bytes):
        import sentencepiece

        self.path = path
        try:
            self._sp = sentencepiece.SentencePieceProcessor(model_proto=proto)
        except (RuntimeError, OSError, ValueError) as e:
            raise InputError(f"not a valid SentencePiece model: {e}", path) from None
        self.vocab_size = self._sp.get_piece_size()
        if self.vocab_size == 0:  # the library takes empty bytes for a model of no pieces
            raise InputError("not a valid SentencePiece model: it holds no pieces", path)
        if not 0 <= self._sp.unk_id() < self.vocab_size:  # lookups of missing pieces would fail later
            raise InputError("not a valid SentencePiece model: it has no unknown piece", path)
        self.bos_id, self.eos_id, self.pad_id, self.unk_id = (
            self._sp.bos_id(), self._sp.eos_id(), self._sp.pad_id(), self._sp.unk_id())

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self._sp.decode(ids)

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(i)

    def piece_to_id(self, piece: str) -> int:
        return self._sp.piece_to_id(piece)


class Tokenizer:
    """Gemma's tokenizer, loaded from a ``tokenizer.model`` (or ``tokenizer.json``), or a model directory holding one.

    ``backend="sentencepiece"`` (default) is the library, the fast path;
    ``backend="reference"`` is the pure-Python encoder of :mod:`gemma_ref.spm_reference`
    (BPE with the identity normalization only). Both give the same ids.

    Special ids by name: :attr:`special_ids` (``{"pad": 0, "eos": 1, "bos": 2, "unk": 3,
    "start_of_turn": 105, "end_of_turn": 106, ...}`` for Gemma 3; Gemma 1/2's are 106 and 107;
    image pieces for Gemma 3; Gemma 4's ``<|turn>`` / ``<turn|>`` are 105 / 106), :meth:`special_id`,
    and the properties :attr:`bos_id`, :attr:`eos_id`, :attr:`pad_id`, :attr:`unk_id`.
    """

    def __init__(self, path: str | os.PathLike, backend: str = "sentencepiece"):
        if backend not in BACKENDS:
            raise InputError(f"unknown tokenizer backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.path = find_tokenizer_file(path)
        self.backend = backend
        proto = read_model_proto(self.path)  # tokenizer.json: converted to the model it was converted from
        if backend == "sentencepiece":
            self._impl: Any = _SentencePieceLibrary(self.path, proto)
        else:
            self._impl = SentencePieceBPE.from_bytes(proto, self.path)
        self.vocab_size: int = self._impl.vocab_size
        self.special_ids: dict[str, int] = {}
        for name in ("pad", "eos", "bos", "unk"):
            i = getattr(self._impl, f"{name}_id")
            if i >= 0:
                self.special_ids[name] = i
        for name, piece in NAMED_PIECES.items():
            i = self._impl.piece_to_id(piece)
            if self._impl.id_to_piece(i) == piece:  # piece_to_id answers <unk> for a missing piece
                self.special_ids[name] = i
        self._newline_ids: list[int] | None = None
        self.added: dict[str, int] = {}  # strings that are one id each, outside the pieces model (see add_tokens)

    def add_tokens(self, tokens: dict[str, int]) -> None:
        """Strings encoded as one id each, split out of the text before the pieces model runs.

        As Hugging Face's added tokens: Gemma 3's ``<image_soft_token>`` is id 262144, past the
        262,144 pieces of tokenizer.model, so SentencePiece alone would spell it out in pieces.
        """
        self.added.update(tokens)

    def __repr__(self) -> str:
        return f"Tokenizer({os.fspath(self.path)!r}, backend={self.backend!r}, vocab_size={self.vocab_size})"

    # --- special ids ------------------------------------------------------------------------------

    def special_id(self, name: str) -> int:
        """The id of a special piece by name (``"bos"``, ``"start_of_turn"``, ...); InputError when absent."""
        try:
            return self.special_ids[name]
        except KeyError:
            raise InputError(
                f"the tokenizer has no {name!r} piece (it has: {', '.join(self.special_ids) or 'none'})", self.path
            ) from None

    @property
    def bos_id(self) -> int:
        return self.special_id("bos")

    @property
    def eos_id(self) -> int:
        return self.special_id("eos")

    @property
    def pad_id(self) -> int:
        return self.special_id("pad")

    @property
    def unk_id(self) -> int:
        return self.special_id("unk")

    # --- text <-> ids --------------------------------------------------------------------------

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """Token ids of ``text``: ``[bos] + pieces + [eos]`` as asked. Text is taken verbatim."""
        check_text(text)
        if "bos" in self.special_ids:
            bos_text = self._impl.id_to_piece(self.special_ids["bos"])
            if text.startswith(bos_text):
                warnings.warn(
                    f"the text starts with the characters {bos_text!r}, which SentencePiece encodes as plain "
                    f"text, not as the BOS id"
                    + (" (and a BOS id is added too: BOS would be doubled)" if bos else "")
                    + f"; remove {bos_text!r} from the text and let encode(bos=True) add the id",
                    DoubledBOSWarning,
                    stacklevel=2,
                )
        ids = self._encode_added(text) if self.added else self._impl.encode(text)
        if bos:
            ids = [self.bos_id, *ids]
        if eos:
            ids.append(self.eos_id)
        return ids

    def _encode_added(self, text: str) -> list[int]:
        """Pieces of the text between added tokens, each added token its one id."""
        import re

        pattern = "(" + "|".join(re.escape(t) for t in sorted(self.added, key=len, reverse=True)) + ")"
        ids: list[int] = []
        for n, part in enumerate(re.split(pattern, text)):
            if n % 2:
                ids.append(self.added[part])  # the separators: added tokens
            elif part:
                ids += self._impl.encode(part)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; control ids (BOS, EOS, PAD) decode to nothing."""
        ids = self._check_ids(ids)
        return self._impl.decode(ids)

    def id_to_piece(self, i: int) -> str:
        return self._impl.id_to_piece(self._check_ids([i])[0])

    def piece_to_id(self, piece: str) -> int:
        """The id of a piece; the unknown id when the vocabulary has no such piece."""
        return self._impl.piece_to_id(piece)

    def pieces(self, ids: Iterable[int]) -> list[str]:
        """The piece text of each id (``"▁"`` stands for a space, ``<0x0A>`` for a byte)."""
        return [self._impl.id_to_piece(i) for i in self._check_ids(ids)]

    def _check_ids(self, ids: Iterable[int]) -> list[int]:
        try:
            out = [operator.index(i) for i in ids]
        except TypeError:
            raise InputError("token ids must be integers") from None
        for i in out:
            if not 0 <= i < self.vocab_size:
                raise InputError(f"token id {i} is out of range for a vocabulary of {self.vocab_size}", self.path)
        return out

    # --- fit to a model -----------------------------------------------------------------------------

    def check_vocab(self, vocab_size: int) -> None:
        """Raise InputError unless this tokenizer fits an embedding of ``vocab_size`` rows.

        The rule: every id the tokenizer can produce needs a row (rows >= pieces), and at
        most :data:`MAX_EMBEDDING_PADDING` (1024) rows may be left over as padding. Gemma 3's
        262208 rows for 262144 pieces fit; a Gemma 2 tokenizer (256000) with a Gemma 3 model
        does not.
        """
        pieces = self.vocab_size
        if vocab_size < pieces:
            raise InputError(
                f"the tokenizer has {pieces} pieces but the model's embedding only {vocab_size} rows: "
                f"ids {vocab_size}..{pieces - 1} would index past the embedding",
                self.path,
                hint="is this the tokenizer of another model?",
            )
        if vocab_size - pieces > MAX_EMBEDDING_PADDING:
            raise InputError(
                f"the model's embedding has {vocab_size} rows but the tokenizer only {pieces} pieces; "
                f"{vocab_size - pieces} unused rows is more than padding (at most {MAX_EMBEDDING_PADDING})",
                self.path,
                hint="is this the tokenizer of another model or Gemma generation?",
            )

    # --- chat templates ---------------------------------------------------------------------------

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        generation: int | str | None = None,
        add_generation_prompt: bool = True,
    ) -> list[int]:
        """Ids of a conversation in Gemma's chat format, starting with BOS.

        ``messages`` is a list of ``{"role": "user"|"assistant"|"system", "content": str}``
        (``"model"`` is accepted for ``"assistant"``). ``generation`` picks the template
        (1, 2 or 3, or a config ``model_type`` such as ``"gemma2"`` or ``"gemma3_text"``);
        when ``None`` it is Gemma 3's if the vocabulary has Gemma 3's image pieces.

        Each turn is ``<start_of_turn>{role}\\n{content}<end_of_turn>\\n`` with the content
        stripped of surrounding whitespace; ``add_generation_prompt`` appends
        ``<start_of_turn>model\\n``. Gemma 1 and 2 have no system role; Gemma 3 puts the
        system text, followed by a blank line, at the start of the first user turn. These
        are Hugging Face's templates; the markers are emitted as their ids, the text between
        them is encoded piece by piece (the same ids as encoding the rendered text, because
        SentencePiece never merges across a user-defined piece).
        """
        family = chat_template_family(generation) if generation is not None else (
            "gemma4" if "turn_open" in self.special_ids else
            "gemma3" if "start_of_image" in self.special_ids else "gemma")
        messages = _check_messages(messages)
        if family == "gemma4":
            return self._gemma4_chat(messages, add_generation_prompt)
        start, end = self.special_id("start_of_turn"), self.special_id("end_of_turn")

        first_user_prefix = ""
        if messages and messages[0]["role"] == "system":
            if family == "gemma":
                raise InputError("Gemma 1 and 2 have no system role; put the instructions in the first user turn")
            first_user_prefix = _content_text(messages[0]["content"], trim=False) + "\n\n"
            messages = messages[1:]

        ids = [self.bos_id]
        for index, message in enumerate(messages):
            role = message["role"]
            if (role == "user") != (index % 2 == 0):
                raise InputError(
                    f"message {index + 1}: conversation roles must alternate user/assistant/user/..., "
                    f"starting with user; got {role!r}"
                )
            role = "model" if role == "assistant" else role
            prefix = first_user_prefix if index == 0 else ""
            ids.append(start)
            ids += self.encode(f"{role}\n{prefix}{_content_text(message['content'], trim=True)}", bos=False)
            ids.append(end)
            ids += self._newline()
        if add_generation_prompt:
            ids.append(start)
            ids += self.encode("model\n", bos=False)
        return ids

    def _gemma4_chat(self, messages: list[Mapping[str, Any]], add_generation_prompt: bool) -> list[int]:
        """Gemma 4's chat format: ``<|turn>{role}\n{content}<turn|>\n`` per turn, then ``<|turn>model\n``.

        Unlike Gemma 3, a system message is a turn of its own (role ``system``). Thinking mode
        (``<|think|>`` in the system turn) and tool calls of the released template are not produced.
        """
        start, end = self.special_id("turn_open"), self.special_id("turn_close")
        ids = [self.bos_id]
        if messages and messages[0]["role"] == "system":
            ids += [start] + self.encode(f"system\n{_content_text(messages[0]['content'], trim=True)}", bos=False)
            ids += [end] + self._newline()
            messages = messages[1:]
        for index, message in enumerate(messages):
            role = message["role"]
            if (role == "user") != (index % 2 == 0):
                raise InputError(
                    f"message {index + 1}: conversation roles must alternate user/assistant/user/..., "
                    f"starting with user; got {role!r}"
                )
            role = "model" if role in ("assistant", "model") else role
            ids += [start] + self.encode(f"{role}\n{_content_text(message['content'], trim=True)}", bos=False)
            ids += [end] + self._newline()
        if add_generation_prompt:
            ids += [start] + self.encode("model\n", bos=False)
        return ids

    def _newline(self) -> list[int]:
        if self._newline_ids is None:
            self._newline_ids = self.encode("\n", bos=False)
        return self._newline_ids


def chat_template_family(generation: int | str) -> str:
    """``"gemma"`` (Gemma 1 and 2 share one template), ``"gemma3"`` or ``"gemma4"``.

    Accepts 1, 2, 3, 4 or a name such as ``"gemma"``, ``"gemma2"``, ``"gemma-3"``,
    ``"gemma3_text"`` (Hugging Face ``model_type`` values).
    """
    key = str(generation).strip().lower().replace("-", "").replace("_text", "").replace("_", "")
    if key in ("1", "2", "gemma", "gemma1", "gemma2", "codegemma"):
        return "gemma"
    if key in ("3", "gemma3"):
        return "gemma3"
    if key in ("4", "gemma4", "gemma4unified"):
        return "gemma4"
    raise InputError(f"no chat template for Gemma generation {generation!r}; known: 1, 2, 3, 4")


def _check_messages(messages: Any) -> list[Mapping[str, Any]]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise InputError("a conversation must be a list of {role, content} messages")
    for n, m in enumerate(messages, 1):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or "content" not in m:
            raise InputError(f"message {n}: expected an object with a 'role' string and a 'content'")
    return list(messages)


def _content_text(content: Any, trim: bool) -> str:
    """A message's text: a string, or a list of ``{"type": "text", "text": ...}`` parts joined."""
    if isinstance(content, str):
        return content.strip() if trim else content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise InputError(f"only text content is supported by the text-only reference, not {kind!r}")
            parts.append(part["text"].strip() if trim else part["text"])
        # Gemma 3's template renders each text part (trimmed) back to back; a system message uses its first part.
        return "".join(parts) if trim else (parts[0] if parts else "")
    raise InputError(f"message content must be a string or a list of parts, not {type(content).__name__}")


def printable_piece(piece: str) -> str:
    """A piece for display on one line: control characters escaped (``"\\n"``), all else as is."""
    out = []
    for ch in piece:
        if ch == "\\":
            out.append("\\\\")
        elif unicodedata.category(ch) in ("Cc", "Cs") or ch in "\u2028\u2029":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(ch, f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}"))
        else:
            out.append(ch)
    return "".join(out)
