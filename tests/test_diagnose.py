"""`diagnose`, `trace`, `trace-diff` and the bug switches of gemma_ref/bugs.py.

The candidates under tests/data/diagnose were made by transformers (tests/make_diagnose_fixtures.py):
config changes, exactly equivalent weight edits, or a module swapped for the buggy one, never by the
switches, so naming them checks the switches against an independent implementation of each bug.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import gemma_ref.model as M
from gemma_ref import bugs as B
from gemma_ref import load_model
from release.weights.diagnose import diagnose
from tests.conftest import DATA, MODELS

DIAG = DATA / "diagnose"
CANDIDATES = sorted(p.name for p in DIAG.glob("*.npz"))
ROOT = Path(__file__).resolve().parent.parent

ISSUE_IDS = ["norm_no_plus_one", "norm_plus_one_twice", "gelu_exact", "embed_unscaled", "embed_scale_bf16", "rope_interleaved", "attn_softcap_missing", "final_softcap_missing", "sliding_window_missing", "query_scale_head_dim", "local_rope_base_global", "rope_scaling_missing", "qk_norm_missing", "bos_missing", "norm_plus_one_added", "attn_scale_head_dim", "v_norm_missing", "k_eq_v_after_norm", "rope_partial_not_proportional", "layer_scalar_missing", "ple_missing", "kv_sharing_missing", "router_on_normed_input", "per_expert_scale_missing"]


def case_and_bug(name: str) -> tuple[str, str]:
    case, bug = name[:-len(".npz")].split(".", 1)
    return case, bug


@pytest.mark.parametrize("name", CANDIDATES)
def test_diagnose_names_the_bug_transformers_was_given(name):
    case, bug = case_and_bug(name)
    r = diagnose(MODELS / case, DIAG / name)
    assert r["best"] == bug, (r["best"], r["ranking"][:3])
    if bug != "none":
        assert r["margin"] >= 10, r["ranking"][:3]  # the runner-up is at least ten times further off


def test_fixtures_cover_both_generations_and_a_pair():
    bugs = {case_and_bug(n)[1] for n in CANDIDATES}
    assert {"none", "norm_no_plus_one", "gelu_exact", "final_softcap_missing", "sliding_window_missing",
            "norm_plus_one_added", "layer_scalar_missing"} <= bugs
    assert any("+" in b for b in bugs)


def test_unexplained_when_no_bug_fits(tmp_path):
    """transformers' logits with a perturbation no bug makes: no guess."""
    z = np.load(DIAG / "gemma3_1b_style.none.npz")
    rng = np.random.default_rng(0)
    logits = z["logits"] + rng.normal(0, 2.0, z["logits"].shape).astype(np.float32)
    np.savez(tmp_path / "c.npz", input_ids=z["input_ids"], logits=logits)
    r = diagnose(MODELS / "gemma3_1b_style", tmp_path / "c.npz")
    assert r["best"] == "unexplained" and not r["explained"]


def test_cli_exit_codes_and_json(cli, tmp_path):
    r = cli("diagnose", MODELS / "gemma4_31b_style", "--candidate", DIAG / "gemma4_31b_style.none.npz", "--json")
    assert r.code == 0 and json.loads(r.out)["best"] == "none"
    r = cli("diagnose", MODELS / "gemma4_31b_style", "--candidate", DIAG / "gemma4_31b_style.v_norm_missing.npz", "--json")
    report = json.loads(r.out)
    assert r.code == 1 and report["best"] == "v_norm_missing"
    assert {"id", "kl", "max_abs"} <= set(report["ranking"][0])
    r = cli("diagnose", MODELS / "gemma4_31b_style", "--candidate", DIAG / "gemma4_31b_style.v_norm_missing.npz")
    assert r.code == 1 and "best explanation: v_norm_missing" in r.out


def test_a_golden_file_is_a_candidate_too(cli):
    r = cli("diagnose", MODELS / "gemma2_gqa_softcap", "--candidate", DATA / "goldens" / "gemma2_gqa_softcap.topk.safetensors",
            "--json")
    assert r.code == 0 and json.loads(r.out)["best"] == "none"


@pytest.mark.parametrize("arrays, message", [
    ({"input_ids": np.array([2, 3]), "logits": np.zeros((3, 512), np.float32)}, "matching input_ids"),
    ({"input_ids": np.array([2, 3]), "logits": np.zeros((2, 100), np.float32)}, "vocabulary has 512"),
    ({"input_ids": np.array([2, 999]), "logits": np.zeros((2, 512), np.float32)}, "outside the vocabulary"),
    ({"ids": np.array([2, 3])}, "needs arrays 'input_ids' and 'logits'"),
    ({"input_ids": np.array([2.5, 3]), "logits": np.zeros((2, 512), np.float32)}, "integer array"),
    ({"input_ids": np.array([2, 3]), "logits": np.full((2, 512), np.nan, np.float32)}, "NaN"),
    ({"input_ids": np.array([2, 3], dtype=object), "logits": np.zeros((2, 512), np.float32)}, "cannot read"),
])
def test_bad_candidates_exit_2(cli, tmp_path, arrays, message):
    np.savez(tmp_path / "c.npz", **arrays)
    r = cli("diagnose", MODELS / "gemma3_1b_style", "--candidate", tmp_path / "c.npz")
    assert r.code == 2 and message in " ".join(r.err.split()), r.err


def test_not_a_file_or_not_an_npz_exit_2(cli, tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert cli("diagnose", MODELS / "gemma3_1b_style", "--candidate", tmp_path / "junk.npz").code == 2
    assert cli("diagnose", MODELS / "gemma3_1b_style", "--candidate", tmp_path / "missing.npz").code == 2


# --- trace ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["gemma2_gqa_softcap", "gemma3_1b_style", "gemma4_31b_style"])
def test_trace_matches_transformers_hidden_states(cli, tmp_path, case):
    hf = DIAG / f"{case}.hf_trace.safetensors"
    ids = ",".join(str(i) for i in load_file(str(hf))["input_ids"])
    out = tmp_path / "t.safetensors"
    assert cli("trace", MODELS / case, "--ids", ids, "--out", out).code == 0
    r = cli("trace-diff", out, hf, "--rtol", "0", "--json")  # 1e-4 absolute on every hidden state
    report = json.loads(r.out)
    assert r.code == 0 and not report["parted"], r.out
    names = [t["tensor"] for t in report["tensors"]]
    assert names == [f"hidden_states.{i}" for i in range(load_model(MODELS / case).config.num_hidden_layers + 1)]


def test_trace_diff_names_the_first_layer_and_tensor(cli, tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert cli("trace", MODELS / "gemma4_31b_style", "--ids", "2,7,9,11,13,15", "--out", a, "--detail").code == 0
    assert cli("trace", MODELS / "gemma4_31b_style", "--ids", "2,7,9,11,13,15", "--out", b, "--detail",
               "--bug", "layer_scalar_missing").code == 0
    r = cli("trace-diff", a, b, "--json")
    report = json.loads(r.out)
    assert r.code == 1 and report["first_layer"] == "layer 0" and report["first_tensor"] == "layers.0.output"
    assert report["tensors"][0]["tensor"] == "hidden_states.0" and report["tensors"][0]["max_abs"] == 0
    t = load_file(str(a))
    assert t["layers.0.q"].shape == (4, 6, 16) and t["layers.0.attn"].shape == (6, 64)
    r = cli("trace-diff", a, b)
    assert "first parts at layer 0" in r.out


def test_last_hidden_state_is_after_the_final_norm():
    from release.weights.trace import trace

    t = trace(MODELS / "gemma3_1b_style", [2, 5, 6])
    L = 6
    h = t[f"layers.{L - 1}.output"]
    norm = load_model(MODELS / "gemma3_1b_style").weights.final_norm()
    assert np.allclose(t[f"hidden_states.{L}"], M.rms_norm(h, norm, 1e-6), atol=1e-5)


# --- the switches ---------------------------------------------------------------------------------


def test_every_issue_bug_id_exists_and_is_documented():
    assert set(ISSUE_IDS) <= set(B.BUGS)
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for bug in B.BUGS:
        assert f"| `{bug}` |" in doc, bug


def test_switches_restore_model_functions_even_on_error():
    before = dict(vars(M))
    cfg = load_model(MODELS / "gemma4_26b_moe").config
    with pytest.raises(RuntimeError), B.switched([b for b in B.applicable(cfg) if b != "bos_missing"], cfg):
        assert M.rms_norm_gemma4 is not before["rms_norm_gemma4"]
        raise RuntimeError
    assert all(vars(M)[k] is v for k, v in before.items())


def test_applicability_follows_the_config():
    g2 = load_model(MODELS / "gemma2_gqa_softcap").config
    g3 = load_model(MODELS / "gemma3_1b_style").config
    g4 = load_model(MODELS / "gemma4_31b_style").config
    assert "attn_softcap_missing" in B.applicable(g2) and "attn_softcap_missing" not in B.applicable(g3)
    assert "qk_norm_missing" in B.applicable(g3) and "qk_norm_missing" not in B.applicable(g2)
    assert "norm_plus_one_added" in B.applicable(g4) and "norm_no_plus_one" not in B.applicable(g4)
    assert "ple_missing" not in B.applicable(g4) and "k_eq_v_after_norm" in B.applicable(g4)
    with pytest.raises(ValueError, match="unknown bug"):
        B.parse("gelu_exact+no_such_bug")


def test_architecture_doc_links_point_at_their_code():
    import tests.make_architecture_doc as doc

    text = doc.DOC.read_text()
    assert len(doc.LINK.findall(text)) >= 30
    assert doc.bad_links(text) == [], \
        "model.py moved: run `python tests/make_architecture_doc.py` to refresh docs/architecture.md"
