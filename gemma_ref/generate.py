"""Text generation with a KV cache: greedy or sampled decoding, stopping on <eos> or the end of a turn.

    >>> from gemma_ref import load_model
    >>> from gemma_ref.generate import Sampling, generate
    >>> model = load_model("path/to/model")
    >>> result = generate(model, [2, 651, 6037], max_new_tokens=20, sampling=Sampling(temperature=0.7, seed=1))
    >>> result.ids                                   # the new tokens, the stop token included if one was hit

How decoding works: the prompt runs through the model once (prefill), filling
each layer's KV cache (model.LayerCache) with the keys and values of every
prompt position. Then each new token runs alone: its query attends over the
cached keys, on local layers only over the last `sliding_window` of them, and
its own key and value join the cache. The logits of each step are exactly the
full forward pass's at that position (tests/test_generate.py checks it), only
computed once per token instead of once per token per step.

Gemma 4's KV-shared layers (E2B, E4B) have no cache of their own: they read the
cache of the layer they share with (model.new_cache gives them None).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from gemma_ref.config import GemmaConfig
from gemma_ref.errors import InputError
from gemma_ref.model import Model, forward, new_cache, softmax, validate_ids


@dataclass(frozen=True)
class Sampling:
    """How the next token is picked from the logits."""

    temperature: float = 0.0  # 0 picks the most likely token (greedy); higher flattens the distribution
    top_k: int | None = None  # sample only among the k most likely tokens (None: no limit)
    top_p: float | None = None  # ... and only among the fewest whose probabilities add up to p (nucleus)
    seed: int | None = None  # seed of the random generator: the same seed gives the same text

    def __post_init__(self) -> None:
        if not np.isfinite(self.temperature) or self.temperature < 0:
            raise InputError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise InputError(f"top_k must be at least 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise InputError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def next_token_probs(logits: np.ndarray, sampling: Sampling) -> np.ndarray:
    """The distribution the next token is drawn from, after temperature, top-k and top-p.  [V] -> [V]"""
    probs = softmax(logits.astype(np.float64) / sampling.temperature)  # [V], float64 so tiny tails still sum to 1
    order = np.argsort(-probs, kind="stable")  # most likely first; ties keep the lower id first
    keep = len(order) if sampling.top_k is None else min(sampling.top_k, len(order))
    if sampling.top_p is not None:
        # The smallest prefix whose mass reaches p; the token that crosses p is kept.
        cumulative = np.cumsum(probs[order])
        keep = min(keep, int(np.searchsorted(cumulative, sampling.top_p * cumulative[-1])) + 1)
    filtered = np.zeros_like(probs)
    filtered[order[:keep]] = probs[order[:keep]]
    return filtered / filtered.sum()


def pick_next(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> int:
    """Choose the next token id from one position's logits.  [V] -> id"""
    if sampling.greedy:
        return int(np.argmax(logits))  # ties: the lowest id, as torch.argmax does
    probs = next_token_probs(logits, sampling)
    return int(rng.choice(len(probs), p=probs))


GEMMA4_TURN_CLOSE = 106  # Gemma 4's <turn|>: its special ids are fixed for the family (releases list [1, 106])


def stop_ids(cfg: GemmaConfig, tokenizer=None) -> frozenset[int]:
    """Ids that end generation: the config's eos_token_id(s), plus <eos> and the end-of-turn marker.

    The end of a turn is <end_of_turn> for Gemma 1-3 (from the tokenizer) and <turn|> (106) for Gemma 4.
    """
    ids = set(cfg.eos_token_id) if isinstance(cfg.eos_token_id, tuple) else {cfg.eos_token_id}
    if cfg.generation >= 4 and GEMMA4_TURN_CLOSE < cfg.vocab_size:
        ids.add(GEMMA4_TURN_CLOSE)  # instruction-tuned Gemma 4 ends its turn with <turn|>
    if tokenizer is not None:
        for name in ("eos", "end_of_turn", "turn_close"):  # instruction-tuned Gemma ends its turn with one
            if name in tokenizer.special_ids:
                ids.add(tokenizer.special_ids[name])
    return frozenset(ids)


@dataclass
class Generation:
    """What generate() produced, and how long it took."""

    prompt_ids: list[int]
    ids: list[int] = field(default_factory=list)  # new tokens only; ends with the stop token when one was hit
    stop_reason: str = "length"  # "stop" (a stop id), "length" (max_new_tokens), "context" (max positions)
    prefill_seconds: float = 0.0
    decode_seconds: list[float] = field(default_factory=list)  # one per decoded token after the first
    logits: list[np.ndarray] | None = None  # [V] per new token, the logits it was picked from (keep_logits=True)

    @property
    def seconds_per_token(self) -> float | None:
        return float(np.median(self.decode_seconds)) if self.decode_seconds else None


def generate(
    model: Model,
    prompt_ids: Sequence[int] | np.ndarray,
    max_new_tokens: int = 64,
    sampling: Sampling = Sampling(),
    stop: Iterable[int] | None = None,
    on_token: Callable[[int], None] | None = None,
    keep_logits: bool = False,
    images: Sequence[np.ndarray] | None = None,
) -> Generation:
    """Continue `prompt_ids` by up to `max_new_tokens` tokens, calling `on_token` with each as it comes.

    `stop`: ids that end generation (default: stop_ids(model.config)); the stop token is
    kept in the result. Generation also ends at the model's max_position_embeddings.
    `images`: the prompt's images (uint8 [H, W, 3], in order), whose image tokens the prompt holds
    already expanded (vision.expand_placeholders); they only change the prefill.
    """
    cfg = model.config
    prompt = validate_ids(prompt_ids, cfg.vocab_size)
    if max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if len(prompt) > cfg.max_position_embeddings:
        raise InputError(f"the prompt has {len(prompt)} tokens; the model takes at most {cfg.max_position_embeddings}")
    stop = frozenset(stop_ids(cfg) if stop is None else stop)
    rng = np.random.default_rng(sampling.seed)
    result = Generation(prompt_ids=prompt.tolist(), logits=[] if keep_logits else None)
    if max_new_tokens == 0:
        return result

    cache = new_cache(cfg)
    t0 = time.perf_counter()
    soft = model.image_tokens([prompt], [images]) if images else None  # the vision tower runs once, here
    logits = forward(model.weights, cfg, [prompt], caches=[cache], last_only=True, images=soft)[0][-1]  # [V]: prefill
    result.prefill_seconds = time.perf_counter() - t0
    while True:
        if keep_logits:
            result.logits.append(logits)
        token = pick_next(logits, sampling, rng)
        result.ids.append(token)
        if on_token:
            on_token(token)
        if token in stop:
            result.stop_reason = "stop"
            break
        if len(result.ids) >= max_new_tokens:
            break
        if cache[0].length >= cfg.max_position_embeddings:
            result.stop_reason = "context"
            break
        t0 = time.perf_counter()
        logits = forward(model.weights, cfg, [np.array([token])], caches=[cache], last_only=True)[0][-1]  # [V]
        result.decode_seconds.append(time.perf_counter() - t0)
    return result


class TextStream:
    """Turns ids arriving one by one into text pieces safe to print (no half UTF-8 characters)."""

    def __init__(self, tokenizer, prompt_ids: Sequence[int] = (), hide: Iterable[int] = ()):
        self.tokenizer = tokenizer
        self.hide = frozenset(hide)  # ids not to print (the stop tokens)
        # Decoded after one prompt token: decoding new ids alone would drop the leading space of the first one.
        self.ids: list[int] = [int(i) for i in prompt_ids[-1:]]
        self.printed = tokenizer.decode(self.ids)

    def push(self, token: int) -> str:
        """The new text that `token` completes ("" while a multi-byte character is still incomplete)."""
        if token in self.hide:
            return ""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # byte-fallback pieces of one character not all there yet
            return ""
        new = text[len(self.printed):] if text.startswith(self.printed) else text
        self.printed = text
        return new
