"""Hostile YAML and arbitrary input: a clear finding, quickly, never a crash."""

from __future__ import annotations

import time
import tracemalloc

import yaml
from card_helpers import assert_well_formed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from release.card.rules import check_text, parse_card

BILLION_LAUGHS = "---\na: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(9)
) + "---\nbody\n"


def _check_fast(text: str, budget_s: float = 2.0, budget_mb: float = 64.0):
    tracemalloc.start()
    t0 = time.perf_counter()
    findings = check_text(text)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < budget_s, elapsed
    assert peak < budget_mb * 2**20, peak
    assert_well_formed(findings, len(text.splitlines()))
    return findings


def test_alias_bomb_is_a_finding():
    findings = _check_fast(BILLION_LAUGHS)
    (f,) = [f for f in findings if f.rule == "CARD002"]
    assert "alias" in f.message


def test_alias_expansion_bomb_with_few_aliases():
    # under the alias-count limit but exponential when expanded: the node budget stops it
    doc = "---\na0: &a0 [x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]\n" for i in range(1, 8)
    ) + "---\n"
    findings = _check_fast(doc)
    assert any(f.rule == "CARD002" and "nodes" in f.message for f in findings)


def test_deep_nesting_is_a_finding():
    for doc in ("---\na: " + "[" * 5000 + "]" * 5000 + "\n---\n", "---\n" + "".join("  " * i + f"k{i}:\n" for i in range(200)) + "---\n"):
        findings = _check_fast(doc)
        assert any(f.rule == "CARD002" and "nested" in f.message for f in findings)


def test_huge_front_matter_is_a_finding():
    doc = "---\n" + "".join(f"key{i}: value\n" for i in range(40_000)) + "---\nbody\n"
    findings = _check_fast(doc, budget_s=3.0)
    assert any(f.rule == "CARD002" and "limit" in f.message for f in findings)


def test_python_tags_are_never_constructed(tmp_path):
    marker = tmp_path / "pwned"
    doc = f"---\nlicense: !!python/object/apply:os.system ['touch {marker}']\n---\n"
    findings = _check_fast(doc)
    assert any(f.rule == "CARD002" and "tag" in f.message and f.line == 2 for f in findings)
    assert not marker.exists()


def test_syntax_error_line_and_not_mapping():
    (f,) = [f for f in check_text("---\nlicense: gemma\ntags: [a, b\nfoo: 1\n---\n") if f.rule == "CARD002"]
    assert f.line in (3, 4, 5)
    (g,) = [f for f in check_text("---\n- a\n- b\n---\n") if f.rule == "CARD002"]
    assert "list" in g.message and g.line == 2


def test_duplicate_keys_nested_and_top_level():
    text = "---\nlicense: mit\nmodel-index:\n- name: a\n  name: b\n  results: []\nlicense: gemma\n---\n"
    dups = [f for f in check_text(text) if f.rule == "CARD003"]
    assert {(f.pointer, f.line) for f in dups} == {("/model-index/0/name", 5), ("/license", 7)}
    assert parse_card(text).metadata.license == "gemma"  # the last value counts, as in PyYAML


def test_unclosed_and_misplaced_front_matter():
    (f,) = [f for f in check_text("\n\n---\nlicense: mit\n# Title\n") if f.rule == "CARD001"]
    assert "never closed" in f.message and f.line == 3
    (g,) = [f for f in check_text("Intro\n---\nlicense: mit\n---\nbody\n") if f.rule == "CARD001"]
    assert "not at the top" in g.message and g.line == 2


json_scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4), max_leaves=20)
keys = st.sampled_from(["license", "license_name", "license_link", "base_model", "base_model_relation", "tags", "language",
                        "model-index", "pipeline_tag", "datasets", "inference", "widget", "new_version"]) | st.text(max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_arbitrary_text_never_crashes(text):
    assert_well_formed(check_text(text), len(text.splitlines()))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, json_values, max_size=8), st.text(max_size=200))
def test_arbitrary_yaml_mappings_never_crash(mapping, body):
    dumped = yaml.safe_dump(mapping, allow_unicode=True, sort_keys=False)
    text = "---\n" + dumped + "---\n" + body
    findings = check_text(text)
    assert_well_formed(findings, len(text.splitlines()))
    assert not any(f.rule in ("CARD001", "CARD002") for f in findings)  # safe_dump output always loads
    # the typed metadata holds exactly what a safe YAML load gives, in the same key order
    data = parse_card(text).metadata.to_dict()
    assert data == yaml.safe_load(dumped) and list(data) == list(yaml.safe_load(dumped))
