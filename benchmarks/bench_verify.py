"""Wall time and peak memory of `verify` on a full-size random checkpoint, against transformers.

    python benchmarks/bench_verify.py                       # gemma-2b shape, 128-token prompt
    python benchmarks/bench_verify.py --variant gemma-7b --dir /big/disk/bench
    python benchmarks/bench_verify.py --variant gemma-4-12B --dir /big/disk/bench --cold   # bigger than RAM

Writes a random bf16 checkpoint with the real tensor names and shapes of a
known variant (gemma_ref.config.KNOWN_VARIANTS) unless one is already there;
nothing is downloaded. Then, each in a fresh process so memory is measured
alone:

1. ``golden``: this reference makes a top-k golden for one prompt;
2. ``verify``: ``release.weights.verify.verify_model`` against it (NaN scan + forward);
3. ``transformers``: transformers float32, eager attention, the same prompt
   (skipped when torch/transformers are not installed).

Each child reports wall seconds, peak RSS (VmHWM) and peak anonymous memory
(RssAnon, sampled every 20 ms: memory that is ours, not the file cache of the
memory-mapped weights). The last lines print the ratios.

Also measured in the same run, before and after the children (median): the
disk's read speed (``--cold``: the checkpoint's first GiBs read after dropping
them from the page cache with posix_fadvise, nothing else's pages touched) and
the float32 GEMM rate. The bounds: one pass over the checkpoint's bytes at that
read speed (``verify`` makes two: the NaN scan, then the forward pass; when the
checkpoint is bigger than the page cache both come from disk), and the
prompt's FLOPs at the GEMM rate. ``--cold`` also drops the checkpoint from the
page cache before every child. transformers is skipped when its float32
weights would not fit in RAM.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def variant_config(variant: str, layers: int | None = None) -> dict:
    """The variant's config.json as a dict; with `layers`, cut to its first `layers` layers (real width).

    Per-layer lists are cut alike. Gemma 4 and 3n: layer_types too, with the last layer forced to
    full attention (as Gemma 4's config does, so a cut model keeps both layer types), and KV sharing
    keeps its share of the layers, rounded down, as long as an earlier layer of each type is left to
    share from.
    """
    from gemma_ref.config import FULL, variant_config_json

    raw = variant_config_json(variant)
    n = raw["num_hidden_layers"]
    if layers is None or layers >= n:
        return raw
    if layers < 1:
        raise SystemExit("--layers must be at least 1")
    raw["num_hidden_layers"] = layers
    # Every per-layer list (Gemma 3n: activation_sparsity_pattern, a listed intermediate_size) keeps
    # its first `layers` entries.
    for key, value in raw.items():
        if isinstance(value, list) and len(value) == n and key != "layer_types":
            raw[key] = value[:layers]
    if raw.get("layer_types"):
        raw["layer_types"] = list(raw["layer_types"][:layers - 1]) + [FULL]
    if raw.get("num_kv_shared_layers"):
        shared = raw["num_kv_shared_layers"] * layers // n
        while shared and not all(t in raw["layer_types"][:layers - shared]
                                 for t in set(raw["layer_types"][layers - shared:])):
            shared -= 1
        raw["num_kv_shared_layers"] = shared
    return raw


def _random_bf16(rng: np.random.Generator, shape: tuple[int, ...], std: float, rows: int = 1 << 24) -> np.ndarray:
    """Random bf16 values built from random bits: random signs, mantissas, and 4 binary octaves of magnitude
    below the power of two above 2*std (an RMS near std).

    ~20x faster than normal samples converted to bf16 (a 24 GB checkpoint is 12 billion values), and
    never 0, subnormal, Inf or NaN; the values do not matter to the timings, only their finiteness.
    """
    import ml_dtypes

    out = np.empty(int(np.prod(shape)), dtype=np.uint16)
    top = int(np.frexp(2 * std)[1]) + 126  # bf16 exponent field of the largest magnitude (below 2*std)
    for a in range(0, out.size, rows):
        r = rng.integers(0, 1 << 16, size=min(rows, out.size - a), dtype=np.uint16)
        exp = np.uint16(top) - ((r >> np.uint16(7)) & np.uint16(3))  # 4 octaves below 2*std
        out[a:a + r.size] = (r & np.uint16(0x807F)) | (exp << np.uint16(7))
    return out.view(ml_dtypes.bfloat16).reshape(shape)


def write_checkpoint(variant: str, out: Path, shard_bytes: int = 2 << 30, seed: int = 0,
                     layers: int | None = None) -> None:
    """Random bf16 weights with the variant's names and shapes, in shards of about shard_bytes."""
    import ml_dtypes
    from safetensors.numpy import save_file

    from gemma_ref.config import config_from_dict
    from gemma_ref.weights import expected_shapes

    raw = variant_config(variant, layers)
    cfg = config_from_dict(raw)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shapes = expected_shapes(cfg)
    shards: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        n = int(np.prod(shape)) * 2
        if shards[-1] and size + n > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    weight_map = {}
    for i, names in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name in names:
            shape = shapes[name]
            if len(shape) == 1:
                # Gemma 4 and 3n norms multiply by w (no +1), so they sit around 1 there; Gemma 1-3 store w - 1.
                mean = 1.0 if cfg.generation >= 4 or cfg.altup_num_inputs else 0.0
                tensors["model." + name] = (mean + rng.standard_normal(shape, dtype=np.float32) * np.float32(0.3)).astype(
                    ml_dtypes.bfloat16)
            else:
                std = 0.02 if "embed" in name else 1.0 / np.sqrt(shape[-1])
                tensors["model." + name] = _random_bf16(rng, shape, std)
            weight_map["model." + name] = fname
        save_file(tensors, str(out / fname))
        del tensors
        print(f"  wrote {fname}", file=sys.stderr)
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (out / "config.json").write_text(json.dumps(raw, indent=2))


def default_dir(variant: str, layers: int | None = None) -> Path:
    return Path("/tmp/gemma-bench") / (variant + (f"-L{layers}" if layers else ""))


def ensure_checkpoint(variant: str, directory: Path | None, layers: int | None = None) -> Path:
    """The benchmark checkpoint's directory (default /tmp/gemma-bench/VARIANT[-Ln]), written first if it is not there."""
    model = directory or default_dir(variant, layers)
    if not (model / "config.json").is_file():
        print(f"writing a random {variant} checkpoint{f' cut to {layers} layers' if layers else ''} to {model} ...",
              file=sys.stderr)
        write_checkpoint(variant, model, layers=layers)
    return model


def bench_prompt(vocab_size: int, tokens: int) -> list[int]:
    """The benchmark prompt: BOS, then random ids (the same every run)."""
    return [2] + np.random.default_rng(1).integers(4, vocab_size, size=tokens - 1).tolist()


class PeakSampler:
    """Peak RssAnon of this process, sampled in a thread."""

    def __init__(self, every: float = 0.02):
        self.peak_anon_kb = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        while not self._stop.is_set():
            self.peak_anon_kb = max(self.peak_anon_kb, _status_kb("RssAnon"))
            self._stop.wait(every)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak_anon_kb = max(self.peak_anon_kb, _status_kb("RssAnon"))


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def drop_from_page_cache(files: list[Path]) -> None:
    """Evict these files' clean pages (posix_fadvise DONTNEED): their next read comes from disk."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_speed(files: list[Path], limit: int = 4 << 30) -> float:
    """GB/s reading the first `limit` bytes of the files from disk (dropped from the page cache first and after)."""
    drop_from_page_cache(files)
    done, t0 = 0, time.perf_counter()
    buf = bytearray(64 << 20)
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while done < limit:
                n = fh.readinto(buf)
                if not n:
                    break
                done += n
        if done >= limit:
            break
    seconds = time.perf_counter() - t0
    drop_from_page_cache(files)
    return done / seconds / 1e9


def child(kind: str, model: Path, ids: list[int], golden: Path) -> dict:
    with PeakSampler() as s:
        t0 = time.perf_counter()
        if kind == "golden":
            from release.weights.golden import PromptSpec, make_golden

            make_golden(model, golden, [PromptSpec("bench", ids=ids)], storage="topk", topk=64)
            extra = {}
        elif kind == "verify":
            from release.weights.verify import verify_model

            report = verify_model(model, golden)
            extra = {"ok": report.ok, "max_abs_diff": report.max_abs_diff}
        elif kind == "transformers":
            from release.weights.backends import transformers_logits

            transformers_logits(model, [np.asarray(ids)])
            extra = {}
        else:
            raise SystemExit(f"unknown child {kind}")
        seconds = time.perf_counter() - t0
    return {"kind": kind, "seconds": seconds, "peak_rss_gib": _status_kb("VmHWM") / 2**20,
            "peak_rss_anon_gib": s.peak_anon_kb / 2**20, **extra}


def run_script_child(script: str, kind: str, model: Path, ids: list[int], *extra: str) -> dict | None:
    """Run `script --child KIND` in a fresh process (so its memory is its own); its last stdout line is JSON."""
    cmd = [sys.executable, script, "--child", kind, "--dir", str(model), "--ids", ",".join(map(str, ids)), *extra]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        print(f"{kind} failed (exit {p.returncode}):\n{p.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_child(kind: str, model: Path, ids: list[int], golden: Path) -> dict | None:
    return run_script_child(__file__, kind, model, ids, "--golden", str(golden))


def main() -> None:
    from gemma_ref.config import KNOWN_VARIANTS, load_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", default="gemma-2b", choices=list(KNOWN_VARIANTS))
    ap.add_argument("--dir", type=Path, default=None, help="checkpoint directory (default /tmp/gemma-bench/VARIANT)")
    ap.add_argument("--layers", type=int, default=None,
                    help="cut the variant to its first N layers (real width, cut depth)")
    ap.add_argument("--cold", action="store_true",
                    help="drop the checkpoint from the page cache before every child; measure the disk's read speed")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--golden", type=Path, default=None)
    ap.add_argument("--ids", default=None)
    ap.add_argument("--child", default=None)
    ap.add_argument("--skip-transformers", action="store_true")
    a = ap.parse_args()
    if a.child:
        model = a.dir or default_dir(a.variant, a.layers)
        print(json.dumps(child(a.child, model, [int(x) for x in a.ids.split(",")], a.golden)))
        return
    from bench_forward import fits, roof_samples, work

    model = ensure_checkpoint(a.variant, a.dir, a.layers)
    cfg = load_config(model)
    files = sorted(model.glob("*.safetensors"))
    size = sum(f.stat().st_size for f in files)
    golden = a.golden or model.parent / f"{model.name}.golden.safetensors"
    ids = bench_prompt(cfg.vocab_size, a.tokens)
    speeds = [read_speed(files)] if a.cold else []
    gemm = roof_samples(cfg.hidden_size, cfg.intermediate_size, a.tokens)["gemm_gflops"]
    kinds = ["golden", "verify"]
    if not a.skip_transformers:
        if fits("hf-float32", cfg.expected_parameters()):
            kinds.append("transformers")
        else:
            print("transformers: skipped, its float32 weights do not fit in this machine's RAM", file=sys.stderr)
    results = []
    for kind in kinds:
        if a.cold:
            drop_from_page_cache(files)
        print(f"{kind} ...", file=sys.stderr)
        results.append(run_child(kind, model, ids, golden))
    if a.cold:
        speeds.append(read_speed(files))
    gemm += roof_samples(cfg.hidden_size, cfg.intermediate_size, a.tokens)["gemm_gflops"]
    gflops = float(np.median(gemm))
    _, prefill_gflop = work(cfg, a.tokens)
    print(f"{a.variant}{f' cut to {cfg.num_hidden_layers} layers' if a.layers else ''}, {a.tokens} tokens, "
          f"bf16 storage, {size / 2**30:.2f} GiB on disk; RAM {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.1f} GiB")
    print(f"roofs measured in this run: float32 GEMM {gflops:.0f} GFLOP/s (range {min(gemm):.0f}-{max(gemm):.0f}) "
          f"-> one forward's {prefill_gflop:.0f} GFLOP take {prefill_gflop / gflops:.1f} s"
          + (f"; disk read {np.median(speeds):.2f} GB/s (before {speeds[0]:.2f}, after {speeds[-1]:.2f}) "
             f"-> one pass over the checkpoint {size / 1e9 / np.median(speeds):.1f} s" if speeds else ""))
    print(f"{'run':<14}{'seconds':>10}{'peak RSS GiB':>14}{'peak RssAnon GiB':>18}{'x read bound':>14}{'x GEMM roof':>13}")
    for r in results:
        if r:
            passes = 2 if r["kind"] == "verify" else 1  # verify: the NaN scan, then the forward pass
            disk = f"{r['seconds'] / (passes * size / 1e9 / np.median(speeds)):.2f}" if speeds else "-"
            print(f"{r['kind']:<14}{r['seconds']:>10.2f}{r['peak_rss_gib']:>14.2f}{r['peak_rss_anon_gib']:>18.2f}"
                  f"{disk:>14}{r['seconds'] / (prefill_gflop / gflops):>13.2f}")
    if speeds:
        print("x read bound: seconds over (passes x bytes / read speed); verify makes 2 passes (NaN scan, forward)")
    verify, hf = results[1], results[2] if len(results) > 2 else None
    if verify and hf:
        print(f"verify / transformers float32: time {verify['seconds'] / hf['seconds']:.2f}x, "
              f"peak RSS {verify['peak_rss_gib'] / hf['peak_rss_gib']:.2f}x, "
              f"peak RssAnon {verify['peak_rss_anon_gib'] / hf['peak_rss_anon_gib']:.2f}x")


if __name__ == "__main__":
    main()
