"""Gemma 4 is Apache-2.0: what section 4 asks of a redistributor of modified files (APACHE001-003), and the
Apache-2.0 forms `notice` and `card fix` write."""

from __future__ import annotations

from card_helpers import COMPLIANT_README, make_release, problems

from release.card.rules import check_path, check_text, fix_card
from release.card.terms import APACHE_NOTICE_TEXT, NOTICE_TEXT, write_notice

APACHE_TEXT = ("                                 Apache License\n                           Version 2.0, January 2004\n"
               "                        http://www.apache.org/licenses/\n\n   TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION\n")
G4_README = (COMPLIANT_README.replace("license: gemma", "license: apache-2.0").replace("google/gemma-2-9b", "google/gemma-4-E4B-it")
             .split("## Gemma Terms of Use")[0] + "## License\n\nApache-2.0. The model files were modified by ACME Labs (supervised fine-tuning).\n")


def g4_release(tmp_path, **kw):
    root = make_release(tmp_path / "rel", readme=kw.pop("readme", G4_README), notice=False, terms_copy=None, config={"model_type": "gemma4"})
    if kw.get("license", True):
        (root / "LICENSE").write_text(APACHE_TEXT, encoding="utf-8")
    return root


def test_compliant_gemma4_release(tmp_path):
    assert problems(check_path(g4_release(tmp_path))) == set()


def test_apache001_no_licence_copy(tmp_path):
    root = g4_release(tmp_path, license=False)
    (f,) = [f for f in check_path(root) if f.rule == "APACHE001"]
    assert f.severity == "error"
    (root / "README.md").write_text(G4_README + "\nSee https://www.apache.org/licenses/LICENSE-2.0\n", encoding="utf-8")
    (f,) = [f for f in check_path(root) if f.rule == "APACHE001"]
    assert f.severity == "warning"


def test_apache002_upstream_notice(tmp_path):
    from release.card.rules import check_release_set
    from release.releaseset import resolve

    root = g4_release(tmp_path)
    assert "APACHE002" not in problems(check_release_set(resolve(root), upstream_files=["README.md", "config.json"]))
    assert "APACHE002" in problems(check_release_set(resolve(root), upstream_files=["README.md", "NOTICE"]))
    (root / "NOTICE").write_text("Upstream notice.\n", encoding="utf-8")
    (root / "release.yaml").write_text("repo: acme/g4\nfiles: [README.md, LICENSE, config.json]\n", encoding="utf-8")
    assert "APACHE002" in problems(check_path(root))  # in the directory, left out of the release


def test_apache003_modification_statement():
    text = "---\nlicense: apache-2.0\nbase_model: google/gemma-4-E4B-it\n---\n# acme\n\nA great model.\n"
    assert "APACHE003" in problems(check_text(text))
    assert "APACHE003" not in problems(check_text(text.replace("A great model.", "A fine-tuned version of Gemma 4 E4B.")))
    assert "GEMMA005" not in problems(check_text(text))  # Gemma 4 is not under the Gemma terms


def test_gemma4_under_gemma_terms_is_gemma001():
    text = "---\nlicense: gemma\nbase_model: google/gemma-4-E2B-it\nlibrary_name: peft\nbase_model_relation: adapter\n---\n# x\n\nA LoRA adapter.\n"
    assert problems(check_text(text)) == {"GEMMA001"}


def test_notice_writes_the_apache_form_for_gemma4_and_the_gemma_form_otherwise(tmp_path):
    root = g4_release(tmp_path)
    p = write_notice(root)
    assert p.read_text(encoding="utf-8") == APACHE_NOTICE_TEXT + "\n"
    other = make_release(tmp_path / "g2", notice=False)
    assert write_notice(other).read_text(encoding="utf-8") == NOTICE_TEXT + "\n"


def test_fix_gemma4_keeps_an_upstream_notice(tmp_path):
    root = g4_release(tmp_path, readme=G4_README.split("## License")[0])
    (root / "NOTICE").write_text("Gemma 4 upstream notice.\n", encoding="utf-8")
    changes = fix_card(root)
    notice = (root / "NOTICE").read_text(encoding="utf-8")
    assert notice.startswith("Gemma 4 upstream notice.\n") and APACHE_NOTICE_TEXT in notice
    assert any("License (Apache-2.0)" in c for c in changes)
    assert problems(check_path(root)) == set()
