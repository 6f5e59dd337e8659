"""Write the committed quantized fixtures under tests/data/quant/ with the formats' own tools.

    HF_HUB_OFFLINE=1 python tests/make_quant_fixtures.py

Needs mlx-lm (``pip install mlx-lm``; on Linux with ``mlx[cpu]``), and torch, transformers, accelerate and
bitsandbytes (its CPU backend). Everything is local: the sources are tests/data/models/*, nothing is
downloaded (bitsandbytes' optional Hub kernel lookup is off with HF_HUB_OFFLINE=1).

=====================================  =========================================================  ========
fixture                                made by                                                    size
=====================================  =========================================================  ========
gemma3_1b_style-mlx-4bit               mlx-lm 0.32.2 load_model + quantize_model(64, 4) + save    ~180 KB
gemma2_gqa_softcap-bnb-nf4-dq          transformers 5.25 + bitsandbytes 0.50.2, nf4, double quant  ~200 KB
gemma2_gqa_softcap-bnb-int8            transformers 5.25 + bitsandbytes 0.50.2, LLM.int8           ~230 KB
=====================================  =========================================================  ========

The other variants the tests use (every MLX bit width and mode, mixed precision, fp4, nf4 without double
quantization, damaged copies) are written at test time by tests/quant_fixtures.py.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quant_fixtures import QUANT_DATA, write_bnb_variant, write_mlx_lm_variant

MODELS = Path(__file__).resolve().parent / "data" / "models"
FIXTURES = {
    "gemma3_1b_style-mlx-4bit": lambda dst: write_mlx_lm_variant(MODELS / "gemma3_1b_style", dst, 4, 64),
    "gemma2_gqa_softcap-bnb-nf4-dq": lambda dst: write_bnb_variant(MODELS / "gemma2_gqa_softcap", dst, "nf4-dq"),
    "gemma2_gqa_softcap-bnb-int8": lambda dst: write_bnb_variant(MODELS / "gemma2_gqa_softcap", dst, "int8"),
}


def main() -> None:
    QUANT_DATA.mkdir(parents=True, exist_ok=True)
    for name, make in FIXTURES.items():
        dst = QUANT_DATA / name
        if dst.exists():
            shutil.rmtree(dst)
        make(dst)
        size = sum(p.stat().st_size for p in dst.iterdir())
        print(f"wrote {dst} ({size:,} bytes)")


if __name__ == "__main__":
    main()
