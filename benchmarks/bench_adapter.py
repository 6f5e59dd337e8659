"""The overhead of a LoRA adapter in `verify`: base alone vs base + a rank-64 all-linear adapter, same run.

    python benchmarks/bench_adapter.py                 # gemma-2b shape, 128-token prompt, r = 64
    python benchmarks/bench_adapter.py --rank 16 --tokens 32

Uses bench_verify's random bf16 checkpoint (written under /tmp/gemma-bench/ if missing) and writes a
random float32 PEFT-style adapter on every linear layer next to it. Golden files for both are made
by this reference (top-k); then each `verify_model` runs in a fresh process, alternating base and
adapter `--repeat` times, and reports wall seconds and peak RssAnon (memory that is ours, not the
page cache of the memory-mapped weights).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_verify import (
    PeakSampler,
    _status_kb,
    bench_prompt,
    ensure_checkpoint,
    run_script_child,
)


def write_adapter(model: Path, out: Path, rank: int, seed: int = 0) -> Path:
    """A random LoRA on every linear layer of the text model, saved as PEFT names it."""
    from safetensors.numpy import save_file

    from gemma_ref.config import load_config
    from gemma_ref.weights import expected_shapes

    if (out / "adapter_model.safetensors").is_file():
        return out
    cfg = load_config(model)
    rng = np.random.default_rng(seed)
    tensors = {}
    for rel, shape in expected_shapes(cfg).items():
        if rel.startswith("layers.") and len(shape) == 2:
            name = f"base_model.model.model.{rel[:-len('.weight')]}"
            n_out, n_in = shape
            tensors[f"{name}.lora_A.weight"] = rng.standard_normal((rank, n_in), dtype=np.float32) / np.float32(np.sqrt(n_in))
            tensors[f"{name}.lora_B.weight"] = rng.standard_normal((n_out, rank), dtype=np.float32) * np.float32(0.01)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "adapter_model.safetensors")
    (out / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": "all-linear",
        "base_model_name_or_path": str(model)}, indent=2))
    return out


def child(kind: str, model: Path, golden: Path) -> dict:
    from release.weights.verify import verify_model

    with PeakSampler() as s:
        t0 = time.perf_counter()
        report = verify_model(model, golden)
        seconds = time.perf_counter() - t0
    return {"kind": kind, "seconds": seconds, "peak_rss_anon_gib": s.peak_anon_kb / 2**20,
            "peak_rss_gib": _status_kb("VmHWM") / 2**20, "ok": report.ok, "max_abs_diff": report.max_abs_diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", default="gemma-2b")
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--child", default=None)
    ap.add_argument("--golden", type=Path, default=None)
    ap.add_argument("--ids", default=None)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.dir, args.golden)))
        return

    from gemma_ref.config import load_config
    from release.weights.golden import PromptSpec, make_golden

    model = ensure_checkpoint(args.variant, args.dir)
    adapter = write_adapter(model, model.parent / f"{model.name}-lora-r{args.rank}", args.rank)
    ids = bench_prompt(load_config(model).vocab_size, args.tokens)
    goldens = {"base": (model, model.parent / f"{model.name}.adapter-bench.base.golden.safetensors"),
               "adapter": (adapter, adapter / "golden.safetensors")}
    for path, golden in goldens.values():
        if not golden.is_file():
            make_golden(path, golden, [PromptSpec("bench", ids=ids)], storage="topk", topk=64)
    runs: dict[str, list[dict]] = {"base": [], "adapter": []}
    for _ in range(args.repeat):
        for kind, (path, golden) in goldens.items():
            r = run_script_child(__file__, kind, path, ids, "--golden", str(golden))
            if r:
                runs[kind].append(r)
                print(json.dumps(r))
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("seconds", "peak_rss_anon_gib")} for k, v in runs.items() if v}
    print(f"{args.variant}, {args.tokens} tokens, rank-{args.rank} all-linear adapter "
          f"({(adapter / 'adapter_model.safetensors').stat().st_size / 2**20:.0f} MiB float32):")
    for k, m in med.items():
        print(f"  {k:8s} verify {m['seconds']:.2f} s, peak RssAnon {m['peak_rss_anon_gib']:.3f} GiB")
    if len(med) == 2:
        print(f"  overhead: x{med['adapter']['seconds'] / med['base']['seconds']:.2f} time, "
              f"+{(med['adapter']['peak_rss_anon_gib'] - med['base']['peak_rss_anon_gib']) * 1024:.0f} MiB RssAnon")


if __name__ == "__main__":
    main()
