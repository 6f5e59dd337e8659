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
      - name: raw
        ids: [2, 651, 6037]               # token ids as they are (BOS included if wanted)
      - name: photo                       # a multimodal Gemma 3 / Gemma 4: images with the prompt
        text: "<start_of_image> What is in this picture?"
        images: [images/cat.png]          # relative to this file's directory, and inside it

Plain text is encoded with BOS, exactly as written (no stripping, no dummy
space). A conversation is rendered with the model's chat template straight to
ids (:meth:`gemma_ref.Tokenizer.apply_chat_template`); it gets the generation
prompt (``<start_of_turn>model\\n``) when it ends with a user turn, so the
logits are those of the model's reply, and none when it ends with the model's
own turn. That rule needs nothing but the messages, so a golden file that
records them can be re-tokenized exactly.

A prompt's ``images`` go where the text holds the model's image placeholder
(``<start_of_image>`` on Gemma 3, ``<|image|>`` on Gemma 4), one placeholder per image, in
order (in a conversation: across its turns). Before tokenizing, each placeholder is expanded
as the model's processor does (:func:`gemma_ref.vision.expand_placeholders`: begin-of-image,
one image token per soft token, end-of-image), in the text the chat template rendered, as
transformers' processors do. An ``ids`` prompt must hold each image's run of image tokens
already expanded (:func:`check_image_runs` says what does not fit). Image paths are
resolved against the prompts file's directory and must stay inside it (no absolute path, no
``..``, no symlink out).

Golden files record the ids and the text or messages, so a tokenizer change
shows up in ``verify`` as its own finding, separate from a logit mismatch
(:func:`encode_golden_prompt`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from release.errors import InputError


@dataclass
class PromptSpec:
    """A prompt to record: ids directly, or text / chat turns that the model's tokenizer turns into ids."""

    name: str
    ids: list[int] | None = None
    text: str | None = None
    messages: list[dict[str, str]] | None = None
    # the prompt's images (uint8 [H, W, 3] each, as release.images.load_image reads them), in order
    images: list[np.ndarray] | None = field(default=None, compare=False)


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


def select_prompts(ids: list[str] | None, path: str | os.PathLike | None,
                   images: list[str | os.PathLike] | None = None, images_ok: bool = False) -> list[PromptSpec]:
    """The prompts a command was given: ``--ids`` ("2,651,6037", repeatable), else a ``--prompts`` file, else the built-in set.

    ``images`` (``golden --image``, repeatable): the image files of the one prompt given. Commands that
    run no image path (``images_ok`` false) refuse a prompts file whose prompts carry images.
    """
    specs = [parse_ids(s, i) for i, s in enumerate(ids)] if ids else prompt_specs(path)
    if images:
        specs = attach_images(specs, images, "--ids" if ids else "--prompts" if path is not None else None)
    if not images_ok:
        with_images = [p.name for p in specs if p.images]
        if with_images:
            raise InputError(f"prompt {with_images[0]!r} has images; only `golden` (and `verify` through a golden "
                             "file) runs image prompts", path)
    return specs


def attach_images(specs: list[PromptSpec], paths: list[str | os.PathLike], source: str | None) -> list[PromptSpec]:
    """``--image FILE`` (repeatable): the images of the single prompt given by ``--ids`` or a one-prompt prompts file."""
    from release.images import load_image

    if source is None:
        raise InputError("--image goes with one prompt: give it with --ids (the image tokens expanded) or a "
                         "--prompts file of one prompt; the built-in prompts are text only")
    if len(specs) != 1:
        raise InputError(f"--image gives the images of one prompt, but {source} gives {len(specs)} prompts",
                         hint="put each prompt's images in the prompts file instead (an `images:` list per prompt)")
    (spec,) = specs
    if spec.images:
        raise InputError(f"prompt {spec.name!r} has images in the prompts file already; give them there or with "
                         "--image, not both")
    spec.images = [load_image(p) for p in paths]
    return specs


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
    prompts = [_to_spec(item, n, p) for n, item in enumerate(items, 1)]
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


def _to_spec(item: Any, n: int, source: Path | None = None) -> PromptSpec:
    if isinstance(item, str):
        return PromptSpec(f"prompt-{n}", text=item)
    name = item.get("name", f"prompt-{n}")
    images = None
    if "images" in item:
        from release.images import load_image

        images = [load_image(image_path(rel, source, name)) for rel in item["images"]]
    if "text" in item:
        return PromptSpec(name, text=item["text"], images=images)
    if "ids" in item:
        return PromptSpec(name, ids=[int(i) for i in item["ids"]], images=images)
    return PromptSpec(name, messages=[{"role": m["role"], "content": m["content"]} for m in item["messages"]],
                      images=images)


def image_path(rel: str, prompts_file: Path | None, prompt: str) -> Path:
    """An ``images:`` entry resolved against the prompts file's directory, which it may not leave.

    Refused: an absolute path (POSIX or Windows), a ``..`` component, and a path that resolves
    outside the directory through a symlink.
    """
    from pathlib import PurePosixPath, PureWindowsPath

    where = prompts_file
    if prompts_file is None:
        raise InputError(f"prompt {prompt!r}: image paths are read relative to a prompts file")
    if any(ord(c) < 32 for c in rel):
        raise InputError(f"prompt {prompt!r}: image path {rel!r} holds control characters", where)
    if PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).is_absolute() or PureWindowsPath(rel).drive:
        raise InputError(f"prompt {prompt!r}: image path {rel!r} is absolute; give it relative to the prompts "
                         "file's directory", where)
    if ".." in PurePosixPath(rel).parts or ".." in PureWindowsPath(rel).parts:
        raise InputError(f"prompt {prompt!r}: image path {rel!r} climbs out with '..'; images must sit in the "
                         "prompts file's directory or below it", where)
    root = Path(os.path.realpath(prompts_file.parent))
    target = Path(os.path.realpath(root / rel))
    if not target.is_relative_to(root):
        raise InputError(f"prompt {prompt!r}: image path {rel!r} leads outside the prompts file's directory "
                         "(a symlink); refused", where)
    if not target.exists():
        raise InputError(f"prompt {prompt!r}: image {rel!r} not found next to the prompts file", where)
    return root / rel


def wants_generation_prompt(messages: list[dict[str, str]]) -> bool:
    """A conversation ending with a user turn gets ``<start_of_turn>model\\n``; one ending with the model's does not."""
    return bool(messages) and messages[-1]["role"] not in ("assistant", "model")


def encode_prompts(
    tokenizer: Any, prompts: Iterable[PromptSpec], generation: int | str | None = None, vision_config: Any = None,
) -> list[tuple[str, list[int]]]:
    """``[(name, ids)]`` for each prompt, with the model's own tokenizer.

    ``tokenizer`` is a :class:`gemma_ref.Tokenizer`; ``generation`` (1, 2, 3 or a config
    ``model_type``) picks the chat template; ``None`` lets the tokenizer's vocabulary
    decide. A prompt given as ids keeps them. A text or chat prompt with images needs the
    checkpoint's ``vision_config`` (:func:`gemma_ref.vision.load_vision_config`): its
    placeholders are expanded and the image markers encoded as one id each.
    """
    out: list[tuple[str, list[int]]] = []
    for p in prompts:
        tok = tokenizer
        if p.images and p.ids is None:
            tok = _image_tokenizer(tokenizer, p, vision_config)
        if p.messages is not None:
            ids = tok.apply_chat_template(p.messages, generation, wants_generation_prompt(p.messages))
        elif p.text is not None:
            ids = tok.encode(p.text, bos=True)
        elif p.ids is not None:
            ids = list(p.ids)
        else:
            raise InputError(f"prompt {p.name!r} has neither text, messages nor ids")
        if tok is not tokenizer and tok.pending:
            raise InputError(f"prompt {p.name!r}: {len(tok.pending)} image(s) found no placeholder in the rendered "
                             "prompt")  # a placeholder the chat template dropped (an empty system turn, ...)
        out.append((p.name, ids))
    return out


def _image_tokenizer(tokenizer: Any, p: PromptSpec, vc: Any) -> Any:
    """A copy of `tokenizer` whose ``encode`` expands the prompt's image placeholders first, as the processor does.

    The chat template renders each turn (its content trimmed, the placeholders still in it) and
    encodes it; transformers' processors likewise expand the placeholders in the rendered text,
    so the ``\\n\\n`` around a Gemma 3 image survives a trim. Images are taken in order, turn by turn.
    """
    import copy

    from gemma_ref import vision

    if vc is None:
        raise InputError(f"prompt {p.name!r} has images, but the model has no vision tower gemma_ref knows "
                         "(a Gemma 3 or Gemma 4 config.json with a vision_config)")
    texts = [p.text] if p.text is not None else [m["content"] for m in p.messages or []]
    n = sum(t.count(vc.placeholder) for t in texts)
    if n != len(p.images):
        raise InputError(f"prompt {p.name!r}: its text holds {n} image placeholder(s) {vc.placeholder!r} but "
                         f"{len(p.images)} image(s) were given", hint="write one placeholder where each image goes")
    tok = copy.copy(tokenizer)
    tok.added = {**tokenizer.added, **vision.added_tokens(vc)}  # the markers as single ids, for this prompt only
    tok.pending = list(p.images)
    base_encode = type(tokenizer).encode

    def encode(text: str, bos: bool = True, eos: bool = False) -> list[int]:
        k = text.count(vc.placeholder)
        mine, tok.pending = tok.pending[:k], tok.pending[k:]
        return base_encode(tok, vision.expand_placeholders(text, mine, vc), bos=bos, eos=eos)

    tok.encode = encode
    return tok


def _model_tokenizer(model_dir: Path):
    """The model's own tokenizer, checked against its config; and the model's Gemma generation."""
    from gemma_ref.config import load_config
    from gemma_ref.tokenizer import Tokenizer

    cfg = load_config(model_dir)
    tok = Tokenizer(model_dir)
    tok.check_vocab(cfg.vocab_size)
    return tok, cfg.generation


def tokenize_prompt_specs(prompts: list[PromptSpec], model_dir: str | os.PathLike,
                          vision_config: Any = None) -> list[PromptSpec]:
    """The prompts with ids filled in by the model's own tokenizer (prompts given as ids are kept).

    ``vision_config``: the checkpoint's (gemma_ref.vision), needed by text / chat prompts with images.
    """
    tok, generation = _model_tokenizer(Path(model_dir))
    encoded = encode_prompts(tok, prompts, generation, vision_config)
    return [PromptSpec(p.name, ids=ids, text=p.text, messages=p.messages, images=p.images)
            for p, (_, ids) in zip(prompts, encoded)]


def encode_golden_prompt(golden: Any, model_dir: str | os.PathLike) -> dict[str, bool]:
    """For each golden prompt recorded as text or messages: does the model's tokenizer give its ids?

    A prompt with images is expanded with the golden's own images, as it was when it was made.
    """
    recorded = [p for p in golden.prompts if p.text is not None or p.messages is not None]
    if not recorded:
        return {}
    tok, generation = _model_tokenizer(Path(model_dir))
    specs = [PromptSpec(p.name, text=p.text, messages=p.messages, images=p.images)
             for p in recorded]
    vc = None
    if any(s.images for s in specs):
        from gemma_ref import vision

        vc = vision.load_vision_config(model_dir)
    return {
        name: [int(i) for i in gp.ids] == ids
        for gp, (name, ids) in zip(recorded, encode_prompts(tok, specs, generation, vc))
    }


def check_image_runs(spec: PromptSpec, ids: Any, vc: Any) -> None:
    """An ids prompt's runs of image tokens against its images: one run per image (Gemma 3 pan-and-scan: per view),
    each as long as the image's soft tokens. InputError saying what does not fit otherwise."""
    from gemma_ref import vision

    images = spec.images or []
    have = vision.runs(np.asarray(ids), vc)
    want = [vision.image_runs(vc, img) for img in images]  # per image, its run lengths
    flat = [n for runs in want for n in runs]
    if have == flat:
        return
    tid = vc.image_token_id
    if len(have) != len(flat):
        per = "" if len(flat) == len(images) else f" ({len(flat)} runs: Gemma 3 gives each pan-and-scan crop its own)"
        raise InputError(f"prompt {spec.name!r}: its ids hold {len(have)} run(s) of image tokens (id {tid}) but "
                         f"{len(images)} image(s) were given{per}",
                         hint=f"an ids prompt holds each image already expanded: begin-of-image {vc.boi_token_id}, "
                              f"the image's soft-token count of {tid}, end-of-image {vc.eoi_token_id}; or write a text "
                              f"prompt with {vc.placeholder!r} where each image goes")
    j = next(k for k, (a, b) in enumerate(zip(have, flat)) if a != b)
    image = next(i for i, runs in enumerate(want) if j < sum(len(r) for r in want[:i + 1]))
    h, w = images[image].shape[:2]
    raise InputError(f"prompt {spec.name!r}: image {image + 1} ({w}x{h} pixels) becomes {flat[j]} image tokens, "
                     f"but run {j + 1} of image tokens (id {tid}) in its ids holds {have[j]}",
                     hint="the count depends on the image's size and the processor config; a text prompt with "
                          f"{vc.placeholder!r} is expanded to the right count")
