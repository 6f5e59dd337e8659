"""A model card as data: its text, where the front matter is, typed metadata that keeps every key.

* :class:`CardData` - typed accessors for the Hub's fields over an ordered mapping that
  keeps unknown keys, so reading and writing back loses nothing (huggingface_hub's
  ``repocard_data`` idea);
* :class:`Card` - text, fences, front matter, metadata and the Markdown body with its line;
* :func:`parse_card` / :func:`load_card` - never raise for bad content (problems become
  findings later); :func:`load_card` raises InputError for a file that cannot be read.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from release.card.frontmatter import Fences, FrontMatter, find_metadata_blocks, load_front_matter, locate
from release.errors import InputError

MAX_CARD_BYTES = 16 * 1024 * 1024  # the Hub's largest real cards are a few hundred KB


# --- typed metadata -------------------------------------------------------------------------


def _field(key: str, doc: str) -> property:
    def get(self: CardData) -> Any:
        return self._data.get(key)

    def set_(self: CardData, value: Any) -> None:
        self.set(key, value)

    return property(get, set_, doc=doc)


class CardData:
    """The card's metadata: typed accessors over an ordered mapping that keeps every key.

    Unknown keys stay, in their place; :meth:`to_dict` gives the mapping back in the
    original key order; setting a known field keeps its position (new keys go last).
    """

    KNOWN_FIELDS = (
        "language", "license", "license_name", "license_link", "library_name", "pipeline_tag", "tags",
        "datasets", "metrics", "base_model", "base_model_relation", "new_version", "inference", "widget",
        "model-index",
    )

    def __init__(self, data: dict[str, Any] | None = None):
        self._data: dict[str, Any] = dict(data or {})

    license = _field("license", "Hub license identifier, e.g. 'gemma', 'apache-2.0', 'other'.")
    license_name = _field("license_name", "Name of a license not on the Hub's list (with license: other).")
    license_link = _field("license_link", "URL or repo path of that license's text.")
    language = _field("language", "ISO 639 code(s).")
    library_name = _field("library_name", "Library that loads the model (transformers, peft, gguf, ...).")
    pipeline_tag = _field("pipeline_tag", "The Hub task, e.g. 'text-generation'.")
    tags = _field("tags", "Free-form tags.")
    datasets = _field("datasets", "Hub dataset ids used for training.")
    metrics = _field("metrics", "Metric ids.")
    base_model = _field("base_model", "Hub repo id(s) this model derives from.")
    base_model_relation = _field("base_model_relation", "adapter, merge, quantized or finetune.")
    new_version = _field("new_version", "Repo id of a newer version of this model.")
    model_index = _field("model-index", "Evaluation results (the 'model-index' key).")

    @property
    def base_models(self) -> list[str]:
        """``base_model`` as a list of strings (whatever the card wrote)."""
        bm = self._data.get("base_model")
        if isinstance(bm, str):
            return [bm] if bm.strip() else []
        if isinstance(bm, list):
            return [b for b in bm if isinstance(b, str) and b.strip()]
        return []

    @property
    def tag_list(self) -> list[str]:
        t = self._data.get("tags")
        return [t] if isinstance(t, str) else [x for x in t if isinstance(x, str)] if isinstance(t, list) else []

    @property
    def extra(self) -> dict[str, Any]:
        """Keys this class has no accessor for (kept and written back unchanged)."""
        return {k: v for k, v in self._data.items() if k not in self.KNOWN_FIELDS}

    def set(self, key: str, value: Any) -> None:
        self._data[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CardData) and list(self._data.items()) == list(other._data.items())

    def __repr__(self) -> str:
        return f"CardData({self._data!r})"

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the mapping, in the card's key order."""
        return copy.deepcopy(self._data)

    def to_yaml(self) -> str:
        """The metadata as block YAML, key order kept (used only when a card has no block to edit)."""
        return _dump(self._data) if self._data else ""


def _dump(mapping: dict[str, Any]) -> str:
    return yaml.safe_dump(mapping, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000)


# --- the card ---------------------------------------------------------------------------------


@dataclass
class Card:
    """A model card: its text, where the front matter is, the metadata and the Markdown body."""

    text: str
    path: Path | None
    fences: Fences
    front_matter: FrontMatter | None
    metadata: CardData
    body: str  # Markdown after the front matter (the whole text when there is none)
    body_line: int  # 1-based card line where `body` starts
    missing: bool = False  # the release directory has no README.md at all
    extra_blocks: list[tuple[int, int]] = field(default_factory=list)  # 1-based (open, close) of further blocks

    @property
    def display_path(self) -> str:
        return str(self.path) if self.path is not None else "README.md"

    @property
    def path_name(self) -> str:
        return self.path.name if self.path is not None else "README.md"

    @property
    def metadata_unreadable(self) -> bool:
        """There is a block but its YAML could not be read: rules about missing keys would mislead."""
        fm = self.front_matter
        return fm is not None and (fm.data is None or any(p.kind != "duplicate" for p in fm.problems))

    def line_of(self, pointer: str) -> int | None:
        """Card line of a JSON Pointer into the metadata (line 1, where it belongs, without front matter)."""
        return self.front_matter.line_of(pointer) if self.front_matter is not None else 1


def parse_card(text: str, path: Path | str | None = None) -> Card:
    """Parse card text. Never raises for bad content: problems surface as findings later."""
    text = text.removeprefix("\ufeff")
    fences = locate(text)
    lines = fences.lines
    fm: FrontMatter | None = None
    extra_blocks: list[tuple[int, int]] = []
    if fences.first is not None:
        open_idx, close_idx = fences.first
        fm = load_front_matter(lines, open_idx, close_idx, fences.at_top)
        body_start = close_idx + 1
        extra_blocks = [(a + 1, b + 1) for a, b in _further_blocks(lines, close_idx)]
    else:
        body_start = 0
    data = fm.data if fm is not None and fm.data is not None else {}
    return Card(
        text=text,
        path=Path(path) if path is not None else None,
        fences=fences,
        front_matter=fm,
        metadata=CardData(data),
        body="\n".join(lines[body_start:]),
        body_line=body_start + 1,
        extra_blocks=extra_blocks,
    )


def _further_blocks(lines: list[str], close_idx: int) -> list[tuple[int, int]]:
    """Front-matter blocks after the first: a `---` right after it, or later blocks holding metadata keys."""
    blocks = find_metadata_blocks(lines, start=close_idx + 1)
    nxt = next((i for i in range(close_idx + 1, len(lines)) if lines[i].strip()), None)
    if nxt is not None and lines[nxt].strip() == "---" and not any(a == nxt for a, _ in blocks):
        # a fence straight after the closing one opens a second block (pasted base-card metadata)
        close = next((j for j in range(nxt + 1, len(lines)) if lines[j].strip() == "---"), nxt)
        blocks.insert(0, (nxt, close))
    return blocks


def _read_text(path: Path) -> str:
    from release.files import read_regular_bytes

    raw = read_regular_bytes(path, MAX_CARD_BYTES, "card")  # a FIFO or device is refused, never opened
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.start} cannot be decoded)", path, hint="model cards must be UTF-8") from None


def _card_file(path: Path) -> tuple[Path, Path | None]:
    """(README path, release directory or None) for a card or a release directory."""
    if path.is_dir():
        return path / "README.md", path
    if not path.exists():
        raise InputError("no such file or directory", path)
    return path, None


def load_card(path: Path | str) -> Card:
    """Read a card (a README.md, or a release directory's README.md)."""
    readme, _ = _card_file(Path(path))
    return parse_card(_read_text(readme), readme)
