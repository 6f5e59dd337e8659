"""Variant tables: parsing the real shapes, QUANT rules, generation (offline; local directories)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from release.card import variants as V
from release.errors import InputError

HF = "https://huggingface.co"

# TheBloke's "Provided files" (GGUF), as published, with one wrong row each kind of wrong.
THEBLOKE_GGUF = f"""
## Provided files

| Name | Quant method | Bits | Size | Max RAM required | Use case |
| ---- | ---- | ---- | ---- | ---- | ----- |
| [gemma-7b.Q2_K.gguf]({HF}/TheBloke/gemma-7b-GGUF/blob/main/gemma-7b.Q2_K.gguf) | Q2_K | 2 | 3.09 GB| 5.59 GB | smallest, significant quality loss - not recommended for most purposes |
| [gemma-7b.Q4_K_M.gguf]({HF}/TheBloke/gemma-7b-GGUF/blob/main/gemma-7b.Q5_K_M.gguf) | Q4_K_M | 4 | 5.33 GB| 7.83 GB | medium, balanced quality - recommended |
| [gemma-7b.Q8_0.gguf]({HF}/TheBloke/gemma-7b-GGUF/blob/main/gemma-7b.Q8_0.gguf) | Q9_K | 8 | 9.08 GB| 11.58 GB | very large, extremely low quality loss - not recommended |

**Note**: the above RAM figures assume no GPU offloading.
"""

# bartowski's "Download a file (not the whole branch) from below:", with a split row linking a folder.
BARTOWSKI = f"""
## Download a file (not the whole branch) from below:

| Filename | Quant type | File Size | Split | Description |
| -------- | ---------- | --------- | ----- | ----------- |
| [gemma-2-27b-it-Q8_0.gguf]({HF}/bartowski/gemma-2-27b-it-GGUF/tree/main/gemma-2-27b-it-Q8_0) | Q8_0 | 28.94GB | true | Extremely high quality, generally unneeded but max available quant. |
| [gemma-2-27b-it-Q6_K_L.gguf]({HF}/bartowski/gemma-2-27b-it-GGUF/blob/main/gemma-2-27b-it-Q6_K_L.gguf) | Q6_K_L | 22.63GB | false | Uses Q8_0 for embed and output weights. |
| [gemma-2-27b-it-IQ3_XXS.gguf]({HF}/bartowski/gemma-2-27b-it-GGUF/blob/main/gemma-2-27b-it-IQ3_XXS.gguf) | IQ3_XXS | 10.75GB | false | Lower quality, new method with decent performance. |
| [gemma-2-27b-it-f32.gguf]({HF}/bartowski/gemma-2-27b-it-GGUF/blob/main/gemma-2-27b-it-f32.gguf) | f32 | 108.91GB | true | Full F32 weights. |
"""

# TheBloke's GPTQ "Provided files, and GPTQ parameters" (branches).
THEBLOKE_GPTQ = f"""
| Branch | Bits | GS | Act Order | Damp % | GPTQ Dataset | Seq Len | Size | ExLlama | Desc |
| ------ | ---- | -- | --------- | ------ | ------------ | ------- | ---- | ------- | ---- |
| [main]({HF}/TheBloke/gemma-7b-GPTQ/tree/main) | 4 | 128 | Yes | 0.1 | [wikitext](https://huggingface.co/datasets/wikitext) | 4096 | 5.8 GB | Yes | 4-bit, with Act Order and group size 128g. |
| [gptq-4bit-32g-actorder_True]({HF}/TheBloke/gemma-7b-GPTQ/tree/gptq-4bit-32g-actorder_True) | 4 | 32 | Yes | 0.1 | wikitext | 4096 | 6.2 GB | Yes | 4-bit, with Act Order and group size 32g. |
| [gptq-8bit-128g-actorder_True]({HF}/TheBloke/gemma-7b-GPTQ/tree/gptq-8bit--1g-actorder_True) | 8 | 128 | Yes | 0.1 | wikitext | 4096 | 9.8 GB | No | 8-bit |
| [gptq-4bit-64g-actorder_True]({HF}/TheBloke/gemma-7b-GPTQ/tree/gptq-4bit-64g-actorder_True) | 8 | 64 | Yes | 0.1 | wikitext | 4096 | 6.0 GB | Yes | bits column disagrees with the branch |
"""

# The "Model | HF | GPTQ | GGUF | AWQ" shape as the real card 000 has it: flattened onto one line.
LINKS_FLAT = (
    "## All SauerkrautLM-Gemma-7b Models | Model | HF | GPTQ | GGUF | AWQ | |-------|-------|-------|-------|-------| "
    f"| SauerkrautLM-Gemma-7b | [Link]({HF}/VAGOsolutions/SauerkrautLM-Gemma-7b) | coming soon | coming soon | coming soon | "
    "## Model Details **SauerkrautLM-Gemma-7b**"
)
LINKS = f"""
| Model | HF | GPTQ | GGUF | AWQ |
|-------|----|------|------|-----|
| Gemma-7b-x | [Link]({HF}/org/Gemma-7b-x) | [Link]({HF}/org/Gemma-7b-x-GPTQ) | [Link]({HF}/org/Gemma-7b-x-AWQ) | - |
"""


def _rules(findings, rule):
    return [f for f in findings if f.rule == rule]


def _static(text):
    return [f for r in V.parse_rows(text) for f in V.static_findings(r, "README.md")]


def test_thebloke_files_table_reads_link_targets_not_only_labels():
    rows = V.parse_rows(THEBLOKE_GGUF)
    assert [r.label for r in rows] == ["gemma-7b.Q2_K.gguf", "gemma-7b.Q4_K_M.gguf", "gemma-7b.Q8_0.gguf"]
    assert {r.shape for r in rows} == {"files"} and {r.format for r in rows} == {"gguf"}
    assert rows[1].target == V.Target("TheBloke/gemma-7b-GGUF", "file", "main", "gemma-7b.Q5_K_M.gguf")
    assert rows[0].size_text == "3.09 GB" and rows[0].line == 6
    f = _static(THEBLOKE_GGUF)
    mismatch = _rules(f, "QUANT003")
    assert {x.line for x in mismatch} == {7}  # label Q4_K_M, target file Q5_K_M
    assert any("Q5_K_M" in x.message for x in mismatch)
    assert [x.line for x in _rules(f, "QUANT002")] == [8]  # Q9_K is no GGUF type


def test_bartowski_table_split_rows_and_float_types():
    rows = V.parse_rows(BARTOWSKI)
    assert len(rows) == 4
    assert rows[0].split is True and rows[0].target.kind == "tree" and rows[0].target.path == "gemma-2-27b-it-Q8_0"
    assert [V.row_quant(r).name for r in rows] == ["Q8_0", "Q6_K_L", "IQ3_XXS", "F32"]
    assert _static(BARTOWSKI) == []


def test_gptq_branch_table_label_and_bits_must_agree_with_branch():
    rows = V.parse_rows(THEBLOKE_GPTQ)
    assert [r.shape for r in rows] == ["branches"] * 4 and {r.format for r in rows} == {"gptq"}
    assert V.row_quant(rows[0]) == V.Quant("gptq", "4bit-128g", 4.0, 128)
    f = _static(THEBLOKE_GPTQ)
    bad_lines = sorted({x.line for x in _rules(f, "QUANT003")})
    assert bad_lines == [6, 7]  # label vs link branch; bits 8 vs branch 4bit
    assert not _rules(f, "QUANT002")


def test_links_table_flattened_placeholders_are_errors():
    rows = V.parse_rows(LINKS_FLAT)
    assert [(r.format, r.placeholder) for r in rows] == [("hf", None), ("gptq", "coming soon"), ("gguf", "coming soon"), ("awq", "coming soon")]
    f = _static(LINKS_FLAT)
    assert [x.extra for x in f] and len(_rules(f, "QUANT001")) == 3 and all(x.severity == "error" for x in f)


def test_links_table_format_column_must_match_repo():
    f = _static(LINKS)
    assert len(_rules(f, "QUANT003")) == 1 and "AWQ" in _rules(f, "QUANT003")[0].message  # GGUF column -> AWQ repo
    assert not _rules(f, "QUANT001")  # '-' means "not provided", not a placeholder


@pytest.mark.parametrize(
    ("text", "fmt", "name"),
    [
        ("Q4_K_M", None, "Q4_K_M"), ("q5_k_s", "gguf", "Q5_K_S"), ("IQ3_XXS", None, "IQ3_XXS"), ("iq1_s", None, "IQ1_S"),
        ("bf16", None, "BF16"), ("fp16", None, "F16"), ("gemma-2-9b-it-Q8_0-00001-of-00002.gguf", None, "Q8_0"),
        ("4-bit", "gptq", "4bit"), ("gptq-4bit-32g-actorder_True", None, "4bit-32g"), ("4bit 128g", "gptq", "4bit-128g"),
        ("AWQ", "awq", "4bit"), ("6.5bpw", None, "6.5bpw"), ("6_5", "exl2", "6.5bpw"),
    ],
)
def test_quant_labels_parse(text, fmt, name):
    q = V.parse_quant(text, fmt)
    assert q is not None and q.name == name


@pytest.mark.parametrize(("text", "fmt"), [("Q9_K", None), ("Q4_K_XXL", "gguf"), ("5-bit", "gptq"), ("fast", None), ("", "gguf")])
def test_bad_quant_labels_do_not_parse(text, fmt):
    assert V.parse_quant(text, fmt) is None


@given(st.integers(min_value=1, max_value=10**13))
@settings(max_examples=300, deadline=None)
def test_formatted_sizes_always_pass_the_size_check(n):
    assert V.size_matches(V.format_size(n), n)


def test_size_check_is_one_percent_plus_display_rounding():
    assert V.size_matches("10050 B", 10_000)  # 0.5%
    assert not V.size_matches("10200 B", 10_000)  # 2%
    assert V.size_matches("0.5 GB", 540_000_000)  # '0.5' can mean 0.45..0.55
    assert not V.size_matches("0.50 GB", 540_000_000)
    assert V.size_matches("1.00 GiB", 2**30) and not V.size_matches("1.00 GB", 2**30)
    assert V.parse_size("about a gig") is None


# --- against files ------------------------------------------------------------------------------


def _write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)


@pytest.fixture
def gguf_repo(tmp_path):
    """A local stand-in for org/m-GGUF: one single file, one complete and one incomplete shard set."""
    d = tmp_path / "m-GGUF"
    _write(d / "m.Q4_K_M.gguf", 10_000)
    _write(d / "m-Q8_0/m-Q8_0-00001-of-00002.gguf", 6_000)
    _write(d / "m-Q8_0/m-Q8_0-00002-of-00002.gguf", 6_000)
    _write(d / "m-F16-00001-of-00003.gguf", 7_000)
    _write(d / "m-F16-00003-of-00003.gguf", 7_000)
    return d


def _card(rows: str) -> str:
    return "| Filename | Quant type | File Size | Split |\n| --- | --- | --- | --- |\n" + rows


def _check(card: str, gguf_repo: Path):
    listing = V.local_listing({"org/m-GGUF": gguf_repo})
    return [f for r in V.parse_rows(card) for f in V.static_findings(r, "c") + V.file_findings(r, listing, "c")]


def test_rows_checked_against_files_sizes_shards_existence(gguf_repo):
    card = _card(
        f"| [m.Q4_K_M.gguf]({HF}/org/m-GGUF/blob/main/m.Q4_K_M.gguf) | Q4_K_M | 10.0 kB | false |\n"
        f"| [m-Q8_0.gguf]({HF}/org/m-GGUF/tree/main/m-Q8_0) | Q8_0 | 12.0 kB | true |\n"
        f"| [m-F16.gguf]({HF}/org/m-GGUF/blob/main/m-F16-00001-of-00003.gguf) | F16 | 21.0 kB | true |\n"
        f"| [m.Q2_K.gguf]({HF}/org/m-GGUF/blob/main/m.Q2_K.gguf) | Q2_K | 1.0 kB | false |\n"
        f"| [m.Q4_K_M.gguf]({HF}/org/m-GGUF/blob/main/m.Q4_K_M.gguf) | Q4_K_M | 10.3 kB | false |\n"
        f"| [m.Q4_K_M.gguf]({HF}/org/nope-GGUF/blob/main/m.Q4_K_M.gguf) | Q4_K_M | 10.0 kB | false |\n"
    )
    f = _check(card, gguf_repo)
    by_line = {(x.rule, x.line) for x in f}
    assert by_line == {("QUANT006", 5), ("QUANT004", 6), ("QUANT005", 7), ("QUANT004", 8)}, f
    assert "m-F16-00002-of-00003.gguf" in next(x.message for x in f if x.rule == "QUANT006")


# --- generation -------------------------------------------------------------------------------------

RELEASE_YAML = """\
repo: org/m
base_model: google/gemma-2b
base_model_relation: finetune
files: [README.md]
variants:
  - {format: gguf, quant: Q4_K_M, repo: org/m-GGUF, file: m.Q4_K_M.gguf, local_dir: m-GGUF, description: "balanced | recommended"}
  - {format: gguf, quant: q8_0, repo: org/m-GGUF, file: m-Q8_0/m-Q8_0-00001-of-00002.gguf, local_dir: m-GGUF}
  - {format: gptq, quant: 4bit-128g, repo: org/m-GPTQ, revision: gptq-4bit-128g, local_dir: m-GPTQ}
"""


@pytest.fixture
def release_dir(tmp_path, gguf_repo):
    _write(tmp_path / "m-GPTQ/model.safetensors", 3_000)
    _write(tmp_path / "m-GPTQ/config.json", 100)
    d = tmp_path  # variants' local_dir must lie inside the release directory (release.yaml confines every path)
    (d / "release.yaml").write_text(RELEASE_YAML)
    (d / "README.md").write_text("---\nlicense: gemma\n---\n# m\n\nSome text.\n")
    return d


def test_generated_table_is_idempotent_and_parses_back_clean(release_dir):
    card = release_dir / "README.md"
    assert V.write_table(release_dir) == (card, True)
    first = card.read_text()
    assert V.write_table(release_dir) == (card, False)
    assert card.read_text() == first
    assert first.count(V.BEGIN) == 1 and "| Q4_K_M | 10.00 kB | balanced / recommended |" in first
    assert "(2 parts)" in first and "[gptq-4bit-128g](" in first and "3.00 kB" in first
    rows = V.parse_rows(first)
    assert [V.row_quant(r).name for r in rows] == ["Q4_K_M", "Q8_0", "4bit-128g"]
    found = V.check_variants(release_dir)
    # the fixture's files are zero bytes: sizes are checked, format and bits cannot be read (QUANT010, info)
    assert [(f.rule, f.severity) for f in found] == [("QUANT010", "info")] * 3
    assert all("format and bits not compared" in f.message for f in found)


def test_stale_generated_table_is_flagged(release_dir, gguf_repo):
    V.write_table(release_dir)
    _write(gguf_repo / "m.Q4_K_M.gguf", 20_000)  # the variant was re-quantized; the card was not regenerated
    f = V.check_variants(release_dir)
    assert {x.rule for x in f} >= {"QUANT007", "QUANT005"}
    assert _rules(f, "QUANT007")[0].severity == "error"


def test_missing_table_and_missing_variant(release_dir, gguf_repo):
    assert [x.rule for x in V.check_variants(release_dir)] == ["QUANT007"]  # variants listed, no table yet
    (gguf_repo / "m.Q4_K_M.gguf").unlink()
    with pytest.raises(InputError, match="m.Q4_K_M.gguf not found"):
        V.write_table(release_dir)
    assert V.BEGIN not in (release_dir / "README.md").read_text()


@given(st.text(alphabet="ab\n|-#", max_size=60))
@settings(max_examples=100, deadline=None)
def test_insert_table_is_idempotent(text):
    table = "| a | b |\n| - | - |\n| 1 | 2 |\n"
    if V.BEGIN in text:
        return
    once = V.insert_table(text, table)
    assert V.insert_table(once, table) == once
    assert V.current_table(once)[0] == table


def test_quantized_release_card_needs_relation_and_base(tmp_path):
    d = tmp_path / "q"
    _write(d / "m.Q4_K_M.gguf", 100)
    (d / "README.md").write_text("---\nlicense: gemma\n---\n# q\n")
    f = V.check_variants(d)
    assert {x.pointer for x in _rules(f, "QUANT008")} == {"/base_model", "/base_model_relation"}
    (d / "README.md").write_text("---\nlicense: gemma\nbase_model: org/m\nbase_model_relation: quantized\n---\n# q\n")
    assert V.check_variants(d) == []


def test_unchecked_rows_are_reported_as_info_offline(tmp_path):
    (tmp_path / "README.md").write_text(THEBLOKE_GGUF)
    f = V.check_variants(tmp_path)
    assert [x for x in f if x.rule == "QUANT010"][0].severity == "info"
