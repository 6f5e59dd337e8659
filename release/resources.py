"""Locate data files shipped with the package (JSON Schemas)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any


def schema_path(name: str) -> Path:
    """Path of ``schemas/<name>``, installed (``release.schemas``) or from a source checkout."""
    try:
        p = Path(str(resources.files("release.schemas").joinpath(name)))
        if p.is_file():
            return p
    except ModuleNotFoundError:
        pass
    p = Path(__file__).resolve().parent.parent / "schemas" / name
    if p.is_file():
        return p
    raise FileNotFoundError(f"schema {name!r} is not installed with gemma-release")


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict[str, Any]:
    """The parsed JSON Schema ``schemas/<name>`` (cached)."""
    return json.loads(schema_path(name).read_text(encoding="utf-8"))
