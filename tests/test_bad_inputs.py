"""Bad input: a clear message naming the file and the problem, exit code 2, never a traceback."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from gemma_ref import InputError, load_model
from release.weights.golden import Golden, make_prompt, write_golden
from tests.conftest import GOLDENS, MODELS

CASE = "gemma2_gqa_softcap"
GOLDEN = GOLDENS / f"{CASE}.safetensors"


def verify(cli, model_dir, golden=GOLDEN):
    return cli("verify", model_dir, "--golden", golden)


def assert_bad_input(r, *fragments):
    assert r.code == 2, (r.code, r.out, r.err)
    assert "Traceback" not in r.err
    for f in fragments:
        assert f in r.err, (f, r.err)


def test_missing_config(cli, model_copy):
    d = model_copy(CASE)
    (d / "config.json").unlink()
    assert_bad_input(verify(cli, d), "no config.json", str(d))


def test_config_not_json(cli, model_copy):
    d = model_copy(CASE)
    (d / "config.json").write_text("{ not json")
    assert_bad_input(verify(cli, d), "config.json", "not valid JSON")


def test_unknown_model_type(cli, model_copy):
    d = model_copy(CASE)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "llama"
    (d / "config.json").write_text(json.dumps(cfg))
    assert_bad_input(verify(cli, d), "unknown model_type 'llama'", "config.json")


def test_gemma4_config_missing_a_size_is_refused_clearly(cli, model_copy):
    # Gemma 4 is implemented now (tests/test_gemma4.py); a gemma4_text config without its sizes is bad input.
    d = model_copy(CASE)
    (d / "config.json").write_text(json.dumps({"model_type": "gemma4_text"}))
    assert_bad_input(verify(cli, d), "'hidden_size'", "no default")


def test_truncated_safetensors(cli, model_copy):
    d = model_copy(CASE)
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    assert_bad_input(verify(cli, d), "model.safetensors", "cannot read safetensors")


def test_corrupt_header(cli, model_copy):
    d = model_copy(CASE)
    f = d / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[8:20] = b"#garbage####"
    f.write_bytes(bytes(data))
    assert_bad_input(verify(cli, d), "model.safetensors")


def test_pickle_weights_are_never_loaded(cli, model_copy):
    d = model_copy(CASE)
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")  # a pickle: must not be opened
    assert_bad_input(verify(cli, d), "no safetensors weights", "pytorch_model.bin")


def test_missing_tensor(cli, model_copy):
    d = model_copy(CASE)
    t = load_file(str(d / "model.safetensors"))
    name = next(k for k in t if k.endswith("layers.1.mlp.up_proj.weight"))
    del t[name]
    save_file(t, str(d / "model.safetensors"))
    assert_bad_input(verify(cli, d), name, "missing")


def test_wrong_shape(cli, model_copy):
    d = model_copy(CASE)
    t = load_file(str(d / "model.safetensors"))
    name = next(k for k in t if k.endswith("layers.0.self_attn.k_proj.weight"))
    t[name] = t[name][:-1]
    save_file(t, str(d / "model.safetensors"))
    assert_bad_input(verify(cli, d), name, "shape")


def test_token_id_out_of_range(model_copy):
    m = load_model(model_copy(CASE))
    with pytest.raises(InputError, match="outside the vocabulary"):
        m.forward([2, 5, 512])
    with pytest.raises(InputError, match="empty"):
        m.forward([])
    with pytest.raises(InputError, match="1-D"):
        m.forward([[2, 3]])


def test_golden_with_ids_out_of_range(cli, tmp_path):
    g = Golden([make_prompt("p", np.array([2, 9999]), np.zeros((2, 512), np.float32), "full")], vocab_size=512,
               producer="test", producer_version="0")
    # write_golden does not police ids; read_golden must refuse them.
    write_golden(g, tmp_path / "g.safetensors")
    assert_bad_input(verify(cli, "tests/data/models/" + CASE, tmp_path / "g.safetensors"), "outside [0, 512)")


def test_golden_for_another_vocab(cli, tmp_path):
    g = Golden([make_prompt("p", np.array([2, 3]), np.zeros((2, 1000), np.float32), "full")], vocab_size=1000,
               producer="test", producer_version="0")
    write_golden(g, tmp_path / "other.safetensors")
    assert_bad_input(verify(cli, "tests/data/models/" + CASE, tmp_path / "other.safetensors"),
                     "vocabulary of 1000", "512")


def test_golden_not_safetensors(cli, tmp_path):
    bad = tmp_path / "golden.safetensors"
    bad.write_text("hello")
    assert_bad_input(verify(cli, "tests/data/models/" + CASE, bad), str(bad))


def test_golden_with_wrong_metadata(cli, tmp_path):
    save_file({"ids.0": np.array([2], np.int64)}, str(tmp_path / "g.safetensors"), metadata={"format": "other"})
    assert_bad_input(verify(cli, "tests/data/models/" + CASE, tmp_path / "g.safetensors"), "metadata")


def test_golden_missing_tensor(cli, tmp_path):
    src = load_file(str(GOLDEN))
    from safetensors import safe_open

    with safe_open(str(GOLDEN), "numpy") as f:
        meta = f.metadata()
    del src["logits.1"]
    save_file(src, str(tmp_path / "g.safetensors"), metadata=meta)
    assert_bad_input(verify(cli, "tests/data/models/" + CASE, tmp_path / "g.safetensors"), "'logits.1' is missing")


def test_model_path_is_a_file(cli):
    assert_bad_input(verify(cli, GOLDEN), "not a directory")


def test_usage_error_is_exit_2(cli):
    r = cli("verify", "tests/data/models/" + CASE)  # no --golden
    assert r.code == 2


def test_golden_write_failure_leaves_nothing(cli, tmp_path):
    out = tmp_path / "g.safetensors"
    r = cli("golden", "tests/data/models/" + CASE, "--ids", "2,5,600", "--out", out)
    assert r.code == 2 and "outside the vocabulary" in r.err
    assert list(tmp_path.iterdir()) == []


def test_debug_shows_traceback(cli, model_copy):
    d = model_copy(CASE)
    shutil.rmtree(d)
    r = cli("--debug", "verify", d, "--golden", GOLDEN)
    assert r.code == 2  # --debug adds the traceback and keeps the exit code
    assert "Traceback" in r.err and "InputError" in r.err and str(d) in r.err


# --- a disk that refuses the write ------------------------------------------------------------------------

def _tmpfs(path) -> bool:
    """A 16 KiB tmpfs at `path` (root only): a real 'No space left on device'."""
    import subprocess

    path.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(path)], capture_output=True, timeout=30)
    return p.returncode == 0


def _file_size_limit(limit: int):
    """For a child process: files may not grow past `limit` bytes (EFBIG instead of the default SIGXFSZ kill)."""
    import resource
    import signal

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.parametrize("how", ["full disk", "file size limit"])
@pytest.mark.parametrize("command", ["golden", "trace"])
def test_a_write_the_disk_refuses_is_bad_input_naming_the_file(tmp_path, how, command):
    """safetensors reports a failed write as SafetensorError: exit 2 naming the file, nothing left behind (was exit 3)."""
    import subprocess
    import sys

    out_dir, preexec = tmp_path / "out", None
    if how == "full disk":
        if not _tmpfs(out_dir):
            pytest.skip("cannot mount a tmpfs here (not root)")
    else:
        out_dir.mkdir()
        preexec = _file_size_limit(4096)
    target = out_dir / f"x.{command}"
    ids = ",".join(["2"] + [str(5 + i % 400) for i in range(200)])  # logits of 201 positions: ~400 KB, over both limits
    args = ["golden", MODELS / CASE, "-o", target, "--ids", ids] if command == "golden" else [
        "trace", MODELS / CASE, "--ids", ids, "-o", target, "--detail"]
    code = "import sys; from release.cli import main; sys.argv[0] = 'gemma-release'; main()"
    try:
        p = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=300,
                           preexec_fn=preexec)
        assert p.returncode == 2, p.stdout + p.stderr
        assert str(target) in p.stderr and "cannot write" in p.stderr and "Traceback" not in p.stderr, p.stderr
        assert ("No space left" if how == "full disk" else "File too large") in p.stderr
        assert list(out_dir.iterdir()) == []  # no golden, no temporary file
    finally:
        if how == "full disk":
            subprocess.run(["umount", str(out_dir)], timeout=30)


def test_nan_weights_reach_the_user_as_one_warning_line_not_numpys(cli, model_copy):
    """--no-scan runs the forward on NaN/Inf weights: NumPy's RuntimeWarning (file:line, source line) is not shown."""
    d = model_copy(CASE)
    t = load_file(str(d / "model.safetensors"))
    name = next(k for k in t if "layers.0.mlp.up_proj" in k)
    w = t[name].astype(np.float32)
    w[0, 0], w[1, 1] = np.nan, np.inf
    t[name] = w.astype(t[name].dtype)
    save_file(t, str(d / "model.safetensors"))
    r = cli("verify", d, "--golden", GOLDEN, "--no-scan")
    assert r.code == 1  # a failed check, not bad input and not a bug
    assert "RuntimeWarning" not in r.err and ".py:" not in r.err and "Traceback" not in r.err, r.err
    assert r.err.count("the computation met NaN/Inf") == 1, r.err
    r = cli("verify", d, "--golden", GOLDEN)  # with the scan: the tensor is named and no forward runs
    assert r.code == 1 and name in r.out and "NaN/Inf" in r.out and "RuntimeWarning" not in r.err


@pytest.mark.parametrize("big", ["99999999999999999999999", "9223372036854775808", "-9223372036854775809"])
def test_an_id_past_int64_is_named(cli, tmp_path, big):
    r = cli("golden", MODELS / CASE, "-o", tmp_path / "g.golden", "--ids", f"2,17,{big},5")
    assert_bad_input(r, big, "position 2", "64-bit")
    assert "dtype object" not in r.err and not (tmp_path / "g.golden").exists()


def test_a_prompt_longer_than_the_context_is_warned_naming_both_numbers(cli, tmp_path):
    context = json.loads((MODELS / CASE / "config.json").read_text())["max_position_embeddings"]
    n = context + 6
    ids = ",".join(["2"] + ["17"] * (n - 1))
    r = cli("golden", MODELS / CASE, "-o", tmp_path / "g.golden", "--ids", ids)
    assert r.code == 0, r.err
    assert f"{n} tokens" in r.err and f"max_position_embeddings {context}" in r.err, r.err
    r = cli("verify", MODELS / CASE, "-g", tmp_path / "g.golden")
    assert r.code == 0 and f"{n} tokens" in r.err and "PASS" in r.out
    r = cli("golden", MODELS / CASE, "-o", tmp_path / "h.golden", "--ids", ",".join(["2"] * context))  # exactly the context
    assert r.code == 0 and "max_position_embeddings" not in r.err
