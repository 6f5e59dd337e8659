"""Hostile input and a hostile environment (issue 11): bounded, confined, timed; exit codes that mean what they say.

Every test asserts the exit code, that the message names the file (or endpoint),
the time taken where a hang is the risk, and that nothing was written or left behind.
The network tests use 127.0.0.1 only: a socket that accepts and never answers,
and a port nobody listens on. A FIFO test cannot hang the suite: a watchdog opens
the FIFO for writing after a few seconds, so a reader that blocked gets EOF and the
test fails on its time bound instead.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from release_fixture import NOTICE, hub_env, make_release, run_cli
from tests.conftest import GOLDENS, MODELS

CASE = "gemma2_gqa_softcap"
GOLDEN = GOLDENS / f"{CASE}.safetensors"
ESC_BEL = ("\x1b", "\x07")


def listing(d: Path) -> dict[str, int]:
    """Every entry under ``d`` (temp files included) with its size, for before/after comparisons."""
    return {str(p.relative_to(d)): (p.lstat().st_size if not p.is_fifo() else -1) for p in sorted(d.rglob("*"))}


def one_paragraph(text: str) -> bool:
    return "Traceback" not in text and "\n\n" not in text.strip()


# --- loopback network: a server that accepts and never answers; a refused port ------------------


class SilentServer:
    """Accepts connections on 127.0.0.1 and never sends a byte (bounded: at most 64 connections held)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set() and len(self.held) < 64:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.held.append(conn)

    def __enter__(self) -> "SilentServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        for c in self.held:
            c.close()
        self.sock.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def refused_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now: connecting is refused at once
    return f"http://127.0.0.1:{port}"


CARD_WITH_VARIANT = """---
license: gemma
base_model: google/gemma-2b
---
# m

| Name | Quant method |
| ---- | ---- |
| [m.Q4_K_M.gguf](https://huggingface.co/org/m-GGUF/blob/main/m.Q4_K_M.gguf) | Q4_K_M |
"""


@pytest.mark.parametrize("command", ["publish", "verify --repo", "card check --hub", "variants check --hub"])
def test_hub_that_never_answers_is_exit_2_within_the_timeout(command, tmp_path):
    rel = make_release(tmp_path / "rel", "org/silent")
    (rel / "README.md").write_text(CARD_WITH_VARIANT) if "--hub" in command else None
    args = {"publish": ["publish", str(rel)],
            "verify --repo": ["verify", "--repo", "org/silent", "--golden", str(GOLDEN)],
            "card check --hub": ["card", "check", str(rel / "README.md"), "--hub"],
            "variants check --hub": ["variants", "check", str(rel / "README.md"), "--hub"]}[command]
    before = listing(rel)
    with SilentServer() as server:
        env = hub_env(server.url, tmp_path / "home", "hf_SILENTtoken0123456789", HF_HUB_ETAG_TIMEOUT="1", HF_HUB_DOWNLOAD_TIMEOUT="1")
        t0 = time.monotonic()
        r = run_cli(["--hub-timeout", "0.5", *args], env, tmp_path, timeout=30)
        elapsed = time.monotonic() - t0
        assert server.held, "the client never connected: the test would prove nothing"
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "timed out" in r.stderr and server.url in r.stderr, r.stderr
    assert one_paragraph(r.stderr), r.stderr
    assert elapsed < 6, f"{elapsed:.1f} s"  # interpreter start (~1 s) + one 1 s timeout, with margin
    assert listing(rel) == before


def test_timeout_from_the_environment_variable(tmp_path):
    with SilentServer() as server:
        env = hub_env(server.url, tmp_path / "home", None, GEMMA_RELEASE_HUB_TIMEOUT="0.5")
        t0 = time.monotonic()
        r = run_cli(["verify", "--repo", "org/x", "--golden", str(GOLDEN)], env, tmp_path, timeout=30)
        elapsed = time.monotonic() - t0
    assert r.returncode == 2 and "no answer within 0.5 s" in r.stderr, r.stderr
    assert elapsed < 6, f"{elapsed:.1f} s"


def test_connection_refused_in_verify_repo_is_exit_2_one_paragraph(tmp_path):
    url = refused_url()
    env = hub_env(url, tmp_path / "home", None)
    t0 = time.monotonic()
    r = run_cli(["verify", "--repo", "org/x@main", "--golden", str(GOLDEN)], env, tmp_path, timeout=30)
    assert time.monotonic() - t0 < 6
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "cannot connect" in r.stderr and url in r.stderr and "org/x" in r.stderr, r.stderr
    assert one_paragraph(r.stderr) and len(r.stderr.strip().splitlines()) <= 3, r.stderr
    assert not list((tmp_path / "home").rglob("*.incomplete"))


# --- FIFOs and other non-regular files -------------------------------------------------------------


@contextmanager
def fifo(path: Path, watchdog: float = 4.0):
    """Make ``path`` a FIFO; if something blocks reading it, open it for writing after ``watchdog`` s (EOF)."""
    os.mkfifo(path)
    done = threading.Event()

    def unblock() -> None:
        if done.wait(watchdog):
            return
        for _ in range(50):  # bounded
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                return
            except OSError:
                time.sleep(0.05)

    t = threading.Thread(target=unblock, daemon=True)
    t.start()
    try:
        yield path
    finally:
        done.set()
        t.join(timeout=1)


def _model_with(tmp_path: Path, model_copy, name: str) -> Path:
    d = model_copy(CASE)
    (d / name).unlink()
    return d


FIFO_CASES = {
    "card README.md": lambda tp, mc: (tp / "rel" / "README.md", ["card", "check", "{rel}"]),
    "card path": lambda tp, mc: (tp / "rel" / "README.md", ["card", "check", "{file}"]),
    "card fix": lambda tp, mc: (tp / "rel" / "README.md", ["card", "fix", "{rel}"]),
    "variants check card": lambda tp, mc: (tp / "rel" / "README.md", ["variants", "check", "{file}"]),
    "golden": lambda tp, mc: (tp / "g.safetensors", ["verify", str(MODELS / CASE), "--golden", "{file}"]),
    "prompts file": lambda tp, mc: (tp / "p.yaml", ["golden", str(MODELS / CASE), "--out", str(tp / "out.safetensors"), "--prompts", "{file}"]),
    "GGUF": lambda tp, mc: (tp / "m.gguf", ["verify", "{file}", "--against", str(MODELS / CASE)]),
    "config.json": lambda tp, mc: (_model_with(tp, mc, "config.json") / "config.json", ["verify", "{dir}", "--golden", str(GOLDEN)]),
    "safetensors": lambda tp, mc: (_model_with(tp, mc, "model.safetensors") / "model.safetensors", ["inspect", "{dir}"]),
    "NOTICE": lambda tp, mc: (tp / "rel" / "NOTICE", ["notice", "{rel}"]),
    "fidelity report": lambda tp, mc: (tp / "r.json", ["variants", "table", "{rel}", "--fidelity", "{file}"]),
}


@pytest.mark.parametrize("case", list(FIFO_CASES))
def test_fifo_where_a_file_is_expected_is_refused_not_blocked_on(case, cli, model_copy, tmp_path):
    rel = make_release(tmp_path / "rel", "org/fifo")
    target, args = FIFO_CASES[case](tmp_path, model_copy)
    target.unlink(missing_ok=True)
    with fifo(target):
        before = listing(tmp_path)
        args = [a.format(rel=rel, file=target, dir=target.parent) for a in args]
        t0 = time.monotonic()
        r = cli(*args)
        elapsed = time.monotonic() - t0
    assert elapsed < 2, f"blocked on the FIFO for {elapsed:.1f} s"
    assert r.code == 2, (r.code, r.out, r.err)
    assert target.name in r.err and "not a regular file" in r.err, r.err
    assert one_paragraph(r.err)
    assert listing(tmp_path) == before


def test_fifo_in_the_release_set_is_refused_by_publish(cli, tmp_path):
    rel = make_release(tmp_path / "rel", "org/fifo")
    target = rel / "extra.safetensors"  # matched by files: ['*.safetensors', ...]
    with fifo(target):
        before = listing(tmp_path)
        t0 = time.monotonic()
        r = cli("publish", rel, "--dry-run")
        elapsed = time.monotonic() - t0
    assert elapsed < 2
    assert r.code == 2, (r.code, r.out, r.err)
    assert "extra.safetensors" in r.err and "not a regular file" in r.err, r.err
    assert listing(tmp_path) == before


def test_directory_where_a_card_is_expected(cli, tmp_path):
    (tmp_path / "README.md").mkdir()
    r = cli("card", "check", tmp_path)
    assert r.code == 2 and "README.md" in r.err and "directory" in r.err, r.err


# --- control characters from input are escaped in text output ------------------------------------


def test_control_characters_in_yaml_keys_and_file_names_are_escaped(cli, tmp_path):
    d = tmp_path / "name\x1b[31m\x07"
    d.mkdir()
    card = d / "README.md"
    # a key repeated (CARD003 points at it) and a bad repo id quoted in a message, both holding ESC and BEL
    card.write_text("---\nlicense: apache-2.0\n\"odd\\ekey\\a\": 1\n\"odd\\ekey\\a\": 2\n"
                    "base_model: \"\\e]0;title\\a\"\n---\n# \x1b[2J model\n")
    before = listing(tmp_path)
    for fmt in ("text", "json", "sarif"):
        r = cli("card", "check", card, "--format", fmt)
        assert r.code in (0, 1), (r.code, r.err)
        for c in ESC_BEL:
            assert c not in r.out and c not in r.err, (fmt, r.out)
        if fmt == "text":
            assert "name\\x1b[31m\\x07" in r.out  # the file name, escaped
            assert "/odd\\x1bkey\\x07 [CARD003]" in r.out  # the YAML key in the JSON pointer
            assert "\\x1b]0;title\\x07" in r.out  # card text quoted in a message
        else:
            json.loads(r.out)  # still valid; json escapes the characters itself
    # the one-paragraph error printer too
    r = cli("card", "check", tmp_path / "missing\x1b]0;pwned\x07.md")
    assert r.code == 2 and "missing\\x1b]0;pwned\\x07.md" in r.err
    assert not any(c in r.err for c in ESC_BEL)
    assert listing(tmp_path) == before


# --- card fix: symlinks and the NOTICE-first order ----------------------------------------------------

UNFIXED_CARD = "---\nlicense: gemma\nbase_model: google/gemma-2b\n---\n# m\n\nA fine-tune of google/gemma-2b.\n"


@pytest.mark.parametrize("where", ["inside the release", "outside, fixing the card path"])
def test_card_fix_on_a_symlinked_readme_edits_the_target_and_keeps_the_link(where, cli, tmp_path):
    rel = make_release(tmp_path / "rel", "org/link")
    real = (rel / "docs" / "CARD.md") if where.startswith("inside") else (tmp_path / "cards" / "CARD.md")
    real.parent.mkdir()
    real.write_text(UNFIXED_CARD)
    (rel / "README.md").unlink()
    (rel / "README.md").symlink_to(real)
    r = cli("card", "fix", rel if where.startswith("inside") else rel / "README.md")
    assert r.code == 0, r.err
    assert (rel / "README.md").is_symlink() and os.readlink(rel / "README.md") == str(real)
    assert "Gemma Terms of Use" in real.read_text() and real.read_text() != UNFIXED_CARD
    assert not [p for p in list(rel.iterdir()) + list(real.parent.iterdir()) if p.name.endswith(".tmp")]
    # a dangling link is refused, and stays what it was
    (rel / "README.md").unlink()
    (rel / "README.md").symlink_to(tmp_path / "nowhere.md")
    before = listing(tmp_path)
    r = cli("card", "fix", rel)
    assert r.code == 2 and "README.md" in r.err, r.err
    assert (rel / "README.md").is_symlink() and listing(tmp_path) == before


def test_card_fix_writes_notice_before_the_card(cli, tmp_path, monkeypatch):
    import release.card.rules as rules

    rel = make_release(tmp_path / "rel", "org/order")
    (rel / "NOTICE").unlink()
    (rel / "README.md").write_text(UNFIXED_CARD)
    real_write = rules.atomic_write

    def interrupted(path, text, *a, **k):  # the card's write is interrupted; anything before it happened
        if Path(path).name == "README.md":
            raise KeyboardInterrupt
        return real_write(path, text, *a, **k)

    monkeypatch.setattr(rules, "atomic_write", interrupted)
    r = cli("card", "fix", rel)
    assert r.code == 130
    assert (rel / "README.md").read_text() == UNFIXED_CARD  # the card was not changed ...
    assert (rel / "NOTICE").read_text() == NOTICE  # ... but its NOTICE is already there
    assert not [p for p in rel.iterdir() if p.name.endswith(".tmp")]


# --- exit codes: environment failures are 2 with one paragraph, never 3; no temp file left ----------


def test_full_disk_is_exit_2_and_leaves_no_temp_file(cli, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    r = cli("verify", MODELS / CASE, "--golden", GOLDEN, "--out", out / "report.json", "--no-scan")
    assert r.code == 2, (r.code, r.err)
    assert str(out / "report.json") in r.err and "No space left on device" in r.err and one_paragraph(r.err)
    assert listing(out) == {}


def test_read_only_directory_is_exit_2(cli, tmp_path, monkeypatch):
    import tempfile

    rel = make_release(tmp_path / "rel", "org/ro")
    (rel / "README.md").write_text(UNFIXED_CARD)
    before = listing(tmp_path)

    def read_only(*a, **k):  # root ignores chmod, so the read-only file system is simulated
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    r = cli("card", "fix", rel)
    assert r.code == 2, (r.code, r.err)
    assert "README.md" in r.err and "Read-only file system" in r.err and one_paragraph(r.err)
    assert listing(tmp_path) == before


def test_out_that_is_a_directory_is_exit_2(cli, tmp_path):
    target = tmp_path / "report.json"
    target.mkdir()
    (target / "keep").write_text("x")
    before = listing(tmp_path)
    r = cli("verify", MODELS / CASE, "--golden", GOLDEN, "--out", target, "--no-scan")
    assert r.code == 2 and str(target) in r.err and "is a directory" in r.err, r.err
    r = cli("golden", MODELS / CASE, "--out", target, "--ids", "2,5,9")
    assert r.code == 2 and str(target) in r.err and "is a directory" in r.err, r.err
    assert listing(tmp_path) == before


def test_non_utf8_card_in_variants_table_write_is_exit_2(cli, tmp_path):
    rel = make_release(tmp_path / "rel", "org/m")
    (rel / "gguf").mkdir()
    (rel / "gguf" / "m.Q4_K_M.gguf").write_bytes(b"GGUF" + bytes(60))
    (rel / "release.yaml").write_text(
        "repo: org/m\nbase_model: google/gemma-2b\nbase_model_relation: finetune\nfiles: [README.md]\n"
        "variants:\n  - {format: gguf, quant: Q4_K_M, repo: org/m, file: gguf/m.Q4_K_M.gguf, local_dir: .}\n")
    (rel / "README.md").write_bytes(b"---\nlicense: gemma\n---\n# caf\xe9 latin-1\n")
    before = listing(tmp_path)
    r = cli("variants", "table", rel, "--write")
    assert r.code == 2, (r.code, r.out, r.err)
    assert str(rel / "README.md") in r.err and "not UTF-8" in r.err and one_paragraph(r.err)
    assert listing(tmp_path) == before


@pytest.mark.parametrize("args, option", [
    (["verify", "M", "--golden", "G", "--min-top1", "5"], "--min-top1"),
    (["verify", "M", "--golden", "G", "--min-top1", "-0.1"], "--min-top1"),
    (["verify", "M", "--golden", "G", "--max-kl", "-1"], "--max-kl"),
    (["verify", "M", "--golden", "G", "--max-mean-kl", "-1"], "--max-mean-kl"),
    (["verify", "M", "--golden", "G", "--atol", "-1"], "--atol"),
    (["verify", "M", "--golden", "G", "--atol", "nan"], "--atol"),
    (["verify", "M", "--golden", "G", "--rtol", "-1e-5"], "--rtol"),
    (["verify", "M", "--golden", "G", "--max-kl", "inf"], "--max-kl"),
    (["golden", "M", "--out", "O", "--storage", "topk", "--topk", "0"], "--topk"),
    (["generate", "M", "hi", "--top-p", "1.5"], "--top-p"),
    (["generate", "M", "hi", "--temperature", "nan"], "--temperature"),
    (["generate", "M", "hi", "--max-new-tokens", "-1"], "--max-new-tokens"),
    (["--hub-timeout", "0", "card", "check", "M"], "--hub-timeout"),
])
def test_numeric_options_out_of_range_are_usage_errors(args, option, cli, tmp_path):
    args = [str(tmp_path / a) if a in ("M", "G", "O") else a for a in args]
    r = cli(*args)
    assert r.code == 2, (r.code, r.err)
    assert "Invalid value" in r.err and option in r.err and "Usage" in r.err, r.err
    assert list(tmp_path.iterdir()) == []  # nothing was read or written


def test_debug_adds_the_traceback_and_keeps_exit_2(cli, tmp_path):
    target = tmp_path / "dir"
    target.mkdir()
    r = cli("--debug", "verify", MODELS / CASE, "--golden", GOLDEN, "--out", target, "--no-scan")
    assert r.code == 2
    assert "Traceback" in r.err and "is a directory" in r.err and str(target) in r.err
    assert listing(tmp_path) == {"dir": 4096} or listing(tmp_path).keys() == {"dir"}


def test_xet_transfers_get_the_same_bound(tmp_path):
    """hf_xet (Xet-backed repos) has its own client and reads its timeouts from the environment: after
    install_timeout, hf_xet's own config holds the bound; a value the user set is kept."""
    pytest.importorskip("hf_xet")
    code = ("import hf_xet\n"
            "from release.hub import install_timeout\n"
            "install_timeout(7.5)\n"
            "c = dict(iter(hf_xet.XetConfig()))\n"
            "print(c['client.connect_timeout'].total_seconds(), c['client.read_timeout'].total_seconds(),"
            " c['client.retry_max_duration'].total_seconds())\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_XET_")}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["7.5", "7.5", "7.5"]  # hf_xet's defaults: 60, 300, 360
    env["HF_XET_CLIENT_READ_TIMEOUT"] = "90s"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["7.5", "90.0", "7.5"], r.stderr
