"""Bounded, safe YAML: every YAML this tool reads (card front matter, release.yaml, prompts files).

YAML from a stranger can be an alias bomb (a few hundred bytes that expand to
gigabytes), nest thousands of levels deep, carry Python object tags, or repeat a
key (PyYAML silently keeps the last one). So the text is first walked as a YAML
*event stream* with explicit limits (size, events, depth, aliases), then composed
into nodes and turned into plain data by hand, counting every node visited so an
alias expansion stops early, recording every duplicate key and, for every JSON
Pointer into the data, its 1-based line.

:func:`parse_yaml` returns problems as values (the card rules turn them into
findings); :func:`load_yaml_file` raises one InputError naming the file, the line
and every problem (release.yaml, prompts files: a duplicate key is an error there too).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from release.errors import InputError
from release.files import read_text_file

# --- limits: generous for any real card, small enough to answer hostile input in milliseconds ---
MAX_FRONT_MATTER_CHARS = 256 * 1024  # real cards carry a few KB of metadata (model-index included)
MAX_EVENTS = 50_000  # YAML events (scalars, starts, ends) in the block
MAX_DEPTH = 32  # nesting of mappings / sequences
MAX_ALIASES = 100  # `*alias` references in the block
MAX_NODES = 100_000  # nodes visited while building the data, aliases expanded



@dataclass(frozen=True)
class YamlProblem:
    """Something wrong with the YAML itself (becomes CARD002 or CARD003)."""

    kind: str  # "syntax" | "limit" | "tag" | "not-mapping" | "key" | "duplicate"
    message: str
    line: int | None = None  # 1-based line in the *card*
    pointer: str | None = None


def escape_pointer_token(token: object) -> str:
    """RFC 6901 escaping of one reference token."""
    return str(token).replace("~", "~0").replace("/", "~1")


def pointer_join(base: str, token: object) -> str:
    return f"{base}/{escape_pointer_token(token)}"


class _LimitError(Exception):
    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


class _Loader(yaml.SafeLoader):
    """SafeLoader: only the standard YAML tags are ever resolved (no Python objects)."""


def _prescan(yaml_text: str, line_offset: int, max_chars: int = MAX_FRONT_MATTER_CHARS) -> None:
    """Walk the event stream with limits before anything is composed (raises _LimitError)."""
    if len(yaml_text) > max_chars:
        raise _LimitError(f"YAML is {len(yaml_text)} characters, more than the limit of {max_chars}")
    depth = events = aliases = 0
    for ev in yaml.parse(yaml_text, Loader=_Loader):
        events += 1
        line = ev.start_mark.line + 1 + line_offset if ev.start_mark else None
        if events > MAX_EVENTS:
            raise _LimitError(f"YAML has more than {MAX_EVENTS} YAML nodes", line)
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise _LimitError(f"YAML is nested more than {MAX_DEPTH} levels deep", line)
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(ev, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise _LimitError(f"YAML uses more than {MAX_ALIASES} aliases (possible alias bomb)", line)


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
            raise _LimitError(f"YAML expands to more than {MAX_NODES} nodes (alias bomb?)", self.line(node))
        if depth > MAX_DEPTH:
            raise _LimitError(f"YAML is nested more than {MAX_DEPTH} levels deep", self.line(node))
        self.lines.setdefault(pointer, self.line(node))
        if node.tag not in _STANDARD_TAGS:
            raise _LimitError(f"tag {node.tag!r} is not allowed (only plain YAML is)", self.line(node))
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


def _expanded_size(root: yaml.Node) -> int:
    """Nodes the document has once every alias is expanded, counted once per distinct node (memoised).

    Aliases share node objects in the composed graph, so this walks each node once however
    often it is referenced; the count saturates past MAX_NODES. Iterative, so depth cannot
    overflow; a node that contains itself (`&a [*a]`) is refused.
    """
    size: dict[int, int] = {}
    open_: set[int] = set()  # nodes whose children are being counted
    stack: list[yaml.Node] = [root]
    while stack:
        node = stack[-1]
        if id(node) in size:
            stack.pop()
            continue
        kids = [] if isinstance(node, yaml.ScalarNode) else (
            list(node.value) if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair])
        todo = [k for k in kids if id(k) not in size]
        if not todo:
            size[id(node)] = min(MAX_NODES + 1, 1 + sum(size[id(k)] for k in kids))
            open_.discard(id(node))
            stack.pop()
            continue
        if id(node) in open_:
            raise _LimitError("YAML contains a recursive alias (a node that contains itself)", node.start_mark.line + 1)
        open_.add(id(node))
        stack.extend(todo)
    return size[id(root)]


@dataclass
class YamlDoc:
    """A parsed YAML document: data (None when unreadable), lines per pointer, problems, the root node."""

    data: Any = None
    lines: dict[str, int] = field(default_factory=dict)
    problems: list[YamlProblem] = field(default_factory=list)
    root: yaml.Node | None = None


def parse_yaml(yaml_text: str, line_offset: int = 0, max_chars: int = MAX_FRONT_MATTER_CHARS) -> YamlDoc:
    """Parse within the limits; never raises for bad content (problems are returned)."""
    doc = YamlDoc()
    try:
        _prescan(yaml_text, line_offset, max_chars)
        root = yaml.compose(yaml_text, Loader=_Loader)
        doc.root = root
        if root is None:
            return doc
        if _expanded_size(root) > MAX_NODES:  # measured on the shared node graph: a bomb costs O(its text), not O(limit)
            raise _LimitError(f"YAML expands to more than {MAX_NODES} nodes (alias bomb?)", root.start_mark.line + 1 + line_offset)
        builder = _Builder(line_offset)
        doc.data = builder.build(root, "")
        doc.lines = builder.lines
        doc.problems.extend(builder.problems)
    except _LimitError as e:
        doc.problems.append(YamlProblem("limit", str(e), e.line))
        doc.data = None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 + line_offset if mark else None
        doc.problems.append(YamlProblem("syntax", _yaml_message(e), line))
        doc.data = None
    except (ValueError, TypeError, OverflowError) as e:  # e.g. a timestamp like 2024-13-45
        doc.problems.append(YamlProblem("syntax", f"YAML value cannot be read: {e}", line_offset + 1))
        doc.data = None
    except yaml.YAMLError as e:  # pragma: no cover - every PyYAML error we know is marked
        doc.problems.append(YamlProblem("syntax", str(e).splitlines()[0], line_offset + 1))
        doc.data = None
    except RecursionError:  # pragma: no cover - the prescan depth limit comes first
        doc.problems.append(YamlProblem("limit", "YAML is nested too deeply", line_offset + 1))
        doc.data = None
    return doc


def load_yaml_file(path: Path, max_bytes: int = MAX_FRONT_MATTER_CHARS, what: str = "YAML") -> Any:
    """Read and parse a whole YAML file within the limits; any problem (duplicate keys too) is an InputError."""
    text = read_text_file(path, max_bytes, what=what)
    doc = parse_yaml(text, 0, max_bytes)
    if doc.problems:
        parts = [(f"line {p.line}: " if p.line else "") + p.message for p in doc.problems[:5]]
        more = f" (and {len(doc.problems) - 5} more)" if len(doc.problems) > 5 else ""
        raise InputError(f"{what} cannot be read: " + "; ".join(parts) + more, path)
    return doc.data


def _yaml_message(e: yaml.MarkedYAMLError) -> str:
    parts = [p for p in (e.context, e.problem) if p]
    return "YAML does not parse: " + ("; ".join(parts) if parts else str(e).splitlines()[0])


