"""Card prose is hard-wrapped Markdown, and Google's own cards are the upstream as published.

1. "built on\\n[google/gemma-2-9b-it](...)" is one sentence: the base-model (CARD010), derivative-statement
   (GEMMA005 / APACHE003), endorsement (GEMMA006) and use-restriction (GEMMA004) rules read paragraphs, not
   lines, and report the line where the statement starts, as for the one-line text. Block boundaries (blank
   lines, headings, list items, tables) still separate statements.
2. Google's cards as published (tests/data/cards/014-017: "# Gemma Model Card" with sibling links, Gemma 1.1's
   sibling table, "# Gemma 2 model card", "# Gemma 3 model card" with ``base_model: google/gemma-3-4b-pt``) are
   the upstream with no ``--repo-id``; a derivative that copied one of them is still a derivative.
"""

from __future__ import annotations

import re

import pytest
from card_helpers import CARDS, problems
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from release.card.rules import check_text, named_base_models, parse_card, subject
from release.card.text import paragraph_text, prose
from release.card.upstream import described_repo, is_sibling

DERIVED = "---\nlicense: gemma\nbase_model: google/gemma-2b\n---\n# Acme chat\n\nSee the [Prohibited Use Policy](https://ai.google.dev/gemma/prohibited_use_policy).\n\n"
NO_BASE = "---\nlicense: gemma\n---\n# Acme chat\n\nSee the [Prohibited Use Policy](https://ai.google.dev/gemma/prohibited_use_policy).\n\n"


def wrapped_at(sentence: str, *words: str) -> str:
    """`sentence` with the space after each of `words` (their first occurrence) turned into a line break."""
    for w in words:
        i = sentence.index(w + " ") + len(w)
        sentence = sentence[:i] + "\n" + sentence[i + 1:]
    return sentence


def lines_of(findings, rule):
    return sorted((f.severity, f.line) for f in findings if f.rule == rule)


# --- 1. a statement wrapped over lines reads as the one-line statement ------------------------------

BUILT_ON = "This chat model is built on [google/gemma-2-9b-it](https://huggingface.co/google/gemma-2-9b-it) by ACME."
FINE_TUNED = "This model is a fine-tuned version of google/gemma-2b on UltraChat."


@pytest.mark.parametrize(("sentence", "breaks", "repo"), [
    (BUILT_ON, ("on",), "google/gemma-2-9b-it"),
    (BUILT_ON, ("built",), "google/gemma-2-9b-it"),
    (BUILT_ON, ("built", "on"), "google/gemma-2-9b-it"),
    (FINE_TUNED, ("of",), "google/gemma-2b"),
    (FINE_TUNED, ("fine-tuned",), "google/gemma-2b"),
    (FINE_TUNED, ("version",), "google/gemma-2b"),
    (FINE_TUNED, ("fine-tuned", "version", "of"), "google/gemma-2b"),
])
def test_base_model_named_across_a_line_break(sentence, breaks, repo):
    one_line = check_text(NO_BASE + sentence + "\n")
    wrapped = check_text(NO_BASE + wrapped_at(sentence, *breaks) + "\n")
    (card010,) = [f for f in wrapped if f.rule == "CARD010"]
    assert card010.extra["suggested_base_model"] == repo
    # same findings, and CARD010 on the line where the statement starts, as for the one-line text
    assert lines_of(wrapped, "CARD010") == lines_of(one_line, "CARD010") == [("warning", 8)]
    assert problems(wrapped) == problems(one_line)


def test_wrapped_continuation_line_may_be_indented():
    text = NO_BASE + "This model is a fine-tuned version of\n    google/gemma-2b on UltraChat.\n"
    assert named_base_models(parse_card(text).body) == [("google/gemma-2b", 4)]


def test_quoted_paragraph_reads_as_one():
    text = NO_BASE + "> This model is built on\n> [google/gemma-2-9b-it](https://huggingface.co/google/gemma-2-9b-it).\n"
    assert [r for r, _ in named_base_models(parse_card(text).body)] == ["google/gemma-2-9b-it"]


@pytest.mark.parametrize("body", [
    "- This model is based on\n- google/gemma-2b-it is great\n",  # two list items
    "## Based on\ngoogle/gemma-2b-it is great\n",  # a heading is a line of its own
    "This model is based on\n\ngoogle/gemma-2b-it is great\n",  # two paragraphs
    "This model is based on\n| google/gemma-2b-it | great |\n",  # a table row
    "This model is based on  \ngoogle/gemma-2b-it is great\n",  # a hard break (two trailing spaces)
    "This model is based on the Gemma family. google/gemma-2b-it is another model.\n",  # the next sentence
])
def test_block_boundaries_are_not_joined(body):
    assert named_base_models(parse_card(NO_BASE + body).body) == []
    assert "CARD010" not in problems(check_text(NO_BASE + body))


def test_list_item_continuation_joins_the_item():
    text = NO_BASE + "- This model is based on\n  google/gemma-2b-it and more.\n- Another item\n"
    assert [r for r, _ in named_base_models(parse_card(text).body)] == ["google/gemma-2b-it"]


@pytest.mark.parametrize("breaks", [(), ("weights",), ("were",), ("weights", "were")])
def test_modification_statement_across_a_line_break(breaks):
    sentence = "ACME says the weights were modified for chat."
    assert "GEMMA005" not in problems(check_text(DERIVED + wrapped_at(sentence, *breaks) + "\n"))
    assert "GEMMA005" in problems(check_text(DERIVED + "ACME says nothing else.\n"))  # the control


def test_apache003_reads_a_wrapped_modification_statement():
    head = "---\nlicense: apache-2.0\nbase_model: google/gemma-4-E4B-it\n---\n# Acme E4B\n\n"
    assert "APACHE003" in problems(check_text(head + "A chat model.\n"))
    assert "APACHE003" not in problems(check_text(head + "The model files were\nmodified by ACME.\n"))


@pytest.mark.parametrize(("sentence", "breaks"), [
    ("This model was developed by Google for you.", ("developed",)),
    ("This model was developed by Google for you.", ("by",)),
    ("This model card corresponds to the 7B base version of the Gemma model.", ("base",)),
    ("This model card corresponds to the 7B base version of the Gemma model.", ("corresponds", "version", "Gemma")),
])
def test_endorsement_across_a_line_break(sentence, breaks):
    one_line = check_text(DERIVED + sentence + "\n")
    wrapped = check_text(DERIVED + wrapped_at(sentence, *breaks) + "\n")
    assert lines_of(wrapped, "GEMMA006") == lines_of(one_line, "GEMMA006") == [("error", 9)]


@pytest.mark.parametrize("breaks", [("endorsed", "by"), ("by",), ("not",)])
def test_disclaimer_across_a_line_break(breaks):
    claim = "This model was developed by Google for you. "
    one_line = check_text(DERIVED + claim + "It is not endorsed by Google.\n")
    wrapped = check_text(DERIVED + claim + wrapped_at("It is not endorsed by Google.", *breaks) + "\n")
    assert lines_of(wrapped, "GEMMA006") == lines_of(one_line, "GEMMA006") == [("warning", 9)]


def test_use_restrictions_across_a_line_break():
    head = "---\nlicense: gemma\nbase_model: google/gemma-2b\n---\n# Acme\n\nFine-tuned by ACME. "
    assert "GEMMA004" in problems(check_text(head + "No policy.\n"))
    assert "GEMMA004" not in problems(check_text(head + "Read the Prohibited Use\nPolicy before use.\n"))
    assert "GEMMA004" not in problems(check_text(head + "These use\nrestrictions apply.\n"))


def test_paragraph_text_keeps_length_and_block_breaks():
    body = "# Title\nA wrapped\nparagraph.\n\n- item one\n  goes on\n- item two\n```\ncode\nline\n```\n| a | b |\n| c | d |\ntext"
    joined = paragraph_text(body)
    assert len(joined) == len(prose(body)) and prose(body).count("\n") == body.count("\n")  # same offsets, same lines
    assert joined.split("\n") == ["# Title", "A wrapped paragraph.", "", "- item one   goes on", "- item two",
                                  "", "", "", "", "| a | b |", "| c | d |", "text"]


# A paragraph made of the phrases the rules look for and plain words; none of them starts a Markdown block
# ("-", "#", ">", "|", "1.") or is a line-anchored label, so a line break between two of them is a soft wrap.
PHRASES = [
    "This model is a fine-tuned version of google/gemma-2b.", "It is built on [google/gemma-2-9b-it](https://huggingface.co/google/gemma-2-9b-it).",
    "Original model: google/gemma-7b-it.", "a merge of acme/alpha-7b and acme/beta-7b", "based on Gemma-2B-it", "quantized to 4 bits",
    "The weights were modified by ACME.", "It was developed by Google.", "It is not endorsed by Google.",
    "This model card corresponds to the 7B base version of the Gemma model.", "See the Prohibited Use Policy.",
    "chat", "data", "the", "model", "and", "is", "small", "fast", "for", "research", "with", "care.",
]
HEADS = [
    "---\nlicense: gemma\n---\n",
    "---\nlicense: gemma\nbase_model: google/gemma-2b\n---\n",
    "---\nlicense: apache-2.0\nbase_model: google/gemma-4-E4B-it\n---\n",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(HEADS), st.lists(st.sampled_from(PHRASES), min_size=1, max_size=25), st.randoms(use_true_random=False))
def test_rewrapping_a_paragraph_changes_no_finding(head, phrases, rnd):
    paragraph = " ".join(phrases)
    # re-wrap at random word boundaries: each break replaces one space, so offsets stay
    rewrapped = re.sub(" ", lambda _: "\n" if rnd.random() < 0.3 else " ", paragraph)
    card, recard = (head + "# Acme model\n\n" + p + "\n" for p in (paragraph, rewrapped))
    assert paragraph_text(parse_card(recard).body) == paragraph_text(parse_card(card).body)
    assert {r for r, _ in named_base_models(parse_card(recard).body)} == {r for r, _ in named_base_models(parse_card(card).body)}
    assert {f.rule for f in check_text(recard)} == {f.rule for f in check_text(card)}


# --- 2. Google's cards as published are the upstream ---------------------------------------------

GOOGLE_CARDS = ["014_google_gemma_7b_it.md", "015_google_gemma_1_1_7b_it.md", "016_google_gemma_2_9b_it.md", "017_google_gemma_3_4b_it.md"]


def _read(name: str) -> str:
    return (CARDS / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", GOOGLE_CARDS)
def test_google_card_as_published_is_the_upstream(name):
    text = _read(name)
    who = subject(parse_card(text))
    assert who.upstream, who.why
    findings = check_text(text)
    assert not {"GEMMA005", "GEMMA006", "CARD010"} & {f.rule for f in findings}
    assert problems(findings) == set()


def test_gemma1_sibling_links_name_no_base():
    # "...the 7B instruct version of the Gemma model. You can also visit the model card of the [2B base
    # model](https://huggingface.co/google/gemma-2b), [7B base model](...)": read as bases before
    body = parse_card(_read("014_google_gemma_7b_it.md")).body
    assert named_base_models(body) == []
    # a verb outside such a link still names the base
    assert named_base_models("Fine-tuned from the [2B base model](https://huggingface.co/google/gemma-2b).") == [("google/gemma-2b", 0)]


def test_gemma3_base_model_is_a_sibling_of_the_described_model():
    card = parse_card(_read("017_google_gemma_3_4b_it.md"))
    assert card.metadata.base_models == ["google/gemma-3-4b-pt"] and described_repo(card) == "google/gemma-3-4b-it"
    assert "google/gemma-3-4b-pt is a variant of google/gemma-3-4b-it" in subject(card).why
    assert is_sibling("google/gemma-3-4b-pt", "google/gemma-3-4b-it") and is_sibling("google/gemma-7b", "google/gemma-1.1-7b-it")
    assert not is_sibling("google/gemma-2-2b", "google/gemma-2b") and not is_sibling("acme/gemma-3-4b-it", "google/gemma-3-4b-pt")


def _derivative_of(text: str, base: str = "google/gemma-7b") -> str:
    """The Google card as a derivative would copy it: its own base_model and a line saying what it did."""
    head, body = text[4:].split("\n---\n", 1)
    head = "\n".join(ln for ln in head.split("\n") if not ln.startswith("base_model:"))
    return f"---\n{head}\nbase_model: {base}\n---\n\nWe fine-tuned {base} on X.\n\n{body}"


@pytest.mark.parametrize("name", GOOGLE_CARDS)
def test_derivative_copying_a_google_card_still_gets_gemma006(name):
    text = _derivative_of(_read(name))
    who = subject(parse_card(text))
    assert not who.upstream and "derives from google/gemma-7b" in who.why
    authors_line = next(i for i, ln in enumerate(text.split("\n"), 1) if ln.startswith("**Authors**"))
    claims = [f for f in check_text(text) if f.rule == "GEMMA006" and "Google authored" in f.message]
    assert [(f.severity, f.line) for f in claims] == [("error", authors_line)]


@pytest.mark.parametrize(("name", "base", "why"), [
    ("016_google_gemma_2_9b_it.md", "google/gemma-2-9b-it", "the model its own card describes"),  # the copy of its base's card
    ("017_google_gemma_3_4b_it.md", "google/gemma-2-9b", "not a variant of"),
    ("017_google_gemma_3_4b_it.md", "acme/gemma-3-4b-sft", "is not Google's"),
])
def test_base_model_alone_makes_a_copied_google_card_a_derivative(name, base, why):
    text = _read(name)
    head, body = text[4:].split("\n---\n", 1)
    head = "\n".join(ln for ln in head.split("\n") if not ln.startswith("base_model:"))
    who = subject(parse_card(f"---\n{head}\nbase_model: {base}\n---\n{body}"))
    assert not who.upstream and why in who.why
    assert "GEMMA006" in problems(check_text(f"---\n{head}\nbase_model: {base}\n---\n{body}"))


def test_fine_tune_with_a_copied_authors_line_gets_gemma006():
    text = ("---\nlicense: gemma\n---\n# Acme 7B chat\n\nThis model was fine-tuned from google/gemma-7b on chat data.\n\n"
            + "It answers questions about cooking and travel, in English and in French. " * 4 + "\n\n**Authors**: Google\n")
    findings = check_text(text)
    assert not subject(parse_card(text)).upstream
    assert lines_of(findings, "GEMMA006") == [("error", text.split("\n").index("**Authors**: Google") + 1)]
    assert "CARD010" in problems(findings)


def test_copied_authors_line_under_original_model_card_is_not_a_claim():
    # kept as before: authorship text within a few lines of "Original model card" describes the original
    text = (DERIVED + "We fine-tuned google/gemma-2b on X.\n\n## Original model card\n\n"
            "**Model Page**: [Gemma](https://ai.google.dev/gemma/docs)\n\n**Authors**: Google\n")
    assert not [f for f in check_text(text) if f.rule == "GEMMA006" and "Google authored" in f.message]
