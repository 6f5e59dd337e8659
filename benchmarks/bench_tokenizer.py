"""The pure-Python reference tokenizer against the sentencepiece library: agreement and speed.

    python benchmarks/bench_tokenizer.py                 # all three test models, 3000 hypothesis strings
    python benchmarks/bench_tokenizer.py --examples 20000 --model gemma

Agreement: the test corpus of tests/make_tokenizers.py (plus the edge cases of the tests)
and strings drawn by the same hypothesis strategy the tests use; a string counts as a
mismatch when the ids or the decoded text differ. Speed: encoding the same text with
both, as many lines and as one long document, best of a few runs; the ratio is
reference time / library time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import sentencepiece as spm  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402

from gemma_ref.spm_reference import SentencePieceBPE  # noqa: E402
from make_tokenizers import OUT_DIR, corpus_lines  # noqa: E402
from test_tokenizer_reference import EDGE_CASES, texts  # noqa: E402  (the tests' strategy, not a copy)


def agreement(sp, ref, strings) -> tuple[int, int]:
    bad = 0
    for s in strings:
        ids = sp.encode(s)
        if ref.encode(s) != ids or ref.decode(ids) != sp.decode(ids):
            bad += 1
    return len(strings), bad


def hypothesis_agreement(sp, ref, examples: int) -> tuple[int, int]:
    seen: list[str] = []

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(texts)
    def run(s):
        seen.append(s)

    run()
    return agreement(sp, ref, seen)


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", choices=["gemma", "gemma3", "dummy_prefix"])
    ap.add_argument("--examples", type=int, default=3000, help="hypothesis strings per model")
    args = ap.parse_args()
    names = args.model or ["gemma", "gemma3", "dummy_prefix"]

    corpus = corpus_lines() + EDGE_CASES
    document = "\n".join(corpus_lines())
    print(f"corpus: {len(corpus)} strings, {sum(map(len, corpus))} characters; document: {len(document)} characters")
    for name in names:
        path = OUT_DIR / f"{name}.model"
        t0 = time.perf_counter()
        ref = SentencePieceBPE.from_file(path)
        load_ref = time.perf_counter() - t0
        sp = spm.SentencePieceProcessor(model_file=str(path))

        n, bad = agreement(sp, ref, corpus)
        hn, hbad = hypothesis_agreement(sp, ref, args.examples)
        lib_lines = best_of(lambda: [sp.encode(s) for s in corpus])
        ref_lines = best_of(lambda: [ref.encode(s) for s in corpus])
        lib_doc = best_of(lambda: sp.encode(document))
        ref_doc = best_of(lambda: ref.encode(document))
        tokens = len(sp.encode(document))
        print(f"\n{name} ({ref.vocab_size} pieces, reference loads in {load_ref * 1e3:.1f} ms)")
        print(f"  agreement, test corpus:      {n} strings, {bad} mismatches")
        print(f"  agreement, hypothesis:       {hn} strings, {hbad} mismatches")
        print(f"  speed, {len(corpus)} lines:        library {lib_lines * 1e3:8.1f} ms, reference {ref_lines * 1e3:8.1f} ms,"
              f" ratio {ref_lines / lib_lines:5.0f}x")
        print(f"  speed, one document:         library {lib_doc * 1e3:8.1f} ms, reference {ref_doc * 1e3:8.1f} ms,"
              f" ratio {ref_doc / lib_doc:5.0f}x ({tokens} tokens, {tokens / ref_doc:,.0f} tokens/s reference)")


if __name__ == "__main__":
    main()
