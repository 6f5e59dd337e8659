"""Train the tiny SentencePiece models the tokenizer tests use.

Run from the repository root::

    python tests/make_tokenizers.py

It writes a small multilingual corpus (English, German, Korean, Chinese, code,
numbers, whitespace runs, emoji) with a fixed seed, trains three BPE models on
it with sentencepiece's own trainer and writes them to
``tests/data/tokenizers/``, where they are committed:

``gemma.model``
    Gemma 1/2's settings: BPE, byte fallback, digits split, no dummy prefix,
    whitespace kept as is, whitespace-only pieces allowed, identity
    normalization, pad/eos/bos/unk = 0/1/2/3, user-defined ``<start_of_turn>``
    and ``<end_of_turn>`` plus runs of spaces, newlines and tabs (as in the real
    Gemma vocabulary), and a ``<mask>`` control piece.
``gemma3.model``
    The same plus Gemma 3's image pieces (``<start_of_image>``,
    ``<end_of_image>``, ``<image_soft_token>``) and a smaller vocabulary: 512
    pieces, exactly the ``vocab_size`` of the tiny checkpoints in
    ``tests/data/models``. It is their tokenizer: the README tour copies it into
    ``my-model/tokenizer.model`` (the fixtures themselves ship none, since tests
    check what happens without one).
``dummy_prefix.model``
    Not Gemma: a dummy-prefix space, extra whitespace removed, no byte fallback
    and a character coverage below 1, so unknown characters become ``<unk>``.
    It exercises the parts of the reference encoder Gemma does not use.

The tests import :func:`corpus_lines` to get the same text back.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "data" / "tokenizers"

ENGLISH = (
    "the quick brown fox jumps over the lazy dog while the model reads every token of the prompt "
    "and a release needs a notice file a model card and the terms of use before anything is published "
    "weights are checked against golden logits computed in float32 from the released safetensors"
).split()
GERMAN = (
    "der schnelle braune Fuchs springt über den faulen Hund während die Straße nass ist "
    "Größe Grüße Äpfel Öl Übung heißt schön müssen können dürfen Mädchen Brötchen"
).split()
KOREAN = "안녕하세요 반갑습니다 오늘 날씨가 좋네요 한국어 토큰화 모델 검증 문장 입니다 감사합니다".split()
CHINESE = "你好 世界 今天 天气 很好 我们 正在 测试 分词 模型 中文 句子 谢谢".split()
CODE = [
    "def forward(self, x):",
    "    return self.norm(x) * (1 + self.weight)",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "if __name__ == \"__main__\":",
    "\tprint(f\"{name!r}: {value:.3f}\")",
    "const ids = tokenizer.encode(text, {bos: true});",
    "SELECT id, name FROM models WHERE license = 'gemma';",
    "<div class=\"card\"><p>Hello</p></div>",
]
EMOJI = ["🙂", "🚀", "👍🏽", "🇩🇪", "❤️", "é", "ñ", "ß", "—", "…", "≤", "∑"]


def corpus_lines(seed: int = 1234, n_lines: int = 3000) -> list[str]:
    """The training text, one sentence a line; deterministic for a given seed."""
    rng = random.Random(seed)
    lines: list[str] = []
    for i in range(n_lines):
        kind = i % 8
        if kind == 0:
            lines.append(" ".join(rng.choice(ENGLISH) for _ in range(rng.randint(4, 14))).capitalize() + ".")
        elif kind == 1:
            lines.append(" ".join(rng.choice(GERMAN) for _ in range(rng.randint(4, 10))) + ".")
        elif kind == 2:
            lines.append(" ".join(rng.choice(KOREAN) for _ in range(rng.randint(3, 8))))
        elif kind == 3:
            lines.append("".join(rng.choice(CHINESE) for _ in range(rng.randint(3, 10))) + "。")
        elif kind == 4:
            lines.append(rng.choice(CODE))
        elif kind == 5:
            a, b = rng.randint(0, 10**6), rng.randint(0, 999)
            lines.append(f"{a} + {b} = {a + b}, pi = 3.{rng.randint(0, 99999):05d}, year {rng.randint(1900, 2030)}")
        elif kind == 6:
            # Runs of spaces and tabs inside a line (newlines cannot be in a training line).
            words = [rng.choice(ENGLISH) for _ in range(rng.randint(2, 6))]
            lines.append("".join(w + " " * rng.randint(1, 6) + ("\t" if rng.random() < 0.2 else "") for w in words))
        else:
            lines.append(" ".join(rng.choice(ENGLISH + EMOJI) for _ in range(rng.randint(3, 9))))
    return lines


# Runs of whitespace the real Gemma vocabulary holds as user-defined pieces (shortened here).
WHITESPACE_RUNS = ["\n" * k for k in range(2, 6)] + ["▁" * k for k in range(2, 9)] + ["\t" * k for k in range(2, 4)]

GEMMA_SETTINGS = dict(
    model_type="bpe",
    byte_fallback=True,
    split_digits=True,
    add_dummy_prefix=False,
    remove_extra_whitespaces=False,
    allow_whitespace_only_pieces=True,
    normalization_rule_name="identity",
    character_coverage=1.0,
    pad_id=0,
    eos_id=1,
    bos_id=2,
    unk_id=3,
    pad_piece="<pad>",
    eos_piece="<eos>",
    bos_piece="<bos>",
    unk_piece="<unk>",
    control_symbols=["<mask>"],
    num_threads=1,
    minloglevel=2,
)

MODELS = {
    "gemma": dict(
        GEMMA_SETTINGS,
        vocab_size=1200,
        user_defined_symbols=["<start_of_turn>", "<end_of_turn>", *WHITESPACE_RUNS],
    ),
    "gemma3": dict(
        GEMMA_SETTINGS,
        vocab_size=512,  # the vocabulary of the tiny test checkpoints in tests/data/models
        user_defined_symbols=[
            "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>",
            *WHITESPACE_RUNS,
        ],
    ),
    "dummy_prefix": dict(
        model_type="bpe",
        vocab_size=600,
        byte_fallback=False,
        add_dummy_prefix=True,
        remove_extra_whitespaces=True,
        normalization_rule_name="identity",
        character_coverage=0.98,
        user_defined_symbols=["<sep>"],
        num_threads=1,
        minloglevel=2,
    ),
}


def main(out_dir: Path = OUT_DIR) -> None:
    import sentencepiece as spm

    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        # Train inside the temporary directory with relative names: the trainer spec stored in
        # the .model records the input and prefix, and the output should not depend on $TMPDIR.
        os.chdir(tmp)
        try:
            Path("corpus.txt").write_text("\n".join(corpus_lines()) + "\n", encoding="utf-8")
            for name, settings in MODELS.items():
                spm.SentencePieceTrainer.train(input="corpus.txt", model_prefix=name, **settings)
                data = Path(f"{name}.model").read_bytes()
                (out_dir / f"{name}.model").write_bytes(data)
                print(f"{out_dir / (name + '.model')}: {len(data)} bytes", file=sys.stderr)
        finally:
            os.chdir(cwd)


if __name__ == "__main__":
    main()
