"""Model-card front matter: find it as the Hub does, load it safely, keep line numbers.

The Hub reads metadata from a YAML block at the very top of ``README.md``::

    ---
    license: gemma
    base_model: google/gemma-2-9b
    ---

Only whitespace may come before the opening ``---``; anything else and the Hub
ignores the block. This module:

* locates that block (and notices blocks that are not at the top, a second
  block, or an opening ``---`` that never closes);
* loads it without ever constructing Python objects: the text is first walked
  as a YAML *event stream* with explicit limits (size, number of events,
  nesting depth, number of aliases), then composed into nodes and turned into
  plain data by hand, counting every node visited so an alias bomb stops early;
* records, for every JSON Pointer into the data, the 1-based line in the card,
  and every duplicate key (PyYAML silently keeps the last one; the Hub rejects
  the card).

Problems are returned as :class:`YamlProblem` values, never raised, so the
card rules can turn them into findings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from release.safeyaml import YamlProblem, escape_pointer_token, parse_yaml, pointer_join  # noqa: F401  (re-exported)

_FENCE = re.compile(r"^[ \t]*---[ \t]*$")


@dataclass
class FrontMatter:
    """The located YAML block: where it is and what it says."""

    open_line: int  # 1-based line of the opening `---`
    close_line: int  # 1-based line of the closing `---`
    yaml_text: str  # text between the fences
    at_top: bool  # only whitespace before the opening fence (what the Hub requires)
    data: dict[str, Any] | None = None  # None when the YAML could not be loaded as a mapping
    lines: dict[str, int] = field(default_factory=dict)  # JSON Pointer -> 1-based card line
    key_spans: dict[str, tuple[int, int]] = field(default_factory=dict)  # top-level key -> (first, last) card line
    problems: list[YamlProblem] = field(default_factory=list)
    flow_root: bool = False  # the mapping is written `{...}`: line-level edits are impossible

    def line_of(self, pointer: str) -> int:
        """Line of `pointer`, or of its nearest ancestor that has one, or of the opening fence."""
        p = pointer
        while True:
            if p in self.lines:
                return self.lines[p]
            if not p:
                return self.open_line
            p = p.rsplit("/", 1)[0]


# --- locating the block -----------------------------------------------------------------------


@dataclass(frozen=True)
class Fences:
    """Where `---` blocks are in a card (0-based line indexes), before any YAML is read."""

    first: tuple[int, int] | None  # (open, close) of the block the metadata comes from
    at_top: bool
    unclosed_open: int | None  # an opening fence at the top with no closing fence
    lines: list[str]


def split_lines(text: str) -> list[str]:
    """Lines split on LF only (CR of CRLF dropped): other Unicode breaks stay inside scalars, as in the file."""
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]
    return lines[:-1] if lines and lines[-1] == "" else lines


def locate(text: str) -> Fences:
    """Find the front-matter fences the way the Hub does.

    The block must start on the first non-blank line. When it does not, a later
    `---` ... `---` block that holds a YAML mapping is taken as front matter that is
    not at the top (so the rules can say so and still check it).
    """
    lines = split_lines(text)
    first_nonblank = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first_nonblank is None:
        return Fences(None, True, None, lines)
    if _FENCE.match(lines[first_nonblank]):
        close = next((j for j in range(first_nonblank + 1, len(lines)) if _FENCE.match(lines[j])), None)
        if close is None:
            return Fences(None, True, first_nonblank, lines)
        return Fences((first_nonblank, close), True, None, lines)
    later = find_metadata_blocks(lines, start=first_nonblank + 1)
    if later:
        return Fences(later[0], False, None, lines)
    return Fences(None, True, None, lines)


# Keys that only a metadata block would hold: how a stray `---` ... `---` span (two
# Markdown rules around a paragraph) is told apart from a real second front matter.
METADATA_HINT_KEYS = frozenset(
    {
        "license", "license_name", "license_link", "language", "tags", "base_model", "base_model_relation",
        "library_name", "pipeline_tag", "datasets", "metrics", "model-index", "model_name", "inference",
        "widget", "new_version", "thumbnail", "extra_gated_prompt", "extra_gated_heading", "extra_gated_fields",
        "extra_gated_button_content", "extra_gated_description",
    }
)
_KEY_LINE = re.compile(r"^([A-Za-z_][\w-]*)[ \t]*:(?:[ \t]|$)")


def find_metadata_blocks(lines: list[str], start: int) -> list[tuple[int, int]]:
    """`---` ... `---` spans from line `start` on whose body has a metadata key at column 0.

    Fenced code blocks are skipped (a YAML example inside ``` is not front matter).
    """
    blocks: list[tuple[int, int]] = []
    in_code = False
    open_at: int | None = None
    for i in range(start, len(lines)):
        ln = lines[i]
        if ln.lstrip().startswith(("```", "~~~")):
            in_code = not in_code
            open_at = None
            continue
        if in_code or not _FENCE.match(ln):
            continue
        if open_at is None:
            open_at = i
            continue
        body = lines[open_at + 1 : i]
        keys = {m.group(1) for m in (_KEY_LINE.match(b) for b in body) if m}
        if keys & METADATA_HINT_KEYS:
            blocks.append((open_at, i))
            open_at = None
        else:
            open_at = i  # this fence may open the next block
    return blocks


# --- loading the YAML safely ------------------------------------------------------------------


def load_front_matter(lines: list[str], open_idx: int, close_idx: int, at_top: bool) -> FrontMatter:
    """Load the block between fences `open_idx` and `close_idx` (0-based line indexes)."""
    yaml_text = "\n".join(lines[open_idx + 1 : close_idx])
    fm = FrontMatter(open_line=open_idx + 1, close_line=close_idx + 1, yaml_text=yaml_text, at_top=at_top)
    offset = open_idx + 1  # yaml line 0 is card line open_idx + 2 (1-based)
    doc = parse_yaml(yaml_text, offset)
    fm.problems.extend(doc.problems)
    root = doc.root
    if doc.data is None and root is None and not doc.problems:  # an empty block is empty metadata, as on the Hub
        fm.data = {}
        return fm
    if root is None or doc.data is None and any(p.kind != "duplicate" for p in doc.problems):
        return fm
    if not isinstance(root, yaml.MappingNode):
        kind = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
        fm.problems.append(YamlProblem("not-mapping", f"front matter is {kind}, not a mapping of keys to values", root.start_mark.line + 1 + offset, ""))
        return fm
    fm.data = doc.data
    fm.lines = doc.lines
    fm.flow_root = bool(root.flow_style)
    fm.key_spans = _top_level_spans(root, offset)
    return fm


def _top_level_spans(root: yaml.MappingNode, offset: int) -> dict[str, tuple[int, int]]:
    """First and last card line (1-based, inclusive) of each top-level `key: value` entry."""
    spans: dict[str, tuple[int, int]] = {}
    for key_node, value_node in root.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        first = key_node.start_mark.line + 1 + offset
        end = value_node.end_mark
        # a block value's end mark sits at column 0 of the line after it
        last = end.line + offset + (1 if end.column > 0 else 0)
        spans[str(key_node.value)] = (first, max(first, last))
    return spans
