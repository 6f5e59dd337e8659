"""``gemma-release init``: draft a ``release.yaml`` from what a directory holds, and say what it leaves out.

Every file a Hugging Face model release needs is listed by its exact name (no
wildcard that could later sweep in a golden file or a stray checkpoint):

=================  ===================================================================
weights            ``*.safetensors`` (never a golden file: those are recognised by their
                   contents, whatever their name), their ``*.index.json``, ``*.gguf``
configuration      config.json, generation_config.json, adapter_config.json, quantization configs
tokenizer          tokenizer.model / .json / _config.json, special_tokens_map.json, added_tokens.json
chat template      chat_template.jinja / .json, ``*.jinja``
processor          preprocessor / processor / video_preprocessor configs
card and licence   README.md, NOTICE (any of its usual names), LICENSE / terms copies (recognised by
                   name, or by content for .md/.txt/.html files), USE_POLICY, checksum files
=================  ===================================================================

Everything else is left out, each with the reason: the golden file (publish runs
``verify`` against it), release.yaml itself, pickles, caches, dotfiles, other files.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path, PurePosixPath

from release import release_yaml
from release.card.terms import terms_copy_date
from release.errors import InputError
from release.files import read_text_file
from release.releaseset import NEVER_PUBLISH, directory_files, is_golden_file

# (kind, pattern on the file's name, case-insensitive); the first that matches names the kind.
KINDS: tuple[tuple[str, re.Pattern[str]], ...] = tuple((k, re.compile(p, re.IGNORECASE)) for k, p in (
    ("weights", r".+\.safetensors$"),
    ("weights index", r".+\.safetensors\.index\.json$"),
    ("weights", r".+\.gguf$"),
    ("configuration", r"^(?:config|generation_config|adapter_config|quantize_config|quant_config|quantization_config)\.json$"),
    ("tokenizer", r"^(?:tokenizer\.(?:model|json)|tokenizer_config\.json|special_tokens_map\.json|added_tokens\.json|vocab\.(?:json|txt))$"),
    ("chat template", r"^(?:chat_template\.(?:jinja|json)|.+\.jinja)$"),
    ("processor", r"^(?:preprocessor_config|processor_config|video_preprocessor_config|feature_extractor_config)\.json$"),
    ("card", r"^readme\.md$"),
    ("notice", r"^notice(?:\.(?:txt|md))?$"),
    ("licence", r"^(?:licen[cs]e|copying|gemma[_-]?terms|terms)[\w.-]*$|^[\w.-]*terms[\w.-]*\.(?:md|txt|html?)$"),
    ("use policy", r"^(?:use[_-]?policy|prohibited[_-]?use[\w.-]*)(?:\.(?:md|txt|html?))?$"),
    ("checksums", r"^(?:sha256sums?|checksums?)(?:\.txt)?$|.+\.sha256$"),
))
PICKLE = re.compile(r"\.(?:bin|pt|pth|ckpt|pkl|pickle)$", re.IGNORECASE)
_TEXT = re.compile(r"\.(?:md|txt|html?)$", re.IGNORECASE)
_MAX_SCAN = 2 * 1024 * 1024


def classify(root: Path, rel: str) -> tuple[str | None, str]:
    """(kind, "") for a file a release needs, or (None, why it is left out)."""
    name = PurePosixPath(rel).name
    if rel == release_yaml.FILENAME:
        return None, "the release description itself"
    if any(PurePosixPath(rel).match(x) for x in NEVER_PUBLISH) or any(p.startswith(".") for p in PurePosixPath(rel).parts):
        return None, "a dotfile, cache or temporary file"
    if is_golden_file(root / rel):
        return None, "a golden-logits file (publish verifies against it; it is not weights)"
    if PICKLE.search(name):
        return None, "pickle weights (never loaded or published by this tool; convert to safetensors)"
    for kind, pattern in KINDS:
        if pattern.search(name):
            return kind, ""
    if _TEXT.search(name) and "/" not in rel and (root / rel).stat().st_size <= _MAX_SCAN:
        try:
            if terms_copy_date(read_text_file(root / rel, _MAX_SCAN))[1]:
                return "licence", ""  # a copy of the Gemma Terms of Use under another name
        except InputError:
            pass
    return None, "not a file a model release needs (add it to files to upload it)"


def draft(root: Path, repo: str | None = None) -> tuple[release_yaml.ReleaseConfig, list[tuple[str, str]]]:
    """A starting config from what ``root`` holds, and the (path, why) of every file it leaves out."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("not a directory", path=root)
    files: list[str] = []
    left_out: list[tuple[str, str]] = []
    goldens: list[Path] = []
    for rel in directory_files(root.resolve()):
        kind, why = classify(root, rel)
        if kind is None:
            left_out.append((rel, why))
            if why.startswith("a golden"):
                goldens.append(root / rel)
        else:
            files.append(glob.escape(rel))  # exact names: a later stray file is never swept in
    if not any(classify(root, f)[0] not in ("card", "notice", "licence", "use policy", "checksums") for f in files):
        raise InputError("found no model files (config.json, *.safetensors, *.gguf, tokenizer, ...) to publish", path=root)
    meta = _front_matter(root / "README.md")
    base = meta.get("base_model")
    base_t = tuple(b for b in ([base] if isinstance(base, str) else base or [])
                   if isinstance(b, str) and release_yaml.REPO_ID_RE.match(b))
    relation = meta.get("base_model_relation")
    if relation not in ("finetune", "adapter", "merge", "quantized"):
        relation = ("quantized" if any(f.lower().endswith(".gguf") for f in files)
                    else "adapter" if "adapter_config.json" in files else None)
    name = re.sub(r"[^A-Za-z0-9._-]", "-", root.resolve().name).strip("-.") or "model"
    cfg = release_yaml.ReleaseConfig(
        root=root,
        repo=repo or f"your-org/{name}",
        files=tuple(files),
        base_model=base_t,
        base_model_relation=relation if base_t else None,
        golden=sorted(goldens)[0] if goldens else None,
    )
    return cfg, left_out


def _front_matter(readme: Path) -> dict:
    """The card's YAML metadata, or {} when absent or unreadable (init only drafts; card check judges)."""
    from release.card.cardfile import parse_card

    try:
        text = read_text_file(readme, 16 << 20, what="README.md")
    except InputError:
        return {}
    return parse_card(text, readme).metadata.to_dict()


def init(root: Path, repo: str | None = None, overwrite: bool = False) -> tuple[Path, release_yaml.ReleaseConfig, list[tuple[str, str]]]:
    """Draft and write ``root/release.yaml``; refuses to overwrite unless asked."""
    if repo is not None and not release_yaml.REPO_ID_RE.match(repo):
        raise InputError(f"--repo {repo!r} is not of the form ORG/NAME")
    cfg, left_out = draft(root, repo)
    return release_yaml.write(cfg, overwrite=overwrite), cfg, left_out
