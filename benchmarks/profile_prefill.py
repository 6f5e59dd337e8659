"""Where a prefill's time goes, per op class, against the machine's float32 GEMM roof measured in the same run.

    python benchmarks/profile_prefill.py                                  # gemma-2b shape, 4 layers, 128 tokens
    python benchmarks/profile_prefill.py --variant gemma-4-31B --layers 2
    python benchmarks/profile_prefill.py --variant gemma-4-26B-A4B --layers 2 --cached

Writes (or reuses) the random bf16 checkpoint of benchmarks/bench_verify.py, runs one warm-up prefill
and then --repeat timed ones (all positions' logits, as verify does), each op timed by wrapping the
functions of gemma_ref.model and gemma_ref.weights for the duration (as gemma_ref.bugs does; model.py
is not changed). Times are exclusive: an op's own time, its callees' taken out. The op classes:

* ``convert``: bf16 -> float32 of weight chunks (``to_float32`` called by ``matmul_stored``), wall time;
* ``gemm``: the matrix products of ``linear`` (the rest of ``matmul_stored`` and float32 weights' products);
* ``attention``: scores, mask, softmax and the weighted sum (``attend``), per layer;
* ``norms``, ``gelu``, ``rope``, ``embed``, ``unembed`` (the output projection, itself a GEMM), ``moe-route``;
* ``other``: the rest of the forward (residual adds, reshapes, Python).

The roof: the prefill's matrix-product FLOPs (projections, attention, output head) at the float32 GEMM
rate NumPy reaches here on the projections' shape (median of 7, before and after).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_verify import bench_prompt, ensure_checkpoint  # noqa: E402

OPS = {  # gemma_ref.model function -> op class
    "linear": "gemm", "attend": "attention", "rms_norm": "norms", "rms_norm_gemma4": "norms",
    "rms_norm_unscaled": "norms", "gelu_tanh": "gelu", "apply_rope": "rope", "rope_cos_sin": "rope",
    "embed": "embed", "unembed": "unembed", "route": "moe-route", "per_layer_inputs": "embed",
}


class Profile:
    """Exclusive wall time per op class: a stack of running timers, each callee's time taken from its caller."""

    def __init__(self):
        self.total: dict[str, float] = defaultdict(float)
        self.stack: list[list] = []  # [op, start, time of callees]

    def wrap(self, op: str, f):
        def timed(*a, **k):
            self.stack.append([op, time.perf_counter(), 0.0])
            try:
                return f(*a, **k)
            finally:
                name, t0, inner = self.stack.pop()
                dt = time.perf_counter() - t0
                self.total[name] += dt - inner
                if self.stack:
                    self.stack[-1][2] += dt
        return timed


def gemm_rate(n: int, k: int, m: int, reps: int = 7) -> float:
    a = np.random.default_rng(0).standard_normal((n, k), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((k, m), dtype=np.float32)
    a @ b
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n * k * m / float(np.median(times)) / 1e9


def prefill_flops(cfg, T: int) -> float:
    """Matrix-product FLOPs of one prefill with all logits: projections, attention, the output head."""
    D, V = cfg.hidden_size, cfg.vocab_size
    total = 2 * T * D * V
    specs = cfg.layers or [None] * cfg.num_hidden_layers
    for i, spec in enumerate(specs):
        hd = spec.head_dim if spec else cfg.head_dim
        K = spec.num_key_value_heads if spec else cfg.num_key_value_heads
        F = spec.intermediate_size if spec else cfg.intermediate_size
        H = cfg.num_attention_heads
        total += 2 * T * D * (H * hd + 2 * K * hd + H * hd)  # q, k, v, o
        total += 2 * T * D * 3 * F  # gate, up, down
        if cfg.num_experts:
            total += 2 * T * D * 3 * cfg.moe_intermediate_size * cfg.top_k_experts
        S = min(T, cfg.sliding_window) if cfg.layer_types[i] == "sliding_attention" and cfg.sliding_window else T
        total += 2 * 2 * H * T * S * hd  # scores and weighted sum, every key computed (no causal saving)
    return float(total)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", default="gemma-2b")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cached", action="store_true", help="cache_weights=True (float32 copies) instead of streaming")
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()

    import gemma_ref.model as M
    import gemma_ref.weights as W
    from gemma_ref.bugs import patched

    model_dir = ensure_checkpoint(args.variant, args.dir, args.layers)
    model = M.load_model(model_dir, cache_weights=args.cached)
    cfg = model.config
    ids = np.asarray(bench_prompt(cfg.vocab_size, args.tokens))
    flops = prefill_flops(cfg, args.tokens)
    rate_before = gemm_rate(args.tokens, cfg.hidden_size, cfg.intermediate_size)
    M.forward(model.weights, cfg, [ids])  # warm-up: page cache, buffers, (cached) conversions

    prof = Profile()
    wraps = {name: (lambda op: (lambda f: prof.wrap(op, f)))(op) for name, op in OPS.items() if hasattr(M, name)}
    orig_on_all_cores = W._on_all_cores
    walls = []
    convert_wall = [0.0]

    def on_all_cores(job, n):  # conversion's wall time (its threads run in parallel)
        t0 = time.perf_counter()
        orig_on_all_cores(job, n)
        dt = time.perf_counter() - t0
        prof.total["convert"] += dt
        convert_wall[0] += dt
        if prof.stack:
            prof.stack[-1][2] += dt

    try:
        W._on_all_cores = on_all_cores
        with patched(wraps):
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                M.forward(model.weights, cfg, [ids])
                walls.append(time.perf_counter() - t0)
    finally:
        W._on_all_cores = orig_on_all_cores
    rate_after = gemm_rate(args.tokens, cfg.hidden_size, cfg.intermediate_size)
    rate = float(np.median([rate_before, rate_after]))
    wall = float(np.median(walls))
    measured = sum(prof.total.values()) / args.repeat
    prof.total["other"] += max(0.0, wall * args.repeat - sum(prof.total.values()))
    roof = flops / (rate * 1e9)
    print(f"{args.variant} x {cfg.num_hidden_layers} layers, {args.tokens} tokens, "
          f"{'cached float32' if args.cached else 'streamed bf16'} weights; {flops / 1e9:.1f} GFLOP of matrix products")
    print(f"float32 GEMM ({args.tokens}x{cfg.hidden_size}x{cfg.intermediate_size}): {rate_before:.0f} / "
          f"{rate_after:.0f} GFLOP/s before / after -> roof {roof * 1e3:.0f} ms")
    print(f"prefill: {wall * 1e3:.0f} ms median of {args.repeat} ({roof / wall:.2f} of the roof); "
          f"timed ops cover {measured / wall:.0%}")
    print(f"{'op':<12} {'ms':>8} {'share':>7}")
    for op, t in sorted(prof.total.items(), key=lambda kv: -kv[1]):
        ms = t / args.repeat * 1e3
        print(f"{op:<12} {ms:>8.1f} {ms / (wall * 1e3):>7.1%}")


if __name__ == "__main__":
    main()
