"""LoRA / PEFT adapters on a base model, applied on the fly (gemma_ref/adapters.py).

The adapters and their goldens under tests/data/adapters/ were made by tests/make_adapters.py with
transformers + peft (float32, eager), from adapters given random weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from gemma_ref import InputError, load_model
from gemma_ref import adapters as ad
from release.weights.golden import read_golden

DATA = Path(__file__).resolve().parent / "data"
ADAPTERS = DATA / "adapters"
MODELS = DATA / "models"
CASES = sorted(p.name for p in ADAPTERS.iterdir() if (p / "adapter_config.json").is_file())
BASES = {"gemma2": MODELS / "gemma2_gqa_softcap", "gemma3_all": MODELS / "gemma3_1b_style",
         "gemma3_dora": MODELS / "gemma3_1b_style"}


def max_diff(model, case: str) -> float:
    gold = read_golden(ADAPTERS / "goldens" / f"{case}.safetensors")
    return max(float(np.abs(model.forward(p.ids) - p.logits).max()) for p in gold.prompts)


def copy_adapter(case: str, tmp_path: Path, edit=None, tensors=None) -> Path:
    """A copy of an adapter (absolute base path), with its config and/or tensors edited."""
    src = ADAPTERS / case
    dst = tmp_path / case
    shutil.copytree(src, dst)
    cfg = json.loads((src / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str((src / cfg["base_model_name_or_path"]).resolve())
    if edit:
        edit(cfg)
    (dst / "adapter_config.json").write_text(json.dumps(cfg))
    if tensors:
        t = load_file(src / "adapter_model.safetensors")
        tensors(t)
        save_file(t, dst / "adapter_model.safetensors")
    return dst


def test_cases_present():
    assert len(CASES) >= 4


@pytest.mark.parametrize("case", CASES)
def test_adapter_matches_transformers_peft(case):
    with load_model(ADAPTERS / case) as m:  # base from base_model_name_or_path, relative to the adapter
        assert max_diff(m, case) <= 1e-4


def test_explicit_base_and_base_refused_for_full_model():
    with load_model(ADAPTERS / "gemma2_lora_attn", base=MODELS / "gemma2_gqa_softcap") as m:
        assert max_diff(m, "gemma2_lora_attn") <= 1e-4
    with pytest.raises(InputError, match="adapter_config.json"):
        load_model(MODELS / "gemma2_gqa_softcap", base=MODELS / "gemma2_gqa_softcap")


def test_weights_never_merged():
    with load_model(ADAPTERS / "gemma3_all_linear_rslora") as m:
        w = m.weights.layer(0)
        q = w["self_attn.q_proj.weight"]
        assert isinstance(q, ad.Adapted) and isinstance(q.lora, ad.LoRA)
        assert not q.base.flags.owndata  # still the memory-mapped base view
        # the rank pattern and rsLoRA scale: down_proj r=2, q_proj of layer 1 r=6, o_proj alpha 3
        assert w["mlp.down_proj.weight"].lora.rank == 2
        assert m.weights.layer(1)["self_attn.q_proj.weight"].lora.rank == 6
        assert w["self_attn.o_proj.weight"].lora.scale == pytest.approx(3 / 8 ** 0.5)
        assert w["self_attn.k_proj.weight"].lora.scale == pytest.approx(16 / 8 ** 0.5)


def test_layers_to_transform():
    with load_model(ADAPTERS / "gemma2_lora_attn") as m:
        assert sorted({i for i, _ in m.adapter.loras}) == [0, 2, 3]


def test_vision_tower_targets_skipped_and_nested_names():
    with load_model(ADAPTERS / "gemma3_nested_regex_bias") as m:
        assert m.adapter.loras and all(lo.bias is not None for lo in m.adapter.loras.values())


# --- discrimination: each classic adapter bug fails far outside tolerance -------------------------


def test_rslora_scale_swapped_fails(tmp_path):
    d = copy_adapter("gemma3_all_linear_rslora", tmp_path, edit=lambda c: c.update(use_rslora=False))
    with load_model(d) as m:
        assert max_diff(m, "gemma3_all_linear_rslora") > 1e-2


def test_plain_scale_swapped_for_rslora_fails(tmp_path):
    d = copy_adapter("gemma2_lora_attn", tmp_path, edit=lambda c: c.update(use_rslora=True))
    with load_model(d) as m:
        assert max_diff(m, "gemma2_lora_attn") > 1e-2


@pytest.mark.parametrize("case", CASES)
def test_adapter_ignored_fails(case):
    gold = read_golden(ADAPTERS / "goldens" / f"{case}.safetensors")
    base = (ADAPTERS / case / json.loads((ADAPTERS / case / "adapter_config.json").read_text())
            ["base_model_name_or_path"]).resolve()
    with load_model(base) as m:
        assert max(float(np.abs(m.forward(p.ids) - p.logits).max()) for p in gold.prompts) > 1e-2


@pytest.mark.parametrize("group", ["altup.modality_router", "altup.prediction_coefs", "altup.correction_coefs",
                                   "altup_projections", "altup_unembed_projections", "laurel"])
def test_gemma3n_altup_and_laurel_loras_each_matter(group):
    """all-linear on Gemma 3n adapts AltUp's router, coefficients and stream projections: each one counts."""
    with load_model(ADAPTERS / "gemma3n_all_linear") as m:
        assert max_diff(m, "gemma3n_all_linear") <= 1e-4
        kept = {k: v for k, v in m.adapter.loras.items() if not k[1].startswith(group)}
        assert len(kept) < len(m.adapter.loras)
        m.adapter.loras = kept
        assert max_diff(m, "gemma3n_all_linear") > 1e-2


def test_modules_to_save_ignored_fails():
    with load_model(ADAPTERS / "gemma2_modules_to_save") as m:
        m.adapter.embed_tokens = None
        assert max_diff(m, "gemma2_modules_to_save") > 1e-2


def test_modules_to_save_keeps_tied_head():
    with load_model(ADAPTERS / "gemma2_modules_to_save") as m:
        assert m.adapter.output_table is None  # PEFT's default: the trained table feeds the input only
        m.adapter.config.ensure_weight_tying = True
        assert max_diff(m, "gemma2_modules_to_save") > 1e-2


def test_dora_magnitude_matters():
    with load_model(ADAPTERS / "gemma3_dora") as m:
        for lo in m.adapter.loras.values():
            lo.magnitude = None
        assert max_diff(m, "gemma3_dora") > 1e-2


# --- bad adapters: InputError (exit 2 from the CLI) -------------------------------------------------


def test_adapter_for_another_base(tmp_path):
    d = copy_adapter("gemma2_lora_attn", tmp_path)
    with pytest.raises(InputError, match="another base|do not fit|not a linear layer"):
        load_model(d, base=MODELS / "gemma3_1b_style")


def test_targets_match_nothing(tmp_path):
    d = copy_adapter("gemma2_lora_attn", tmp_path, edit=lambda c: c.update(target_modules=["qkv"]),
                     tensors=lambda t: [t.pop(k) for k in list(t) if "lora_" in k])
    save_file({"base_model.model.lm_head.weight": np.zeros((1, 1), np.float32)}, d / "adapter_model.safetensors")
    with pytest.raises(InputError):
        load_model(d)
    save_file({}, d / "adapter_model.safetensors")
    with pytest.raises(InputError, match="match nothing"):
        load_model(d)


def test_missing_tensor(tmp_path):
    d = copy_adapter("gemma2_lora_attn", tmp_path,
                     tensors=lambda t: t.pop("base_model.model.model.layers.2.self_attn.v_proj.lora_B.weight"))
    with pytest.raises(InputError, match="missing lora_B.weight"):
        load_model(d)


def test_extra_tensor(tmp_path):
    def add(t):
        t["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"] = np.zeros((4, 64), np.float32)
        t["base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"] = np.zeros((128, 4), np.float32)
    d = copy_adapter("gemma2_lora_attn", tmp_path, tensors=add)
    with pytest.raises(InputError, match="does not select it"):
        load_model(d)


def test_extra_unknown_tensor(tmp_path):
    def add(t):
        t["base_model.model.model.norm.weight"] = np.zeros((64,), np.float32)
    d = copy_adapter("gemma2_lora_attn", tmp_path, tensors=add)
    with pytest.raises(InputError, match="extra tensor"):
        load_model(d)


def test_rank_disagrees(tmp_path):
    d = copy_adapter("gemma2_lora_attn", tmp_path, edit=lambda c: c.update(r=8))
    with pytest.raises(InputError, match="rank 8"):
        load_model(d)


def test_modules_to_save_not_saved(tmp_path):
    d = copy_adapter("gemma2_modules_to_save", tmp_path,
                     tensors=lambda t: t.pop("base_model.model.model.embed_tokens.weight"))
    with pytest.raises(InputError, match="no embed_tokens"):
        load_model(d)


def test_pickle_only_refused_by_name(tmp_path):
    d = copy_adapter("gemma2_lora_attn", tmp_path)
    (d / "adapter_model.safetensors").unlink()
    (d / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(InputError, match="adapter_model.bin.*never unpickled"):
        load_model(d)


@pytest.mark.parametrize("method", ["IA3", "PROMPT_TUNING", "LOHA"])
def test_other_peft_methods_refused(tmp_path, method):
    d = copy_adapter("gemma2_lora_attn", tmp_path, edit=lambda c: c.update(peft_type=method))
    with pytest.raises(InputError, match=f"PEFT method '{method}'"):
        load_model(d)


def test_unknown_base_needs_base_option(tmp_path):
    d = copy_adapter("gemma2_lora_attn", tmp_path, edit=lambda c: c.update(base_model_name_or_path="google/gemma-2-2b"))
    with pytest.raises(InputError, match="--base"):
        load_model(d)
    with load_model(d, base=MODELS / "gemma2_gqa_softcap") as m:
        assert max_diff(m, "gemma2_lora_attn") <= 1e-4


def test_fan_in_fan_out_ignored_like_peft(tmp_path):
    d = copy_adapter("gemma2_lora_attn", tmp_path, edit=lambda c: c.update(fan_in_fan_out=True))
    with load_model(d) as m:
        assert max_diff(m, "gemma2_lora_attn") <= 1e-4


def test_rank_pattern_first_key_wins():
    cfg = ad.AdapterConfig(Path("x"), 8, 16, False, {"q_proj": 2, "layers.1.self_attn.q_proj": 6}, {}, ["q_proj"],
                           None, None, [], False, False, False, False, None, {})
    assert cfg.rank_alpha("model.layers.1.self_attn.q_proj") == (2, 16.0)
    assert cfg.rank_alpha("model.layers.1.self_attn.k_proj") == (8, 16.0)
    assert cfg.scale("model.layers.0.self_attn.q_proj") == 8.0


# --- the CLI: --base on verify / golden / generate / inspect ---------------------------------------


def test_cli_verify_adapter(cli):
    r = cli("verify", ADAPTERS / "gemma3_dora", "-g", ADAPTERS / "goldens" / "gemma3_dora.safetensors")
    assert r.code == 0, r.out + r.err
    r = cli("verify", ADAPTERS / "gemma2_lora_attn", "--base", MODELS / "gemma2_gqa_softcap",
            "-g", ADAPTERS / "goldens" / "gemma2_lora_attn.safetensors")
    assert r.code == 0, r.out + r.err


@pytest.mark.parametrize("case, tensor", [
    ("gemma3_dora", "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"),
    ("gemma3_dora", "base_model.model.model.layers.0.mlp.down_proj.lora_magnitude_vector"),
    ("gemma2_modules_to_save", "base_model.model.model.embed_tokens.weight"),
])
def test_cli_verify_names_nonfinite_adapter_tensors(cli, tmp_path, case, tensor):
    """A diverged fine-tune's NaN in the adapter (not the base) fails the scan, named, before any forward."""
    def poison(t):
        t[tensor] = t[tensor].copy()
        t[tensor].reshape(-1)[[0, -1]] = [np.nan, np.inf]
    d = copy_adapter(case, tmp_path, tensors=poison)
    r = cli("verify", d, "-g", ADAPTERS / "goldens" / f"{case}.safetensors", "--json")
    assert r.code == 1, r.out + r.err
    bad = [f for f in json.loads(r.out)["findings"] if f["rule"] == "WEIGHTS005"]
    assert len(bad) == 1 and tensor in bad[0]["message"] and "2 NaN/Inf" in bad[0]["message"]
    assert bad[0]["path"].endswith("adapter_model.safetensors")


def test_cli_verify_adapter_on_wrong_base_exits_2(cli):
    r = cli("verify", ADAPTERS / "gemma2_lora_attn", "--base", MODELS / "gemma3_1b_style",
            "-g", ADAPTERS / "goldens" / "gemma2_lora_attn.safetensors")
    assert r.code == 2 and "another base" in r.err


def test_cli_verify_full_model_with_base_exits_2(cli):
    r = cli("verify", MODELS / "gemma2_gqa_softcap", "--base", MODELS / "gemma2_gqa_softcap",
            "-g", DATA / "goldens" / "gemma2_gqa_softcap.safetensors")
    assert r.code == 2


def test_cli_golden_adapter_round_trip(cli, tmp_path):
    out = tmp_path / "g.safetensors"
    r = cli("golden", ADAPTERS / "gemma2_modules_to_save", "--ids", "2,17,300,5", "-o", out)
    assert r.code == 0, r.err
    r = cli("verify", ADAPTERS / "gemma2_modules_to_save", "-g", out)
    assert r.code == 0, r.out + r.err
    r = cli("verify", ADAPTERS / "gemma2_modules_to_save" / ad.Path("../../models/gemma2_gqa_softcap"), "-g", out)
    assert r.code == 1  # the base alone does not pass the adapter's golden


def test_cli_inspect_adapter(cli):
    r = cli("inspect", ADAPTERS / "gemma3_all_linear_rslora", "--json")
    assert r.code == 0
    a = json.loads(r.out)["adapter"]
    assert a["fits_base"] and a["ranks"] == [2, 6, 8] and a["scaling_rule"].startswith("lora_alpha / sqrt(r)")
    assert a["trainable_parameters"] > 0 and a["n_adapted"] == 42
    r = cli("inspect", ADAPTERS / "gemma2_modules_to_save")
    assert r.code == 0 and "embed_tokens" in r.out and "lora_alpha / r" in r.out
    r = cli("inspect", ADAPTERS / "gemma2_lora_attn", "--base", MODELS / "gemma3_1b_style", "--json")
    assert r.code == 1 and json.loads(r.out)["adapter"]["fits_base"] is False


def test_cli_pickle_only_adapter_exits_2(cli, tmp_path):
    d = copy_adapter("gemma2_lora_attn", tmp_path)
    (d / "adapter_model.safetensors").unlink()
    (d / "adapter_model.bin").write_bytes(b"not unpickled")
    r = cli("verify", d, "-g", ADAPTERS / "goldens" / "gemma2_lora_attn.safetensors")
    assert r.code == 2 and "never unpickled" in r.err


def test_gemma4_ple_projection_adapted_and_shared_kv_left_alone():
    with load_model(ADAPTERS / "gemma4_e2b_all_linear") as m:
        assert (-1, "per_layer_model_projection") in m.adapter.loras
        assert any(mod == "per_layer_input_gate" for _, mod in m.adapter.loras)
        assert all(not s.startswith("base_model.model.model.language_model.") for s in m.adapter.skipped)
        assert any(".vision_tower." in s or ".audio_tower." in s for s in m.adapter.skipped)


@pytest.mark.parametrize("case", ["gemma3_dora", "gemma2_modules_to_save", "gemma4_e2b_all_linear"])
def test_generate_with_kv_cache_matches_full_forward(case):
    from gemma_ref.generate import Sampling, generate

    with load_model(ADAPTERS / case) as m:
        prompt = [2, 17, 300, 41]
        res = generate(m, prompt, max_new_tokens=5, sampling=Sampling(), stop=set())
        ids = list(prompt)
        for _ in range(5):  # greedy by full forwards, no cache
            ids.append(int(np.argmax(m.forward(ids)[-1])))
        assert res.ids == ids[len(prompt):]


# --- export --merge ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["gemma2_lora_attn", "gemma3_all_linear_rslora", "gemma3_dora", "gemma4_e2b_all_linear",
                                  "gemma3n_all_linear"])
def test_export_merge_matches_the_adapter(cli, tmp_path, case):
    out = tmp_path / "merged"
    r = cli("export", ADAPTERS / case, "--merge", "-o", out)
    assert r.code == 0, r.err
    assert not (out / "adapter_config.json").exists()
    with load_model(out) as m:
        assert max_diff(m, case) <= 1e-4
    r = cli("verify", out, "-g", ADAPTERS / "goldens" / f"{case}.safetensors")
    assert r.code == 0, r.out


@pytest.mark.parametrize(("case", "why"), [("gemma3_nested_regex_bias", "lora_bias"),
                                           ("gemma2_modules_to_save", "ties them")])
def test_export_merge_refuses_what_gemma_cannot_hold(cli, tmp_path, case, why):
    r = cli("export", ADAPTERS / case, "--merge", "-o", tmp_path / "merged")
    assert r.code == 2 and why in r.err
    assert not (tmp_path / "merged").exists()


def test_export_merge_with_weight_tying(tmp_path):
    from release.weights.merge import merge_adapter

    d = copy_adapter("gemma2_modules_to_save", tmp_path, edit=lambda c: c.update(ensure_weight_tying=True))
    merge_adapter(d, tmp_path / "merged")
    with load_model(d) as a, load_model(tmp_path / "merged") as m:
        ids = [2, 17, 300, 41, 9]
        assert np.abs(a.forward(ids) - m.forward(ids)).max() <= 1e-4


def test_golden_transformers_backend_runs_adapters_with_peft(cli, tmp_path):
    pytest.importorskip("peft")
    gold = read_golden(ADAPTERS / "goldens" / "gemma3_dora.safetensors")
    out = tmp_path / "g.safetensors"
    ids = ",".join(map(str, gold.prompts[0].ids))
    r = cli("golden", ADAPTERS / "gemma3_dora", "--backend", "transformers", "--ids", ids, "-o", out)
    assert r.code == 0, r.err
    mine = read_golden(out)
    assert "peft" in mine.producer_version
    assert np.abs(mine.prompts[0].logits - gold.prompts[0].logits).max() <= 1e-5


# --- PEFT's ensure_weight_tying save: lm_head.weight beside embed_tokens --------------------------------------

TIED_HEAD = "base_model.model.lm_head.weight"


def _embed_name(t: dict) -> str:
    return next(k for k in t if k.endswith("embed_tokens.weight"))


@pytest.mark.parametrize("flag", [True, False])
def test_tied_lm_head_copy_is_accepted(tmp_path, flag):
    """modules_to_save [embed_tokens] + ensure_weight_tying: PEFT saves an identical lm_head too (was exit 2)."""
    plain = copy_adapter("gemma2_modules_to_save", tmp_path / "plain", edit=lambda c: c.update(ensure_weight_tying=True))
    tied = copy_adapter("gemma2_modules_to_save", tmp_path / "tied", edit=lambda c: c.update(ensure_weight_tying=flag),
                        tensors=lambda t: t.update({TIED_HEAD: t[_embed_name(t)].copy()}))
    ids = [2, 17, 300, 41, 9]
    with load_model(plain) as a, load_model(tied) as b:
        assert b.adapter.tied_head == TIED_HEAD and b.adapter.lm_head is None
        assert np.array_equal(a.forward(ids), b.forward(ids))  # the head is the trained table, as PEFT ties it


def test_tied_lm_head_that_differs_is_refused_naming_the_row(cli, tmp_path):
    def damage(t):
        head = t[_embed_name(t)].copy()
        head[123, 4] += 0.5
        t[TIED_HEAD] = head

    d = copy_adapter("gemma2_modules_to_save", tmp_path, edit=lambda c: c.update(ensure_weight_tying=True), tensors=damage)
    r = cli("verify", d, "-g", ADAPTERS / "goldens" / "gemma2_modules_to_save.safetensors")
    assert r.code == 2, r.out
    assert "lm_head" in r.err and "differs" in r.err and "row 123" in r.err and "adapter_model.safetensors" in r.err
