"""The image side of verify: a golden's image prompts through gemma_ref's vision tower, with findings.

The tower runs on the pixel values the golden's producer fed its own model when the golden records
them, so a tower or projector damaged in conversion shows in the logits whatever resizing did;
gemma_ref's own preprocessing of the raw image is compared with those pixels on the side (VISION002).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from release.errors import InputError
from release.findings import Finding


def golden_image_tokens(weights: Any, model_dir: Path, golden: Any, sequences: list[np.ndarray],
                        progress: Callable[[str, int, int], None] | None = None,
                        scan: bool = True) -> tuple[list, list[Finding]]:
    """vision.ImageTokens per golden prompt (None for text-only ones), and what was found on the way.

    `scan`: look for NaN/Inf in the tower's tensors first (verify's --no-scan skips it).
    """
    from gemma_ref import vision

    vc = vision.load_vision_config(model_dir)
    if vc is None:
        raise InputError("the golden holds image prompts, but this checkpoint has no vision tower gemma_ref runs "
                         "(Gemma 3 / Gemma 4 with a vision_config)", golden.path,
                         hint="Gemma 3n's MobileNet and gemma4_unified's encoder-free images are not verified")
    tower = vision.TowerWeights(weights, vc)
    findings: list[Finding] = scan_tower(weights, tower) if scan else []
    if findings:
        return [None] * len(sequences), findings  # NaN/Inf in the tower: its logits would say nothing more
    out: list = []
    n_images = sum(len(gp.images or ()) for gp in golden.prompts)
    done = 0
    for gp, ids in zip(golden.prompts, sequences):
        if not gp.images:
            out.append(None)
            continue
        pixels = []
        for j, image in enumerate(gp.images):
            ours = vision.preprocess(image, vc)
            recorded = gp.pixels[j] if gp.pixels else None  # the producer's pixel values, when the golden keeps them
            meta = gp.image_meta[j] if gp.image_meta else {}
            where = f"prompt {gp.name!r}, image {j}"
            if recorded is not None:
                differ = pixel_difference(ours, recorded)
                if differ:
                    findings.append(Finding("VISION002", "warning", f"{where}: {differ}; the tower ran on the golden's "
                                            "pixels, so the logits still check the weights", path=str(golden.path)))
                pixels.append(recorded)
            else:
                sha = meta.get("sha256_pixels")
                if sha and vision.pixel_sha256(ours) != sha:
                    findings.append(Finding("VISION002", "warning", f"{where}: gemma_ref's pixel values are not the "
                                            f"producer's ({golden.extra.get('image_processor_backend', 'unknown')} "
                                            "backend); the tower ran on gemma_ref's, so part of a logit difference may "
                                            "be preprocessing, not weights", path=str(golden.path)))
                pixels.append(ours)
            done += 1
            if progress:
                progress("vision tower", done, n_images)
        tokens = vision.prompt_image_tokens(ids, pixels, tower)
        soft = gp.soft_tokens
        if soft is not None:
            if soft.shape != tokens.values.shape:
                raise InputError(f"prompt {gp.name!r}: the golden's soft tokens are {list(soft.shape)}, the model "
                                 f"makes {list(tokens.values.shape)}", golden.path)
            d = float(np.max(np.abs(soft - tokens.values)))
            scale = float(np.max(np.abs(soft))) or 1.0
            findings.append(Finding("VISION003", "info", f"prompt {gp.name!r}: soft tokens max |Δ| {d:.3g} "
                                    f"(max |value| {scale:.3g}, relative {d / scale:.2g})", path=str(golden.path)))
        out.append(tokens)
    ran = set(tower.names())
    findings.append(Finding("VISION001", "info", f"vision tower ({vc.family}, {vc.num_hidden_layers} layers) and "
                            f"projector ran: {len(ran)} tensors checked through {n_images} image(s)", path=str(model_dir)))
    others = not_run(weights, ran)
    if others:
        findings.append(Finding("WEIGHTS006", "info", f"{len(others)} tensors of other towers not verified (e.g. "
                                f"{others[0]!r}): gemma_ref runs no audio tower, nor a SigLIP pooling head",
                                path=str(model_dir)))
    return out, findings


def not_run(weights: Any, ran: set[str]) -> list[str]:
    """Tensors outside the text model that the image path did not read either."""
    from gemma_ref.weights import FOREIGN_PREFIXES

    prefix = weights.prefix
    return sorted(n for n in weights.infos if n not in ran and n not in ("lm_head.weight", prefix + "lm_head.weight")
                  and (n.startswith(FOREIGN_PREFIXES) or (prefix and not n.startswith(prefix))))


def pixel_difference(ours: dict[str, np.ndarray], recorded: dict[str, np.ndarray]) -> str | None:
    """None when gemma_ref's pixels are the recorded ones bit for bit, else what differs (in 1/255 levels)."""
    a, b = ours["pixel_values"], recorded["pixel_values"]
    if a.shape != b.shape:
        return f"gemma_ref's preprocessing gives pixel values {list(a.shape)}, the golden's are {list(b.shape)}"
    pa, pb = ours.get("image_position_ids"), recorded.get("image_position_ids")
    if pa is not None and pb is not None and not np.array_equal(pa, pb):
        return "gemma_ref's patch positions differ from the golden's"
    if np.array_equal(a, b):
        return None
    n = int(np.count_nonzero(a != b))
    d = float(np.max(np.abs(a - b)))
    return f"gemma_ref's preprocessing differs from the producer's in {n} of {a.size} pixel values (max |Δ| {d:.3g})"


def towers_not_run(weights: Any, model_dir: Path) -> list[Finding]:
    """WEIGHTS006 for a verify whose golden holds no image: which towers went unverified, and how to verify them."""
    from gemma_ref import vision

    others = not_run(weights, set())
    if not others:
        return []
    try:
        vc = vision.load_vision_config(model_dir)
        tower = set(vision.TowerWeights(weights, vc).names()) if vc is not None else set()
    except InputError as e:  # the tower does not fit its config: say so, but the text checks stand
        return [Finding("WEIGHTS006", "info", f"{len(others)} tensors of other towers not verified; the vision tower "
                        f"could not be read: {e.message}", path=str(model_dir))]
    rest = [n for n in others if n not in tower]
    out = []
    if tower:
        out.append(Finding("WEIGHTS006", "info", f"the vision tower and projector ({len(tower)} tensors) were not "
                           "verified: no golden prompt holds an image (make one with `gemma-release golden --image`)",
                           path=str(model_dir)))
    if rest:
        out.append(Finding("WEIGHTS006", "info", f"{len(rest)} tensors of other towers not verified (e.g. {rest[0]!r}): "
                           "gemma_ref does not run them (audio towers, Gemma 3n's MobileNet, encoder-free embedders)",
                           path=str(model_dir)))
    return out


def scan_tower(weights: Any, tower: Any) -> list[Finding]:
    """WEIGHTS005 for NaN/Inf in the tower's and projector's tensors (the text model's are scanned by verify)."""
    from gemma_ref.weights import count_nonfinite

    out = []
    for name in tower.names():
        t = weights.stored(name)
        bad = count_nonfinite(t.reshape(1, -1) if t.ndim < 2 else t)
        if bad:
            out.append(Finding("WEIGHTS005", "error", f"tensor {name!r} holds {bad} NaN/Inf values",
                               path=str(weights.infos[name].file)))
    return out
