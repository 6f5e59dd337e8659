"""Speed and memory of Gemma 3's vision tower and projector in NumPy, against transformers, in one run.

    python benchmarks/bench_vision.py                        # 4B tower, one process per system
    python benchmarks/bench_vision.py --repeat 3             # best of 3 processes each
    python benchmarks/bench_vision.py --threads 1 --work /big/disk/vision-bench
    python benchmarks/bench_vision.py --layers 2             # real width, cut depth: a quick check

Writes (unless it is there: --work, default /tmp/gemma-bench/gemma-3-4b-vision) a
random-weight Gemma3ForConditionalGeneration checkpoint in bf16, as a release is
saved, whose image path has the real Gemma 3 4B shapes: the SigLIP tower (width 1152,
MLP 4304, 27 layers, 16 heads, 896x896 images in 14-pixel patches: 4096 patches, no
pooling head) and the projector (256 soft tokens, to a text width of 2560). The text
model is one small layer of width 2560; it is never run. Also written: a
preprocessor_config.json (Gemma3ImageProcessor, 896x896, bilinear, mean/std 0.5) and
the float32 pixel_values of one random 896x896 image (gemma_ref's preprocessing),
which both systems are given. Nothing is downloaded.

Each system runs in its own fresh process, so its memory is its own:

* ``gemma_ref``: ``load_model``, ``vision.TowerWeights``, then ``vision.image_soft_tokens``
  on the pixels (the weights stay bf16 views of the memory-mapped file);
* ``transformers``: ``Gemma3ForConditionalGeneration.from_pretrained(dtype=float32,
  attn_implementation="eager")``, then ``get_image_features(pixel_values=...)`` under
  ``torch.no_grad`` (its ``pooler_output`` is the projected soft tokens).

Each process times its load and ONE call from pixels to soft tokens (the first: one
image takes about a minute on 2 cores, so no warm-up call; the first call pays
gemma_ref's page faults on the mapped file and torch's set-up, both well under 1% of
it). Memory: peak RSS is /proc/self/status VmHWM (file pages included: the mapped
checkpoint counts there); peak RssAnon is the maximum of /proc/self/status RssAnon
sampled every 10 ms in a thread (memory that is the process's own: activations,
float32 weights, the interpreter and its imports), and "after imports" is RssAnon
once torch / gemma_ref are imported, before loading. --repeat runs the processes
round-robin, so a slow spell of a shared machine hits both alike; the best time
and the highest peak are reported. The soft tokens of both are compared.

Also measured, in a process of its own before and after the runs (median): the
float32 GEMM rate of NumPy (the BLAS gemma_ref runs on) and of torch, in the shape
of the tower's fc1 (4096 x 1152 x 4304). The tower's roof is its matrix-product
FLOPs (projections, attention scores and their weighted sums, patch embedding,
projector; not the norms, softmax and GELU) at NumPy's rate.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_verify import PeakSampler, _status_kb  # noqa: E402

RUNS = ("gemma_ref", "transformers")
VOCAB = 1024  # the text model's: small, it is never run
TEXT_WIDTH = 2560  # Gemma 3 4B's: the projector's output width
# Gemma 3 4B's tower (SiglipVisionConfig as Gemma3Config holds it) and projector.
TOWER = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
             image_size=896, patch_size=14, layer_norm_eps=1e-6, vision_use_head=False)
MM_TOKENS = 256
# google/gemma-3-4b-it's preprocessor_config.json, less its three pan_and_scan_* keys, which the release
# sets to null (gemma_ref reads a null there as a bad value; pan-and-scan is off anyway).
PREPROCESSOR = {"do_convert_rgb": None, "do_normalize": True, "do_pan_and_scan": None, "do_rescale": True,
                "do_resize": True, "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "Gemma3ImageProcessor",
                "image_seq_length": 256, "image_std": [0.5, 0.5, 0.5], "processor_class": "Gemma3Processor",
                "resample": 2, "rescale_factor": 1 / 255, "size": {"height": 896, "width": 896}}


def default_dir(layers: int) -> Path:
    return Path("/tmp/gemma-bench") / ("gemma-3-4b-vision" + (f"-L{layers}" if layers != TOWER["num_hidden_layers"] else ""))


def ready(work: Path) -> bool:
    """Whether a complete benchmark checkpoint is there (pixels.npy is written last)."""
    return all((work / f).is_file() for f in ("config.json", "preprocessor_config.json", "pixels.npy")) and any(
        work.glob("*.safetensors"))


# --- children: each runs in a fresh process ------------------------------------------------------------


def build(work: Path, layers: int) -> dict:
    """The random checkpoint: float32 at random init, the projector randomized too, saved in bf16."""
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    text = dict(model_type="gemma3_text", vocab_size=VOCAB, hidden_size=TEXT_WIDTH, intermediate_size=256,
                num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=64, sliding_window=64,
                max_position_embeddings=2048)
    cfg = Gemma3Config(text_config=text, vision_config=dict(model_type="siglip_vision_model", **{**TOWER, "num_hidden_layers": layers}),
                       mm_tokens_per_image=MM_TOKENS, boi_token_index=VOCAB - 3, eoi_token_index=VOCAB - 2,
                       image_token_index=VOCAB - 1)
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(cfg)  # transformers' init: xavier projections, LayerNorm 1 / 0
    proj = model.model.multi_modal_projector
    with torch.no_grad():  # transformers initializes both to zeros: soft tokens would all be 0
        proj.mm_input_projection_weight.normal_(0.0, TOWER["hidden_size"] ** -0.5)
        proj.mm_soft_emb_norm.weight.normal_(0.0, 0.1)
    work.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(work)
    del model
    (work / "generation_config.json").unlink(missing_ok=True)
    (work / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2) + "\n")

    from gemma_ref import vision

    vc = vision.load_vision_config(work)
    image = np.random.default_rng(0).integers(0, 256, size=(896, 896, 3), dtype=np.uint8)
    pixels = vision.preprocess(image, vc)["pixel_values"]  # float32 [1, 3, 896, 896]
    np.save(work / "pixels.npy", pixels)
    return {"pixels_shape": list(pixels.shape)}


def run_gemma_ref(work: Path, threads: int) -> dict:
    import gemma_ref.weights as gw
    from gemma_ref import vision
    from gemma_ref.model import load_model

    gw.N_THREADS = threads  # its bf16-conversion threads (one per core by default)
    pixels = {"pixel_values": np.load(work / "pixels.npy")}
    out = {"imports_anon_kb": _status_kb("RssAnon")}
    t0 = time.perf_counter()
    model = load_model(work)
    vc = vision.load_vision_config(work)
    tw = vision.TowerWeights(model.weights, vc)
    out["load_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    soft = vision.image_soft_tokens(pixels, tw)  # [256, 2560]
    out["tower_seconds"] = time.perf_counter() - t0
    np.save(work / "soft-gemma_ref.npy", np.asarray(soft, dtype=np.float32))
    return out


def run_transformers(work: Path, threads: int) -> dict:
    import torch
    from transformers import Gemma3ForConditionalGeneration

    torch.set_num_threads(threads)
    pixels = torch.from_numpy(np.load(work / "pixels.npy"))
    out = {"imports_anon_kb": _status_kb("RssAnon")}
    t0 = time.perf_counter()
    model = Gemma3ForConditionalGeneration.from_pretrained(str(work), dtype=torch.float32,
                                                           attn_implementation="eager").eval()
    out["load_seconds"] = time.perf_counter() - t0
    out["attn_implementation"] = model.config.vision_config._attn_implementation
    t0 = time.perf_counter()
    with torch.no_grad():
        soft = model.get_image_features(pixel_values=pixels).pooler_output  # [1, 256, 2560]: projected
    out["tower_seconds"] = time.perf_counter() - t0
    np.save(work / "soft-transformers.npy", soft.reshape(-1, soft.shape[-1]).numpy())
    return out


def gemm_rates(n: int, d: int, f: int, runs: int = 4) -> dict[str, list[float]]:
    """float32 GEMM GFLOP/s of NumPy and torch in the fc1 shape [n, d] @ [d, f]: `runs` timed after one warm-up each."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    w = rng.standard_normal((f, d), dtype=np.float32)

    def rates(mm) -> list[float]:
        mm()
        out = []
        for _ in range(runs):
            t0 = time.perf_counter()
            mm()
            out.append(2 * n * d * f / (time.perf_counter() - t0) / 1e9)
        return out

    result = {"numpy_gflops": rates(lambda: x @ w.T)}
    try:
        import torch
    except ImportError:
        return result
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    result["torch_gflops"] = rates(lambda: xt @ wt.T)
    return result


def child(kind: str, work: Path, threads: int, layers: int) -> dict:
    if kind == "build":
        return build(work, layers)
    if kind == "roof":
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
        cfg = json.loads((work / "config.json").read_text())["vision_config"]
        n = (cfg["image_size"] // cfg["patch_size"]) ** 2
        return gemm_rates(n, cfg["hidden_size"], cfg["intermediate_size"])
    with PeakSampler(every=0.01) as s:
        t0 = time.perf_counter()
        out = run_gemma_ref(work, threads) if kind == "gemma_ref" else run_transformers(work, threads)
        out["total_seconds"] = time.perf_counter() - t0
    return {"kind": kind, **out, "peak_rss_kb": _status_kb("VmHWM"), "peak_anon_kb": s.peak_anon_kb,
            "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


# --- the parent --------------------------------------------------------------------------------------------


def run_child(kind: str, work: Path, threads: int, layers: int) -> dict | None:
    """This script with --child KIND in a fresh process whose BLAS/OpenMP pools have `threads` threads."""
    env = dict(os.environ, **{v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    cmd = [sys.executable, __file__, "--child", kind, "--work", str(work), "--threads", str(threads),
           "--layers", str(layers)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        print(f"{kind} failed (exit {p.returncode}):\n{p.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def tower_work(work: Path) -> dict:
    """Parameters and matrix-product GFLOP of one image through the tower and projector, from config.json."""
    raw = json.loads((work / "config.json").read_text())
    v = raw["vision_config"]
    D, F, L, p = v["hidden_size"], v["intermediate_size"], v["num_hidden_layers"], v["patch_size"]
    N, M, Dt = (v["image_size"] // p) ** 2, raw.get("mm_tokens_per_image", MM_TOKENS), raw["text_config"]["hidden_size"]
    per_layer = 2 * N * (4 * D * D + 2 * D * F) + 2 * 2 * N * N * D  # q, k, v, out, fc1, fc2; scores and weighted sum
    flops = 2 * N * 3 * p * p * D + L * per_layer + 2 * M * D * Dt  # + patch embedding (a conv as a matmul), projector
    params = 3 * p * p * D + D + N * D + 2 * D + L * (4 * D * D + 4 * D + 2 * D * F + F + D + 4 * D) + D + D * Dt
    return {"D": D, "F": F, "L": L, "N": N, "M": M, "Dt": Dt, "heads": v["num_attention_heads"],
            "gflop": flops / 1e9, "attention_gflop": L * 4 * N * N * D / 1e9, "params": params}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=None,
                    help="checkpoint directory, written if not there (default /tmp/gemma-bench/gemma-3-4b-vision)")
    ap.add_argument("--repeat", type=int, default=1, help="processes per system, round-robin; the best time is reported")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="BLAS / torch / gemma_ref threads in every child (default: all cores)")
    ap.add_argument("--layers", type=int, default=TOWER["num_hidden_layers"],
                    help="tower layers (default 27, the 4B's; fewer: a quick check at real width)")
    ap.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of " + ", ".join(RUNS))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    work = a.work or default_dir(a.layers)
    if a.child:
        print(json.dumps(child(a.child, work, a.threads, a.layers)))
        return

    if not ready(work):
        print(f"writing a random Gemma 3 4B-tower checkpoint ({a.layers} tower layers) to {work} ...", file=sys.stderr)
        t0 = time.perf_counter()
        if run_child("build", work, a.threads, a.layers) is None:
            sys.exit(1)
        print(f"  written in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    files = sorted(work.glob("*.safetensors"))
    for f in files:  # warm the page cache so every run starts alike
        with open(f, "rb") as fh:
            while fh.read(64 << 20):
                pass
    for stale in work.glob("soft-*.npy"):
        stale.unlink()
    w = tower_work(work)

    print("roofs (before) ...", file=sys.stderr)
    roofs = [run_child("roof", work, a.threads, a.layers)]
    kinds = [k for k in a.runs.split(",") if k in RUNS]
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    for round_ in range(a.repeat):
        for kind in kinds:
            print(f"round {round_ + 1}/{a.repeat}: {kind} ...", file=sys.stderr)
            r = run_child(kind, work, a.threads, a.layers)
            if r:
                runs[kind].append(r)
    print("roofs (after) ...", file=sys.stderr)
    roofs.append(run_child("roof", work, a.threads, a.layers))
    samples: dict[str, list[float]] = {}
    for r in roofs:
        for k, v in (r or {}).items():
            samples.setdefault(k, []).extend(v)
    roof = {k: float(np.median(v)) for k, v in samples.items()}

    gib = sum(f.stat().st_size for f in files) / 2**30
    print(f"Gemma 3 4B image path: SigLIP tower {w['L']} layers (width {w['D']}, MLP {w['F']}, {w['heads']} heads, "
          f"{w['N']} patches of one 896x896 image) + projector to {w['M']} x {w['Dt']}; "
          f"{w['params'] / 1e6:.0f}M parameters, checkpoint {gib:.2f} GiB bf16 on disk; threads {a.threads}")
    print(f"one image: {w['gflop']:.0f} GFLOP of matrix products ({w['attention_gflop']:.0f} of them attention "
          f"scores and weighted sums)")
    if "numpy_gflops" in roof:
        g = samples["numpy_gflops"]
        line = (f"float32 GEMM in this run ({w['N']}x{w['D']}x{w['F']}, median of {len(g)}, before and after): "
                f"NumPy {roof['numpy_gflops']:.0f} GFLOP/s (range {min(g):.0f}-{max(g):.0f})")
        if "torch_gflops" in roof:
            t = samples["torch_gflops"]
            line += f", torch {roof['torch_gflops']:.0f} GFLOP/s (range {min(t):.0f}-{max(t):.0f})"
        print(line)
        print(f"  -> tower roof {w['gflop'] / roof['numpy_gflops']:.1f} s at NumPy's rate")
    best = {k: min(rs, key=lambda r: r["tower_seconds"]) for k, rs in runs.items() if rs}
    peak = {k: max(r["peak_anon_kb"] for r in rs) / 1024 for k, rs in runs.items() if rs}
    hf = best.get("transformers")
    print(f"{'run':<14}{'load s':>8}{'tower s':>9}{'x hf':>7}{'of roof':>9}{'peak RssAnon MB':>17}{'x hf':>7}"
          f"{'after imports MB':>18}{'peak RSS MB':>13}")
    for kind, r in best.items():
        ratio_t = f"{r['tower_seconds'] / hf['tower_seconds']:.2f}" if hf else "-"
        ratio_m = f"{peak[kind] / peak['transformers']:.2f}" if hf else "-"
        of_roof = f"{w['gflop'] / roof['numpy_gflops'] / r['tower_seconds']:.2f}" if "numpy_gflops" in roof else "-"
        peak_rss = max(x["peak_rss_kb"] for x in runs[kind]) / 1024
        print(f"{kind:<14}{r['load_seconds']:>8.1f}{r['tower_seconds']:>9.1f}{ratio_t:>7}{of_roof:>9}"
              f"{peak[kind]:>17.0f}{ratio_m:>7}{r['imports_anon_kb'] / 1024:>18.0f}{peak_rss:>13.0f}")
    for kind, rs in runs.items():
        if len(rs) > 1:
            ts = sorted(r["tower_seconds"] for r in rs)
            print(f"  {kind}: tower seconds over {len(rs)} processes: " + ", ".join(f"{t:.1f}" for t in ts))
    if hf:
        print(f"  transformers' vision attention: {hf.get('attn_implementation')}")
    a_, b_ = work / "soft-gemma_ref.npy", work / "soft-transformers.npy"
    if a_.is_file() and b_.is_file():
        x, y = np.load(a_), np.load(b_)
        if x.shape != y.shape:
            print(f"soft tokens: shapes differ, gemma_ref {list(x.shape)} vs transformers {list(y.shape)}")
        else:
            d = np.abs(x.astype(np.float64) - y)
            print(f"soft tokens {list(x.shape)}: max |gemma_ref - transformers| {d.max():.3g}, "
                  f"max |value| {np.abs(y).max():.3g} (relative {d.max() / np.abs(y).max():.2g})")


if __name__ == "__main__":
    main()
