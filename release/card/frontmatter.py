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

import datetime as _dt
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

# --- limits: generous for any real card, small enough to answer hostile input in milliseconds ---
MAX_FRONT_MATTER_CHARS = 256 * 1024  # real cards carry a few KB of metadata (model-index included)
MAX_EVENTS = 50_000  # YAML events (scalars, starts, ends) in the block
MAX_DEPTH = 32  # nesting of mappings / sequences
MAX_ALIASES = 100  # `*alias` references in the block
MAX_NODES = 100_000  # nodes visited while building the data, aliases expanded

_FENCE = re.compile(r"^[ \t]*---[ \t]*$")


@dataclass(frozen=True)
class YamlProblem:
    """Something wrong with the YAML itself (becomes CARD002 or CARD003)."""

    kind: str  # "syntax" | "limit" | "tag" | "not-mapping" | "key" | "duplicate"
    message: str
    line: int | None = None  # 1-based line in the *card*
    pointer: str | None = None


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


def escape_pointer_token(token: object) -> str:
    """RFC 6901 escaping of one reference token."""
    return str(token).replace("~", "~0").replace("/", "~1")


def pointer_join(base: str, token: object) -> str:
    return f"{base}/{escape_pointer_token(token)}"


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


class _LimitError(Exception):
    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


class _Loader(yaml.SafeLoader):
    """SafeLoader: only the standard YAML tags are ever resolved (no Python objects)."""


def _prescan(yaml_text: str, line_offset: int) -> None:
    """Walk the event stream with limits before anything is composed (raises _LimitError)."""
    if len(yaml_text) > MAX_FRONT_MATTER_CHARS:
        raise _LimitError(f"front matter is {len(yaml_text)} characters, more than the limit of {MAX_FRONT_MATTER_CHARS}")
    depth = events = aliases = 0
    for ev in yaml.parse(yaml_text, Loader=_Loader):
        events += 1
        line = ev.start_mark.line + 1 + line_offset if ev.start_mark else None
        if events > MAX_EVENTS:
            raise _LimitError(f"front matter has more than {MAX_EVENTS} YAML nodes", line)
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise _LimitError(f"front matter is nested more than {MAX_DEPTH} levels deep", line)
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(ev, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise _LimitError(f"front matter uses more than {MAX_ALIASES} aliases (possible alias bomb)", line)


_STANDARD_TAGS = {
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "timestamp", "map", "seq", "merge", "binary", "omap", "pairs", "set", "value")
}


class _Builder:
    """Turn a composed node graph into plain JSON-like data, with lines, duplicates and limits."""

    def __init__(self, line_offset: int):
        self.line_offset = line_offset
        self.visited = 0
        self.lines: dict[str, int] = {}
        self.problems: list[YamlProblem] = []
        self._scalars = yaml.SafeLoader("")  # only its scalar constructors are used

    def line(self, node: yaml.Node) -> int:
        return node.start_mark.line + 1 + self.line_offset

    def build(self, node: yaml.Node, pointer: str, depth: int = 0) -> Any:
        self.visited += 1
        if self.visited > MAX_NODES:
            raise _LimitError(f"front matter expands to more than {MAX_NODES} nodes (alias bomb?)", self.line(node))
        if depth > MAX_DEPTH:
            raise _LimitError(f"front matter is nested more than {MAX_DEPTH} levels deep", self.line(node))
        self.lines.setdefault(pointer, self.line(node))
        if node.tag not in _STANDARD_TAGS:
            raise _LimitError(f"tag {node.tag!r} is not allowed in card metadata (only plain YAML is)", self.line(node))
        if isinstance(node, yaml.ScalarNode):
            value = self._scalars.construct_object(node, deep=True)
            # dates become ISO strings: the Hub's JSON view of the metadata has no date type
            if isinstance(value, (_dt.date, _dt.datetime)):
                return value.isoformat()
            if isinstance(value, bytes):
                return value.decode("latin-1")
            return value
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, pointer_join(pointer, i), depth + 1) for i, child in enumerate(node.value)]
        return self.build_mapping(node, pointer, depth)

    def build_mapping(self, node: yaml.MappingNode, pointer: str, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_seen: dict[str, int] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` merge keys
                for src in value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]:
                    part = self.build(src, pointer, depth + 1)
                    if isinstance(part, dict):
                        for k, v in part.items():
                            merged.setdefault(k, v)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise _LimitError("a mapping key is itself a list or mapping", self.line(key_node))
            raw_key = self.build(key_node, pointer + "#key", depth + 1)
            key = raw_key if isinstance(raw_key, str) else ("null" if raw_key is None else str(raw_key).lower() if isinstance(raw_key, bool) else str(raw_key))
            child = pointer_join(pointer, key)
            key_line = self.line(key_node)
            if key in first_seen:
                self.problems.append(
                    YamlProblem("duplicate", f"key {key!r} appears again (first on line {first_seen[key]}); only the last value counts", key_line, child)
                )
            else:
                first_seen[key] = key_line
            self.lines[child] = key_line
            out[key] = self.build(value_node, child, depth + 1)
        for k, v in merged.items():
            out.setdefault(k, v)
        self.lines.pop(pointer + "#key", None)
        return out


def load_front_matter(lines: list[str], open_idx: int, close_idx: int, at_top: bool) -> FrontMatter:
    """Load the block between fences `open_idx` and `close_idx` (0-based line indexes)."""
    yaml_text = "\n".join(lines[open_idx + 1 : close_idx])
    fm = FrontMatter(open_line=open_idx + 1, close_line=close_idx + 1, yaml_text=yaml_text, at_top=at_top)
    offset = open_idx + 1  # yaml line 0 is card line open_idx + 2 (1-based)
    try:
        _prescan(yaml_text, offset)
        root = yaml.compose(yaml_text, Loader=_Loader)
        if root is None:  # an empty block is empty metadata, as on the Hub
            fm.data = {}
            return fm
        if not isinstance(root, yaml.MappingNode):
            kind = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
            fm.problems.append(YamlProblem("not-mapping", f"front matter is {kind}, not a mapping of keys to values", root.start_mark.line + 1 + offset, ""))
            return fm
        builder = _Builder(offset)
        data = builder.build(root, "")
        fm.data = data
        fm.lines = builder.lines
        fm.problems.extend(builder.problems)
        fm.flow_root = bool(root.flow_style)
        fm.key_spans = _top_level_spans(root, offset)
    except _LimitError as e:
        fm.problems.append(YamlProblem("limit", str(e), e.line))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 + offset if mark else None
        fm.problems.append(YamlProblem("syntax", _yaml_message(e), line))
    except (ValueError, TypeError, OverflowError) as e:  # e.g. a timestamp like 2024-13-45
        fm.problems.append(YamlProblem("syntax", f"YAML value cannot be read: {e}", fm.open_line))
    except yaml.YAMLError as e:  # pragma: no cover - every PyYAML error we know is marked
        fm.problems.append(YamlProblem("syntax", str(e).splitlines()[0], fm.open_line))
    except RecursionError:  # pragma: no cover - the prescan depth limit comes first
        fm.problems.append(YamlProblem("limit", "front matter is nested too deeply", fm.open_line))
    return fm


def _yaml_message(e: yaml.MarkedYAMLError) -> str:
    parts = [p for p in (e.context, e.problem) if p]
    return "YAML does not parse: " + ("; ".join(parts) if parts else str(e).splitlines()[0])


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
