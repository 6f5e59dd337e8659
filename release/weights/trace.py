"""Layer-by-layer traces of the reference forward pass, and where two traces part.

A trace file is safetensors, float32, one sequence:

* ``input_ids``             int64 [T]
* ``hidden_states.{i}``     [T, D]  for i = 0 .. L, lined up with transformers' ``output_hidden_states``:
  ``hidden_states.0`` is the scaled embedding (the input of layer 0), ``hidden_states.i`` the output of
  layer i-1, and ``hidden_states.L`` the LAST layer's output AFTER the final norm (transformers 5.x
  overwrites ``hidden_states[-1]`` with ``last_hidden_state``; ``layers.{L-1}.output`` keeps it before the norm)
* ``layers.{i}.output``     [T, D]  layer i's output (Gemma 3n: its n AltUp streams, [n, T, D])
* with ``detail``: ``layers.{i}.q`` [H, T, Hd], ``.k`` / ``.v`` [K, T, Hd] (what attention reads: after the
  norms and RoPE, before GQA repetition), ``.attn_context`` [T, H*Hd] (before o_proj), ``.attn`` [T, D]
  (after o_proj), ``.mlp`` [T, D] (the dense MLP's output, before its post-norm)
* ``logits``                [T, V]
* with images (a multimodal Gemma 3 / Gemma 4): ``vision.{n}.hidden_states.{i}`` [N, D] for the n-th view the
  tower ran (an image, or one of its pan-and-scan crops), named like the tower's own output_hidden_states
  (``hidden_states.0`` the patch + position embeddings, ``hidden_states.{i+1}`` layer i's output; Gemma 4's
  padding patches are never computed, so N counts the image's real patches), and ``vision.soft_tokens.{m}``
  [M, Dt], image m's soft tokens as they enter the text model

Tracing wraps model functions for the duration (as gemma_ref.bugs does); model.py is not changed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import gemma_ref.model as M
from gemma_ref.bugs import patched
from release.errors import InputError

FORMAT = "gemma-release-trace"


class _Recorder:
    def __init__(self, detail: bool):
        self.detail = detail
        self.layer = 0
        self.out: dict[str, np.ndarray] = {}
        self.seen_mlp: set[int] = set()

    def put(self, key: str, a: np.ndarray) -> None:
        self.out[key] = np.array(a, dtype=np.float32, copy=True)

    def observe(self, name: str, a: np.ndarray) -> None:
        """The vision tower's hidden states (gemma_ref.vision's observe callback): views and images numbered in order."""
        if name == "soft_tokens":
            n = sum(k.startswith("vision.soft_tokens.") for k in self.out)
            self.put(f"vision.soft_tokens.{n}", a)
            return
        if name == "hidden_states.0":
            self.view = getattr(self, "view", -1) + 1
        self.put(f"vision.{self.view}.{name}", a)

    def wraps(self) -> dict[str, Any]:
        r = self

        def after_block(orig):
            def f(*a, **k):
                res = orig(*a, **k)
                r.put(f"layers.{r.layer}.output", res[0] if isinstance(res, tuple) else res)
                r.layer += 1
                return res
            return f

        def embed(orig):
            def f(weights, ids, cfg):
                h = orig(weights, ids, cfg)
                r.put("hidden_states.0", h)
                return h
            return f

        def unembed(orig):
            def f(h, weights, cfg, *a, **k):
                r.put("final_normed", h)
                logits = orig(h, weights, cfg, *a, **k)
                r.put("logits", logits)
                return logits
            return f

        w = {"embed": embed, "unembed": unembed, "block": after_block, "gemma4_block": after_block,
             "gemma3n_block": after_block}
        if not self.detail:
            return w

        def attend(orig):
            def f(q, k, v, positions, window, cfg, *rest):
                out = orig(q, k, v, positions, window, cfg, *rest)  # rest: image blocks, if any
                for name, t in (("q", q), ("k", k), ("v", v), ("attn_context", out)):
                    r.put(f"layers.{r.layer}.{name}", t)
                return out
            return f

        def attention(orig):
            def f(*a, **k):
                res = orig(*a, **k)
                r.put(f"layers.{r.layer}.attn", res[0] if isinstance(res, tuple) else res)
                return res
            return f

        def mlp(orig):
            def f(*a, **k):
                res = orig(*a, **k)
                if r.layer not in r.seen_mlp:  # the dense MLP runs first; MoE experts call mlp again
                    r.seen_mlp.add(r.layer)
                    r.put(f"layers.{r.layer}.mlp", res)
                return res
            return f

        def sparse_mlp(orig):  # Gemma 3n's MLP
            def f(*a, **k):
                res = orig(*a, **k)
                r.put(f"layers.{r.layer}.mlp", res)
                return res
            return f

        return w | {"attend": attend, "attention": attention, "gemma4_attention": attention, "mlp": mlp,
                    "sparse_mlp": sparse_mlp}


def trace(model_dir: str | os.PathLike, ids: Sequence[int] | np.ndarray, detail: bool = False,
          bug_ids: Sequence[str] = (), images: Sequence | None = None) -> dict[str, np.ndarray]:
    """The trace tensors of one sequence (see the module docstring), optionally with known bugs switched on.

    `images`: the prompt's images (uint8 [H, W, 3] or preprocessed pixels), whose image tokens `ids` hold expanded.
    """
    from gemma_ref import bugs as B
    from gemma_ref import load_model

    with load_model(model_dir) as model:
        cfg = model.config
        ids = M.validate_ids(ids, cfg.vocab_size, cfg.max_position_embeddings)
        rec = _Recorder(detail)
        with B.switched(list(bug_ids), cfg) as c, patched(rec.wraps()):
            soft = model.image_tokens([ids], [list(images)], rec.observe) if images else None  # the tower, traced
            M.forward(model.weights, c, [ids], images=soft)
    out = rec.out
    L = cfg.num_hidden_layers
    for i in range(L - 1):
        out[f"hidden_states.{i + 1}"] = out[f"layers.{i}.output"]
    out[f"hidden_states.{L}"] = out.pop("final_normed")
    out["input_ids"] = ids.astype(np.int64)
    return out


def write_trace(tensors: dict[str, np.ndarray], path: str | os.PathLike, meta: dict[str, str]) -> Path:
    from release.files import write_safetensors

    path = Path(path)
    write_safetensors(path, {k: np.ascontiguousarray(v) for k, v in tensors.items()},
                      {"format": FORMAT, **{k: str(v) for k, v in meta.items()}})
    return path


def read_trace(path: str | os.PathLike) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise InputError("trace file not found", str(path))
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"not a readable safetensors trace ({e})", str(path)) from None


def _order(key: str) -> tuple:
    parts = re.split(r"(\d+)", key)
    return tuple(int(p) if p.isdigit() else p for p in parts)


def trace_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray], atol: float = 1e-4,
               rtol: float = 1e-4) -> dict[str, Any]:
    """Per tensor the max |A - B| and the relative error max|A - B| / max|A|; where they first part.

    Tensors part when max|A - B| > atol + rtol * max|A| (the residual stream grows along the layers, so
    the bound grows with it). ``first_layer`` names the first hidden state that parts, ``first_tensor``
    the first of all compared tensors in forward order (a layer's q, k, v, attention, MLP, output).
    """
    common = [k for k in a if k in b and k != "input_ids"]
    if not common:
        raise InputError("the two traces share no tensors (both should come from `gemma-release trace` or the "
                         "same naming: hidden_states.0 .. hidden_states.L)")
    if "input_ids" in a and "input_ids" in b and not np.array_equal(a["input_ids"], b["input_ids"]):
        raise InputError("the two traces ran different input_ids")
    rows = []
    for k in common:
        x, y = a[k].astype(np.float32), b[k].astype(np.float32)
        if x.shape != y.shape:
            raise InputError(f"tensor {k} has shape {list(x.shape)} in A but {list(y.shape)} in B")
        d = float(np.abs(x - y).max()) if x.size else 0.0
        scale = float(np.abs(x).max()) if x.size else 0.0
        rows.append({"tensor": k, "max_abs": d, "rel": d / scale if scale else (0.0 if d == 0 else float("inf")),
                     "parted": bool(d > atol + rtol * scale or not np.isfinite(d))})

    def forward_order(r: dict) -> tuple:
        k = r["tensor"]
        m = re.match(r"vision\.(\d+)\.hidden_states\.(\d+)$", k)
        if m:  # the tower runs before the text model: its views in order, then the soft tokens
            return (-2, int(m.group(1)), int(m.group(2)))
        m = re.match(r"vision\.soft_tokens\.(\d+)$", k)
        if m:
            return (-1, int(m.group(1)), 0)
        m = re.match(r"hidden_states\.(\d+)$", k)
        if m:  # hidden_states.i is layer i-1's output: it comes after that layer's internals
            return (int(m.group(1)) - 1, 1, "")
        m = re.match(r"layers\.(\d+)\.(.*)$", k)
        if m:
            inner = ["q", "k", "v", "attn_context", "attn", "mlp", "output"]
            return (int(m.group(1)), 0, inner.index(m.group(2)) if m.group(2) in inner else 99)
        return (10**9, 0, _order(k))
    rows.sort(key=forward_order)
    hs = [r for r in rows if r["tensor"].startswith("hidden_states.")]
    first_hs = next((r for r in hs if r["parted"]), None)
    first_any = next((r for r in rows if r["parted"]), None)
    layer = None
    first_vision = next((r for r in rows if r["parted"] and r["tensor"].startswith("vision.")), None)
    if first_vision and first_vision is first_any:  # the image path parts first: name the tower's layer
        m = re.match(r"vision\.(\d+)\.hidden_states\.(\d+)$", first_vision["tensor"])
        layer = (f"vision tower, view {m.group(1)}, " + ("patch embeddings" if m.group(2) == "0" else
                                                        f"layer {int(m.group(2)) - 1}")) if m else "the soft tokens (projector)"
    elif first_hs:
        i = int(first_hs["tensor"].split(".")[1])
        layer = "embedding" if i == 0 else f"layer {i - 1}" + (" (after the final norm)" if i == len(hs) - 1 else "")
    return {"atol": atol, "rtol": rtol, "tensors": rows, "parted": first_any is not None,
            "first_layer": layer, "first_hidden_state": first_hs["tensor"] if first_hs else None,
            "first_tensor": first_any["tensor"] if first_any else None}


def render_diff(report: dict[str, Any], every: bool = False) -> str:
    """Per layer (hidden state) the errors; `every`: also each layer's q, k, v, attention and MLP."""
    lines = [f"{'tensor':<28} {'max |A-B|':>11} {'rel':>10}"]
    for r in report["tensors"]:
        if not every and r["tensor"].startswith("layers.") and r["tensor"] != report["first_tensor"]:
            continue
        lines.append(f"{r['tensor']:<28} {r['max_abs']:>11.3g} {r['rel']:>10.3g}" + ("  PARTED" if r["parted"] else ""))
    if report["parted"]:
        where = report["first_layer"] or "(no hidden state parts)"
        lines.append(f"first parts at {where}: {report['first_hidden_state']}; first tensor beyond tolerance: "
                     f"{report['first_tensor']} (atol {report['atol']:g} + rtol {report['rtol']:g} x max|A|)")
    else:
        lines.append(f"the traces agree everywhere (atol {report['atol']:g} + rtol {report['rtol']:g} x max|A|)")
    return "\n".join(lines)


def meta_for(model_dir: str | os.PathLike, ids: np.ndarray, detail: bool, bug_ids: Sequence[str]) -> dict[str, str]:
    return {"model": str(model_dir), "input_ids": json.dumps([int(i) for i in ids]), "detail": str(detail).lower(),
            "bugs": "+".join(bug_ids), "convention": "transformers output_hidden_states (last one after the final norm)"}
