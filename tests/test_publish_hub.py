"""`gemma-release publish` end to end against the loopback Hub (tests/hubserver.py).

The real huggingface_hub client runs in a subprocess (it reads HF_ENDPOINT at
import) with classic LFS (HF_HUB_DISABLE_XET=1); nothing in it is mocked.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hubserver import HubServer
from release_fixture import CARD, NOTICE, hub_env, make_release, run_cli, run_py

TOKEN = "hf_SENTINELtoken0123456789abcdef"


@pytest.fixture(scope="module")
def hub():
    server = HubServer(token=TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def env(hub, tmp_path):
    return hub_env(hub.url, tmp_path / "hf_home", TOKEN)


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in root.iterdir() if p.is_file() and p.name != "release.yaml"}


def _head(hub: HubServer, repo: str, rev: str = "main") -> str | None:
    try:
        return hub.state.head(repo, rev)
    except Exception:  # noqa: BLE001 - repo or revision missing
        return None


def test_round_trip_then_snapshot_download_is_byte_identical(hub, env, tmp_path):
    rel = make_release(tmp_path / "rt", "org/round-trip", shards=2)
    r = run_cli(["publish", str(rel)], env, tmp_path)
    assert r.returncode == 0, r.stderr
    head = _head(hub, "org/round-trip")
    assert f"/org/round-trip/commit/{head}" in r.stdout
    assert "uploaded 5 files" in r.stdout
    # one commit on top of the repo's initial commit
    commit = hub.state.repos["org/round-trip"].commits[head]
    assert hub.state.repos["org/round-trip"].commits[commit.parent].parent is None
    # the weights went through LFS and were downloaded from the storage origin without the token
    assert commit.files["model-00001-of-00002.safetensors"].lfs_oid is not None
    dl = tmp_path / "dl"
    code = f"from huggingface_hub import snapshot_download; print(snapshot_download('org/round-trip', local_dir=r'{dl}'))"
    d = run_py(code, env, tmp_path)
    assert d.returncode == 0, d.stderr
    got = {p.name: p.read_bytes() for p in dl.iterdir() if p.is_file()}
    for name, data in _files(rel).items():
        assert got[name] == data, name
    assert not hub.state.storage_saw_auth


def test_republish_is_a_noop(hub, env, tmp_path):
    rel = make_release(tmp_path / "noop", "org/noop")
    assert run_cli(["publish", str(rel)], env, tmp_path).returncode == 0
    head = _head(hub, "org/noop")
    n_requests = len(hub.state.requests)
    r = run_cli(["publish", str(rel), "--tag", "v1"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "nothing to upload" in r.stdout
    assert _head(hub, "org/noop") == head
    assert hub.state.repos["org/noop"].tags == {"v1": head}
    new = hub.state.requests[n_requests:]
    assert not any("/commit/" in p or "/preupload/" in p or "lfs" in p for _, p in new), new


def test_changed_file_uploads_only_that_file(hub, env, tmp_path):
    rel = make_release(tmp_path / "chg", "org/changed")
    assert run_cli(["publish", str(rel)], env, tmp_path).returncode == 0
    (rel / "config.json").write_text((rel / "config.json").read_text().replace('"hidden_size": 8', '"hidden_size": 8 '))
    r = run_cli(["publish", str(rel), "-m", "fix config"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "uploaded 1 files" in r.stdout
    commit = hub.state.repos["org/changed"].commits[_head(hub, "org/changed")]
    assert commit.message == "fix config"
    assert hub.state.file_bytes("org/changed", "config.json") == (rel / "config.json").read_bytes()


def test_failing_checks_upload_nothing(hub, env, tmp_path):
    table = ("\n| Model | HF | GPTQ | GGUF | AWQ |\n|---|---|---|---|---|\n"
             "| tiny | [Link](https://huggingface.co/org/bad-checks) | coming soon | coming soon | coming soon |\n")
    rel = make_release(tmp_path / "bad", "org/bad-checks", extra_card=table)
    n_requests = len(hub.state.requests)
    r = run_cli(["publish", str(rel)], env, tmp_path)
    assert r.returncode == 1
    assert "QUANT001" in r.stderr and "nothing was uploaded" in r.stderr
    assert "org/bad-checks" not in hub.state.repos
    assert not any(m in ("POST", "PUT") for m, _ in hub.state.requests[n_requests:])


def test_bad_token_is_a_clear_error_with_exit_2(hub, tmp_path):
    rel = make_release(tmp_path / "tok", "org/bad-token")
    env = hub_env(hub.url, tmp_path / "home", "hf_wrongTOKENwrongTOKEN")
    r = run_cli(["publish", str(rel)], env, tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "refused the credentials" in r.stderr and "HF_TOKEN" in r.stderr
    assert "Traceback" not in r.stderr
    assert "hf_wrongTOKENwrongTOKEN" not in r.stdout + r.stderr
    assert "org/bad-token" not in hub.state.repos


def test_failure_mid_upload_leaves_previous_commit_and_rerun_completes(hub, env, tmp_path):
    rel = make_release(tmp_path / "mid", "org/mid-upload", shards=1)
    assert run_cli(["publish", str(rel)], env, tmp_path).returncode == 0
    before = _head(hub, "org/mid-upload")
    # a new version with three LFS files; the storage accepts one PUT and then fails
    shutil.rmtree(rel)
    make_release(rel, "org/mid-upload", seed=1, shards=3)
    hub.state.fail["lfs_upload"] = (1, 507)
    hub.state.counters.pop("lfs_upload", None)
    try:
        r = run_cli(["publish", str(rel)], env, tmp_path)
    finally:
        del hub.state.fail["lfs_upload"]
    assert r.returncode == 2, (r.stdout, r.stderr)  # the Hub failed: 2, not "a check failed" (1)
    assert "publish failed" in r.stderr and "Traceback" not in r.stderr
    assert _head(hub, "org/mid-upload") == before
    # the commit endpoint failing is the other way an upload dies: still no new commit
    hub.state.fail["commit"] = (0, 500)
    try:
        r = run_cli(["publish", str(rel)], env, tmp_path)
    finally:
        del hub.state.fail["commit"]
    assert r.returncode == 2 and _head(hub, "org/mid-upload") == before
    # a re-run completes, reusing what the storage already holds
    puts_before = sum(1 for m, p in hub.state.requests if m == "PUT")
    r = run_cli(["publish", str(rel)], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert _head(hub, "org/mid-upload") != before
    assert sum(1 for m, p in hub.state.requests if m == "PUT") == puts_before  # all 3 objects were already stored
    for name, data in _files(rel).items():
        assert hub.state.file_bytes("org/mid-upload", name) == data


def test_sentinel_token_never_appears_in_output(hub, tmp_path):
    rel = make_release(tmp_path / "sent", "org/sentinel")
    home = tmp_path / "home"
    env = hub_env(hub.url, home, TOKEN, HF_DEBUG="1", HF_HUB_VERBOSITY="debug")
    runs = [
        run_cli(["publish", str(rel)], env, tmp_path),  # success, debug logging on
        run_cli(["publish", str(rel), "--json"], env, tmp_path),  # no-op
        run_cli(["publish", str(rel), "--token", "hf_cliSENTINEL000000000"], env, tmp_path),  # wrong token on the CLI
        run_cli(["--debug", "publish", str(rel), "--token", "hf_cliSENTINEL000000000"], env, tmp_path),
    ]
    assert runs[0].returncode == 0 and runs[1].returncode == 0 and runs[2].returncode == 2
    for r in runs:
        text = r.stdout + r.stderr
        assert TOKEN not in text and "hf_cliSENTINEL000000000" not in text
    logs = "".join(p.read_text(errors="replace") for p in home.rglob("*") if p.is_file() and p.suffix in (".log", ".txt", ""))
    assert TOKEN not in logs


def test_remote_file_altered_after_upload_is_caught(hub, env, tmp_path):
    rel = make_release(tmp_path / "alt", "org/altered")
    hub.state.corrupt_after_commit = "config.json"
    r = run_cli(["publish", str(rel), "--json"], env, tmp_path)
    assert r.returncode == 1, (r.stdout, r.stderr)
    report = json.loads(r.stdout)
    rules = {(f["rule"], f["path"]) for f in report["findings"]}
    assert ("PUBLISH011", "config.json") in rules
    assert "do not match" in r.stderr


def test_dry_run_prints_the_plan_and_touches_no_network(hub, env, tmp_path):
    rel = make_release(tmp_path / "dry", "org/dry")
    n_requests = len(hub.state.requests)
    r = run_cli(["publish", str(rel), "--dry-run", "--repo", "org/other", "--revision", "dev", "-m", "msg here"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert hub.state.requests[n_requests:] == []
    assert "org/other@dev" in r.stdout and "msg here" in r.stdout
    import hashlib

    for name, data in _files(rel).items():
        assert name in r.stdout and hashlib.sha256(data).hexdigest() in r.stdout and str(len(data)) in r.stdout


def test_revision_pr_and_private(hub, env, tmp_path):
    rel = make_release(tmp_path / "pr", "org/pr-repo")
    with open(rel / "release.yaml", "a") as f:
        f.write("gating: {gated: manual}\n")
    r = run_cli(["publish", str(rel), "--private", "--revision", "dev", "--tag", "v0.1"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    repo = hub.state.repos["org/pr-repo"]
    assert repo.gated == "manual"
    assert repo.private and repo.tags["v0.1"] == repo.branches["dev"] != repo.branches["main"]
    (rel / "NOTICE").write_text((rel / "NOTICE").read_text() + "Modified by org.\n")
    main_before = repo.branches["main"]
    r = run_cli(["publish", str(rel), "--create-pr"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "/org/pr-repo/discussions/1" in r.stdout
    assert repo.branches["main"] == main_before and 1 in repo.prs


def test_download_for_verify_fetches_only_model_files(hub, env, tmp_path):
    rel = make_release(tmp_path / "dv", "org/for-verify")
    (rel / "tokenizer.model").write_bytes(b"\x00fake sentencepiece")
    (rel / "release.yaml").write_text((rel / "release.yaml").read_text().replace("NOTICE]", "NOTICE, tokenizer.model]"))
    assert run_cli(["publish", str(rel), "--tag", "v1"], env, tmp_path).returncode == 0
    code = "from release.hub import download_for_verify; print(download_for_verify('org/for-verify', 'v1'))"
    r = run_py(code, env, tmp_path)
    assert r.returncode == 0, r.stderr
    snap = Path(r.stdout.strip().splitlines()[-1])
    assert sorted(p.name for p in snap.iterdir()) == ["config.json", "model.safetensors", "tokenizer.model"]
    assert (snap / "model.safetensors").read_bytes() == (rel / "model.safetensors").read_bytes()
    r = run_py("from release.hub import download_for_verify; download_for_verify('org/nope', None)", env, tmp_path)
    assert r.returncode != 0 and "not found" in r.stderr


def test_variant_rows_checked_against_hub_listing_and_table_generated_from_it(hub, env, tmp_path):
    gguf = tmp_path / "m-GGUF"
    gguf.mkdir()
    (gguf / "m.Q4_K_M.gguf").write_bytes(b"G" * 4000)
    (gguf / "m-Q8_0-00001-of-00002.gguf").write_bytes(b"G" * 3000)
    (gguf / "m-Q8_0-00002-of-00002.gguf").write_bytes(b"G" * 3000)
    card_text = CARD.format(name="m-GGUF", extra="").replace("base_model: google/gemma-2b\nbase_model_relation: finetune",
                                                            "base_model: org/var-base\nbase_model_relation: quantized")
    (gguf / "README.md").write_text(card_text.replace("fine-tune of google/gemma-2b", "GGUF quantization of org/var-base"))
    (gguf / "release.yaml").write_text("repo: org/var-GGUF\nfiles: ['*.gguf', README.md, NOTICE]\n")
    (gguf / "NOTICE").write_text(NOTICE)
    r = run_cli(["publish", str(gguf)], env, tmp_path)
    assert r.returncode == 0, r.stderr
    base = "http://huggingface.co/org/var-GGUF/blob/main"
    card = tmp_path / "card.md"
    card.write_text(
        "| Filename | Quant type | File Size |\n|---|---|---|\n"
        f"| [m.Q4_K_M.gguf]({base}/m.Q4_K_M.gguf) | Q4_K_M | 4.00 kB |\n"
        f"| [m-Q8_0.gguf]({base}/m-Q8_0-00001-of-00002.gguf) | Q8_0 | 9.00 kB |\n"
        f"| [m.Q2_K.gguf]({base}/m.Q2_K.gguf) | Q2_K | 1.00 kB |\n"
    )
    r = run_cli(["variants", "check", str(card), "--hub", "--format", "json"], env, tmp_path)
    assert r.returncode == 1, r.stderr
    got = {(f["rule"], f["line"]) for f in json.loads(r.stdout)}
    assert got == {("QUANT005", 4), ("QUANT004", 5)}  # Q8_0 shards sum to 6 kB; Q2_K does not exist
    # generate the table for a release whose variants live on the (loopback) Hub
    rel = make_release(tmp_path / "var-base", "org/var-base")
    with open(rel / "release.yaml", "a") as f:
        f.write("variants:\n  - {format: gguf, quant: Q4_K_M, repo: org/var-GGUF, file: m.Q4_K_M.gguf}\n"
                "  - {format: gguf, quant: Q8_0, repo: org/var-GGUF, shards: 'm-Q8_0-{index:05d}-of-{total:05d}.gguf'}\n")
    r = run_cli(["variants", "table", str(rel), "--hub", "--write"], env, tmp_path)
    assert r.returncode == 0 and "updated" in r.stdout, r.stderr
    text = (rel / "README.md").read_text()
    assert "| Q8_0 | 6.00 kB | (2 parts) |" in text and f"{hub.url}/org/var-GGUF/blob/main/m.Q4_K_M.gguf" in text
    r = run_cli(["variants", "table", str(rel), "--hub", "--write"], env, tmp_path)
    assert "unchanged" in r.stdout and (rel / "README.md").read_text() == text
    r = run_cli(["variants", "check", str(rel), "--hub"], env, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_publish_verifies_a_real_model_then_verify_repo_from_the_hub(hub, env, tmp_path):
    """A real tiny Gemma 2 release: publish runs verify against its golden, then `verify --repo` passes."""
    root = Path(__file__).resolve().parent
    case = "gemma2_gqa_softcap"
    rel = tmp_path / "g2"
    shutil.copytree(root / "data" / "models" / case, rel)
    shutil.copy(root / "data" / "goldens" / f"{case}.safetensors", rel / "golden.safetensors")
    (rel / "README.md").write_text(CARD.format(name="g2", extra=""))
    (rel / "NOTICE").write_text(NOTICE)
    (rel / "release.yaml").write_text(
        "repo: org/g2\nbase_model: google/gemma-2b\nbase_model_relation: finetune\n"
        "golden: golden.safetensors\nfiles: ['*.safetensors', config.json, README.md, NOTICE]\n")
    r = run_cli(["publish", str(rel), "--tag", "v1"], env, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_cli(["verify", "--repo", "org/g2@v1", "--golden", str(rel / "golden.safetensors"), "--json"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ok"]
    # A damaged golden-vs-weights pair stops publish before any upload.
    from safetensors.numpy import load_file, save_file

    t = load_file(str(rel / "model.safetensors"))
    # gate_proj, not up_proj: a pure rescale of up_proj is undone by Gemma 2's post-feed-forward RMSNorm.
    name = next(k for k in t if k.endswith("layers.0.mlp.gate_proj.weight"))
    t[name] = t[name] * 2
    save_file(t, str(rel / "model.safetensors"))
    before = _head(hub, "org/g2")
    r = run_cli(["publish", str(rel)], env, tmp_path)
    assert r.returncode == 1 and "LOGITS001" in r.stdout + r.stderr
    assert _head(hub, "org/g2") == before
    r = run_cli(["verify", "--repo", "org/nope", "--golden", str(rel / "golden.safetensors")], env, tmp_path)
    assert r.returncode in (1, 2) and "Traceback" not in r.stderr


# --- Hub errors name what failed -------------------------------------------------------------------------


def _published_tiny(hub, env, tmp_path, repo: str) -> Path:
    rel = make_release(tmp_path / repo.split("/")[1], repo)
    r = run_cli(["publish", str(rel)], env, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    return rel


def test_a_missing_revision_is_named(hub, env, tmp_path):
    _published_tiny(hub, env, tmp_path, "org/revs")
    for cmd in (["verify", "--repo", "org/revs@no-such-branch", "--golden", str(tmp_path / "x.golden")],
                ["card", "check", "--repo", "org/revs@no-such-branch"]):
        r = run_cli(cmd, env, tmp_path)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "'no-such-branch'" in r.stderr and "not found" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_refused_download_is_about_reading_not_write_access(hub, env, tmp_path):
    _published_tiny(hub, env, tmp_path, "org/denied")
    hub.state.fail["resolve"] = (0, 401)
    try:
        for cmd in (["verify", "--repo", "org/denied", "--golden", str(tmp_path / "x.golden")],
                    ["card", "check", "--repo", "org/denied"]):
            r = run_cli(cmd, env, tmp_path)
            assert r.returncode == 2, r.stdout + r.stderr
            assert "HTTP 401" in r.stderr and "read" in r.stderr and "org/denied" in r.stderr, r.stderr
            assert "write access" not in r.stderr and "nothing was uploaded" not in r.stderr, r.stderr
            assert TOKEN not in r.stderr
    finally:
        hub.state.fail.pop("resolve", None)
    env_bad = {**env, "HF_TOKEN": "hf_WRONGtoken0123456789abcdefghij"}  # a refused write still says what it needs
    rel = make_release(tmp_path / "w", "org/denied-write")
    r = run_cli(["publish", str(rel)], env_bad, tmp_path)
    assert r.returncode == 2 and "write access" in r.stderr and "hf_WRONG" not in r.stderr, r.stderr
