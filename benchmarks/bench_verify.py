"""Wall time and peak memory of `verify` on a full-size random checkpoint, against transformers.

    python benchmarks/bench_verify.py                       # gemma-2b shape, 128-token prompt
    python benchmarks/bench_verify.py --variant gemma-7b --dir /big/disk/bench

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
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write_checkpoint(variant: str, out: Path, shard_bytes: int = 2 << 30, seed: int = 0) -> None:
    """Random bf16 weights with the variant's names and shapes, in shards of about shard_bytes."""
    import ml_dtypes
    from safetensors.numpy import save_file

    from gemma_ref.config import config_from_dict, variant_config_json
    from gemma_ref.weights import expected_shapes

    raw = variant_config_json(variant)
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
            std = 0.3 if len(shape) == 1 else (0.02 if "embed" in name else 1.0 / np.sqrt(shape[-1]))
            tensors["model." + name] = (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(
                ml_dtypes.bfloat16)
            weight_map["model." + name] = fname
        save_file(tensors, str(out / fname))
        del tensors
        print(f"  wrote {fname}", file=sys.stderr)
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (out / "config.json").write_text(json.dumps(raw, indent=2))


def ensure_checkpoint(variant: str, directory: Path | None) -> Path:
    """The benchmark checkpoint's directory (default /tmp/gemma-bench/VARIANT), written first if it is not there."""
    model = directory or Path("/tmp/gemma-bench") / variant
    if not (model / "config.json").is_file():
        print(f"writing a random {variant} checkpoint to {model} ...", file=sys.stderr)
        write_checkpoint(variant, model)
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
    from gemma_ref.config import KNOWN_VARIANTS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", default="gemma-2b", choices=list(KNOWN_VARIANTS))
    ap.add_argument("--dir", type=Path, default=None, help="checkpoint directory (default /tmp/gemma-bench/VARIANT)")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--golden", type=Path, default=None)
    ap.add_argument("--ids", default=None)
    ap.add_argument("--child", default=None)
    ap.add_argument("--skip-transformers", action="store_true")
    a = ap.parse_args()
    if a.child:
        model = a.dir or Path("/tmp/gemma-bench") / a.variant
        print(json.dumps(child(a.child, model, [int(x) for x in a.ids.split(",")], a.golden)))
        return
    model = ensure_checkpoint(a.variant, a.dir)
    golden = a.golden or model.parent / f"{a.variant}.golden.safetensors"
    ids = bench_prompt(KNOWN_VARIANTS[a.variant]["vocab_size"], a.tokens)
    results = [run_child("golden", model, ids, golden), run_child("verify", model, ids, golden)]
    if not a.skip_transformers:
        results.append(run_child("transformers", model, ids, golden))
    print(f"{a.variant}, {a.tokens} tokens, bf16 storage, {sum(f.stat().st_size for f in model.glob('*.safetensors')) / 2**30:.2f} GiB on disk")
    print(f"{'run':<14}{'seconds':>10}{'peak RSS GiB':>14}{'peak RssAnon GiB':>18}")
    for r in results:
        if r:
            print(f"{r['kind']:<14}{r['seconds']:>10.2f}{r['peak_rss_gib']:>14.2f}{r['peak_rss_anon_gib']:>18.2f}")
    verify, hf = results[1], results[2] if len(results) > 2 else None
    if verify and hf:
        print(f"verify / transformers float32: time {verify['seconds'] / hf['seconds']:.2f}x, "
              f"peak RSS {verify['peak_rss_gib'] / hf['peak_rss_gib']:.2f}x, "
              f"peak RssAnon {verify['peak_rss_anon_gib'] / hf['peak_rss_anon_gib']:.2f}x")


if __name__ == "__main__":
    main()
