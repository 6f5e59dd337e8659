"""One compliant release, and one minimal mutation per rule that must produce exactly that rule."""

from __future__ import annotations

import json
import sys

import pytest
from card_helpers import CARDS, COMPLIANT_README, TERMS_COPY, make_release, problems

from release import cli
from release.card.rules import check_path, check_text, fix_card, hub_license_ids, load_card, parse_card, set_metadata
from release.findings import RULES
from release.card.terms import NOTICE_TEXT


def test_compliant_release_has_no_problems(tmp_path):
    findings = check_path(make_release(tmp_path / "rel"))
    assert problems(findings) == set()
    (version,) = findings
    assert version.rule == "GEMMA007" and version.extra["last_modified"] == "2025-03-24"


def _replace(old: str, new: str):
    def mutate(root):
        text = (root / "README.md").read_text(encoding="utf-8")
        assert old in text, old
        (root / "README.md").write_text(text.replace(old, new, 1), encoding="utf-8")
    return mutate


def _remove(name: str):
    return lambda root: (root / name).unlink()


MUTATIONS = {
    "CARD001": _replace("---\nlicense: gemma", "Draft card.\n\n---\nlicense: gemma"),
    "CARD002": _replace("pipeline_tag: text-generation\n", "pipeline_tag: [text-generation\n"),
    "CARD003": _replace("library_name: transformers\n", "library_name: transformers\nlibrary_name: transformers\n"),
    "CARD004": _replace("pipeline_tag: text-generation", "pipeline_tag: text-generator"),
    "CARD006": _replace("base_model: google/gemma-2-9b\n", "base_model: ./out/checkpoint-100\n"),
    "CARD007": _replace("base_model: google/gemma-2-9b\n", "base_model:\n- google/gemma-2-9b\n- google/gemma-2-9b-it\n"),
    "CARD008": _replace("on UltraChat.", "on UltraChat. TODO: add evaluation."),
    "CARD009": lambda root: (root / "README.md").write_text(
        (root / "README.md").read_text(encoding="utf-8") + "\n---\nlicense: mit\ntags:\n- extra\n---\n", encoding="utf-8"),
    "CARD010": _replace("base_model: google/gemma-2-9b\nbase_model_relation: finetune\n", ""),
    "CARD011": _replace("(supervised fine-tuning).", "(supervised fine-tuning). The terms are in [LICENSE.md](LICENSE.md)."),
    "CARD012": lambda root: (root / "release.yaml").write_text(
        "repo: acme/gemma-2-9b-chat\nfiles: [config.json, NOTICE, LICENSE]\n", encoding="utf-8"),
    "GEMMA001": _replace("license: gemma", "license: mit"),
    "GEMMA002": _remove("NOTICE"),
    "GEMMA003": _remove("LICENSE"),
    "GEMMA004": _replace(
        " You must not use it for\nthe restricted uses in the [Gemma Prohibited Use Policy](https://ai.google.dev/gemma/prohibited_use_policy);\n"
        "these restrictions apply to anyone you distribute it to.", ""),
    "GEMMA005": lambda root: (_replace("The model files in this repository were modified from the original Gemma weights by ACME Labs\n(supervised fine-tuning).", "")(root),
                              _replace("a fine-tuned version of [google/gemma-2-9b]", "a chat model from [google/gemma-2-9b]")(root)),
    "GEMMA006": _replace("A chat model by ACME Labs", "**Authors**: Google\n\nA chat model"),
    "GEMMA007": lambda root: (root / "LICENSE").write_text(TERMS_COPY.replace("March 24, 2025", "January 1, 2023"), encoding="utf-8"),
    "CARD013": _replace("A chat model by ACME Labs", "A chat model by ACME\u200bLabs"),
    "CARD014": lambda root: (root / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"}), encoding="utf-8"),
    "CARD015": lambda root: (write_gguf_metadata(root / "model.Q4_K_M.gguf", {"general.license": "apache-2.0"}),
                             _replace("base_model_relation: finetune", "base_model_relation: quantized")(root)),
    "CARD016": lambda root: (root / "SHA256SUMS").write_text("0" * 64 + "  config.json\n", encoding="utf-8"),
}


def write_gguf_metadata(path, kv: dict) -> None:
    """A GGUF file with only metadata (no tensors): enough for the card's file checks."""
    import gguf

    w = gguf.GGUFWriter(str(path), "gemma2")
    for k, v in kv.items():
        w.add_string(k, v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("rule", sorted(MUTATIONS))
def test_one_defect_one_rule(tmp_path, rule):
    root = make_release(tmp_path / "rel")
    MUTATIONS[rule](root)
    assert problems(check_path(root)) == {rule}


def test_card005_license_other_alone(tmp_path):
    # not a Gemma model: only the Hub rule applies
    text = "---\nlicense: other\nlicense_link: LICENSE\n---\n# A tabular model\n"
    assert problems(check_text(text)) == {"CARD005"}
    # on a Gemma card the same defect also breaks the terms (GEMMA001): both are reported
    gemma = COMPLIANT_README.replace("license: gemma", "license: other\nlicense_name: gemma-terms-of-use")
    assert problems(check_text(gemma)) >= {"CARD005", "GEMMA001"}


def test_every_rule_is_registered_and_tested():
    import release.card.filechecks  # noqa: F401
    import release.card.hidden  # noqa: F401

    ids = {r for r in RULES if r.startswith(("CARD", "GEMMA"))}
    assert ids == set(MUTATIONS) | {"CARD005"}
    # APACHE rules: tests/test_card_apache.py (a Gemma 4 release); the rest: tests/test_card_newrules.py
    assert {r for r in RULES if r.startswith("APACHE")} == {"APACHE001", "APACHE002", "APACHE003"}


# --- schema ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "yaml_line, pointer",
    [
        ("language: english", "/language"),
        ("license: apache2", "/license"),
        ("base_model_relation: finetuned", "/base_model_relation"),
        ("tags: 3", "/tags"),
        ("inference: maybe", "/inference"),
        ("model-index:\n- name: x\n  results:\n  - task: {type: t}\n    dataset: {type: a}\n    metrics: [{type: acc, value: 1}]", "/model-index/0/results/0/dataset"),
        ("model-index:\n- name: x\n  results:\n  - task: {type: t}\n    dataset: {type: a, name: b}\n    metrics: [{type: acc, value: 1}]\n    source: {name: leaderboard}", "/model-index/0/results/0/source"),
    ],
)
def test_schema_violation_points_at_the_value(yaml_line, pointer):
    text = f"---\n{yaml_line}\n---\nbody\n"
    findings = [f for f in check_text(text) if f.rule == "CARD004"]
    assert findings, text
    assert findings[0].pointer.startswith(pointer)
    assert findings[0].line >= 2 and findings[0].extra["best_match"] is True


def test_license_enum_message_suggests_close_match():
    (f,) = [f for f in check_text("---\nlicense: apache-2\n---\n") if f.rule == "CARD004"]
    assert "apache-2.0" in f.message and len(f.message) < 200


def test_unknown_keys_are_allowed_and_hub_ids_known():
    assert problems(check_text("---\nmy_custom_key: {a: 1}\nlicense: mit\n---\nhi\n")) == set()
    ids = hub_license_ids()
    assert {"gemma", "other", "apache-2.0", "llama3.1"} <= set(ids) and len(ids) == len(set(ids))


def test_local_path_base_model_says_so():
    (f,) = [f for f in check_text("---\nbase_model: /home/me/models/out\n---\n") if f.rule == "CARD006"]
    assert "local path" in f.message and f.pointer == "/base_model" and f.line == 2


# --- typed metadata and round trip -------------------------------------------------------------


def test_card_data_keeps_order_and_unknown_keys():
    card = parse_card("---\nzeta: 1\nlicense: mit\ncustom:\n  nested: [1, 2]\ntags: [a]\n---\n")
    m = card.metadata
    assert list(m) == ["zeta", "license", "custom", "tags"]
    assert m.extra == {"zeta": 1, "custom": {"nested": [1, 2]}}
    m.license = "gemma"
    assert list(m) == ["zeta", "license", "custom", "tags"] and m.license == "gemma"
    again = parse_card("---\n" + m.to_yaml() + "---\n").metadata
    assert again == m


def test_set_metadata_changes_only_what_it_means_to():
    text = "---\n# a comment\nlicense: other   # keep me? no, this line changes\ntags:\n  - a   # tag comment\nzeta: [1, 2]\n---\nBody\n"
    card = parse_card(text)
    new = set_metadata(card, {"license": "gemma", "license_link": "https://ai.google.dev/gemma/terms"})
    assert new.splitlines() == [
        "---", "# a comment", "license: gemma", "tags:", "  - a   # tag comment", "zeta: [1, 2]",
        "license_link: https://ai.google.dev/gemma/terms", "---", "Body",
    ]


def test_fix_then_check_has_no_gemma_errors(tmp_path):
    card_001 = (CARDS / "001_axolotl_out.md").read_text(encoding="utf-8")
    root = make_release(tmp_path / "rel", readme=card_001, notice=False, terms_copy=None, config={"model_type": "gemma"})
    before = (root / "README.md").read_text(encoding="utf-8")
    changes = fix_card(root)
    assert any("license_name" in c for c in changes) and any("NOTICE" in c for c in changes)
    after = (root / "README.md").read_text(encoding="utf-8")
    findings = check_path(root)
    assert not [f for f in findings if f.rule.startswith("GEMMA") and f.severity == "error"], findings
    # only the license fields were added to the metadata and the section appended: the rest is byte for byte
    added = [ln for ln in after.splitlines() if ln not in before.splitlines()]
    assert "license_name: gemma-terms-of-use" in added and "license_link: https://ai.google.dev/gemma/terms" in added
    assert after.startswith(before.split("license: other\n")[0]) and before.split("---\n---\n", 1)[1] in after
    assert (root / "NOTICE").read_text(encoding="utf-8").strip() == NOTICE_TEXT
    assert fix_card(root) == []  # idempotent


def test_fix_gemma4_sets_apache(tmp_path):
    root = make_release(tmp_path / "rel", config={"model_type": "gemma4"}, notice=False, terms_copy=None,
                        readme=COMPLIANT_README.replace("google/gemma-2-9b", "google/gemma-4-31b"))
    assert problems(check_path(root)) == {"GEMMA001", "APACHE001"}
    changes = fix_card(root)
    assert load_card(root).metadata.license == "apache-2.0"
    text = (root / "README.md").read_text(encoding="utf-8")
    assert "## License (Apache-2.0)" in text and "apache.org/licenses/LICENSE-2.0" in text
    assert "Apache License, Version 2.0" in (root / "NOTICE").read_text(encoding="utf-8")  # the Apache-2.0 form, not the Gemma sentence
    assert any("Apache-2.0 form" in c for c in changes)
    # the licence text itself is the publisher's to add: a link only is a warning
    remaining = [f for f in check_path(root) if f.severity != "info"]
    assert [(f.rule, f.severity) for f in remaining] == [("APACHE001", "warning")]


def test_fix_refuses_unparsable_card_and_leaves_it(tmp_path):
    p = tmp_path / "README.md"
    text = "---\nlicense: [gemma\n---\n# x gemma\n"
    p.write_text(text, encoding="utf-8")
    from release.errors import InputError

    with pytest.raises(InputError, match="README.md"):
        fix_card(p)
    assert p.read_text(encoding="utf-8") == text
    assert sorted(x.name for x in tmp_path.iterdir()) == ["README.md"]


# --- CLI ----------------------------------------------------------------------------------------


def run_cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["gemma-release", *args])
    with pytest.raises(SystemExit) as e:
        cli.main()
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_cli_exit_codes_and_formats(tmp_path, monkeypatch, capsys):
    root = make_release(tmp_path / "ok")
    assert run_cli(monkeypatch, capsys, "card", "check", str(root))[0] == 0
    bad = make_release(tmp_path / "bad", notice=False)
    code, out, _ = run_cli(monkeypatch, capsys, "card", "check", str(bad), "--format", "json")
    assert code == 1
    data = json.loads(out)
    assert any(d["rule"] == "GEMMA002" and d["severity"] == "error" and "path" in d for d in data)
    code, out, _ = run_cli(monkeypatch, capsys, "card", "check", str(bad / "README.md"), "-f", "sarif")
    sarif = json.loads(out)
    assert code == 0 and sarif["version"] == "2.1.0"  # a README alone: the NOTICE is not checked
    code, _, err = run_cli(monkeypatch, capsys, "card", "check", str(tmp_path / "missing.md"))
    assert code == 2 and "missing.md" in err and "Traceback" not in err


def test_cli_notice_and_fix(tmp_path, monkeypatch, capsys):
    root = make_release(tmp_path / "rel", notice=False)
    code, out, _ = run_cli(monkeypatch, capsys, "notice", str(root))
    assert code == 0 and out.strip() == str(root / "NOTICE")
    code, out, _ = run_cli(monkeypatch, capsys, "card", "fix", str(root))
    assert code == 0 and "nothing to change" in out
    code, _, err = run_cli(monkeypatch, capsys, "notice", str(tmp_path / "nope"))
    assert code == 2 and "not a directory" in err


def test_cli_rules_table(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "card", "rules")
    assert code == 0 and "| CARD005 | error |" in out and "GEMMA006" in out
    # every rule the tool can report, not only the card's: weights, logits, tokens, GGUF, publish, Apache-2.0
    from release.findings import RULES, load_all_rules

    load_all_rules()
    for prefix in ("WEIGHTS", "LOGITS", "TOKENS", "GGUF", "PUBLISH", "QUANT", "APACHE", "CARD013", "CARD016"):
        assert f"| {prefix}" in out, prefix
    assert all(f"| {r.id} | {r.severity} |" in out for r in RULES.values())
