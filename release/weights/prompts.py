"""Prompts for ``verify`` and ``golden``: a prompts file, a built-in default set, and their ids.

A prompts file is YAML or JSON (``schemas/prompts.schema.json``): a list of
prompts, or an object with a ``prompts`` list. Each prompt is plain text or a
chat conversation::

    prompts:
      - The capital of France is          # plain text, named "prompt-1"
      - name: german
        text: "Die Straße heißt Brückenweg."
      - name: chat
        messages:
          - {role: user, content: "Write a haiku about the sea."}

Plain text is encoded with BOS, exactly as written (no stripping, no dummy
space). A conversation is rendered with the model's chat template straight to
ids (:meth:`gemma_ref.Tokenizer.apply_chat_template`); it gets the generation
prompt (``<start_of_turn>model\\n``) when it ends with a user turn, so the
logits are those of the model's reply, and none when it ends with the model's
own turn. That rule needs nothing but the messages, so a golden file that
records them can be re-tokenized exactly.

Golden files record the ids and the text or messages, so a tokenizer change
shows up in ``verify`` as its own finding, separate from a logit mismatch
(:func:`encode_golden_prompt`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from release.errors import InputError

@dataclass
class PromptSpec:
    """A prompt to record: ids directly, or text / chat turns that the model's tokenizer turns into ids."""

    name: str
    ids: list[int] | None = None
    text: str | None = None
    messages: list[dict[str, str]] | None = None


def parse_ids(spec: str, index: int = 0) -> PromptSpec:
    """``"2,651,6037"`` (commas and/or spaces) -> PromptSpec of those ids."""
    try:
        ids = [int(x) for x in spec.replace(",", " ").split()]
    except ValueError:
        raise InputError(f"--ids {spec!r}: expected integers separated by commas") from None
    if not ids:
        raise InputError("--ids is empty")
    return PromptSpec(f"ids-{index}", ids=ids)



SCHEMA = "prompts.schema.json"

# The built-in set, in the prompts-file format: one prompt for each way a tokenizer port goes wrong
# (the dummy-prefix space, umlauts and Hangul through byte fallback or not, digits split one by one,
# runs of spaces/newlines/tabs that have pieces of their own, and the chat template's markers).
DEFAULT_PROMPTS: list[dict[str, Any]] = [
    {"name": "english", "text": "The capital of France is"},
    {"name": "german", "text": "Die Straße über den Fluss heißt Brückenweg; die Äpfel dort sind schön groß."},
    {"name": "korean", "text": "안녕하세요. 오늘 날씨가 정말 좋네요."},
    {"name": "chinese", "text": "今天天气很好，我们去公园散步吧。"},
    {"name": "code", "text": "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n"},
    {"name": "numbers", "text": "In 2024, 3.14159 × 12,345 = 38,781.93 and 0x1F is 31; 1e-9 < 0.001."},
    {"name": "whitespace", "text": "a  b   c    d\n\n\nindented:\n\t\tone\n        two   \n \n"},
    {"name": "chat", "messages": [{"role": "user", "content": "Write a haiku about the sea."}]},
]


def default_prompts() -> list[PromptSpec]:
    """The built-in prompts (fresh objects each call)."""
    return [_to_spec(item, n) for n, item in enumerate(DEFAULT_PROMPTS, 1)]


def prompt_specs(path: str | os.PathLike | None) -> list[PromptSpec]:
    """The prompts of a prompts file, or the built-in set when ``path`` is None."""
    return default_prompts() if path is None else load_prompts(path)


def select_prompts(ids: list[str] | None, path: str | os.PathLike | None) -> list[PromptSpec]:
    """The prompts a command was given: ``--ids`` ("2,651,6037", repeatable), else a ``--prompts`` file, else the built-in set."""

    return [parse_ids(s, i) for i, s in enumerate(ids)] if ids else prompt_specs(path)


MAX_PROMPTS_BYTES = 16 * 1024 * 1024  # prompts files are a few KB; this bounds a hostile one


def load_prompts(path: str | os.PathLike) -> list[PromptSpec]:
    """Read a YAML or JSON prompts file; InputError (naming the place) when it is not valid."""
    from release.files import read_text_file

    p = Path(path)
    if not p.exists():
        raise InputError("prompts file not found", p)
    raw = read_text_file(p, MAX_PROMPTS_BYTES, "prompts file")  # a FIFO or device is refused, never opened
    data = _parse(raw, p)
    _validate(data, p)
    items = data["prompts"] if isinstance(data, dict) else data
    prompts = [_to_spec(item, n) for n, item in enumerate(items, 1)]
    seen: dict[str, int] = {}
    for n, prompt in enumerate(prompts, 1):
        if prompt.name in seen:
            raise InputError(f"prompts {seen[prompt.name]} and {n} are both named {prompt.name!r}", p)
        seen[prompt.name] = n
    return prompts


def _parse(raw: str, path: Path) -> Any:
    if path.suffix.lower() == ".json":
        try:
            return json.loads(raw)
        except json.JSONDecodeError as e:
            raise InputError(f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})", path) from None
    from release.safeyaml import parse_yaml  # bounded: size, aliases, depth, no tags; duplicate keys are errors

    doc = parse_yaml(raw, 0, MAX_PROMPTS_BYTES)
    if doc.problems:
        first = doc.problems[0]
        where = f" (line {first.line})" if first.line else ""
        raise InputError(f"not valid YAML: {first.message}{where}", path)
    return doc.data


def _validate(data: Any, path: Path) -> None:
    import jsonschema

    from release.resources import load_schema

    validator = jsonschema.Draft202012Validator(load_schema(SCHEMA))
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if not errors:
        return
    lines = []
    for error in errors[:10]:
        # A oneOf failure says only "not valid under any of the given schemas"; the sub-error
        # deepest in the document names the field at fault.
        while error.context:
            error = max(error.context, key=lambda e: len(e.absolute_path))
        lines.append(f"/{'/'.join(str(x) for x in error.absolute_path)}: {error.message}")
    more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
    raise InputError("not a valid prompts file: " + "; ".join(lines) + more, path)


def _to_spec(item: Any, n: int) -> PromptSpec:
    if isinstance(item, str):
        return PromptSpec(f"prompt-{n}", text=item)
    name = item.get("name", f"prompt-{n}")
    if "text" in item:
        return PromptSpec(name, text=item["text"])
    return PromptSpec(name, messages=[{"role": m["role"], "content": m["content"]} for m in item["messages"]])


def wants_generation_prompt(messages: list[dict[str, str]]) -> bool:
    """A conversation ending with a user turn gets ``<start_of_turn>model\\n``; one ending with the model's does not."""
    return bool(messages) and messages[-1]["role"] not in ("assistant", "model")


def encode_prompts(
    tokenizer: Any, prompts: Iterable[PromptSpec], generation: int | str | None = None
) -> list[tuple[str, list[int]]]:
    """``[(name, ids)]`` for each prompt, with the model's own tokenizer.

    ``tokenizer`` is a :class:`gemma_ref.Tokenizer`; ``generation`` (1, 2, 3 or a config
    ``model_type``) picks the chat template; ``None`` lets the tokenizer's vocabulary
    decide. A prompt given as ids keeps them.
    """
    out: list[tuple[str, list[int]]] = []
    for p in prompts:
        if p.messages is not None:
            ids = tokenizer.apply_chat_template(p.messages, generation, wants_generation_prompt(p.messages))
        elif p.text is not None:
            ids = tokenizer.encode(p.text, bos=True)
        elif p.ids is not None:
            ids = list(p.ids)
        else:
            raise InputError(f"prompt {p.name!r} has neither text, messages nor ids")
        out.append((p.name, ids))
    return out


def _model_tokenizer(model_dir: Path):
    """The model's own tokenizer, checked against its config; and the model's Gemma generation."""
    from gemma_ref.config import load_config
    from gemma_ref.tokenizer import Tokenizer

    cfg = load_config(model_dir)
    tok = Tokenizer(model_dir)
    tok.check_vocab(cfg.vocab_size)
    return tok, cfg.generation


def tokenize_prompt_specs(prompts: list[PromptSpec], model_dir: str | os.PathLike) -> list[PromptSpec]:
    """The prompts with ids filled in by the model's own tokenizer (prompts given as ids are kept)."""
    tok, generation = _model_tokenizer(Path(model_dir))
    encoded = encode_prompts(tok, prompts, generation)
    return [PromptSpec(p.name, ids=ids, text=p.text, messages=p.messages) for p, (_, ids) in zip(prompts, encoded)]


def encode_golden_prompt(golden: Any, model_dir: str | os.PathLike) -> dict[str, bool]:
    """For each golden prompt recorded as text or messages: does the model's tokenizer give its ids?"""
    recorded = [p for p in golden.prompts if p.text is not None or p.messages is not None]
    if not recorded:
        return {}
    tok, generation = _model_tokenizer(Path(model_dir))
    specs = [PromptSpec(p.name, text=p.text, messages=p.messages) for p in recorded]
    return {
        name: [int(i) for i in gp.ids] == ids
        for gp, (name, ids) in zip(recorded, encode_prompts(tok, specs, generation))
    }
