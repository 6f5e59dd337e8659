"""release.yaml: schema validation, typed loading, atomic writing, and `gemma-release init`."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

import jsonschema
import pytest
import yaml

from release import release_yaml as R
from release.errors import InputError
from release.resources import load_schema

GOOD = """\
repo: my-org/gemma-2b-x
base_model: [google/gemma-2b]
base_model_relation: finetune
files: ["*.safetensors", config.json, README.md, NOTICE]
exclude: ["*.tmp"]
golden: golden.safetensors
tolerances: {atol: 0.001}
gating: {gated: manual, prompt: "Agree to the Gemma Terms of Use"}
variants:
  - {format: gguf, quant: Q4_K_M, repo: my-org/gemma-2b-x-GGUF, file: x.Q4_K_M.gguf}
  - {format: gptq, quant: 4bit-128g, repo: my-org/gemma-2b-x-GPTQ, revision: gptq-4bit-128g}
"""


def _write(tmp_path, text):
    (tmp_path / "release.yaml").write_text(text)
    return tmp_path


def test_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(load_schema("release.schema.json"))


def test_load_good_file_gives_typed_config(tmp_path):
    cfg = R.load(_write(tmp_path, GOOD))
    assert cfg.repo == "my-org/gemma-2b-x" and cfg.base_model == ("google/gemma-2b",)
    assert cfg.golden == (tmp_path / "golden.safetensors").resolve()
    assert cfg.gating == R.Gating("manual", "Agree to the Gemma Terms of Use")
    assert cfg.variants[0].file == "x.Q4_K_M.gguf" and cfg.variants[1].revision == "gptq-4bit-128g"
    assert cfg.tolerances == {"atol": 0.001}


def test_dump_then_load_round_trips(tmp_path):
    cfg = R.load(_write(tmp_path, GOOD))
    again = R.from_data(yaml.safe_load(R.dump(cfg)), tmp_path)
    assert again == cfg


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("files: [a]\n", "'repo' is a required property"),
        ("repo: not-a-repo\nfiles: [a]\n", "/repo"),
        ("repo: a/b\nfiles: []\n", "/files"),
        ("repo: a/b\nfiles: [a]\nfils: [b]\n", "'fils' was unexpected"),
        ("repo: a/b\nfiles: [a]\nvariants: [{format: gguf, quant: Q4_K_M, repo: a/b-GGUF}]\n", "/variants/0"),
        ("repo: a/b\nfiles: [a]\nvariants: [{format: ggml, quant: q4, repo: a/c, file: f}]\n", "/variants/0/format"),
        ("repo: a/b\nfiles: [a]\nbase_model_relation: finetuned\n", "/base_model_relation"),
    ],
)
def test_invalid_files_name_the_file_and_the_key(tmp_path, text, expect):
    with pytest.raises(InputError) as e:
        R.load(_write(tmp_path, text))
    assert expect in str(e.value) and str(tmp_path / "release.yaml") in str(e.value)


def test_yaml_errors_and_non_mappings(tmp_path):
    with pytest.raises(InputError, match="line 2"):
        R.load(_write(tmp_path, "repo: a/b\nfiles: a: b\n"))
    with pytest.raises(InputError, match="mapping"):
        R.load(_write(tmp_path, "- a\n- b\n"))
    with pytest.raises(InputError, match="init"):
        R.load(tmp_path / "nowhere")
    with pytest.raises(InputError, match="outside"):
        R.load(_write(tmp_path, "repo: a/b\nfiles: [a]\ngolden: ../../etc/passwd\n"))
    with pytest.raises(InputError, match="not allowed"):  # tags never construct objects
        R.load(_write(tmp_path, "repo: !!python/object/apply:os.system [echo hi]\nfiles: [a]\n"))


def _golden(path: Path) -> None:
    """A real (tiny) golden file, written by the golden writer, under any name."""
    import numpy as np

    from release.weights.golden import Golden, make_prompt, write_golden

    ids = np.array([2, 5], dtype=np.int64)
    write_golden(Golden(prompts=[make_prompt("p", ids, np.zeros((2, 8), np.float32), "full")], vocab_size=8,
                        producer="test", producer_version="0", storage="full", model="m"), path)


def _model_dir(tmp_path):
    d = tmp_path / "gemma-2b-sauerkraut"
    d.mkdir()
    for name in ("config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                 "model.safetensors.index.json", "tokenizer.model", "NOTICE.txt", "generation_config.json",
                 "chat_template.jinja", "preprocessor_config.json", "USE_POLICY.md", "train.log", ".env", "adapter.bin"):
        (d / name).write_bytes(b"{}")
    (d / "GEMMA_TERMS_OF_USE.md").write_text("Gemma Terms of Use\n\nLast modified: March 24, 2025\n\nBy using ...\n")
    (d / "legal.html").write_text("<h1>Gemma Terms of Use</h1><p>Last modified: April 1, 2024</p>")
    _golden(d / "golden.safetensors")
    _golden(d / "before.golden")
    (d / "README.md").write_text("---\nlicense: gemma\nbase_model: google/gemma-2b\n---\n# x\n")
    return d


def test_init_drafts_from_the_directory(tmp_path):
    from release.publish.draft import init

    d = _model_dir(tmp_path)
    path, cfg, left_out = init(d)
    assert path == d / "release.yaml" and R.load(d) == cfg
    assert cfg.repo == "your-org/gemma-2b-sauerkraut" and cfg.base_model == ("google/gemma-2b",)
    assert cfg.golden in (d / "golden.safetensors", d / "before.golden")
    assert set(cfg.files) == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
                              "config.json", "generation_config.json", "tokenizer.model", "chat_template.jinja",
                              "preprocessor_config.json", "README.md", "NOTICE.txt", "GEMMA_TERMS_OF_USE.md", "legal.html",
                              "USE_POLICY.md"}
    why = dict(left_out)
    assert set(why) == {"golden.safetensors", "before.golden", "train.log", ".env", "adapter.bin"}
    assert why["golden.safetensors"].startswith("a golden") and "pickle" in why["adapter.bin"] and "dotfile" in why[".env"]
    assert cfg.base_model_relation is None  # not stated in the card and nothing to infer it from
    assert [p.name for p in d.iterdir() if p.name.startswith(".release")] == []


def test_a_golden_named_like_weights_is_never_uploaded_unless_named(tmp_path):
    from release.releaseset import resolve

    d = _model_dir(tmp_path)
    (d / "release.yaml").write_text("repo: a/b\nfiles: ['*.safetensors', '*.golden', config.json]\n")
    rs = resolve(d)
    assert "golden.safetensors" not in rs and "before.golden" not in rs and "model-00001-of-00002.safetensors" in rs
    assert dict(rs.left_out)["golden.safetensors"].startswith("a golden")
    (d / "release.yaml").write_text("repo: a/b\nfiles: ['*.safetensors', golden.safetensors]\n")
    assert "golden.safetensors" in resolve(d)  # asked for by name


def test_init_refuses_to_overwrite_and_cli_exits_2(tmp_path):
    from release.publish.draft import init

    d = _model_dir(tmp_path)
    (d / "release.yaml").write_text("keep me\n")
    with pytest.raises(InputError, match="--force"):
        init(d)
    assert (d / "release.yaml").read_text() == "keep me\n"
    r = subprocess.run([sys.executable, "-m", "release.cli", "init", str(d)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "already exists" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "release.cli", "init", str(d), "--force", "--repo", "org/x"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "- before.golden: a golden" in r.stdout and "+ NOTICE.txt" in r.stdout
    assert R.load(d).repo == "org/x"


def test_init_rejects_bad_repo_and_empty_dir(tmp_path):
    from release.publish.draft import init

    with pytest.raises(InputError, match="ORG/NAME"):
        init(_model_dir(tmp_path), repo="no-slash")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("# just a card\n")
    with pytest.raises(InputError, match="no model files"):
        init(empty)
    assert not (empty / "release.yaml").exists()


def test_init_recognises_gguf_release_as_quantized(tmp_path):
    from release.publish.draft import init

    d = tmp_path / "q"
    d.mkdir()
    (d / "m.Q4_K_M.gguf").write_bytes(b"GGUF")
    (d / "README.md").write_text("---\nbase_model: org/m\n---\n")
    _, cfg, _ = init(d, repo="org/m-GGUF")
    assert cfg.base_model_relation == "quantized" and "m.Q4_K_M.gguf" in cfg.files
    assert json.loads(R.as_json(cfg))["repo"] == "org/m-GGUF"
