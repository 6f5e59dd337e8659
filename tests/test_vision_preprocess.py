"""gemma_ref.vision's pixels against the libraries that define them: Pillow's resize and transformers' processors.

Pillow 13 runs the vertical pass of a resize first when the height shrinks by more than twice as many pixels as
the width (Pillow <= 12.3 always ran the horizontal one first); gemma_ref follows Pillow 13, and the sizes below
cover both orders. Goldens record the producer's own pixel values, so verify never depends on the Pillow version.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from gemma_ref import vision
from gemma_ref.errors import InputError

Image = pytest.importorskip("PIL.Image")


def picture(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth gradients, stripes and noise: every filter tap matters."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([127 + 100 * np.sin(x / 7 + seed), 127 + 100 * np.cos(y / 5), (x * y) % 256], -1)
    return np.clip(a + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)


# (h, w) -> (th, tw): enlarging, shrinking with antialias, one side only, extreme ratios
SIZES = [((60, 90), (84, 84)), ((37, 23), (84, 84)), ((200, 300), (224, 96)), ((10, 500), (12, 37)),
         ((84, 130), (84, 84)), ((130, 84), (84, 84)), ((50, 50), (896, 896)), ((7, 1), (30, 1)),
         ((64, 640), (96, 96)), ((300, 250), (300, 17)),
         ((150, 110), (84, 84)), ((130, 100), (84, 84)), ((300, 200), (96, 120)),  # Pillow 13: vertical pass first
         ((130, 84), (84, 61)), ((131, 84), (84, 61))]  # the boundary: 46 = 2 x 23 (horizontal first), 47 > 46


@pytest.mark.parametrize("resample", [vision.BILINEAR, vision.BICUBIC])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0][0]}x{s[0][1]}-{s[1][0]}x{s[1][1]}")
def test_resize_is_pillows_bit_for_bit(size, resample):
    (h, w), (th, tw) = size
    img = picture(h, w, h + w)
    want = np.asarray(Image.fromarray(img).resize((tw, th), resample=resample))
    got = vision.pil_resize(img, th, tw, resample)
    assert got.dtype == np.uint8 and got.shape == want.shape
    assert np.array_equal(got, want), f"{int((got != want).sum())} pixels differ"


def test_resize_weights_rows_sum_to_one_and_widen_when_shrinking():
    for n_in, n_out in [(100, 37), (37, 100), (896, 896), (5000, 896)]:
        W = vision.resample_weights(n_in, n_out, vision.BICUBIC)
        assert np.all(np.abs(W.sum(1) - (1 << 22)) <= W.shape[1])  # rounding of each tap, at most 1 each
        taps = (W != 0).sum(1).max()
        assert taps <= 2 * int(np.ceil(2 * max(n_in / n_out, 1))) + 1


def _tiny_dir(tmp_path, family: str, processor: dict, **vision_cfg) -> str:
    if family == "gemma3":
        cfg = {"model_type": "gemma3", "mm_tokens_per_image": 9, "image_token_index": 500, "boi_token_index": 501,
               "eoi_token_index": 502, "text_config": {"hidden_size": 32},
               "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                 "num_attention_heads": 2, "image_size": 84, "patch_size": 14, **vision_cfg}}
    else:
        cfg = {"model_type": "gemma4", "image_token_id": 500, "boi_token_id": 501, "eoi_token_id": 502,
               "text_config": {"hidden_size": 32},
               "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                 "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 16, "patch_size": 4,
                                 "pooling_kernel_size": 3, "position_embedding_size": 64, **vision_cfg}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    if processor is not None:
        (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor))
    return str(tmp_path)


G3_PROCESSOR = {"size": {"height": 84, "width": 84}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "resample": 2,
                "rescale_factor": 1 / 255, "do_normalize": True}
G4_PROCESSOR = {"patch_size": 4, "max_soft_tokens": 70, "pooling_kernel_size": 3, "resample": 3}


@pytest.mark.parametrize("h,w", [(60, 90), (84, 84), (100, 130), (30, 40)])
def test_gemma3_pixels_equal_transformers_processor(tmp_path, h, w):
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    vc = vision.load_vision_config(_tiny_dir(tmp_path, "gemma3", G3_PROCESSOR))
    proc = Gemma3ImageProcessorPil(**{k: v for k, v in G3_PROCESSOR.items()})
    img = picture(h, w, 3)
    want = proc(images=[img], return_tensors="np")["pixel_values"]
    got = vision.preprocess(img, vc)["pixel_values"]
    assert got.dtype == np.float32 and np.array_equal(got, want)
    assert vision.pixel_sha256({"pixel_values": want}) == vision.pixel_sha256({"pixel_values": got})


def test_gemma3_pan_and_scan_crops_equal_transformers(tmp_path):
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    pp = {**G3_PROCESSOR, "do_pan_and_scan": True, "pan_and_scan_min_crop_size": 20, "pan_and_scan_max_num_crops": 4,
          "pan_and_scan_min_ratio_to_activate": 1.2}
    vc = vision.load_vision_config(_tiny_dir(tmp_path, "gemma3", pp))
    proc = Gemma3ImageProcessorPil(**pp)
    for h, w in [(40, 130), (130, 40), (50, 55)]:
        img = picture(h, w, 4)
        out = proc(images=[img], return_tensors="np")
        got = vision.preprocess(img, vc)["pixel_values"]
        assert got.shape[0] == 1 + int(out["num_crops"][0])
        assert np.array_equal(got, out["pixel_values"])
        assert vision.soft_token_count(vc, img) == 9 * got.shape[0]


@pytest.mark.parametrize("h,w", [(60, 90), (200, 40), (13, 17), (120, 120), (5, 300)])
def test_gemma4_patches_equal_transformers_processor(tmp_path, h, w):
    from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil

    vc = vision.load_vision_config(_tiny_dir(tmp_path, "gemma4", G4_PROCESSOR))
    proc = Gemma4ImageProcessorPil(**G4_PROCESSOR)
    img = picture(h, w, 5)
    out = proc(images=[img], return_tensors="np")
    got = vision.preprocess(img, vc)
    assert np.array_equal(got["pixel_values"], out["pixel_values"][0])
    assert np.array_equal(got["image_position_ids"], out["image_position_ids"][0])
    assert vision.soft_token_count(vc, img) == int(out["num_soft_tokens_per_image"][0])


def test_expansion_is_the_processors_text(tmp_path):
    vc = vision.load_vision_config(_tiny_dir(tmp_path, "gemma3", G3_PROCESSOR))
    img = picture(40, 50, 1)
    text = vision.expand_placeholders("A <start_of_image> and <start_of_image>!", [img, img], vc)
    seq = "\n\n<start_of_image>" + "<image_soft_token>" * 9 + "<end_of_image>\n\n"
    assert text == f"A {seq} and {seq}!"
    with pytest.raises(InputError, match="2 image placeholder"):
        vision.expand_placeholders("<start_of_image><start_of_image>", [img], vc)


def test_image_blocks_are_maximal_runs():
    vc = vision.VisionConfig("gemma3", 8, 8, 1, 1, 8, 1e-6, 14, 8, 9, 7, 6, 0,
                             vision.Preprocess(2, 1 / 255, True, (0.5,) * 3, (0.5,) * 3, (84, 84)), 84, 4)
    ids = np.array([2, 7, 9, 9, 6, 5, 7, 9, 9, 9, 9, 6])
    assert vision.image_blocks(ids, vc).tolist() == [-1, -1, 0, 0, -1, -1, -1, 1, 1, 1, 1, -1]
    assert vision.runs(ids, vc) == [2, 4]
    assert vision.image_token_types(ids, vc).tolist() == [0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0]


@pytest.mark.parametrize("change,match", [
    ({"image_size": 85}, "do not tile"),
    ({"hidden_size": 33}, "not a multiple"),
    ({"hidden_act": "gelu"}, "tanh GELU"),
    ({"num_hidden_layers": 10**6}, "more than any Gemma"),
    ({"num_attention_heads": True}, "must be an integer"),
])
def test_bad_gemma3_vision_configs_are_named(tmp_path, change, match):
    with pytest.raises(InputError, match=match):
        vision.load_vision_config(_tiny_dir(tmp_path, "gemma3", G3_PROCESSOR, **change))


def test_processor_config_problems_are_named(tmp_path):
    with pytest.raises(InputError, match="224x224"):  # no processor config: transformers' default would not fit
        vision.load_vision_config(_tiny_dir(tmp_path, "gemma3", None))
    with pytest.raises(InputError, match="resample"):
        vision.load_vision_config(_tiny_dir(tmp_path, "gemma3", {**G3_PROCESSOR, "resample": 1}))
    with pytest.raises(InputError, match="max_soft_tokens 71"):
        vision.load_vision_config(_tiny_dir(tmp_path, "gemma4", {**G4_PROCESSOR, "max_soft_tokens": 71}))
    with pytest.raises(InputError, match="expects 4 and 3"):
        vision.load_vision_config(_tiny_dir(tmp_path, "gemma4", {**G4_PROCESSOR, "patch_size": 8}))
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        vision.load_vision_config(str(tmp_path))


def test_pixels_that_do_not_fit_the_tower_are_refused(tmp_path):
    vc = vision.load_vision_config(_tiny_dir(tmp_path, "gemma4", G4_PROCESSOR))
    good = vision.preprocess(picture(60, 90, 2), vc)
    assert vision.check_pixels(good, vc)["pixel_values"].shape[0] == int((good["image_position_ids"][:, 0] >= 0).sum())
    bad = dict(good, image_position_ids=good["image_position_ids"] + 100)
    with pytest.raises(InputError, match="position table"):
        vision.check_pixels(bad, vc)
    with pytest.raises(InputError, match="float32"):
        vision.check_pixels(dict(good, pixel_values=good["pixel_values"].astype(np.float64)), vc)
    with pytest.raises(InputError, match="uint8"):
        vision.preprocess(np.zeros((4, 4), np.uint8), vc)


def test_the_released_gemma3_processor_config_loads(tmp_path):
    """google/gemma-3-4b-it's preprocessor_config.json as published: nulls mean transformers' defaults."""
    released = {"do_convert_rgb": None, "do_normalize": True, "do_pan_and_scan": None, "do_rescale": True,
                "do_resize": True, "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "Gemma3ImageProcessor",
                "image_seq_length": 256, "image_std": [0.5, 0.5, 0.5], "pan_and_scan_max_num_crops": None,
                "pan_and_scan_min_crop_size": None, "pan_and_scan_min_ratio_to_activate": None,
                "processor_class": "Gemma3Processor", "resample": 2, "rescale_factor": 0.00392156862745098,
                "size": {"height": 896, "width": 896}}
    d = _tiny_dir(tmp_path, "gemma3", released, image_size=896)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["mm_tokens_per_image"] = 256
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    vc = vision.load_vision_config(d)
    assert vc.preprocess.size == (896, 896) and not vc.preprocess.do_pan_and_scan
    assert vc.preprocess.pan_and_scan_min_crop_size == 256 and vc.mm_tokens_per_image == 256
    assert vision.soft_token_count(vc, picture(300, 1200, 0)) == 256
