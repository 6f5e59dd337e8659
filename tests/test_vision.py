"""The image path against transformers: tiny random multimodal Gemma 3 / Gemma 4 checkpoints saved by transformers,
their goldens made by transformers float32 eager with the processor (tests/make_goldens_vision.py), and each known
image-path bug switched on moving the logits.

The numbers the closing note quotes come from here: run with ``-s`` to see the max |Δlogit| per case and the
discrimination table.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from gemma_ref import bugs as B
from gemma_ref import load_model, vision
from gemma_ref.generate import generate
from release.weights import verify as V
from release.weights.golden import read_golden
from tests.conftest import DATA, GOLDENS, MODELS

VISION_CASES = sorted(p.name for p in MODELS.iterdir() if (GOLDENS / f"{p.name}.safetensors").is_file()
                      and any(gp.images for gp in read_golden(GOLDENS / f"{p.name}.safetensors").prompts))
TOL = 1e-4


def image_prompts(case: str):
    """(ids, images as the golden recorded them, the producer's pixels or None, expected logits) per image prompt."""
    g = read_golden(GOLDENS / f"{case}.safetensors")
    return [(gp.ids, gp.images, gp.pixels, gp.logits) for gp in g.prompts if gp.images]


def test_there_are_vision_cases():
    assert {"gemma3_vision", "gemma4_vision", "gemma4_vision_e2b"} <= set(VISION_CASES), VISION_CASES


@pytest.mark.parametrize("case", VISION_CASES)
def test_verify_passes_on_transformers_goldens_with_images(cli, case):
    r = cli("verify", MODELS / case, "--golden", GOLDENS / f"{case}.safetensors", "--json")
    assert r.code == 0, r.out + r.err
    report = json.loads(r.out)
    rules = {f["rule"] for f in report["findings"]}
    assert "VISION001" in rules  # the tower ran ...
    assert not any(f["rule"] == "WEIGHTS006" and "vision tower" in f["message"] for f in report["findings"])
    worst = max(p["max_abs_diff"] for p in report["prompts"])
    print(f"\n{case}: max |Δlogit| {worst:.3g} over {len(report['prompts'])} prompts")
    assert worst <= TOL


@pytest.mark.parametrize("case", VISION_CASES)
def test_raw_images_through_gemma_ref_preprocessing(cli, case):
    """The prompts from the raw images, resized by gemma_ref: where its pixels are the producer's, so are the logits;
    where they are not (Pillow 13 shrinks some images vertically first), verify says so (VISION002) and still
    passes on the recorded pixels, and the logits from gemma_ref's own pixels differ: preprocessing matters."""
    model = load_model(MODELS / case)
    vc = vision.load_vision_config(MODELS / case)
    same_prompts = differing = 0
    for ids, images, pixels, expected in image_prompts(case):
        same = all(np.array_equal(vision.preprocess(im, vc)["pixel_values"], px["pixel_values"])
                   for im, px in zip(images, pixels))
        (ours,) = model.forward_many([ids], images=[images])
        d = float(np.abs(ours - expected).max())
        if same:
            same_prompts += 1
            assert d <= TOL
        else:
            differing += 1
            print(f"\n{case}: one level off on some pixels moves the logits by {d:.3g}")
            assert d > TOL
    assert same_prompts >= 1
    report = json.loads(cli("verify", MODELS / case, "--golden", GOLDENS / f"{case}.safetensors", "--json").out)
    assert sum(f["rule"] == "VISION002" for f in report["findings"]) >= differing


@pytest.mark.parametrize("case", VISION_CASES)
def test_a_damaged_tower_fails_verify(cli, model_copy, case):
    d = model_copy(case)
    vc = vision.load_vision_config(d)
    t = load_file(str(d / "model.safetensors"))
    tower = vision.TowerWeights(load_model(d).weights, vc)
    name = next(n for n in tower.names() if "layers.0." in n and n.endswith("weight") and t[n].ndim == 2)
    w = t[name].astype(np.float32)
    w[0] *= -1  # one row of one tower matrix flipped: a silent conversion slip
    t[name] = w.astype(t[name].dtype)
    save_file(t, str(d / "model.safetensors"), metadata={"format": "pt"})
    r = cli("verify", d, "--golden", GOLDENS / f"{case}.safetensors", "--json")
    assert r.code == 1, r.out + r.err
    report = json.loads(r.out)
    bad = {p["name"] for p in report["prompts"] if not p["within_tolerance"]}
    g = read_golden(GOLDENS / f"{case}.safetensors")
    assert bad == {gp.name for gp in g.prompts if gp.images}, bad  # the text-only prompts still pass
    soft = [f for f in report["findings"] if f["rule"] == "VISION003"]
    assert soft and all("max |Δ|" in f["message"] for f in soft)  # the soft tokens localise it to the tower


@pytest.mark.parametrize("case", VISION_CASES)
def test_a_text_only_golden_says_the_tower_was_not_verified(cli, tmp_path, case):
    g = read_golden(GOLDENS / f"{case}.safetensors")
    ids = next(gp.ids for gp in g.prompts if not gp.images)
    out = tmp_path / "text.golden"
    assert cli("golden", MODELS / case, "--ids", ",".join(map(str, ids)), "--out", out).code == 0
    r = cli("verify", MODELS / case, "--golden", out, "--json")
    assert r.code == 0, r.err
    msgs = [f["message"] for f in json.loads(r.out)["findings"] if f["rule"] == "WEIGHTS006"]
    assert any("vision tower" in m and "not" in m and "--image" in m for m in msgs), msgs


# --- discrimination: every image-path bug moves the logits -------------------------------------------------


def _vision_bugs():
    out = []
    for case in VISION_CASES:
        model = load_model(MODELS / case)
        vc = vision.load_vision_config(MODELS / case)
        out += [(case, b) for b in B.applicable(model.config, vc) if B.BUGS[b].vision is not None]
        model.close()
    return out


VISION_BUGS = _vision_bugs()
EFFECTS: dict[tuple[str, str], float] = {}


@pytest.mark.parametrize("case,bug", VISION_BUGS, ids=[f"{c}-{b}" for c, b in VISION_BUGS])
def test_each_image_path_bug_moves_the_logits(case, bug):
    """Each quirk gotten wrong moves some image prompt's logits by more than 1e-3 (raw images: preprocessing counts)."""
    model = load_model(MODELS / case)
    vc = vision.load_vision_config(MODELS / case)
    tower = vision.TowerWeights(model.weights, vc)
    worst = 0.0
    for ids, images, _, expected in image_prompts(case):
        ref = B.forward_with(model.weights, model.config, [], ids, tower, images)  # gemma_ref's own preprocessing
        bad = B.forward_with(model.weights, model.config, [bug], ids, tower, images)
        worst = max(worst, float(np.abs(bad - ref).max()))
    EFFECTS[(case, bug)] = worst
    print(f"\n{case} {bug}: max |Δlogit| {worst:.3g}")
    assert worst > 1e-3


def test_every_image_path_bug_applies_somewhere():
    applied = {b for _, b in VISION_BUGS}
    assert applied == {b.id for b in B.BUGS.values() if b.vision is not None}, \
        sorted({b.id for b in B.BUGS.values() if b.vision is not None} - applied)


# --- chunked verify, generate, trace, diagnose --------------------------------------------------------------


def test_chunked_verify_never_cuts_an_image(monkeypatch):
    case = "gemma3_vision"
    whole = V.verify_model(MODELS / case, GOLDENS / f"{case}.safetensors")
    monkeypatch.setattr(V, "LOGITS_IN_MEMORY", 0)
    monkeypatch.setattr(V, "CHUNK_POSITIONS", 5)  # shorter than an image's run of tokens
    chunked = V.verify_model(MODELS / case, GOLDENS / f"{case}.safetensors")
    assert chunked.ok and whole.ok and len(chunked.prompts) == len(whole.prompts)
    for a, b in zip(chunked.prompts, whole.prompts):  # the same numbers but for float32 summation order
        assert a.n_tokens == b.n_tokens and abs(a.max_abs_diff - b.max_abs_diff) <= 5e-6


def test_image_tokens_chunk_end_moves_out_of_images():
    vc = vision.VisionConfig("gemma3", 8, 8, 1, 1, 8, 1e-6, 14, 8, 9, 7, 6, 0,
                             vision.Preprocess(2, 1 / 255, True, (0.5,) * 3, (0.5,) * 3, (84, 84)), 84, 4)
    ids = np.array([2, 7, 9, 9, 9, 9, 6, 5, 5, 7, 9, 9, 9, 9, 6])
    t = vision.ImageTokens(np.flatnonzero(ids == 9), np.zeros((8, 8), np.float32), vision.image_blocks(ids, vc), "all", 0)
    assert t.chunk_end(0, 4) == 2  # back to before the image
    assert t.chunk_end(3, 4) == 6  # an image longer than the chunk: on past it
    assert t.chunk_end(0, 7) == 7 and t.chunk_end(0, 15) == 15
    w = t.window(7, 15)
    assert w.rows.tolist() == [3, 4, 5, 6] and len(w.values) == 4


@pytest.mark.parametrize("case", ["gemma3_vision", "gemma4_vision"])
def test_generate_with_images_prefills_like_forward(case):
    model = load_model(MODELS / case)
    ids, images, _, _ = image_prompts(case)[0]
    (full,) = model.forward_many([ids], images=[images])
    res = generate(model, ids, 3, keep_logits=True, images=images)
    assert np.abs(res.logits[0] - full[-1]).max() <= 1e-5
    assert res.ids[0] == int(np.argmax(full[-1]))


def test_cli_generate_with_an_image(cli, tmp_path):
    """--image: the placeholder expanded, the image tokens spliced in as single ids, the tower run once."""
    from gemma_ref.tokenizer import Tokenizer
    from release.images import load_image

    d = tmp_path / "m"
    shutil.copytree(MODELS / "gemma3_vision", d)
    shutil.copy(DATA / "tokenizers" / "gemma3.model", d / "tokenizer.model")
    img = sorted((DATA / "images").glob("*.png"))[0]
    r = cli("generate", d, "Look: <start_of_image> what is it?", "--image", img, "-n", "3", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    vc = vision.load_vision_config(d)
    tok = Tokenizer(d)
    tok.add_tokens(vision.added_tokens(vc))
    picture = load_image(img)
    ids = tok.encode(vision.expand_placeholders("Look: <start_of_image> what is it?", [picture], vc))
    assert data["prompt_tokens"] == len(ids) and ids.count(vc.image_token_id) == vision.soft_token_count(vc, picture)
    want = generate(load_model(d), ids, 3, images=[picture], stop=set())
    assert data["ids"][:len(want.ids)] == want.ids[:len(data["ids"])]
    no_placeholder = cli("generate", d, "what is it?", "--image", img, "-n", "1", "--json")  # the image goes first
    assert no_placeholder.code == 0, no_placeholder.err
    first = tok.encode(vision.expand_placeholders("<start_of_image>what is it?", [picture], vc))
    assert json.loads(no_placeholder.out)["prompt_tokens"] == len(first)
    assert cli("generate", d, "x", "--image", tmp_path / "missing.png").code == 2
    text_only = tmp_path / "t"
    shutil.copytree(MODELS / "gemma3_1b_style", text_only)
    shutil.copy(DATA / "tokenizers" / "gemma3.model", text_only / "tokenizer.model")
    r = cli("generate", text_only, "x", "--image", img)
    assert r.code == 2 and "vision" in r.err


def test_trace_records_the_tower_and_trace_diff_points_at_it(cli, tmp_path):
    case = "gemma4_vision"
    g = read_golden(GOLDENS / f"{case}.safetensors")
    gp = next(p for p in g.prompts if p.images)
    imgs = []
    from PIL import Image

    for j, im in enumerate(gp.images):
        imgs.append(tmp_path / f"{j}.png")
        Image.fromarray(im).save(imgs[-1])
    ids = ",".join(map(str, gp.ids))
    args = [x for p in imgs for x in ("--image", p)]
    assert cli("trace", MODELS / case, "--ids", ids, "--out", tmp_path / "a.st", *args).code == 0
    assert cli("trace", MODELS / case, "--ids", ids, "--out", tmp_path / "b.st", *args,
               "--bug", "vision_rope_xy_swapped").code == 0
    from release.weights.trace import read_trace

    a = read_trace(tmp_path / "a.st")
    vc = vision.load_vision_config(MODELS / case)
    assert f"vision.0.hidden_states.{vc.num_hidden_layers}" in a and "vision.soft_tokens.0" in a
    r = cli("trace-diff", tmp_path / "a.st", tmp_path / "b.st", "--json")
    assert r.code == 1
    report = json.loads(r.out)
    assert report["first_tensor"] == "vision.0.hidden_states.1" and "vision tower" in report["first_layer"]


def test_diagnose_names_an_image_path_bug(tmp_path):
    from release.weights.diagnose import diagnose

    case = "gemma3_vision"
    model = load_model(MODELS / case)
    vc = vision.load_vision_config(MODELS / case)
    tower = vision.TowerWeights(model.weights, vc)
    prompts = image_prompts(case)
    g = read_golden(GOLDENS / f"{case}.safetensors")
    for gp in g.prompts:  # a candidate made by a port with the projector norm's +1 missing
        images = gp.pixels if gp.images else None
        gp.logits = B.forward_with(model.weights, model.config, ["projector_norm_no_plus_one"], gp.ids, tower, images)
    from release.weights.golden import write_golden

    write_golden(g, tmp_path / "cand.safetensors")
    report = diagnose(MODELS / case, tmp_path / "cand.safetensors")
    assert report["best"] == "projector_norm_no_plus_one", report["ranking"][:3]
    assert prompts


def test_preprocessing_that_differs_is_a_warning_not_a_failure(cli, tmp_path):
    """The golden's raw image no longer resizes to its recorded pixels (another Pillow, torchvision, an edited
    file): VISION002 says so, and the tower is still checked on the recorded pixels, so verify passes."""
    from release.weights.golden import write_golden

    case = "gemma4_vision"
    g = read_golden(GOLDENS / f"{case}.safetensors")
    gp = next(p for p in g.prompts if p.images)
    gp.images[0] = gp.images[0].copy()
    gp.images[0][::7, ::5] ^= 1  # one level on a few pixels
    write_golden(g, tmp_path / "g.safetensors")
    r = cli("verify", MODELS / case, "--golden", tmp_path / "g.safetensors", "--json")
    assert r.code == 0, r.out + r.err
    warn = [f for f in json.loads(r.out)["findings"] if f["rule"] == "VISION002"]
    assert len(warn) == 1 and warn[0]["severity"] == "warning" and "image 0" in warn[0]["message"]
    for p in g.prompts:
        p.pixels = None  # only the hashes: the tower now runs on gemma_ref's pixels, and the warning says so
    write_golden(g, tmp_path / "h.safetensors")
    r = cli("verify", MODELS / case, "--golden", tmp_path / "h.safetensors", "--json")
    report = json.loads(r.out)
    assert any(f["rule"] == "VISION002" and "not the producer's" in f["message"] for f in report["findings"])


def test_nan_in_the_tower_is_named(cli, model_copy):
    d = model_copy("gemma3_vision")
    t = load_file(str(d / "model.safetensors"))
    name = next(n for n in t if "vision" in n and n.endswith("fc1.weight"))
    w = t[name].astype(np.float32)
    w[3, 4] = np.nan
    t[name] = w.astype(t[name].dtype)
    save_file(t, str(d / "model.safetensors"), metadata={"format": "pt"})
    r = cli("verify", d, "--golden", GOLDENS / "gemma3_vision.safetensors", "--json")
    assert r.code == 1
    (f,) = [f for f in json.loads(r.out)["findings"] if f["rule"] == "WEIGHTS005"]
    assert name in f["message"] and "1 NaN/Inf" in f["message"]


def test_golden_with_images_on_a_text_only_model_is_exit_2(cli):
    r = cli("verify", MODELS / "gemma3_1b_style", "--golden", GOLDENS / "gemma3_vision.safetensors")
    assert r.code == 2 and "no vision tower" in r.err
    r = cli("verify", MODELS / "gemma3_nested", "--golden", GOLDENS / "gemma3_vision.safetensors")
    assert r.code == 2 and "224x224" in r.err  # a tower, but no processor config: what transformers would do, said


def test_pan_and_scan_end_to_end_against_transformers(model_copy):
    """Gemma 3 with pan-and-scan switched on in its processor config: each crop is one more view (its own run
    of image tokens, its own bidirectional block); logits against transformers float32 eager, here and now."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from PIL import Image

    d = model_copy("gemma3_vision")
    pp = json.loads((d / "preprocessor_config.json").read_text())
    pp.update(do_pan_and_scan=True, pan_and_scan_min_crop_size=16, pan_and_scan_max_num_crops=3,
              pan_and_scan_min_ratio_to_activate=1.2)
    (d / "preprocessor_config.json").write_text(json.dumps(pp))
    vc = vision.load_vision_config(d)
    img = np.asarray(Image.open(DATA / "images" / "wide_120x30.png").convert("RGB"))
    runs = vision.image_runs(vc, img)
    assert len(runs) >= 3  # the whole image and at least two crops
    ids = [2, 17, 23]
    for n in runs:  # each view: begin-of-image, its tokens, end-of-image, then text between the views
        ids += [vc.boi_token_id] + [vc.image_token_id] * n + [vc.eoi_token_id, 108]
    ids += [41, 42]
    ours = load_model(d).forward_many([ids], images=[[img]])[0]

    transformers.logging.set_verbosity_error()
    model = transformers.Gemma3ForConditionalGeneration.from_pretrained(d, dtype=torch.float32,
                                                                         attn_implementation="eager").eval()
    proc = transformers.AutoImageProcessor.from_pretrained(d)
    px = proc(images=[img], return_tensors="pt")
    assert px["pixel_values"].shape[0] == len(runs)
    t = torch.tensor([ids])
    with torch.no_grad():
        theirs = model(input_ids=t, attention_mask=torch.ones_like(t), pixel_values=px["pixel_values"],
                       token_type_ids=torch.from_numpy(vision.image_token_types(np.array(ids), vc)[None])).logits[0].numpy()
    assert np.abs(ours - theirs).max() <= TOL
