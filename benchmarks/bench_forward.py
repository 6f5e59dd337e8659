"""Prefill and KV-cache decode speed and memory of the NumPy forward, against transformers, in one run.

    python benchmarks/bench_forward.py                          # gemma-2b shape: all runs
    python benchmarks/bench_forward.py --variant gemma-7b       # runs that fit in RAM only
    python benchmarks/bench_forward.py --variant gemma-4-26B-A4B --layers 4   # real width, cut depth
    python benchmarks/bench_forward.py --variant gemma-3n-E2B --repeat 2

Writes a random bf16 checkpoint with the variant's real tensor names and shapes
(benchmarks/bench_verify.py's writer) unless it is there; nothing is downloaded.
Each run is a fresh process, so its memory is its own:

* ``numpy-stream``: weights streamed from the bf16 file (the default);
* ``numpy-cached``: ``cache_weights=True``, float32 copies kept after first use;
* ``hf-float32`` / ``hf-bfloat16``: transformers, eager attention, ``use_cache``.

Every process: one prefill of the prompt with logits for ALL positions, which
pays one-time costs (transformers' set-up; mapping the file's pages; for the
cache, converting every weight into fresh memory) and is listed apart; three
more prefills (median); then greedy decoding of --decode tokens one at a time
through the KV cache (median seconds per token). Each run is repeated
(--repeat, default 3) round-robin, so a slow spell of a shared machine hits
every run alike, and the medians over the processes are reported with their
ranges. Also measured, before and after the runs (median of 14), as the roofs:
float32 GEMM GFLOP/s (NumPy, the prefill's shape) and memory bandwidth (a
float32 matrix-vector product over 1 GiB). The prefill roof is its FLOPs at
that rate; the decode bound is the bytes of weights one token must read (bf16
when streaming, float32 when cached) at that bandwidth. Runs that cannot fit
in RAM are skipped and say so.

Gemma 4 and 3n: the FLOPs and bytes count what one token really runs through:
the routed experts only (26B-A4B: 8 of 128), not the per-layer-embedding table
(Gemma 4 E2B/E4B, Gemma 3n: rows are gathered; 2.35B / 2.01B parameters never
multiplied), nor the K/V projections KV-shared layers do not run. For MoE
models the NumPy runs also count the bytes of expert weights read per decoded
token (every ``linear`` call inside ``gemma_ref.model.moe``, instrumented
from here) against the routed experts' bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_verify import (PeakSampler, _status_kb, bench_prompt, default_dir, ensure_checkpoint,  # noqa: E402
                          run_script_child)

RUNS = ("numpy-stream", "numpy-cached", "hf-float32", "hf-bfloat16")


def timed(f, n: int) -> list[float]:
    """Seconds of n calls of f, after one warm-up call."""
    f()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        out.append(time.perf_counter() - t0)
    return out


def roof_samples(hidden: int, ffn: int, tokens: int) -> dict[str, list[float]]:
    """float32 GEMM rates in the prefill's shape and matrix-vector bandwidths: 7 runs of each."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((tokens, hidden), dtype=np.float32)
    w = rng.standard_normal((ffn, hidden), dtype=np.float32)
    gemm = [2 * tokens * hidden * ffn / t / 1e9 for t in timed(lambda: x @ w.T, 7)]
    big = rng.standard_normal(((1 << 28) // 4096, 4096), dtype=np.float32)  # 1 GiB
    v = rng.standard_normal(4096, dtype=np.float32)
    return {"gemm_gflops": gemm, "bandwidth_gbs": [big.nbytes / t / 1e9 for t in timed(lambda: big @ v, 7)]}


def child(kind: str, model: Path, ids: list[int], n_decode: int) -> dict:
    with PeakSampler() as s:
        t0 = time.perf_counter()
        out = run_numpy(kind, model, ids, n_decode) if kind.startswith("numpy") else run_hf(kind, model, ids, n_decode)
        out["total_seconds"] = time.perf_counter() - t0
    return {"kind": kind, **out, "peak_rss_gib": _status_kb("VmHWM") / 2**20, "peak_rss_anon_gib": s.peak_anon_kb / 2**20}


WARM_PREFILLS = 3  # timed prefills after the first, per process: their median is reported


def measure(prefill, step, n_decode: int, per_token_hook=None) -> dict:
    """Time a first prefill, WARM_PREFILLS more (median), then n_decode greedy steps (median per token).

    prefill() -> (next token, KV state) and step(token, state) -> (next token, state): one shape for
    the NumPy forward and transformers, so both are timed by the same code.
    """
    t0 = time.perf_counter()
    prefill()  # pays one-time costs (mapping the file's pages; the cache's conversion; torch's set-up)
    out = {"first_prefill_seconds": time.perf_counter() - t0}
    warm = []
    for _ in range(WARM_PREFILLS):
        t0 = time.perf_counter()
        token, state = prefill()
        warm.append(time.perf_counter() - t0)
    per_token = []
    for _ in range(n_decode):
        if per_token_hook:
            per_token_hook("start")
        t0 = time.perf_counter()
        token, state = step(token, state)
        per_token.append(time.perf_counter() - t0)
        if per_token_hook:
            per_token_hook("end")
    out["prefill_seconds"] = float(np.median(warm))
    out["decode_seconds_per_token"] = float(np.median(per_token))
    return out


class ExpertBytes:
    """Bytes of expert weights every ``linear`` inside ``gemma_ref.model.moe`` reads, per decoded token.

    Installed by wrapping the module's ``moe`` and ``linear`` (gemma_ref itself is not changed): the
    experts' matrices reach ``linear`` as views of the file (or of the float32 cache), so ``w.nbytes``
    is what that call reads and converts. The router's own [E, D] matrix is read inside ``moe`` too
    and is counted (26B-A4B: 0.7 MiB of bf16 per layer, next to 90.8 MiB of routed experts).
    """

    def __init__(self):
        import gemma_ref.model as gm

        self.inside = False
        self.count = 0
        self.per_token: list[int] = []
        moe, linear = gm.moe, gm.linear

        def counted_moe(*args, **kw):
            self.inside = True
            try:
                return moe(*args, **kw)
            finally:
                self.inside = False

        def counted_linear(x, w):
            if self.inside:
                self.count += w.nbytes
            return linear(x, w)

        gm.moe, gm.linear = counted_moe, counted_linear

    def hook(self, when: str) -> None:
        if when == "start":
            self.count = 0
        else:
            self.per_token.append(self.count)


def run_numpy(kind: str, model: Path, ids: list[int], n_decode: int) -> dict:
    from gemma_ref.model import forward, load_model, new_cache

    m = load_model(model, cache_weights=kind == "numpy-cached")
    cfg, prompt = m.config, np.asarray(ids)
    experts = ExpertBytes() if cfg.num_experts else None

    def prefill():
        cache = new_cache(cfg, capacity=len(ids) + n_decode)
        logits = forward(m.weights, cfg, [prompt], caches=[cache])[0]  # all positions' logits
        return int(np.argmax(logits[-1])), cache

    def step(token, cache):
        row = forward(m.weights, cfg, [np.array([token])], caches=[cache], last_only=True)[0][-1]
        return int(np.argmax(row)), cache

    out = measure(prefill, step, n_decode, experts.hook if experts else None)
    if experts:
        # What the routed experts hold: top_k experts x (gate, up, down) per MoE layer, in the dtype read.
        itemsize = 4 if kind == "numpy-cached" else 2
        out["expert_bytes_per_token"] = float(np.median(experts.per_token))
        out["routed_expert_bytes"] = float(cfg.num_hidden_layers * cfg.top_k_experts * 3 * cfg.hidden_size
                                           * cfg.moe_intermediate_size * itemsize)
    return out


def run_hf(kind: str, model: Path, ids: list[int], n_decode: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.float32 if kind == "hf-float32" else torch.bfloat16
    extra = {"experts_implementation": "eager"} if json.loads((model / "config.json").read_text()).get(
        "enable_moe_block") else {}  # the golden backend's choice: each routed expert's matmul, as written
    t0 = time.perf_counter()
    m = AutoModelForCausalLM.from_pretrained(str(model), dtype=dtype, attn_implementation="eager", **extra).eval()
    load_seconds = time.perf_counter() - t0
    x = torch.tensor([ids])

    def prefill():
        r = m(input_ids=x, use_cache=True)  # logits for all positions
        return r.logits[0, -1].argmax().view(1, 1), r.past_key_values

    def step(token, past):
        r = m(input_ids=token, past_key_values=past, use_cache=True)
        return r.logits[0, -1].argmax().view(1, 1), r.past_key_values

    with torch.inference_mode():
        return {"load_seconds": load_seconds, **measure(prefill, step, n_decode)}


def run_child(kind: str, model: Path, ids: list[int], n_decode: int) -> dict | None:
    return run_script_child(__file__, kind, model, ids, "--decode", str(n_decode))


def summarize(runs: list[dict]) -> dict:
    """Median of each timing over the repeated processes (with its range), the highest peak memory."""
    out = {"n": len(runs)}
    for key in runs[0]:
        values = [r[key] for r in runs]
        if key.startswith("peak_"):
            out[key] = max(values)
        elif key in ("expert_bytes_per_token", "routed_expert_bytes"):
            out[key] = float(np.median(values))
        elif isinstance(values[0], float):
            out[key], out[key + "_range"] = float(np.median(values)), (min(values), max(values))
    return out


def fits(kind: str, params: int) -> bool:
    """Whether a run's resident weights fit in this machine's RAM (with 2 GiB to spare)."""
    bytes_per = {"numpy-stream": 0, "numpy-cached": 4, "hf-float32": 4, "hf-bfloat16": 2}[kind]
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return bytes_per * params + (2 << 30) < total


def work(cfg, tokens: int) -> tuple[int, float]:
    """(weights one token multiplies by, prefill GFLOP for `tokens` tokens with all positions' logits).

    Norms are left out (noise); Gemma 4's PLE table is gathered, never multiplied; MoE counts the
    routed experts only (their FLOPs; a prompt's tokens between them read nearly every expert).
    """
    d = cfg.hidden_size
    params = cfg.expected_parameters(active=True) if cfg.generation >= 4 else cfg.expected_parameters()
    matrix = params - cfg.num_hidden_layers * 6 * d
    if cfg.hidden_size_per_layer_input:
        matrix -= cfg.vocab_size_per_layer_input * cfg.num_hidden_layers * cfg.hidden_size_per_layer_input
    head_dims = [s.head_dim for s in cfg.layers] or [cfg.head_dim] * cfg.num_hidden_layers
    attn_flops = sum(4 * cfg.num_attention_heads * hd * tokens ** 2 // 2 for hd in head_dims)
    return matrix, (2 * tokens * matrix + attn_flops) / 1e9


def main() -> None:
    from gemma_ref.config import KNOWN_VARIANTS, load_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", default="gemma-2b", choices=list(KNOWN_VARIANTS))
    ap.add_argument("--dir", type=Path, default=None, help="checkpoint directory (default /tmp/gemma-bench/VARIANT)")
    ap.add_argument("--layers", type=int, default=None,
                    help="cut the variant to its first N layers (real width, cut depth)")
    ap.add_argument("--tokens", type=int, default=128, help="prompt length")
    ap.add_argument("--decode", type=int, default=16, help="tokens to decode")
    ap.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of " + ", ".join(RUNS))
    ap.add_argument("--repeat", type=int, default=3, help="processes per run, round-robin; medians are reported")
    ap.add_argument("--ids", default=None)
    ap.add_argument("--child", default=None)
    a = ap.parse_args()
    if a.child:
        model = a.dir or default_dir(a.variant, a.layers)
        print(json.dumps(child(a.child, model, [int(x) for x in a.ids.split(",")], a.decode)))
        return
    model = ensure_checkpoint(a.variant, a.dir, a.layers)
    cfg = load_config(model)
    files = sorted(model.glob("*.safetensors"))
    for f in files:  # warm the page cache so every run starts alike
        with open(f, "rb") as fh:
            while fh.read(64 << 20):
                pass
    ids = bench_prompt(cfg.vocab_size, a.tokens)
    params = cfg.expected_parameters()  # all of them: what must fit in RAM
    matrix_params, prefill_gflop = work(cfg, a.tokens)
    # The roofs are sampled before and after the runs and their median taken: on a shared VM single
    # readings swing by 30% and more (one bandwidth reading of 45 GB/s among runs of 27-33 was seen).
    samples = roof_samples(cfg.hidden_size, cfg.intermediate_size, a.tokens)

    kinds = []
    for kind in a.runs.split(","):
        if fits(kind, params):
            kinds.append(kind)
        else:
            print(f"{kind}: skipped, {params / 1e9:.2f}B parameters do not fit in this machine's RAM", file=sys.stderr)
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    for round_ in range(a.repeat):  # round-robin, so a slow spell of the machine hits every kind alike
        for kind in kinds:
            print(f"round {round_ + 1}/{a.repeat}: {kind} ...", file=sys.stderr)
            r = run_child(kind, model, ids, a.decode)
            if r:
                runs[kind].append(r)
    results = {kind: summarize(rs) for kind, rs in runs.items() if rs}

    for k, v in roof_samples(cfg.hidden_size, cfg.intermediate_size, a.tokens).items():
        samples[k] += v
    roof = {k: float(np.median(v)) for k, v in samples.items()}
    gib = sum(f.stat().st_size for f in files) / 2**30
    cut = f" cut to {cfg.num_hidden_layers} layers" if a.layers else ""
    print(f"{a.variant}{cut}: {params / 1e9:.2f}B parameters ({matrix_params / 1e9:.2f}B multiplied per token), bf16 {gib:.2f} GiB on disk; prompt {a.tokens} tokens "
          f"(all logits), {a.decode} decoded tokens")
    g, b = samples["gemm_gflops"], samples["bandwidth_gbs"]
    print(f"roofs measured in this run (median of {len(g)}, before and after): float32 GEMM {roof['gemm_gflops']:.0f} GFLOP/s "
          f"(range {min(g):.0f}-{max(g):.0f}), bandwidth {roof['bandwidth_gbs']:.1f} GB/s (range {min(b):.1f}-{max(b):.1f})")
    bound = {n: n * matrix_params / roof["bandwidth_gbs"] / 1e9 for n in (2, 4)}  # bytes per weight -> s/token
    print(f"  -> prefill roof "
          f"{prefill_gflop / roof['gemm_gflops']:.2f} s ({prefill_gflop:.0f} GFLOP); "
          f"decode bound {bound[2]:.3f} s/token streaming bf16, {bound[4]:.3f} s/token float32")
    hf = results.get("hf-float32")
    head = f"{'run':<14}{'prefill s':>10}{'x hf-f32':>9}{'of roof':>8}{'decode s/tok':>13}{'x hf-f32':>9}{'x bound':>8}{'RSS GiB':>9}{'RssAnon GiB':>12}"
    print(head)
    for kind, r in results.items():
        bound_s = bound[4 if kind in ("numpy-cached", "hf-float32") else 2]  # float32 weights read 4 bytes each
        ratio_p = f"{r['prefill_seconds'] / hf['prefill_seconds']:.2f}" if hf else "-"
        ratio_d = f"{r['decode_seconds_per_token'] / hf['decode_seconds_per_token']:.2f}" if hf else "-"
        print(f"{kind:<14}{r['prefill_seconds']:>10.2f}{ratio_p:>9}{prefill_gflop / roof['gemm_gflops'] / r['prefill_seconds']:>8.2f}"
              f"{r['decode_seconds_per_token']:>13.3f}{ratio_d:>9}{r['decode_seconds_per_token'] / bound_s:>8.2f}"
              f"{r['peak_rss_gib']:>9.2f}{r['peak_rss_anon_gib']:>12.2f}")
    for kind, r in results.items():
        if "expert_bytes_per_token" in r:
            print(f"  {kind}: expert weights read per decoded token {r['expert_bytes_per_token'] / 2**20:.1f} MiB, "
                  f"the routed experts hold {r['routed_expert_bytes'] / 2**20:.1f} MiB "
                  f"(ratio {r['expert_bytes_per_token'] / r['routed_expert_bytes']:.3f})")
    print(f"medians over up to {a.repeat} processes per run (each: {WARM_PREFILLS} warm prefills after a first one, "
          f"{a.decode} decoded tokens); ranges over the processes:")
    for kind, r in results.items():
        keys = ("prefill_seconds", "decode_seconds_per_token", "first_prefill_seconds", "load_seconds", "total_seconds")
        print(f"  {kind} ({r['n']} processes): " + ", ".join(f"{k.replace('_seconds', '')} {r[k]:.3g} ({r[k + '_range'][0]:.3g}-{r[k + '_range'][1]:.3g})"
                                        for k in keys if k in r))


if __name__ == "__main__":
    main()
