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

The knobs that break a file on purpose (``norm_plus_one=False``, ``metadata`` overrides,
``drop``, ``vocab_rows``) exist for the tests of the reader's error paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import gguf
import ml_dtypes  # noqa: F401  (lets safetensors return bfloat16 arrays)
import numpy as np
from safetensors import safe_open

from gemma_ref.config import load_config

ARCH = {1: gguf.MODEL_ARCH.GEMMA, 2: gguf.MODEL_ARCH.GEMMA2, 3: gguf.MODEL_ARCH.GEMMA3}
FILE_TYPE = {
    "F32": gguf.LlamaFileType.ALL_F32,
    "F16": gguf.LlamaFileType.MOSTLY_F16,
    "BF16": gguf.LlamaFileType.MOSTLY_BF16,
    "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "Q5_0": gguf.LlamaFileType.MOSTLY_Q5_0,
    "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
}
_FOREIGN = ("multi_modal_projector.", "vision_tower.", "multimodal_projector.", "vision_model.")


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


def convert_tensor(name: str, data: np.ndarray, qtype: str, norm_plus_one: bool) -> tuple[np.ndarray, Any]:
    """(data, ggml type) for one tensor, as prepare_tensors + modify_tensors do it."""
    if name.endswith("norm.weight") and norm_plus_one:
        data = data + np.float32(1.0)  # llama.cpp stores 1 + w
    if data.ndim <= 1 or name.endswith("_norm.weight"):
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
    arch = ARCH[cfg.generation]
    w = gguf.GGUFWriter(out, gguf.MODEL_ARCH_NAMES[arch], split_max_tensors=split_max_tensors)
    write_metadata(w, model_dir, qtype)
    if tokenizer is not None:
        write_vocab(w, Path(tokenizer), cfg.vocab_size, edit_vocab)
    for key, value in (metadata or {}).items():
        key = key.format(arch=gguf.MODEL_ARCH_NAMES[arch])
        w.kv_data[0].pop(key, None)  # replace, not duplicate, an existing key
        if value is not None:
            w.add_key_value(key, value, _value_type(value))
    tmap = gguf.get_tensor_name_map(arch, cfg.num_hidden_layers)
    for name, data in hf_tensors(model_dir).items():
        name = name.replace("language_model.", "")  # Gemma3Model.modify_tensors
        if name.startswith(_FOREIGN) or name == "lm_head.weight":
            continue
        new_name = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        assert new_name is not None, name
        if new_name in drop:
            continue
        if new_name == "token_embd.weight" and vocab_rows is not None:
            data = data[:vocab_rows]
        data, t = convert_tensor(name, data, qtype, norm_plus_one)
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
