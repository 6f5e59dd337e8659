"""``release.yaml``: load, validate (``schemas/release.schema.json``), write, and draft one.

A release directory holds the weights, tokenizer, card and NOTICE, plus a
``release.yaml`` saying where they go and what belongs to the release::

    repo: my-org/gemma-2b-sauerkraut
    base_model: google/gemma-2b
    base_model_relation: finetune
    files: ["*.safetensors", "model.safetensors.index.json", "config.json", "tokenizer.*", "README.md", "NOTICE"]
    golden: golden.safetensors
    variants:
      - {format: gguf, quant: Q4_K_M, repo: my-org/gemma-2b-sauerkraut-GGUF, file: gemma-2b-sauerkraut.Q4_K_M.gguf}

Everything that reads the file raises :class:`InputError` naming the file and
the offending key, so the CLI prints one paragraph and exits 2.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from release.errors import InputError
from release.files import atomic_write
from release.resources import load_schema
from release.safeyaml import load_yaml_file

FILENAME = "release.yaml"
SCHEMA = "release.schema.json"
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


@dataclass(frozen=True)
class Variant:
    """One quantized variant: a file (GGUF style) or a branch (GPTQ/EXL2 style) in a sibling repo."""

    format: str  # gguf | gptq | awq | exl2 | hf | mlx | bitsandbytes | fp8 | compressed-tensors
    quant: str  # the quant label as people write it: Q4_K_M, bf16, 4bit-128g, 6.5bpw
    repo: str
    revision: str = "main"
    file: str | None = None
    shards: str | None = None  # e.g. "m-Q8_0-{index:05d}-of-{total:05d}.gguf"
    local_dir: Path | None = None  # resolved against the release directory
    description: str | None = None


@dataclass(frozen=True)
class Gating:
    gated: bool | str = False  # False | "auto" | "manual"
    prompt: str | None = None


@dataclass(frozen=True)
class ReleaseConfig:
    """The parsed, validated ``release.yaml`` (paths resolved against ``root``)."""

    root: Path
    repo: str
    files: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    revision: str = "main"
    private: bool = False
    commit_message: str | None = None
    base_model: tuple[str, ...] = ()
    base_model_relation: str | None = None
    golden: Path | None = None
    tolerances: dict[str, float] = field(default_factory=dict)
    gating: Gating = Gating()
    variants: tuple[Variant, ...] = ()

    @property
    def path(self) -> Path:
        return self.root / FILENAME


def _pointer(error: jsonschema.ValidationError) -> str:
    return "/" + "/".join(str(p) for p in error.absolute_path)


def validate_data(data: Any, path: Path) -> None:
    """Raise InputError listing every schema violation (best first) of a parsed release.yaml."""
    validator = jsonschema.Draft202012Validator(load_schema(SCHEMA))
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(e.absolute_path), e.message))
    if errors:
        parts = [f"{_pointer(e)}: {e.message}" for e in errors[:5]]
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise InputError("invalid release.yaml: " + "; ".join(parts) + more, path=path)


def _inside(root: Path, rel: str, path: Path, key: str) -> Path:
    """``root / rel``, refusing paths that leave the release directory."""
    p = (root / rel).resolve()
    if root.resolve() not in (p, *p.parents):
        raise InputError(f"{key} {rel!r} points outside the release directory", path=path)
    return p


def from_data(data: dict[str, Any], root: Path, path: Path | None = None) -> ReleaseConfig:
    """Validate parsed YAML and build the typed config."""
    path = path or root / FILENAME
    validate_data(data, path)
    base = data.get("base_model") or ()
    base = (base,) if isinstance(base, str) else tuple(base)
    variants = tuple(
        Variant(
            format=v["format"],
            quant=v["quant"],
            repo=v["repo"],
            revision=v.get("revision", "main"),
            file=v.get("file"),
            shards=v.get("shards"),
            local_dir=_inside(root, v["local_dir"], path, f"variants[{n}].local_dir") if v.get("local_dir") else None,
            description=v.get("description"),
        )
        for n, v in enumerate(data.get("variants", []))
    )
    g = data.get("gating") or {}
    return ReleaseConfig(
        root=root,
        repo=data["repo"],
        files=tuple(data["files"]),
        exclude=tuple(data.get("exclude", [])),
        revision=data.get("revision", "main"),
        private=bool(data.get("private", False)),
        commit_message=data.get("commit_message"),
        base_model=base,
        base_model_relation=data.get("base_model_relation"),
        golden=_inside(root, data["golden"], path, "golden") if data.get("golden") else None,
        tolerances=dict(data.get("tolerances", {})),
        gating=Gating(gated=g.get("gated", False), prompt=g.get("prompt")),
        variants=variants,
    )


MAX_RELEASE_YAML_BYTES = 256 * 1024  # a real release.yaml is a few KB


def load(dir_or_file: Path) -> ReleaseConfig:
    """Read ``DIR/release.yaml`` (or the given file) within the YAML limits; a duplicate key is an error."""
    p = Path(dir_or_file)
    path = p / FILENAME if p.is_dir() else p
    if not path.exists():
        raise InputError("no release.yaml here", path=path, hint="create one with `gemma-release init DIR`")
    data = load_yaml_file(path, MAX_RELEASE_YAML_BYTES, what="release.yaml")
    if not isinstance(data, dict):
        raise InputError("release.yaml must be a mapping of keys to values", path=path)
    return from_data(data, path.parent, path)


def to_data(cfg: ReleaseConfig) -> dict[str, Any]:
    """The config as plain YAML data (paths relative to the release directory, defaults omitted)."""
    d: dict[str, Any] = {"repo": cfg.repo}
    if cfg.revision != "main":
        d["revision"] = cfg.revision
    if cfg.private:
        d["private"] = True
    if cfg.commit_message:
        d["commit_message"] = cfg.commit_message
    if cfg.base_model:
        d["base_model"] = cfg.base_model[0] if len(cfg.base_model) == 1 else list(cfg.base_model)
    if cfg.base_model_relation:
        d["base_model_relation"] = cfg.base_model_relation
    d["files"] = list(cfg.files)
    if cfg.exclude:
        d["exclude"] = list(cfg.exclude)
    if cfg.golden:
        d["golden"] = os.path.relpath(cfg.golden, cfg.root).replace(os.sep, "/")
    if cfg.tolerances:
        d["tolerances"] = dict(cfg.tolerances)
    if cfg.gating.gated or cfg.gating.prompt:
        d["gating"] = {"gated": cfg.gating.gated, **({"prompt": cfg.gating.prompt} if cfg.gating.prompt else {})}
    if cfg.variants:
        d["variants"] = [_variant_data(v, cfg.root) for v in cfg.variants]
    return d


def _variant_data(v: Variant, root: Path) -> dict[str, Any]:
    d: dict[str, Any] = {"format": v.format, "quant": v.quant, "repo": v.repo}
    if v.revision != "main":
        d["revision"] = v.revision
    for key in ("file", "shards", "description"):
        if getattr(v, key):
            d[key] = getattr(v, key)
    if v.local_dir:
        d["local_dir"] = os.path.relpath(v.local_dir, root).replace(os.sep, "/")
    return d


HEADER = """\
# release.yaml: what `gemma-release publish` uploads, and where (schema: release.schema.json).
#   repo                 destination ORG/NAME on the Hub (`publish --repo` overrides it)
#   base_model(_relation) what this release derives from: finetune | adapter | merge | quantized
#   files / exclude      glob patterns relative to this directory
#   golden               golden-logits file; publish runs `verify` against it first
#   variants             quantized variants in sibling repos (format, quant, repo, file or revision, shards)
"""


def dump(cfg: ReleaseConfig) -> str:
    """YAML text of the config, with a short explanatory header."""
    body = yaml.safe_dump(to_data(cfg), sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
    return HEADER + body


def write(cfg: ReleaseConfig, path: Path | None = None, overwrite: bool = False) -> Path:
    """Validate and write atomically (temp file + rename): nothing half-written on failure."""
    path = path or cfg.path
    if path.exists() and not overwrite:
        raise InputError("already exists; pass --force to overwrite it", path=path)
    text = dump(cfg)
    validate_data(yaml.safe_load(text), path)
    atomic_write(path, text)
    return path


def as_json(cfg: ReleaseConfig) -> str:
    return json.dumps(to_data(cfg), indent=2)
