"""Tiny GGUF files written at test time from the tiny safetensors fixtures, the way llama.cpp converts Gemma.

`write_gguf` mirrors ``convert_hf_to_gguf.py`` (ggml-org/llama.cpp; classes ``GemmaModel``,
``Gemma2Model``, ``Gemma3Model`` and ``ModelBase.prepare_tensors``) with the gguf
package's own writer, name map and quantizer:

* names through ``gguf.get_tensor_name_map(arch, n_layers)``; ``language_model.`` is
  stripped and vision / projector tensors are skipped (Gemma 3 multimodal saves);
  ``lm_head`` is skipped (the head is the tied embedding; there is no ``output.weight``);
* every tensor whose name ends in ``norm.weight`` (q_norm and k_norm of Gemma 3 too) gets
  ``+ 1`` -- llama.cpp's RMSNorm multiplies by the stored weight;
* 1-D tensors and norms stay F32; the rest goes to the requested type, and a tensor whose
  row length is not a multiple of the type's block size falls back to F16 (``QuantError``);
  no q/k permutation (Gemma uses NEOX-style RoPE, which is HF's half-split layout);
* the metadata keys each converter writes (block count, lengths, head counts, eps, soft-caps,
  sliding window, Gemma 3's global RoPE base and linear scaling).

Gemma 4 (``gemma4`` arch; ``Gemma4Model``, and ``Gemma4UnifiedModel`` for the 12B, which only adds
``suppress_tokens``) follows ggml-org/llama.cpp ``conversion/gemma.py`` @
061b8c5f91885f2779d23198a091777df47c3f6f (classes ``Gemma3Model`` -> ``Gemma4Model``) and
``conversion/base.py`` @ 00bd27a621f92be9a99d24d7c5117a263b9b3c01 (``TextModel.filter_tensors``,
``TextModel.set_gguf_parameters``, ``ModelBase.prepare_tensors``), read 2026 via the search tool:

* ``Gemma4Model.norm_shift`` returns 0.0: **no norm gets +1** (Gemma 3's ``norm_shift`` is 1.0 for
  ``*norm.weight``); nothing else is rescaled or permuted either;
* ``filter_tensors``: names ending in ``layer_scalar`` (and ``per_dim_scale``) and ``.experts.``
  names not ending in ``.weight`` get ``.weight`` appended, then gguf's map gives
  ``blk.N.layer_output_scale``, ``blk.N.ffn_gate_up_exps`` ([E, 2I, D] unchanged: gate rows then up
  rows) and ``blk.N.ffn_down_exps`` ([E, D, I]); ``modify_tensors`` writes ``router.scale`` as
  ``blk.N.ffn_gate_inp.scale`` and ``router.per_expert_scale`` as ``blk.N.ffn_down_exps.scale``;
  ``router.proj`` maps to ``ffn_gate_inp``; PLE to ``per_layer_token_embd``, ``per_layer_model_proj``,
  ``per_layer_proj_norm``, ``blk.N.inp_gate``, ``blk.N.proj``, ``blk.N.post_norm``; the ``_1``/``_2``
  norms to ``post_ffw_norm_1``, ``pre_ffw_norm_2``, ``post_ffw_norm_2``;
* ``TextModel.filter_tensors`` drops names containing ``vision_``, ``audio_``, ``vision.``,
  ``audio.`` ... (the towers, ``embed_vision``/``embed_audio``, the unified ``vision_embedder``);
  ``language_model.`` is stripped (``ModelBase.filter_tensors``); the K/V tensors real E2B/E4B
  files keep on KV-shared layers are **not** dropped;
* ``generate_extra_tensors``: ``rope_freqs.weight`` (F32, global_head_dim / 2 entries) = 1.0 for
  the first int(global_head_dim * partial_rotary_factor / 2) pairs, 1e30 for the rest -- proportional
  RoPE as ggml NEOX frequency factors, "ONLY used by the full_attention layers";
* keys: TextModel's (block_count, context_length, embedding_length, feed_forward_length,
  head_count, head_count_kv, rope.freq_base = full layers' theta, rope.freq_base_swa = sliding
  layers' theta, rms eps, expert_count / expert_used_count when set; "proportional" is an unknown
  rope_type there, so no rope.scaling.* key), then Gemma3Model's (final_logit_softcapping,
  sliding_window), then Gemma4Model's: shared_kv_layers, embedding_length_per_layer_input (0 without
  PLE), sliding_window_pattern (bool per layer, True = sliding), key_length / value_length =
  global_head_dim, key_length_swa / value_length_swa = head_dim, expert_feed_forward_length,
  feed_forward_length as a per-layer array when use_double_wide_mlp (2x on the last
  num_kv_shared_layers layers), head_count_kv as a per-layer array [num_key_value_heads on sliding,
  num_global_key_value_heads on full layers] when both are in the config (even without
  attention_k_eq_v), rope.dimension_count = global_head_dim, rope.dimension_count_swa = head_dim
  (times a top-level partial_rotary_factor, absent in Gemma 4's per-type rope_parameters);
* tensor types (prepare_tensors): 1-D, ``*_norm.weight``, ``ffn_gate_inp`` and anything not named
  ``.weight`` (the two ``.scale`` tensors) stay F32; the rest takes the file type, with the F16
  fallback.

The converter reads ``global_head_dim`` / ``num_global_key_value_heads`` from
``AutoConfig.from_pretrained(dir).to_dict()``; with the transformers 5.24 installed here that dict
holds neither (they become ``per_layer_config``), so this converter revision would stop with a
KeyError. We write what it writes from config.json's values, as it would with the transformers it
was written against; a config saved in the ``per_layer_config`` form gets no GGUF here.

Gemma 3n (``gemma3n`` arch; ``Gemma3NModel(Gemma3Model)`` in ggml-org/llama.cpp ``conversion/gemma.py``
@ 061b8c5f91885f2779d23198a091777df47c3f6f, ``prepare_tensors`` in ``conversion/base.py``):

* ``Gemma3NModel.norm_shift`` returns 0.0 ("same value with Gemma3p5RMSNorm scale_shift"): **no +1**;
* ``filter_tensors``: names ending in ``_scale`` get ``.weight`` appended (``altup.correct_output_scale``
  -> ``blk.N.altup_correct_scale.weight``); the towers / ``embed_audio`` / ``embed_vision`` are dropped by
  ``TextModel.filter_tensors``; the KV-shared layers' K/V are **not** dropped;
* ``modify_tensors``: ``altup_projections.{0,1,2}`` and ``altup_unembed_projections.{0,1,2}`` are
  ``torch.stack``-ed (dim 0, index order) into ``altup_proj.weight`` / ``altup_unembd_proj.weight``
  [3, D, D] (only 4 altup inputs supported); ``embed_tokens`` and ``embed_tokens_per_layer`` are padded
  with zero rows up to ``vocab_size`` (never trimmed: Gemma3Model's trimming is bypassed);
  gguf's map gives ``blk.N.altup_correct_coef``, ``altup_predict_coef``, ``altup_router``,
  ``altup_router_norm``, ``laurel_l``, ``laurel_r``, ``laurel_post_norm``, ``inp_gate``, ``proj``,
  ``post_norm``, and ``per_layer_token_embd`` / ``per_layer_model_proj`` / ``per_layer_proj_norm``;
* ``prepare_tensors`` keeps ``ALTUP_CORRECT_COEF`` / ``ALTUP_PREDICT_COEF`` in F32 (with the 1-D and norms);
* keys: TextModel's and Gemma3Model's (``feed_forward_length`` is the config's per-layer list as an
  array), then ``altup.active_idx``, ``altup.num_inputs``, ``embedding_length_per_layer_input``,
  ``attention.shared_kv_layers``, ``activation_sparsity_scale`` (per layer: ``Normal(0, 1).icdf(p)``, -inf
  for p = 0) and ``attention.sliding_window_pattern`` (bool per layer).

The knobs that break a file on purpose (``norm_plus_one=False``, ``norm_shift``, ``metadata`` overrides,
``drop``, ``vocab_rows``, ``rope_freqs``) exist for the tests of the reader's error paths.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import gguf
import ml_dtypes  # noqa: F401  (lets safetensors return bfloat16 arrays)
import numpy as np
from safetensors import safe_open

from gemma_ref.config import load_config

ARCH = {1: gguf.MODEL_ARCH.GEMMA, 2: gguf.MODEL_ARCH.GEMMA2, 3: gguf.MODEL_ARCH.GEMMA3, 4: gguf.MODEL_ARCH.GEMMA4}
FILE_TYPE = {
    "F32": gguf.LlamaFileType.ALL_F32,
    "F16": gguf.LlamaFileType.MOSTLY_F16,
    "BF16": gguf.LlamaFileType.MOSTLY_BF16,
    "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "Q5_0": gguf.LlamaFileType.MOSTLY_Q5_0,
    "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
}
_FOREIGN = ("multi_modal_projector.", "vision_tower.", "multimodal_projector.", "vision_model.")
#: TextModel.filter_tensors: substrings of the multimodal tensors every text converter skips
_MULTIMODAL = ("visual.", "vision.", "audio.", "talker.", "vision_", "audio_", "projector.", "patch_embed")


def hf_tensors(model_dir: Path) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint in float32, under its stored name."""
    with safe_open(str(Path(model_dir) / "model.safetensors"), framework="numpy") as f:
        return {k: f.get_tensor(k).astype(np.float32) for k in f.keys()}


def write_metadata(w: gguf.GGUFWriter, model_dir: Path, qtype: str) -> None:
    """The keys GemmaModel / Gemma2Model / Gemma3Model.set_gguf_parameters write."""
    cfg = load_config(model_dir)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_file_type(FILE_TYPE[qtype])
    if cfg.generation == 2:
        w.add_attn_logit_softcapping(cfg.attn_logit_softcapping)
        w.add_final_logit_softcapping(cfg.final_logit_softcapping)
        w.add_sliding_window(cfg.sliding_window)
    if cfg.generation == 3:
        w.add_rope_freq_base(cfg.rope_global.theta)  # the global layers' base; llama.cpp fixes local layers at 10k
        if cfg.rope_global.linear_factor != 1.0:  # TextModel.set_gguf_parameters
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(cfg.rope_global.linear_factor)
        if cfg.final_logit_softcapping:
            w.add_final_logit_softcapping(cfg.final_logit_softcapping)
        if cfg.sliding_window is not None:
            w.add_sliding_window(cfg.sliding_window)


def raw_hparams(model_dir: Path) -> dict[str, Any]:
    """config.json with text_config moved to the root, as TextModel.__init__ does."""
    raw = json.loads((Path(model_dir) / "config.json").read_text())
    hp = {**raw, **raw.get("text_config", {})}
    # AutoConfig's to_dict always lists layer_types (the default rule, last layer full, when config.json does not)
    hp.setdefault("layer_types", list(load_config(model_dir).layer_types))
    return hp


def write_metadata_gemma4(w: gguf.GGUFWriter, model_dir: Path, qtype: str) -> None:
    """The keys TextModel -> Gemma3Model -> Gemma4Model.set_gguf_parameters write, each once, final value."""
    hp = raw_hparams(model_dir)
    rope = hp["rope_parameters"]
    full, swa = rope.get("full_attention", {}), rope.get("sliding_attention", {})
    n_layers = hp["num_hidden_layers"]
    w.add_block_count(n_layers)
    w.add_context_length(hp.get("max_position_embeddings", 131072))
    w.add_embedding_length(hp["hidden_size"])
    w.add_head_count(hp.get("num_attention_heads", 8))
    w.add_rope_freq_base(full.get("rope_theta", 1_000_000.0))
    if swa.get("rope_theta") is not None:
        w.add_rope_freq_base_swa(swa["rope_theta"])
    w.add_layer_norm_rms_eps(hp.get("rms_norm_eps", 1e-6))
    if hp.get("num_experts") is not None:
        w.add_expert_count(hp["num_experts"])
    if hp.get("top_k_experts") is not None:
        w.add_expert_used_count(hp["top_k_experts"])
    w.add_file_type(FILE_TYPE[qtype])
    if hp.get("final_logit_softcapping"):
        w.add_final_logit_softcapping(hp["final_logit_softcapping"])
    w.add_sliding_window(hp["sliding_window"])
    n_shared = hp["num_kv_shared_layers"]
    w.add_shared_kv_layers(n_shared)
    w.add_embedding_length_per_layer_input(hp.get("hidden_size_per_layer_input") or 0)
    swa_layers = [t == "sliding_attention" for t in hp["layer_types"]]
    w.add_sliding_window_pattern(swa_layers)
    w.add_key_length(hp["global_head_dim"])
    w.add_value_length(hp["global_head_dim"])
    w.add_key_length_swa(hp["head_dim"])
    w.add_value_length_swa(hp["head_dim"])
    # find_hparam(["expert_intermediate_size", "moe_intermediate_size"]) (a KeyError when neither key exists)
    moe = hp.get("expert_intermediate_size", hp.get("moe_intermediate_size"))
    if moe is not None:
        w.add_expert_feed_forward_length(moe)
    n_ff = hp["intermediate_size"]
    if hp.get("use_double_wide_mlp", False):
        w.add_feed_forward_length([n_ff if i < n_layers - n_shared else 2 * n_ff for i in range(n_layers)])
    else:
        w.add_feed_forward_length(n_ff)
    kv_full, kv_swa = hp.get("num_global_key_value_heads"), hp.get("num_key_value_heads")
    if kv_full is not None and kv_swa is not None:
        w.add_head_count_kv([kv_swa if is_swa else kv_full for is_swa in swa_layers])
    else:
        w.add_head_count_kv(hp.get("num_key_value_heads", 4))
    w.add_rope_dimension_count(int(hp["global_head_dim"]))
    w.add_rope_dimension_count_swa(int(hp["head_dim"] * rope.get("partial_rotary_factor", 1.0)))


def write_metadata_gemma3n(w: gguf.GGUFWriter, model_dir: Path, qtype: str) -> None:
    """The keys TextModel -> Gemma3Model -> Gemma3NModel.set_gguf_parameters write, each once, final value."""
    from statistics import NormalDist

    hp = raw_hparams(model_dir)
    cfg = load_config(model_dir)
    w.add_block_count(hp["num_hidden_layers"])
    w.add_context_length(hp.get("max_position_embeddings", 131072))
    w.add_embedding_length(hp["hidden_size"])
    w.add_feed_forward_length(hp["intermediate_size"])  # a list in Gemma 3n configs: written as an array
    w.add_head_count(hp.get("num_attention_heads", 8))
    w.add_head_count_kv(hp.get("num_key_value_heads", 4))
    w.add_rope_freq_base(cfg.rope_global.theta)
    w.add_rope_freq_base_swa(cfg.rope_local.theta)
    w.add_layer_norm_rms_eps(hp.get("rms_norm_eps", 1e-6))
    w.add_key_length(hp.get("head_dim", 256))
    w.add_value_length(hp.get("head_dim", 256))
    w.add_file_type(FILE_TYPE[qtype])
    if hp.get("final_logit_softcapping"):
        w.add_final_logit_softcapping(hp["final_logit_softcapping"])
    w.add_sliding_window(hp["sliding_window"])
    w.add_altup_active_idx(hp["altup_active_idx"])
    w.add_altup_num_inputs(hp["altup_num_inputs"])
    w.add_embedding_length_per_layer_input(hp["hidden_size_per_layer_input"])
    w.add_shared_kv_layers(hp["num_kv_shared_layers"])
    nd = NormalDist()  # torch.distributions.Normal(0, 1).icdf in float32: -inf at 0
    w.add_activation_sparsity_scale([float("-inf") if p <= 0 else float(np.float32(nd.inv_cdf(p)))
                                     for p in hp["activation_sparsity_pattern"]])
    w.add_sliding_window_pattern([t == "sliding_attention" for t in hp["layer_types"]])


def gemma3n_name(name: str, tmap: gguf.TensorNameMap) -> str | None:
    """The GGUF name one HF Gemma 3n tensor ends up in (altup_projections.j: the stack's), None when skipped."""
    if any(m in name for m in _MULTIMODAL) or name == "lm_head.weight":
        return None
    name = name.replace("language_model.", "")
    if name.endswith("_scale"):
        name += ".weight"
    name = re.sub(r"^model\.(altup_projections|altup_unembed_projections)\.\d\.weight$", r"model.\1.weight", name)
    return tmap.get_name(name, try_suffixes=(".weight", ".bias"))


def gemma3n_tensors(model_dir: Path, tmap: gguf.TensorNameMap) -> list[tuple[str, str, np.ndarray]]:
    """Gemma3NModel.filter_tensors + modify_tensors: (HF name, GGUF name, data) in the converter's order."""
    hp = raw_hparams(model_dir)
    out, stacks = [], {"altup_projections": {}, "altup_unembed_projections": {}}
    for name, data in hf_tensors(model_dir).items():
        if any(m in name for m in _MULTIMODAL) or name == "lm_head.weight":
            continue
        name = name.replace("language_model.", "")
        if name.endswith("_scale"):
            name += ".weight"
        m = re.fullmatch(r"model\.(altup_projections|altup_unembed_projections)\.(\d)\.weight", name)
        if m:
            stacks[m.group(1)][int(m.group(2))] = data
            if len(stacks[m.group(1)]) == 3:  # yielded once all three are in
                stacked = np.stack([stacks[m.group(1)][j] for j in range(3)])
                out.append((f"model.{m.group(1)}.weight", tmap.get_name(f"model.{m.group(1)}.weight", try_suffixes=(".weight",)), stacked))
            continue
        if "embed_tokens.weight" in name or "embed_tokens_per_layer" in name:
            vocab = hp.get("vocab_size", 262400)
            if data.shape[0] < vocab:
                data = np.concatenate([data, np.zeros((vocab - data.shape[0], data.shape[1]), data.dtype)])
        out.append((name, tmap.get_name(name, try_suffixes=(".weight", ".bias")), data))
    return out


def gemma4_rope_freqs(model_dir: Path) -> np.ndarray:
    """Gemma4Model.generate_extra_tensors: the frequency factors of the full layers' proportional RoPE."""
    hp = raw_hparams(model_dir)
    full = hp["rope_parameters"]["full_attention"]
    assert full["rope_type"] == "proportional"
    hd = hp["global_head_dim"]
    n_rot = int(hd * full["partial_rotary_factor"] / 2)
    return np.array([1.0] * n_rot + [1e30] * (hd // 2 - n_rot), dtype=np.float32)


def gemma4_name(name: str, tmap: gguf.TensorNameMap) -> str | None:
    """Gemma4Model.filter_tensors + modify_tensors: the GGUF name of one HF tensor, None when skipped."""
    if any(m in name for m in _MULTIMODAL) or name == "lm_head.weight":
        return None
    name = name.replace("language_model.", "")
    if name.endswith(("per_dim_scale", "layer_scalar")):
        name += ".weight"
    if ".experts." in name and not name.endswith(".weight"):
        name += ".weight"
    m = re.fullmatch(r"model\.layers\.(\d+)\.router\.(scale|per_expert_scale)", name)
    if m:
        key = gguf.MODEL_TENSOR.FFN_GATE_INP if m.group(2) == "scale" else gguf.MODEL_TENSOR.FFN_DOWN_EXP
        return gguf.TENSOR_NAMES[key].format(bid=int(m.group(1))) + ".scale"
    return tmap.get_name(name, try_suffixes=(".weight", ".bias"))


def convert_tensor(name: str, data: np.ndarray, qtype: str, norm_plus_one: bool | float,
                   new_name: str = "") -> tuple[np.ndarray, Any]:
    """(data, ggml type) for one tensor, as prepare_tensors + modify_tensors do it (norm_plus_one: the shift)."""
    if name.endswith("norm.weight") and norm_plus_one:
        data = data + np.float32(norm_plus_one)  # llama.cpp stores 1 + w (Gemma 1-3)
    # prepare_tensors: FFN_GATE_INP, ALTUP_CORRECT_COEF, ALTUP_PREDICT_COEF, non-.weight names
    f32 = new_name.endswith((".scale", "ffn_gate_inp.weight", "altup_correct_coef.weight", "altup_predict_coef.weight"))
    if data.ndim <= 1 or name.endswith("_norm.weight") or new_name.endswith("_norm.weight") or f32:
        return data.astype(np.float32), gguf.GGMLQuantizationType.F32
    t = gguf.GGMLQuantizationType[qtype]
    try:
        return gguf.quants.quantize(data, t), t
    except gguf.QuantError:  # row length not a multiple of the block size: llama.cpp falls back to F16
        return gguf.quants.quantize(data, gguf.GGMLQuantizationType.F16), gguf.GGMLQuantizationType.F16


def write_gguf(
    model_dir: str | Path,
    out: str | Path,
    qtype: str = "F32",
    *,
    norm_plus_one: bool = True,
    norm_shift: float | None = None,
    rope_freqs: np.ndarray | None = None,
    metadata: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    vocab_rows: int | None = None,
    extra: dict[str, np.ndarray] | None = None,
    tokenizer: str | Path | None = None,
    edit_vocab: Callable[[dict[str, Any]], None] | None = None,
    split_max_tensors: int = 0,
) -> Path:
    """Convert a tiny checkpoint to ``out`` (GGUF) with tensors in ``qtype`` (F32, F16, BF16, Q8_0, Q5_0, Q4_0).

    ``metadata`` sets or (value None) removes keys, ``{arch}`` filled in; ``drop`` leaves GGUF tensors
    out; ``vocab_rows`` keeps only the first rows of the embedding (as Gemma 3's converter trims the
    padding rows); ``extra`` adds tensors under GGUF names. ``tokenizer`` (a tokenizer.model) writes
    the vocabulary as ``_set_vocab_sentencepiece`` does; ``edit_vocab`` may change it first.
    """
    model_dir, out = Path(model_dir), Path(out)
    cfg = load_config(model_dir)
    gemma3n = bool(cfg.altup_num_inputs)
    arch = gguf.MODEL_ARCH.GEMMA3N if gemma3n else ARCH[cfg.generation]
    gemma4 = cfg.generation >= 4
    # the converter's norm shift: 1 for Gemma 1-3, 0 for Gemma 4 and 3n (norm_shift overrides, to break a file)
    shift = norm_shift if norm_shift is not None else (0.0 if gemma4 or gemma3n or not norm_plus_one else 1.0)
    w = gguf.GGUFWriter(out, gguf.MODEL_ARCH_NAMES[arch], split_max_tensors=split_max_tensors)
    (write_metadata_gemma3n if gemma3n else write_metadata_gemma4 if gemma4 else write_metadata)(w, model_dir, qtype)
    if tokenizer is not None:
        write_vocab(w, Path(tokenizer), cfg.vocab_size, edit_vocab)
    for key, value in (metadata or {}).items():
        key = key.format(arch=gguf.MODEL_ARCH_NAMES[arch])
        w.kv_data[0].pop(key, None)  # replace, not duplicate, an existing key
        if value is not None:
            w.add_key_value(key, value, _value_type(value))
    tmap = gguf.get_tensor_name_map(arch, cfg.num_hidden_layers)
    if gemma4 and any(s.type == "full_attention" for s in cfg.layers):  # generate_extra_tensors comes first
        freqs = gemma4_rope_freqs(model_dir) if rope_freqs is None else rope_freqs
        if "rope_freqs.weight" not in drop:
            w.add_tensor("rope_freqs.weight", freqs.astype(np.float32), raw_dtype=gguf.GGMLQuantizationType.F32)
    tensors = (gemma3n_tensors(model_dir, tmap) if gemma3n
               else [(name, None, data) for name, data in hf_tensors(model_dir).items()])
    for name, new_name, data in tensors:
        if gemma3n:
            pass
        elif gemma4:
            new_name = gemma4_name(name, tmap)
            if new_name is None:
                continue
        else:
            name = name.replace("language_model.", "")  # Gemma3Model.modify_tensors
            if name.startswith(_FOREIGN) or name == "lm_head.weight":
                continue
            new_name = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        assert new_name is not None, name
        if new_name in drop:
            continue
        if new_name == "token_embd.weight" and vocab_rows is not None:
            data = data[:vocab_rows]
        data, t = convert_tensor(name, data, qtype, shift, new_name)
        w.add_tensor(new_name, data, raw_dtype=t)
    for name, data in (extra or {}).items():
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    parts = w.format_shard_names(out)
    return parts[0]


def sentencepiece_vocab(tokenizer: Path, vocab_size: int) -> dict[str, Any]:
    """What ``TextModel._set_vocab_sentencepiece`` collects, read with the sentencepiece library as it does.

    Types from IsUnknown / IsControl / IsUnused / IsByte, else NORMAL (llama.cpp only learns of
    user-defined pieces through tokenizer_config.json, which the tiny fixtures do not have);
    ``[PAD{i}]`` pieces of type UNUSED, score -10000, fill up to the config's vocab_size, and
    pieces past it are dropped.
    """
    import sentencepiece

    T = gguf.TokenType
    sp = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer))
    tokens, scores, types = [], [], []
    for i in range(min(sp.vocab_size(), vocab_size)):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(T.UNKNOWN if sp.is_unknown(i) else T.CONTROL if sp.is_control(i) else
                     T.UNUSED if sp.is_unused(i) else T.BYTE if sp.is_byte(i) else T.NORMAL)
    for i in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{i}]")
        scores.append(-10000.0)
        types.append(T.UNUSED)
    return {"model": "llama", "tokens": tokens, "scores": scores, "types": [int(t) for t in types],
            "bos": sp.bos_id(), "eos": sp.eos_id(), "unk": sp.unk_id(), "pad": sp.pad_id(),
            "add_bos": True, "add_eos": False}  # Gemma's tokenizer_config.json: add_bos_token true, add_eos_token false


def write_vocab(w: gguf.GGUFWriter, tokenizer: Path, vocab_size: int,
                edit: Callable[[dict[str, Any]], None] | None = None) -> None:
    """The tokenizer.ggml.* keys; a value set to None by ``edit`` is left out."""
    v = sentencepiece_vocab(tokenizer, vocab_size)
    if edit:
        edit(v)
    writers = {"model": w.add_tokenizer_model, "tokens": w.add_token_list, "scores": w.add_token_scores,
               "types": w.add_token_types, "bos": w.add_bos_token_id, "eos": w.add_eos_token_id,
               "unk": w.add_unk_token_id, "pad": w.add_pad_token_id, "add_bos": w.add_add_bos_token,
               "add_eos": w.add_add_eos_token}
    for key, value in v.items():
        if value is not None:
            writers[key](value)


def _value_type(value: Any) -> gguf.GGUFValueType:
    if isinstance(value, str):
        return gguf.GGUFValueType.STRING
    if isinstance(value, float):
        return gguf.GGUFValueType.FLOAT32
    if isinstance(value, list):
        return gguf.GGUFValueType.ARRAY
    return gguf.GGUFValueType.UINT32
