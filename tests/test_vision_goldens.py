"""Goldens with images: image files (release/images.py), the golden format's image tensors, prompts with images
(prompts-file ``images:`` and ``golden --image``) and the image goldens the transformers backend made
(tests/make_goldens_vision.py). Offline; transformers is only used, when installed, as the oracle of the loader.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import save_file

from release.errors import InputError
from release.images import load_image, save_png
from release.weights.golden import Golden, make_prompt, read_golden, write_golden
from release.weights.prompts import load_prompts, select_prompts
from tests.conftest import DATA, GOLDENS, MODELS

IMAGES = DATA / "images"
VISION_CASES = ("gemma3_vision", "gemma4_vision", "gemma4_vision_e2b")
SMALL = IMAGES / "small_56x40.png"


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# --- release.images.load_image ---------------------------------------------------------------------------------


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def _mode_cases(tmp_path: Path) -> dict[str, Path]:
    """One small file per way an image reaches RGB: alpha, palette, transparency, grayscale, 16-bit, 1-bit, CMYK, EXIF."""
    a = _rgb(7, 5, 1)
    rgba = np.concatenate([a, np.random.default_rng(2).integers(0, 256, (7, 5, 1), dtype=np.uint8)], axis=2)
    g = a[..., 0]
    cases = {
        "rgb.png": _save(Image.fromarray(a), tmp_path / "rgb.png"),
        "rgba.png": _save(Image.fromarray(rgba), tmp_path / "rgba.png"),
        "la.png": _save(Image.fromarray(g).convert("LA"), tmp_path / "la.png"),
        "l.png": _save(Image.fromarray(g), tmp_path / "l.png"),
        "p.png": _save(Image.fromarray(a).convert("P"), tmp_path / "p.png"),
        "p_transparent.png": _save(Image.fromarray(a).convert("P"), tmp_path / "p_transparent.png",
                                   transparency=int(np.asarray(Image.fromarray(a).convert("P"))[0, 0])),
        "l_transparent.png": _save(Image.fromarray(g), tmp_path / "l_transparent.png", transparency=int(g[0, 0])),
        "i16.png": _save(Image.fromarray(g.astype(np.uint16) * 257), tmp_path / "i16.png"),
        "one_bit.png": _save(Image.fromarray(g > 128), tmp_path / "one_bit.png"),
        "cmyk.jpg": _save(Image.fromarray(a).convert("CMYK"), tmp_path / "cmyk.jpg"),
        "rgb.webp": _save(Image.fromarray(a), tmp_path / "rgb.webp", lossless=True),
        "anim.gif": _save(Image.fromarray(a).convert("P"), tmp_path / "anim.gif", save_all=True,
                          append_images=[Image.fromarray(255 - a).convert("P")]),
    }
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to view
    cases["exif6.jpg"] = _save(Image.fromarray(a), tmp_path / "exif6.jpg", exif=exif, quality=95)
    return cases


def test_load_image_gives_rgb_uint8(tmp_path):
    for name, path in _mode_cases(tmp_path).items():
        px = load_image(path)
        assert px.dtype == np.uint8 and px.ndim == 3 and px.shape[2] == 3 and px.flags.c_contiguous, name


def test_load_image_conversions_pinned(tmp_path):
    """What transformers does, written out (so CI without transformers still pins it)."""
    cases = _mode_cases(tmp_path)
    a = np.asarray(Image.open(cases["rgb.png"]))
    assert np.array_equal(load_image(cases["rgb.png"]), a)  # lossless round trip
    rgba = np.asarray(Image.open(cases["rgba.png"]))
    assert np.array_equal(load_image(cases["rgba.png"]), rgba[..., :3])  # alpha dropped, not composited
    g = np.asarray(Image.open(cases["l.png"]))
    assert np.array_equal(load_image(cases["l.png"]), np.repeat(g[..., None], 3, axis=2))
    lt = load_image(cases["l_transparent.png"])  # a transparent grey stays on record: composited onto white
    assert (lt[g == g[0, 0]] == 255).all() and np.array_equal(lt[g != g[0, 0]][:, 0], g[g != g[0, 0]])
    pt = load_image(cases["p_transparent.png"])
    idx = np.asarray(Image.open(cases["p_transparent.png"]))
    assert (pt[idx == idx[0, 0]] == 255).all()
    upright = load_image(cases["exif6.jpg"])  # EXIF orientation applied: stored 7x5, shown 5x7
    assert upright.shape == (5, 7, 3)
    raw = np.asarray(Image.open(cases["exif6.jpg"]).convert("RGB"))
    assert np.array_equal(upright, np.rot90(raw, k=-1))
    assert np.array_equal(load_image(cases["anim.gif"]), np.asarray(Image.open(cases["anim.gif"]).convert("RGB")))


def test_load_image_equals_transformers_loader(tmp_path):
    """transformers 5.25: image_utils.load_image (EXIF transpose, .convert("RGB")), then the processors' convert_to_rgb."""
    pytest.importorskip("transformers")
    from transformers.image_transforms import convert_to_rgb
    from transformers.image_utils import load_image as hf_load_image

    for name, path in _mode_cases(tmp_path).items():
        want = convert_to_rgb(hf_load_image(str(path)), return_numpy=True)
        assert np.array_equal(load_image(path), want), name


def _bad(path: Path, match: str) -> None:
    with pytest.raises(InputError, match=match) as e:
        load_image(path)
    assert e.value.path == str(path)  # the error names the file


def test_load_image_refuses_bad_files(tmp_path, monkeypatch):
    _bad(tmp_path / "missing.png", "no such file")
    _bad(tmp_path, "directory")
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    _bad(fifo, "not a regular file")  # never opened: it would block
    (tmp_path / "text.png").write_text("not an image\n")
    _bad(tmp_path / "text.png", "not an image Pillow reads")
    (tmp_path / "empty.png").write_bytes(b"")
    _bad(tmp_path / "empty.png", "not an image")
    eps = tmp_path / "x.eps"  # Pillow would run Ghostscript to decode it
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    _bad(eps, "not an image Pillow reads")
    good = _save(Image.fromarray(_rgb(64, 64)), tmp_path / "good.png")
    data = good.read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    _bad(tmp_path / "truncated.png", "truncated or corrupt")
    (tmp_path / "corrupt.png").write_bytes(data[:40] + bytes(64) + data[104:])
    _bad(tmp_path / "corrupt.png", "truncated or corrupt|not a readable|not an image")
    jpg = _save(Image.fromarray(_rgb(64, 64)), tmp_path / "good.jpg")
    (tmp_path / "truncated.jpg").write_bytes(jpg.read_bytes()[:300])
    _bad(tmp_path / "truncated.jpg", "truncated or corrupt|not a readable image")

    from release import images

    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 100)
    _bad(good, "more than the limit of 100")
    monkeypatch.undo()
    monkeypatch.setattr(images, "MAX_PIXELS", 64 * 64 - 1)  # checked from the header, before decoding
    _bad(good, "64x64 pixels: more than")
    monkeypatch.undo()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's own bomb guard (warning and error alike)
    _bad(good, "decompression bomb")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # between 1x and 2x: Pillow would only warn
    _bad(good, "decompression bomb")


def test_a_bomb_is_refused_before_decoding(tmp_path):
    """A PNG whose header declares 100k x 100k pixels (a few hundred bytes on disk) is never inflated."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    data[8:33] = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    (tmp_path / "bomb.png").write_bytes(bytes(data))
    _bad(tmp_path / "bomb.png", "decompression bomb|more than")


# --- the golden format with images ----------------------------------------------------------------------------


def _image_golden(tmp_path: Path, gemma4: bool = False) -> Path:
    """A golden of one text prompt and one prompt with two images (made by hand: no model needed)."""
    from gemma_ref.vision import pixel_sha256

    V, img_id = 32, 31
    ids = np.array([2, 5, img_id, img_id, img_id, 7, img_id, img_id, 9], dtype=np.int64)
    images = [_rgb(6, 4, 1), _rgb(3, 8, 2)]
    if gemma4:
        pixels = [{"pixel_values": np.random.default_rng(j).random((9, 48), dtype=np.float32),
                   "image_position_ids": np.array([[x, y] for y in range(3) for x in range(3)], dtype=np.int64)}
                  for j in range(2)]
    else:
        pixels = [{"pixel_values": np.random.default_rng(j).random((1, 3, 4, 4), dtype=np.float32)} for j in range(2)]
    rng = np.random.default_rng(0)
    prompts = [
        make_prompt("text", np.array([2, 5, 6]), rng.normal(size=(3, V)), "full"),
        make_prompt("pictures", ids, rng.normal(size=(len(ids), V)), "full", text="<start_of_image> x <start_of_image>",
                    images=images, token_types=(ids == img_id).astype(np.int64),
                    soft_tokens=rng.normal(size=(5, 8)).astype(np.float32), pixels=pixels,
                    image_meta=[{"height": im.shape[0], "width": im.shape[1], "sha256_pixels": pixel_sha256(px)}
                                for im, px in zip(images, pixels)]),
    ]
    g = Golden(prompts=prompts, vocab_size=V, producer="transformers", producer_version="5.25.0 (torch 2.13.0)",
               extra={"image_processor": json.dumps({"image_processor_type": "Gemma3ImageProcessor"}),
                      "image_processor_backend": "pil", "pillow_version": "13.0.0"})
    return write_golden(g, tmp_path / "img.golden")


@pytest.mark.parametrize("gemma4", [False, True])
def test_golden_with_images_round_trips(tmp_path, gemma4):
    path = _image_golden(tmp_path, gemma4)
    g = read_golden(path)
    text, pic = g.prompts
    assert text.images is None and text.token_types is None and text.soft_tokens is None and text.pixels is None
    assert [im.shape for im in pic.images] == [(6, 4, 3), (3, 8, 3)] and pic.images[0].dtype == np.uint8
    assert np.array_equal(pic.images[1], _rgb(3, 8, 2))
    assert pic.token_types.dtype == np.int64 and pic.token_types.tolist() == [0, 0, 1, 1, 1, 0, 1, 1, 0]
    assert pic.soft_tokens.shape == (5, 8) and pic.text == "<start_of_image> x <start_of_image>"
    assert [m["height"] for m in pic.image_meta] == [6, 3] and len(pic.image_meta[0]["sha256_pixels"]) == 64
    assert set(pic.pixels[0]) == ({"pixel_values", "image_position_ids"} if gemma4 else {"pixel_values"})
    assert g.extra["image_processor_backend"] == "pil" and g.extra["pillow_version"] == "13.0.0"
    write_golden(g, tmp_path / "again.golden")  # what was read writes back the same
    with safe_open(str(path), "numpy") as a, safe_open(str(tmp_path / "again.golden"), "numpy") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        assert all(np.array_equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())  # noqa: SIM118


def test_old_goldens_still_read():
    for case in ("gemma2_gqa_softcap", "gemma4_31b_style", "gemma3_nested"):
        g = read_golden(GOLDENS / f"{case}.safetensors")
        assert all(p.images is None and p.token_types is None for p in g.prompts)
    assert read_golden(GOLDENS / "gemma2_gqa_softcap.topk.safetensors").storage == "topk"


def _rewrite(path: Path, out: Path, edit_tensors=None, edit_meta=None) -> Path:
    with safe_open(str(path), "numpy") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        meta = dict(f.metadata())
    if edit_tensors:
        edit_tensors(tensors)
    if edit_meta:
        edit_meta(meta)
    save_file(tensors, str(out), metadata=meta)
    return out


def _prompt_meta(edit):
    def f(meta):
        prompts = json.loads(meta["prompts"])
        edit(prompts)
        meta["prompts"] = json.dumps(prompts)
    return f


BAD_GOLDENS = {
    "image float": (lambda t: t.update({"images.1.0": t["images.1.0"].astype(np.float32)}), None, "'images.1.0'.*uint8"),
    "image RGBA": (lambda t: t.update({"images.1.0": np.zeros((6, 4, 4), np.uint8)}), None, "'images.1.0'.*H, W, 3"),
    "image missing": (lambda t: t.pop("images.1.1"), None, "'images.1.1' is missing"),
    "image empty": (lambda t: t.update({"images.1.0": np.zeros((0, 4, 3), np.uint8)}), None, "'images.1.0'.*empty"),
    "image size vs metadata": (None, _prompt_meta(lambda p: p[1]["images"][0].update(height=7)),
                               "'images.1.0' is 4x6 pixels, metadata says 4x7"),
    "stray image": (lambda t: t.update({"images.1.2": np.zeros((2, 2, 3), np.uint8)}), None,
                    "'images.1.2' belongs to no prompt"),
    "image on a text prompt": (lambda t: t.update({"images.0.0": np.zeros((2, 2, 3), np.uint8)}), None,
                               "'images.0.0' belongs to no prompt"),
    "token types missing": (lambda t: t.pop("token_types.1"), None, "'token_types.1' is missing"),
    "token types length": (lambda t: t.update({"token_types.1": np.zeros(4, np.int64)}), None,
                           r"'token_types.1' must be integer \[9\]"),
    "token types float": (lambda t: t.update({"token_types.1": t["token_types.1"].astype(np.float32)}), None,
                          "'token_types.1' must be integer"),
    "token type 2": (lambda t: t["token_types.1"].__setitem__(0, 2), None, "other than 0"),
    "token types none": (lambda t: t["token_types.1"].__setitem__(slice(None), 0), None, "marks no image token"),
    "token types mixed ids": (lambda t: t["token_types.1"].__setitem__(1, 1), None, "all one id"),
    "token types partial": (lambda t: t["token_types.1"].__setitem__(2, 0), None, "leaves some"),
    "token types on a text prompt": (lambda t: t.update({"token_types.0": np.zeros(3, np.int64)}), None,
                                     "'token_types.0'.*no images"),
    "soft tokens rows": (lambda t: t.update({"soft_tokens.1": np.zeros((4, 8), np.float32)}), None,
                         r"'soft_tokens.1' must be float \[5, D\]"),
    "soft tokens NaN": (lambda t: t["soft_tokens.1"].__setitem__((0, 0), np.nan), None, "'soft_tokens.1'.*NaN"),
    "pixels do not hash": (lambda t: t["pixel_values.1.0"].__setitem__((0, 0, 0, 0), 9.0), None,
                           "'pixel_values.1.0' does not hash"),
    "pixels of one image only": (lambda t: t.pop("pixel_values.1.1"), None, "'pixel_values.1.1' is missing"),
    "pixels float64": (lambda t: t.update({"pixel_values.1.0": t["pixel_values.1.0"].astype(np.float64)}), None,
                       "'pixel_values.1.0' must be finite float32"),
    "sha not hex": (None, _prompt_meta(lambda p: p[1]["images"][0].update(sha256_pixels="xyz")),
                    "sha256_pixels"),
    "no image processor": (None, lambda m: m.pop("image_processor"), "image_processor"),
    "image processor not JSON": (None, lambda m: m.update(image_processor="{nope"), "'image_processor' is not JSON"),
    "no pillow version": (None, lambda m: m.pop("pillow_version"), "pillow_version"),
}


@pytest.mark.parametrize("what", list(BAD_GOLDENS))
def test_bad_image_tensors_are_input_errors_naming_them(tmp_path, what):
    edit_tensors, edit_meta, match = BAD_GOLDENS[what]
    bad = _rewrite(_image_golden(tmp_path), tmp_path / "bad.golden", edit_tensors, edit_meta)
    with pytest.raises(InputError, match=match) as e:
        read_golden(bad)
    assert e.value.path == str(bad)


def test_bad_gemma4_positions(tmp_path):
    def edit(t):
        t["image_position_ids.1.0"] = t["image_position_ids.1.0"][:4]

    bad = _rewrite(_image_golden(tmp_path, gemma4=True), tmp_path / "bad.golden", edit)
    with pytest.raises(InputError, match="image_position_ids.1.0"):
        read_golden(bad)
    def no_pixels(t):
        del t["pixel_values.1.0"], t["pixel_values.1.1"]

    bad = _rewrite(_image_golden(tmp_path, gemma4=True), tmp_path / "bad2.golden", no_pixels)
    with pytest.raises(InputError, match="'image_position_ids.1.0' (has no 'pixel_values|belongs)"):
        read_golden(bad)


def test_bad_golden_is_exit_2_in_verify(cli, tmp_path):
    bad = _rewrite(GOLDENS / "gemma3_vision.safetensors", tmp_path / "bad.golden",
                   lambda t: t.update({"images.0.0": t["images.0.0"][..., :2].copy()}))
    r = cli("verify", MODELS / "gemma3_vision", "--golden", bad)
    assert r.code == 2 and "images.0.0" in r.err and "Traceback" not in r.err


# --- the committed image goldens (made by transformers) -------------------------------------------------------


@pytest.mark.parametrize("case", VISION_CASES)
def test_transformers_image_goldens_are_consistent(case):
    from gemma_ref import vision

    g = read_golden(GOLDENS / f"{case}.safetensors")
    vc = vision.load_vision_config(MODELS / case)
    assert g.producer == "transformers" and g.extra["image_processor_backend"] == "pil"
    assert json.loads(g.extra["image_processor"])["image_processor_type"].startswith(("Gemma3Image", "Gemma4Image"))
    assert [len(p.images or ()) for p in g.prompts] == [1, 2, 0]  # one image, two images, text only
    files = json.loads(g.extra["image_files"])
    for p in g.prompts:
        if not p.images:
            continue
        assert np.array_equal(p.token_types, vision.image_token_types(p.ids, vc))
        assert vision.runs(p.ids, vc) == [vision.soft_token_count(vc, im) for im in p.images]
        assert p.soft_tokens.shape == (int(p.token_types.sum()), vc.text_hidden_size)
        for im, px, m in zip(p.images, p.pixels, p.image_meta):
            assert vision.pixel_sha256(px) == m["sha256_pixels"]
            assert any(np.array_equal(im, load_image(IMAGES / f)) for f in files.values())  # the committed files
    short_window = json.loads((MODELS / case / "config.json").read_text())["text_config"]["sliding_window"]
    assert short_window < min(r for p in g.prompts if p.images for r in vision.runs(p.ids, vc))


def test_fixture_images_are_what_the_script_says():
    sizes = {p.name: load_image(p).shape[:2] for p in sorted(IMAGES.glob("*.png"))}
    assert sizes == {"large_110x150.png": (150, 110), "medium_96x72.png": (72, 96), "small_56x40.png": (40, 56),
                     "wide_120x30.png": (30, 120)}


# --- prompts with images -------------------------------------------------------------------------------------------


def _prompts_file(d: Path, body: str, name: str = "prompts.yaml") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(body)
    return d / name


def test_prompts_file_images_resolve_inside_its_directory(tmp_path):
    d = tmp_path / "p"
    (d / "pics").mkdir(parents=True)
    shutil.copy(SMALL, d / "pics" / "a.png")
    path = _prompts_file(d, "- name: one\n  text: '<start_of_image> hi'\n  images: [pics/a.png]\n"
                            "- name: raw\n  ids: [2, 5, 6]\n  images: [pics/a.png, pics/a.png]\n"
                            "- name: chat\n  messages: [{role: user, content: '<start_of_image>?'}]\n  images: [pics/a.png]\n"
                            "- plain text\n")
    specs = load_prompts(path)
    assert [len(s.images or ()) for s in specs] == [1, 2, 1, 0]
    assert specs[1].ids == [2, 5, 6] and np.array_equal(specs[0].images[0], load_image(SMALL))


@pytest.mark.parametrize("entry,match", [
    ("/etc/passwd", "absolute"),
    ("C:/x.png", "absolute"),
    ("../x.png", "climbs out"),
    ("pics/../../x.png", "climbs out"),
    ("pics\\\\..\\\\..\\\\x.png", "climbs out"),
    ("missing.png", "not found"),
    ("out.png", "outside"),
    ("dirlink/x.png", "outside"),
])
def test_prompts_file_image_paths_that_escape_or_miss_are_refused(tmp_path, entry, match):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(SMALL, outside / "x.png")
    d = tmp_path / "p"
    (d / "pics").mkdir(parents=True)
    (d / "out.png").symlink_to(outside / "x.png")
    (d / "dirlink").symlink_to(outside, target_is_directory=True)
    path = _prompts_file(d, f"- text: '<start_of_image>'\n  images: ['{entry}']\n")
    with pytest.raises(InputError, match=match) as e:
        load_prompts(path)
    assert e.value.path == str(path)


def test_a_symlink_inside_the_directory_is_fine(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    shutil.copy(SMALL, d / "real.png")
    (d / "link.png").symlink_to(d / "real.png")
    (spec,) = load_prompts(_prompts_file(d, "- text: '<start_of_image>'\n  images: [link.png]\n"))
    assert spec.images[0].shape == (40, 56, 3)


def test_bad_image_in_a_prompts_file_names_the_image(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    with pytest.raises(InputError) as e:
        load_prompts(_prompts_file(d, "- text: '<start_of_image>'\n  images: [broken.png]\n"))
    assert e.value.path == str(d / "broken.png")


def test_images_in_the_prompts_schema(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    shutil.copy(SMALL, d / "a.png")
    for body, match in [("- text: x\n  images: []\n", "should be non-empty|too short"),
                        ("- text: x\n  images: a.png\n", "not of type 'array'"),
                        ("- ids: []\n", "should be non-empty|too short"),
                        ("- ids: [2, -1]\n", "less than the minimum"),
                        ("- ids: [2]\n  text: x\n", "not a valid prompts file")]:
        with pytest.raises(InputError, match=match):
            load_prompts(_prompts_file(d, body))


def test_commands_without_an_image_path_refuse_image_prompts(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    shutil.copy(SMALL, d / "a.png")
    path = _prompts_file(d, "- text: '<start_of_image>'\n  images: [a.png]\n")
    with pytest.raises(InputError, match="only `golden`"):
        select_prompts(None, path)
    assert select_prompts(None, path, images_ok=True)[0].images


def _vision_model(tmp_path: Path, case: str = "gemma3_vision") -> Path:
    """A fixture checkpoint with the 512-piece test tokenizer, so text prompts can be tokenized."""
    d = tmp_path / case
    shutil.copytree(MODELS / case, d)
    shutil.copy(DATA / "tokenizers" / "gemma3.model", d / "tokenizer.model")
    return d


def _ids_with_image(case: str) -> tuple[str, np.ndarray]:
    """The one-image prompt of a committed golden, as --ids, and its image."""
    g = read_golden(GOLDENS / f"{case}.safetensors")
    p = g.prompts[0]
    return ",".join(map(str, p.ids)), p.images[0]


def test_golden_image_cli_errors_are_exit_2(cli, tmp_path):
    model = MODELS / "gemma3_vision"
    ids, _ = _ids_with_image("gemma3_vision")
    out = tmp_path / "g.golden"
    text_model = _vision_model(tmp_path, "gemma3_1b_style")
    (tmp_path / "not.png").write_text("text")
    cases = [
        (["--image", SMALL], ["goes with one prompt"]),  # the built-in prompts: several, text only
        (["--ids", ids, "--ids", ids, "--image", SMALL], ["--ids gives 2 prompts"]),
        (["--ids", "2,5,6", "--image", SMALL], ["hold 0 run(s) of image tokens (id 511)", "but 1 image(s)"]),
        (["--ids", ids, "--image", SMALL, "--image", SMALL], ["hold 1 run(s) of image tokens", "but 2 image(s)"]),
        (["--ids", ids, "--image", tmp_path / "missing.png"], ["missing.png", "no such file"]),
        (["--ids", ids, "--image", tmp_path / "not.png"], ["not.png", "not an image"]),
        (["--ids", ids, "--image", tmp_path], ["directory"]),
    ]
    for args, wants in cases:
        r = cli("golden", model, "--out", out, *args)
        assert r.code == 2, (args, r.out, r.err)
        said = " ".join(r.err.split())
        assert all(w in said for w in wants), (args, r.err)
        assert "Traceback" not in r.err and not out.exists()
    r = cli("golden", text_model, "--out", out, "--ids", "2,5,6", "--image", SMALL)
    assert r.code == 2 and "vision" in r.err and not out.exists()


def test_ids_run_of_the_wrong_length_is_said_clearly(cli, tmp_path):
    ids, _ = _ids_with_image("gemma3_vision")
    short = ids.replace(",511,511,", ",511,", 1)  # one image token fewer
    r = cli("golden", MODELS / "gemma3_vision", "--out", tmp_path / "g.golden", "--ids", short, "--image", SMALL)
    assert r.code == 2 and "becomes 9 image tokens" in r.err and "holds 8" in r.err, r.err


def test_text_prompt_placeholders_must_match_the_images(cli, tmp_path):
    model = _vision_model(tmp_path)
    d = tmp_path / "p"
    d.mkdir()
    shutil.copy(SMALL, d / "a.png")
    path = _prompts_file(d, "- text: 'look <start_of_image> here'\n  images: [a.png, a.png]\n")
    r = cli("golden", model, "--out", tmp_path / "g.golden", "--prompts", path)
    assert r.code == 2 and "1 image placeholder" in r.err and "2 image(s)" in r.err, r.err
    chat = _prompts_file(d, "- messages: [{role: user, content: 'no picture here'}]\n  images: [a.png]\n", "c.yaml")
    r = cli("golden", model, "--out", tmp_path / "g.golden", "--prompts", chat)
    assert r.code == 2 and "0 image placeholder" in r.err, r.err


# --- golden --backend gemma_ref with images (the NumPy towers) ---------------------------------------------------


def test_text_and_chat_prompts_with_images_expand_like_the_processor(cli, tmp_path):
    """Placeholders expanded (Gemma 3: \\n\\n boi, 9 image tokens, eoi \\n\\n), the markers one id each, recorded as written."""
    from gemma_ref import vision
    from gemma_ref.tokenizer import Tokenizer

    model = _vision_model(tmp_path)
    vc = vision.load_vision_config(model)
    d = tmp_path / "p"
    d.mkdir()
    shutil.copy(SMALL, d / "a.png")
    shutil.copy(IMAGES / "wide_120x30.png", d / "b.png")
    path = _prompts_file(d, "- name: t\n  text: 'look <start_of_image> and<start_of_image>'\n  images: [a.png, b.png]\n"
                            "- name: c\n  messages: [{role: user, content: '<start_of_image> what is it?'}]\n"
                            "  images: [b.png]\n")
    out = tmp_path / "g.golden"
    r = cli("golden", model, "--out", out, "--prompts", path)
    assert r.code == 0, r.err
    assert "3 image(s) preprocessed by gemma_ref" in r.out
    g = read_golden(out)
    tok = Tokenizer(model)
    tok.add_tokens(vision.added_tokens(vc))
    a, b = load_image(d / "a.png"), load_image(d / "b.png")
    t, c = g.prompts
    assert t.text == "look <start_of_image> and<start_of_image>"  # recorded as written, not expanded
    assert t.ids.tolist() == tok.encode(vision.expand_placeholders(t.text, [a, b], vc))
    boi = [i for i, x in enumerate(t.ids) if x == vc.boi_token_id]
    assert len(boi) == 2 and t.ids.tolist().count(vc.image_token_id) == 18
    # chat: the template trims the turn with the placeholder in it, then the placeholder is expanded, so the
    # "\n\n" before the image stays (as transformers' processor expands the rendered text)
    start, end = tok.special_id("start_of_turn"), tok.special_id("end_of_turn")
    turn = "user\n" + vision.expand_placeholders("<start_of_image> what is it?", [b], vc)  # "user\n\n\n<boi>..."
    want = ([tok.bos_id, start] + tok.encode(turn, bos=False) + [end] + tok.encode("\n", bos=False) + [start]
            + tok.encode("model\n", bos=False))
    assert c.ids.tolist() == want
    assert c.messages == [{"role": "user", "content": "<start_of_image> what is it?"}]
    # verify re-tokenizes both with the golden's own images: no TOKENS001
    r = cli("verify", model, "--golden", out, "--json")
    assert r.code == 0, r.out + r.err
    assert not [f for f in json.loads(r.out)["findings"] if f["rule"].startswith("TOKENS")]


@pytest.mark.parametrize("case", VISION_CASES)
def test_gemma_ref_golden_records_what_transformers_recorded(cli, tmp_path, case):
    """`golden --backend gemma_ref --image` on the fixtures: the same token types, soft tokens within float32 noise,
    and the pixel hashes of images whose resize gemma_ref reproduces bit for bit."""
    ref = read_golden(GOLDENS / f"{case}.safetensors")
    for k, p in enumerate(q for q in ref.prompts if q.images):
        files = []
        for j, im in enumerate(p.images):
            files += ["--image", tmp_path / f"{k}-{j}.png"]
            save_png(im, files[-1])
        out = tmp_path / f"{k}.golden"
        r = cli("golden", MODELS / case, "--out", out, "--ids", ",".join(map(str, p.ids)), *files)
        assert r.code == 0, r.err
        (ours,) = read_golden(out).prompts
        assert np.array_equal(ours.token_types, p.token_types)
        assert [m["height"] for m in ours.image_meta] == [m["height"] for m in p.image_meta]
        assert [m["sha256_pixels"] for m in ours.image_meta] == [m["sha256_pixels"] for m in p.image_meta]
        assert np.abs(ours.soft_tokens - p.soft_tokens).max() <= 1e-4 * max(1.0, float(np.abs(p.soft_tokens).max()))
        assert np.abs(ours.logits - p.logits).max() <= 1e-4
        assert read_golden(out).extra["image_processor_backend"] == "gemma_ref"


@pytest.mark.parametrize("case,prompt", [("gemma3_vision", 1), ("gemma4_vision", 0), ("gemma4_vision_e2b", 1)])
def test_transformers_backend_remakes_the_committed_golden(cli, tmp_path, case, prompt):
    """`golden --backend transformers --image` (the path tests/make_goldens_vision.py took), where torch is installed."""
    import importlib.util

    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision installed: transformers would preprocess with torch, not Pillow")
    ref = read_golden(GOLDENS / f"{case}.safetensors")
    p = ref.prompts[prompt]
    files = []
    for j, im in enumerate(p.images):
        files += ["--image", tmp_path / f"{j}.png"]
        save_png(im, files[-1])
    out = tmp_path / "t.golden"
    r = cli("golden", MODELS / case, "--out", out, "--ids", ",".join(map(str, p.ids)), "--backend", "transformers", *files)
    assert r.code == 0, r.err
    assert "preprocessed by pil" in r.out
    g = read_golden(out)
    (ours,) = g.prompts
    assert g.extra["image_processor_backend"] == "pil" and g.extra["image_processor"] == ref.extra["image_processor"]
    assert [m["sha256_pixels"] for m in ours.image_meta] == [m["sha256_pixels"] for m in p.image_meta]
    assert np.array_equal(ours.token_types, p.token_types) and len(ours.pixels) == len(p.images)  # kept by default
    for a, b in zip(ours.pixels, p.pixels):
        assert all(np.array_equal(a[k], b[k]) for k in b)
    r = cli("golden", MODELS / case, "--out", tmp_path / "n.golden", "--ids", ",".join(map(str, p.ids)),
            "--backend", "transformers", "--no-pixels", *files)
    assert r.code == 0 and read_golden(tmp_path / "n.golden").prompts[0].pixels is None  # only the hashes
    assert np.abs(ours.soft_tokens - p.soft_tokens).max() <= 1e-6 and np.abs(ours.logits - p.logits).max() <= 1e-5


def test_image_option_with_a_one_prompt_file(cli, tmp_path):
    model = _vision_model(tmp_path)
    d = tmp_path / "p"
    d.mkdir()
    shutil.copy(SMALL, d / "a.png")
    one = _prompts_file(d, "- name: look\n  text: 'what is <start_of_image>?'\n", "one.yaml")
    out = tmp_path / "g.golden"
    r = cli("golden", model, "--out", out, "--prompts", one, "--image", SMALL)
    assert r.code == 0, r.err
    (p,) = read_golden(out).prompts
    assert p.name == "look" and len(p.images) == 1 and int(p.token_types.sum()) == 9
    two = _prompts_file(d, "- a <start_of_image>\n- b\n", "two.yaml")
    r = cli("golden", model, "--out", tmp_path / "x.golden", "--prompts", two, "--image", SMALL)
    assert r.code == 2 and "--prompts gives 2 prompts" in " ".join(r.err.split())
    both = _prompts_file(d, "- text: '<start_of_image>'\n  images: [a.png]\n", "both.yaml")
    r = cli("golden", model, "--out", tmp_path / "x.golden", "--prompts", both, "--image", SMALL)
    assert r.code == 2 and "not both" in r.err
