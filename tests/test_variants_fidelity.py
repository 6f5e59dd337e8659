"""A release's variants measured and charted: `variants fidelity` (the original run once), `variants table --fidelity`
for every format, `variants check` against the files' own format and bits (QUANT011), one definition of "quantized"
for the card rules (QUANT008) and verify, `variants chart`.

The release is tests/data/models/gemma2_gqa_softcap with four local variants written at test time: GGUF Q8_0 and
Q4_0 (tests/gguf_fixtures.py, as llama.cpp converts) and MLX 4-bit g64 and 8-bit g32 (tests/quant_fixtures.py, as
mlx-lm quantizes). All offline, a few seconds.
"""

from __future__ import annotations

import json
import shutil
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from release.card import variants as V
from release.errors import InputError
from release.weights import fidelity as F
from release.weights.gguf_verify import verify_gguf
from release.weights.golden import PromptSpec
from release.weights.quant_verify import verify_quant
from tests.conftest import MODELS
from tests.gguf_fixtures import write_gguf
from tests.quant_fixtures import QUANT_DATA, damage, write_mlx_variant

CASE = "gemma2_gqa_softcap"
IDS = [[2, 5, 9, 100, 33, 7, 250, 14, 3, 88, 411, 19], [2, 400, 12, 61, 5], [2, 17, 300, 41, 9, 9, 120]]
ID_ARGS = [a for ids in IDS for a in ("--ids", ",".join(map(str, ids)))]
NAMES = ["m.Q8_0.gguf", "m.Q4_0.gguf", "m-mlx-4bit", "m-mlx-8bit"]

RELEASE_YAML = """\
repo: org/m
base_model: google/gemma-2-2b
base_model_relation: finetune
files: [config.json, model.safetensors, README.md]
variants:
  - {format: gguf, quant: Q8_0, repo: org/m-GGUF, file: m.Q8_0.gguf, local_dir: m-GGUF}
  - {format: gguf, quant: Q4_0, repo: org/m-GGUF, file: m.Q4_0.gguf, local_dir: m-GGUF}
  - {format: mlx, quant: 4bit-64g, repo: org/m-mlx-4bit, revision: main, local_dir: m-mlx-4bit}
  - {format: mlx, quant: 8bit-32g, repo: org/m-mlx-8bit, revision: main, local_dir: m-mlx-8bit}
  - {format: gguf, quant: Q2_K, repo: org/m-GGUF, file: m.Q2_K.gguf}
"""


def prompts() -> list[PromptSpec]:
    return [PromptSpec(f"ids-{i}", ids=ids) for i, ids in enumerate(IDS)]


@pytest.fixture(scope="module")
def variants_dir(tmp_path_factory) -> Path:
    """The four variants, written once; each test copies what it changes."""
    d = tmp_path_factory.mktemp("variants")
    (d / "m-GGUF").mkdir()
    write_gguf(MODELS / CASE, d / "m-GGUF" / "m.Q8_0.gguf", "Q8_0")
    write_gguf(MODELS / CASE, d / "m-GGUF" / "m.Q4_0.gguf", "Q4_0")
    write_mlx_variant(MODELS / CASE, d / "m-mlx-4bit", 4, 64)
    write_mlx_variant(MODELS / CASE, d / "m-mlx-8bit", 8, 32)
    return d


def make_release(root: Path, variants_dir: Path, yaml: str = RELEASE_YAML) -> Path:
    shutil.copytree(MODELS / CASE, root)
    for sub in ("m-GGUF", "m-mlx-4bit", "m-mlx-8bit"):
        shutil.copytree(variants_dir / sub, root / sub)
    (root / "README.md").write_text("---\nlicense: gemma\nbase_model: google/gemma-2-2b\n---\n# m\n\nA fine-tune.\n")
    (root / "release.yaml").write_text(yaml)
    return root


@pytest.fixture
def release(tmp_path, variants_dir) -> Path:
    return make_release(tmp_path / "rel", variants_dir)


@pytest.fixture
def forwards(monkeypatch):
    """Counts forward passes by what they run on: "original" (gemma_ref's Weights) or the variant's reader."""
    import gemma_ref.model as M

    counted: list[str] = []
    real = M.forward

    def counting(weights, *a, **kw):
        counted.append("original" if type(weights).__name__ == "Weights" else type(weights).__name__)
        return real(weights, *a, **kw)

    monkeypatch.setattr(M, "forward", counting)
    return counted


# --- variants fidelity: N + 1 forward passes, the numbers of verify --against -------------------------------------


def test_one_original_forward_for_every_variant_and_verify_against_numbers(release, forwards):
    run = F.measure_release(release, prompts())
    assert forwards == ["original", "GGUFWeights", "GGUFWeights", "QuantWeights", "QuantWeights"]  # N + 1
    assert [r.variant.name for r in run.results] == NAMES and run.forwards == 5
    assert run.storage == "full" and run.topk is None and run.positions == sum(map(len, IDS))
    assert run.skipped == [("org/m-GGUF: m.Q2_K.gguf", "no local copy (give it a local_dir in release.yaml)")]
    forwards.clear()
    for r in run.results:  # the 2N way: verify --against, one variant at a time
        measure = verify_gguf if r.variant.kind == "gguf" else verify_quant
        alone = measure(r.variant.path, release, prompts())
        assert r.report.ok == alone.ok and r.report.storage == alone.storage == "full"
        for a, b in zip(r.report.prompts, alone.prompts):
            for key in ("mean_kl", "max_kl", "top1_agreement", "max_abs_diff"):
                x, y = getattr(a, key), getattr(b, key)
                assert abs(x - y) <= 1e-6 * abs(y), (r.variant.name, a.name, key, x, y)
            assert (a.worst_position, a.within_tolerance, a.n_tokens) == (b.worst_position, b.within_tolerance, b.n_tokens)
        assert abs(r.report.mean_kl - alone.mean_kl) <= 1e-6 * alone.mean_kl and r.report.mean_kl > 0
        assert [(f.rule, f.message) for f in r.report.findings] == [(f.rule, f.message) for f in alone.findings]
        assert r.report.variant == alone.variant
        on_disk = json.loads(r.out.read_text())
        assert on_disk["kind"] == r.variant.kind and on_disk["variant"]["file"] == r.variant.name
        assert on_disk["overall"]["mean_kl"] == r.report.mean_kl
    assert forwards.count("original") == 4 and len(forwards) == 8  # 2N
    bpw = {r.variant.name: r.report.variant["bits_per_weight"] for r in run.results}
    assert bpw == {"m.Q8_0.gguf": 8.5, "m.Q4_0.gguf": 4.5, "m-mlx-4bit": 4.5, "m-mlx-8bit": 9.0}


def test_topk_reference_is_a_lower_bound_with_exact_top1(release):
    full = {r.variant.name: r.report for r in F.measure_release(release, prompts(), out_dir=release / "a").results}
    for k in (8, 512):
        run = F.measure_release(release, prompts(), out_dir=release / f"k{k}", storage="topk", topk=k)
        assert run.storage == "topk" and run.topk == k
        for r in run.results:
            f = full[r.variant.name]
            assert r.report.storage == "topk" and r.report.top1_agreement == f.top1_agreement  # top-1: exact for any k
            for a, b in zip(r.report.prompts, f.prompts):
                assert a.mean_kl <= b.mean_kl * (1 + 1e-4) + 1e-6  # top-k + one bucket: never above the full KL
                if k == 512:  # k = V: the same KL up to the float32 log-sum-exp of the variant (~1e-7 nats)
                    assert abs(a.mean_kl - b.mean_kl) <= 1e-3 * b.mean_kl + 1e-6
    q4 = run.results[1].report.mean_kl
    assert q4 > 0.01  # the comparison is not trivially zero


def test_cli_writes_one_report_per_variant_that_the_table_reads(cli, release):
    r = cli("variants", "fidelity", release, *ID_ARGS, "--json")
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    assert summary["ok"] and summary["forwards"] == 5 and summary["storage"] == "full"
    assert [v["name"] for v in summary["variants"]] == NAMES
    assert [v["quant"] for v in summary["variants"]] == ["Q8_0", "Q4_0", "mlx affine 4-bit g64", "mlx affine 8-bit g32"]
    assert sorted(p.name for p in (release / "fidelity").iterdir()) == sorted(f"{n}.json" for n in NAMES)
    for step in ("original (once, for 4 variants): forward", "variant 1/4 m.Q8_0.gguf: forward: GGUF (Q8_0)",
                 "variant 4/4 m-mlx-8bit: forward: mlx affine 8-bit g32"):
        assert step in r.err  # one progress line per variant (stderr is not a terminal here)
    text = cli("variants", "fidelity", release, *ID_ARGS, "-o", release / "again")
    assert text.code == 0 and "5 forward passes" in text.out and "would run 8" in text.out
    assert "MLX affine 4-bit g64" in text.out and "GGUF Q4_0" in text.out and "skipped org/m-GGUF: m.Q2_K.gguf" in text.out

    yaml = RELEASE_YAML.rsplit("  - {format: gguf, quant: Q2_K", 1)[0]  # the table needs every variant's files
    (release / "release.yaml").write_text(yaml)
    t = cli("variants", "table", release, "--fidelity", release / "fidelity")
    assert t.code == 0, t.err
    rows = t.out.strip().splitlines()[2:]
    measured = {v["name"]: v for v in summary["variants"]}
    for row, name in zip(rows, NAMES):
        m = measured[name]
        assert row.endswith(f"| {m['mean_kl']:.2g} nats, {m['top1_agreement']:.1%} |"), (row, name)
    assert V.NOT_MEASURED not in t.out
    assert cli("variants", "table", release, "--write", "--fidelity", release / "fidelity").code == 0
    assert V.check_variants(release) == []  # the generated table: labels agree with the files (QUANT011 quiet)


def test_a_variant_outside_its_bounds_is_exit_1_and_still_reported(cli, tmp_path, variants_dir):
    rel = make_release(tmp_path / "rel", variants_dir, RELEASE_YAML.replace("local_dir: m-mlx-8bit", "local_dir: bad"))
    shutil.copytree(rel / "m-mlx-8bit", rel / "bad")
    damage(rel / "bad", "model.embed_tokens.scales", lambda a: (a.astype(np.float32) * 3).astype(a.dtype))  # the tied head
    r = cli("variants", "fidelity", rel, *ID_ARGS)
    assert r.code == 1 and "FAIL: bad outside its bounds" in r.out
    report = json.loads((rel / "fidelity" / "bad.json").read_text())
    assert not report["ok"] and {f["rule"] for f in report["findings"]} == {"LOGITS002"}
    assert json.loads((rel / "fidelity" / "m.Q8_0.gguf.json").read_text())["ok"]


def test_bad_input_is_exit_2_before_any_forward(cli, tmp_path, variants_dir, forwards):
    rel = make_release(tmp_path / "rel", variants_dir)
    write_gguf(MODELS / "gemma3_1b_style", rel / "m-GGUF" / "m.Q4_0.gguf", "Q4_0")  # another model's GGUF
    r = cli("variants", "fidelity", rel, *ID_ARGS)
    assert r.code == 2 and "m.Q4_0.gguf" in r.err and "does not fit the original" in r.err
    assert forwards == [] and not (rel / "fidelity").exists()  # nothing run, nothing written

    rel2 = make_release(tmp_path / "rel2", variants_dir, "repo: org/m\nfiles: [README.md]\nvariants:\n"
                        "  - {format: gguf, quant: Q8_0, repo: org/m-GGUF, file: m.Q8_0.gguf}\n")
    r = cli("variants", "fidelity", rel2, *ID_ARGS)
    assert r.code == 2 and "no variant to measure here" in r.err and "no local copy" in r.err
    (rel2 / "release.yaml").write_text("repo: org/m\nfiles: [README.md]\nvariants:\n"
                                       "  - {format: gguf, quant: Q8_0, repo: org/m-GGUF, file: nope.gguf, local_dir: m-GGUF}\n")
    r = cli("variants", "fidelity", rel2, *ID_ARGS)
    assert r.code == 2 and "nope.gguf not found" in r.err
    (rel2 / "release.yaml").write_text("repo: org/m\nfiles: [README.md]\nvariants:\n"
                                       "  - {format: gptq, quant: 4bit, repo: org/m-GPTQ, revision: main, local_dir: float}\n")
    shutil.copytree(MODELS / CASE, rel2 / "float")
    r = cli("variants", "fidelity", rel2, *ID_ARGS)
    assert r.code == 2 and "gptq 4bit" in r.err and "not quantized" in r.err

    r = cli("variants", "fidelity", rel, *ID_ARGS, "--against", variants_dir / "m-mlx-4bit")
    assert r.code == 2 and "the original is itself quantized" in r.err
    (tmp_path / "file").write_text("x")
    r = cli("variants", "fidelity", make_release(tmp_path / "rel3", variants_dir), *ID_ARGS, "--out-dir", tmp_path / "file")
    assert r.code == 2 and "not a directory" in r.err
    r = cli("variants", "fidelity", tmp_path / "rel3")  # built-in text prompts; the tiny original has no tokenizer
    assert r.code == 2 and "tokenizer" in r.err
    assert forwards == []


def test_two_local_variants_with_one_name_are_refused(tmp_path, variants_dir):
    rel = make_release(tmp_path / "rel", variants_dir, RELEASE_YAML + (
        "  - {format: gguf, quant: Q8_0, repo: org/other-GGUF, file: m.Q8_0.gguf, local_dir: other}\n"))
    shutil.copytree(rel / "m-GGUF", rel / "other")
    with pytest.raises(InputError, match="two local variants are named m.Q8_0.gguf"):
        F.measure_release(rel, prompts())


# --- variants table --fidelity: quantized directories too -----------------------------------------------------------


def test_table_matches_quant_reports_by_path_or_directory_name(cli, release, tmp_path):
    (release / "release.yaml").write_text(RELEASE_YAML.rsplit("  - {format: gguf, quant: Q2_K", 1)[0])
    out = tmp_path / "mlx4.json"
    assert cli("verify", release / "m-mlx-4bit", "--against", release, *ID_ARGS, "--out", out).code == 0
    t = cli("variants", "table", release, "--fidelity", out)
    assert t.code == 0, t.err
    rows = {r.split("|")[1].strip(): r for r in t.out.strip().splitlines()[2:]}
    mlx4, mlx8 = (next(r for link, r in rows.items() if f"org/m-mlx-{b}/tree/main" in link) for b in ("4bit", "8bit"))
    kl = json.loads(out.read_text())["overall"]["mean_kl"]
    assert mlx4.endswith(f"| {kl:.2g} nats, 100.0% |") and mlx8.endswith(f"| {V.NOT_MEASURED} |")

    moved = json.loads(out.read_text())  # measured elsewhere: matched by the directory's name
    moved["variant"]["path"] = "/elsewhere/m-mlx-4bit"
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    assert f"{kl:.2g} nats" in cli("variants", "table", release, "--fidelity", tmp_path / "moved.json").out
    moved["variant"].update(file="m-awq", path="/elsewhere/m-awq")
    (tmp_path / "stray.json").write_text(json.dumps(moved))
    r = cli("variants", "table", release, "--fidelity", tmp_path / "stray.json")
    assert r.code == 2 and "m-awq matches no variant directory" in r.err
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli("variants", "table", release, "--fidelity", empty)
    assert r.code == 2 and "no fidelity report" in r.err


def test_a_gguf_named_like_a_directory_variant_does_not_fill_its_row():
    """Reports match by kind: a GGUF report's file never stands for a directory variant, nor the reverse."""
    from release.release_yaml import ReleaseConfig, Variant

    cfg = ReleaseConfig(root=Path("/r"), repo="org/m", files=("README.md",),
                        variants=(Variant("mlx", "4bit", "org/m-mlx", local_dir=Path("/r/q")),))
    g = V.Fidelity("q", "Q4_0", 0.1, 0.9, True, Path("x.json"), kind="gguf")
    assert V._fidelity_for(cfg.variants[0], cfg, ["model.safetensors"], {"q": g}) is None
    q = V.Fidelity("q", "mlx affine 4-bit g64", 0.1, 0.9, True, Path("x.json"), kind="quant")
    assert V._fidelity_for(cfg.variants[0], cfg, ["model.safetensors"], {"q": q}) is q
    assert V._fidelity_for(cfg.variants[0], cfg, ["m.gguf"], {"q": q}) is None


# --- variants check: the table's format and bits against the files (QUANT011) -------------------------------------


def _table_and_check(release: Path, yaml: str) -> list:
    (release / "release.yaml").write_text(yaml)
    V.write_table(release)
    return [f for f in V.check_variants(release) if f.rule in ("QUANT011", "QUANT010", "QUANT003")]


@pytest.mark.parametrize(("line", "want"), [
    ("{format: gguf, quant: Q4_0, repo: org/m-GGUF, file: m.gguf, local_dir: m-GGUF}",
     "the table says GGUF Q4_0 but m.gguf is a GGUF of type Q8_0"),
    ("{format: awq, quant: 4bit, repo: org/m-x, revision: main, local_dir: m-mlx-8bit}",
     "the table says AWQ 4bit but m-mlx-8bit/ holds MLX affine 8-bit g32"),
    ("{format: mlx, quant: 8bit, repo: org/m-x, revision: main, local_dir: m-mlx-4bit}",
     "the table says MLX 8bit but m-mlx-4bit/ holds MLX affine 4-bit g64"),
    ("{format: mlx, quant: 4bit-32g, repo: org/m-x, revision: main, local_dir: m-mlx-4bit}",
     "the table says MLX 4bit-32g but m-mlx-4bit/ holds MLX affine 4-bit g64"),
    ("{format: gptq, quant: 4bit-128g, repo: org/m-x, revision: main, local_dir: float}",
     "the table says GPTQ 4bit-128g but float/ is not quantized"),
    ("{format: gguf, quant: Q8_0, repo: org/m-GGUF, file: m.gguf, local_dir: m-GGUF}", None),
    ("{format: mlx, quant: 4bit-64g, repo: org/m-x, revision: main, local_dir: m-mlx-4bit}", None),
    ("{format: mlx, quant: 8bit, repo: org/m-x, revision: main, local_dir: m-mlx-8bit}", None),
    ("{format: hf, quant: bf16, repo: org/m-x, revision: main, local_dir: float}", None),
    ("{format: hf, quant: bf16, repo: org/m-x, revision: main, local_dir: m-mlx-8bit}",
     "the table says HF BF16 but m-mlx-8bit/ holds MLX affine 8-bit g32"),
    ("{format: bitsandbytes, quant: nf4, repo: org/m-x, revision: main, local_dir: nf4}", None),
    ("{format: bitsandbytes, quant: fp4, repo: org/m-x, revision: main, local_dir: nf4}",
     "the table says bitsandbytes fp4 but nf4/ holds bitsandbytes nf4 4-bit g64"),
    ("{format: gptq, quant: 4bit, repo: org/m-x, revision: main, local_dir: nf4}",
     "the table says GPTQ 4bit but nf4/ holds bitsandbytes nf4 4-bit g64"),
])
def test_table_format_and_bits_against_the_files(release, line, want):
    shutil.move(release / "m-GGUF" / "m.Q8_0.gguf", release / "m-GGUF" / "m.gguf")  # no type in the file name
    shutil.copytree(MODELS / CASE, release / "float")
    shutil.copytree(QUANT_DATA / f"{CASE}-bnb-nf4-dq", release / "nf4")  # transformers + bitsandbytes, committed
    found = _table_and_check(release, f"repo: org/m\nfiles: [README.md]\nvariants:\n  - {line}\n")
    if want is None:
        assert found == []
    else:
        assert [(f.rule, f.severity) for f in found] == [("QUANT011", "error")] and want in found[0].message, found


def test_quantizer_suffixes_on_gguf_file_types_are_accepted():
    assert V._gguf_same("Q6_K_L", "Q6_K") and V._gguf_same("Q4_K_L", "Q4_K_M") and V._gguf_same("Q4_0_4_4", "Q4_0")
    assert V._gguf_same("F32", "F32") and V._gguf_same("BF16", "BF16")
    assert not V._gguf_same("Q4_K_M", "Q4_K_S") and not V._gguf_same("Q4_K_L", "Q5_K_M") and not V._gguf_same("Q8_0", "Q4_0")


def test_unreadable_variant_files_are_info_and_card_check_reports_quant011(release):
    from release.card.rules import check_release_card

    (release / "m-GGUF" / "m.Q4_0.gguf").write_bytes(b"\0" * 64)
    yaml = RELEASE_YAML.rsplit("  - {format: gguf, quant: Q2_K", 1)[0].replace("quant: 8bit-32g", "quant: 4bit-32g")
    found = _table_and_check(release, yaml)
    assert sorted((f.rule, f.severity) for f in found) == [("QUANT010", "info"), ("QUANT011", "error")]
    assert "not a readable GGUF" in next(f.message for f in found if f.rule == "QUANT010")
    assert "QUANT011" in {f.rule for f in check_release_card(release)}


@pytest.mark.parametrize(("text", "fmt", "want"), [
    ("4bit-64g", "mlx", ("mlx", "4bit-64g", 4.0, 64)), ("mxfp4", "mlx", ("mlx", "mxfp4", 4.0, 32)),
    ("mlx-8bit", None, ("mlx", "8bit", 8.0, None)), ("nf4", "bitsandbytes", ("bitsandbytes", "nf4", 4.0, None)),
    ("bnb-4bit", None, ("bitsandbytes", "4bit", 4.0, None)), ("LLM.int8", "bitsandbytes", ("bitsandbytes", "int8", 8.0, None)),
    ("FP8", "fp8", ("fp8", "fp8", 8.0, None)), ("w4a16", None, ("compressed-tensors", "w4a16", 4.0, None)),
    ("W8A8", "compressed-tensors", ("compressed-tensors", "w8a8", 8.0, None)),
    ("7bit", "mlx", None), ("", "fp8", None), ("2bit", "bitsandbytes", None),
])
def test_labels_of_the_safetensors_formats(text, fmt, want):
    q = V.parse_quant(text, fmt)
    assert (q if q is None else (q.format, q.name, q.bits, q.group_size)) == want


# --- one definition of "quantized" (QUANT008 and verify) ----------------------------------------------------------


@pytest.mark.parametrize("fixture", ["gemma3_1b_style-mlx-4bit", "gemma2_gqa_softcap-bnb-int8", "gemma2_gqa_softcap-bnb-nf4-dq"])
def test_card_evidence_is_verify_recognition(fixture):
    from release.weights.quant import detect

    d = QUANT_DATA / fixture
    why = V.quantization_evidence((d / "config.json").read_text(), [d / "model.safetensors"])
    assert why == f"config.json and the tensors are {detect(d)[1].label}"


def test_quant008_from_mlx_quantization_key_and_from_tensors_alone(tmp_path, variants_dir):
    from release.card.rules import check_release_card

    d = tmp_path / "q"
    shutil.copytree(variants_dir / "m-mlx-4bit", d)
    (d / "README.md").write_text("---\nlicense: gemma\nbase_model: google/gemma-2-2b\n---\n# q\n\nWeights.\n")
    config = json.loads((d / "config.json").read_text())
    del config["quantization_config"]  # mlx-lm's own key only: the copy for transformers is not needed
    (d / "config.json").write_text(json.dumps(config))
    (f,) = [f for f in check_release_card(d) if f.rule == "QUANT008"]
    assert "mlx affine 4-bit g64" in f.message and f.pointer == "/base_model_relation"
    del config["quantization"]  # nothing declared, the tensors still say it (verify refuses such a directory too)
    (d / "config.json").write_text(json.dumps(config))
    (f,) = [f for f in check_release_card(d) if f.rule == "QUANT008"]
    assert "its tensors are stored quantized" in f.message
    float_release = tmp_path / "f"
    shutil.copytree(MODELS / CASE, float_release)
    (float_release / "README.md").write_text((d / "README.md").read_text())
    assert "QUANT008" not in {f.rule for f in check_release_card(float_release)}


# --- variants chart -----------------------------------------------------------------------------------------------


def _report(d: Path, name: str, kind: str, kl: float, ok: bool = True, bits=4.5, size=100_000) -> Path:
    v = {"file": name, "path": f"/x/{name}", "quant": "Q4_0" if kind == "gguf" else "mlx affine 4-bit g64",
         "bytes": size, "bits_per_weight": bits, **({"format": "mlx"} if kind == "quant" else {})}
    p = d / f"{name}.json"
    p.write_text(json.dumps({"kind": kind, "ok": ok, "variant": v, "overall": {"mean_kl": kl, "top1_agreement": 0.97}}))
    return p


def test_chart_points_clamp_a_kl_of_zero(tmp_path):
    found = V.load_fidelity([_report(tmp_path, "a.gguf", "gguf", 0.0), _report(tmp_path, "b", "quant", 2e-3, size=50_000),
                             _report(tmp_path, "c.gguf", "gguf", 0.05, ok=False, bits=None)])
    points, floor = F.chart_points(list(found.values()))
    assert floor == pytest.approx(2e-4) and [p["y"] for p in points] == [pytest.approx(2e-4), 2e-3, 0.05]
    assert [p["clamped"] for p in points] == [True, False, False] and points[2]["ok"] is False
    assert [p["label"] for p in points] == ["GGUF Q4_0 (a.gguf)", "MLX affine 4-bit g64", "GGUF Q4_0 (c.gguf)"]
    with pytest.raises(InputError, match="no bits per weight"):
        F.chart_points(list(found.values()), "bits")


def test_chart_without_matplotlib_is_exit_2_naming_the_extra(cli, release, tmp_path, monkeypatch):
    (release / "fidelity").mkdir()
    _report(release / "fidelity", "a.gguf", "gguf", 0.01)
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # as if not installed
    r = cli("variants", "chart", release, "-o", tmp_path / "c.png")
    assert r.code == 2 and "pip install 'gemma-release[chart]'" in r.err and not (tmp_path / "c.png").exists()


def test_chart_svg_and_png_one_labelled_point_per_variant_deterministic(cli, release, tmp_path):
    pytest.importorskip("matplotlib")
    assert cli("variants", "fidelity", release, *ID_ARGS).code == 0
    reports = release / "fidelity"
    _report(reports, "exact.gguf", "gguf", 0.0, size=400_000, bits=32.0)  # an F32 GGUF: KL 0
    svg = tmp_path / "c.svg"
    r = cli("variants", "chart", release, "-o", svg, "--json")
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert len(info["points"]) == 5 and [p["label"] for p in info["points"] if p["clamped"]] == ["GGUF Q4_0 (exact.gguf)"]
    root = ET.parse(svg).getroot()
    texts = ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]
    labels = ["GGUF Q8_0", "GGUF Q4_0 (m.Q4_0.gguf)", "MLX affine 4-bit g64", "MLX affine 8-bit g32", "GGUF Q4_0 (exact.gguf) (KL 0)"]
    assert all(texts.count(label) == 1 for label in labels), texts
    assert any("drawn at" in t for t in texts)  # the note on the clamped point
    scatters = [g for g in root.iter("{http://www.w3.org/2000/svg}g") if (g.get("id") or "").startswith("PathCollection")]
    uses = [len(list(g.iter("{http://www.w3.org/2000/svg}use"))) for g in scatters]
    assert uses[0] == 5  # one marker per variant (all within their bounds: one scatter)
    first = svg.read_bytes()
    assert cli("variants", "chart", release, "-o", svg, "--fidelity", reports).code == 0
    assert svg.read_bytes() == first and b"<dc:date>" not in first  # deterministic: no date, fixed ids
    png = tmp_path / "c.png"
    r = cli("variants", "chart", release, "-o", png, "--x", "bits")
    assert r.code == 0 and "wrote" in r.out and "KL 0, drawn at" in r.out
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    w, h = struct.unpack(">II", data[16:24])
    assert (w, h) == (1125, 720) and b"Software" not in data and b"Matplotlib" not in data
    assert cli("variants", "chart", release, "-o", tmp_path / "c.pdf").code == 2


# --- a GGUF's vocabulary rows from its header (no 20 s parse of a 262k vocabulary) ------------------------------


@pytest.mark.parametrize("how", ["plain", "trimmed", "tokenizer", "split", "short_head"])
def test_gguf_rows_from_the_header_are_what_verify_reads(tmp_path, how):
    from safetensors.numpy import load_file

    from gemma_ref.config import load_config
    from release.weights.gguf_reader import GGUFWeights
    from tests.conftest import DATA

    cfg = load_config(MODELS / CASE)
    kw = {"plain": {}, "trimmed": {"vocab_rows": 500}, "tokenizer": {"tokenizer": DATA / "tokenizers" / "gemma3.model"},
          "split": {"split_max_tensors": 9}, "short_head": {}}[how]
    if how == "short_head":
        emb = next(v for k, v in load_file(str(MODELS / CASE / "model.safetensors")).items() if k.endswith("embed_tokens.weight"))
        kw["extra"] = {"output.weight": emb.astype(np.float32)[:480]}
    path = write_gguf(MODELS / CASE, tmp_path / "v.gguf", "Q8_0", **kw)
    w = GGUFWeights(path, cfg)
    try:
        want = w.vocab_rows
    finally:
        w.close()
    assert F.gguf_rows(path, cfg) == want == {"trimmed": 500, "short_head": 480}.get(how, 512)


def test_gguf_rows_refuse_another_model_and_unreadable_files(tmp_path):
    from gemma_ref.config import load_config

    cfg = load_config(MODELS / CASE)
    other = write_gguf(MODELS / "gemma3_1b_style", tmp_path / "o.gguf", "Q8_0")
    with pytest.raises(InputError, match="architecture is 'gemma3', the original's 'gemma2'"):
        F.gguf_rows(other, cfg)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\xff" * 40)
    with pytest.raises(InputError, match="not a readable GGUF"):
        F.gguf_rows(junk, cfg)


def test_chart_labels_go_away_from_the_nearest_point():
    points = [{"x": 1.0, "y": 1e-3}, {"x": 1.1, "y": 1.2e-3}, {"x": 10.0, "y": 1.0}]
    assert F._label_sides(points) == [(-6, -11, "right"), (6, 6, "left"), (6, 6, "left")]
