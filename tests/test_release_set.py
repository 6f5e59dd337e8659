"""One release, one file set: every check judges exactly the files `publish` uploads.

The end-to-end cases run the real CLI and huggingface_hub against the loopback Hub
(tests/hubserver.py); the property test compares, for random directories and random
`files` / `exclude` patterns, what the checks say is present with the dry-run plan.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubserver import HubServer
from release_fixture import NOTICE, hub_env, make_release, run_cli, run_py

from release.card.rules import check_path
from release.errors import InputError
from release.releaseset import resolve

TOKEN = "hf_SETtoken0123456789abcdefghij"
TERMS = "Gemma Terms of Use\n\nLast modified: March 24, 2025\n\nBy using, reproducing, modifying ... Gemma ...\n"


@pytest.fixture(scope="module")
def hub():
    server = HubServer(token=TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def env(hub, tmp_path):
    return hub_env(hub.url, tmp_path / "hf_home", TOKEN)


def _with_terms(rel: Path, files: str) -> Path:
    """The fixture release, with its NOTICE as NOTICE.txt, a terms copy, and the given `files` list."""
    (rel / "NOTICE").rename(rel / "NOTICE.txt")
    (rel / "GEMMA_TERMS_OF_USE.md").write_text(TERMS)
    text = (rel / "release.yaml").read_text()
    (rel / "release.yaml").write_text(text.split("files:")[0] + f"files: {files}\n")
    return rel


def _writes(hub: HubServer, since: int) -> list:
    return [(m, p) for m, p in hub.state.requests[since:] if m in ("POST", "PUT")]


def test_left_out_notice_and_terms_fail_and_upload_nothing_then_land_byte_identical(hub, env, tmp_path):
    rel = _with_terms(make_release(tmp_path / "r", "org/set-e2e"), "['*.safetensors', config.json, README.md]")
    n = len(hub.state.requests)
    r = run_cli(["publish", str(rel)], env, tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "GEMMA002" in r.stderr and "NOTICE.txt is in the directory but not in the release" in r.stderr
    assert "GEMMA003" in r.stderr and "GEMMA_TERMS_OF_USE.md" in r.stderr and "nothing was uploaded" in r.stderr
    assert "org/set-e2e" not in hub.state.repos and _writes(hub, n) == []

    # card check on the directory judges the same set, and names what it leaves out
    c = run_cli(["card", "check", str(rel), "--format", "json"], env, tmp_path)
    rules = {f["rule"] for f in json.loads(c.stdout)}
    assert c.returncode == 1 and {"GEMMA002", "GEMMA003", "PUBLISH002"} <= rules

    rel = _with_terms(make_release(tmp_path / "r2", "org/set-e2e"),
                      "['*.safetensors', config.json, README.md, NOTICE.txt, GEMMA_TERMS_OF_USE.md]")
    r = run_cli(["publish", str(rel)], env, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "uploaded 5 files" in r.stdout
    dl = tmp_path / "dl"
    d = run_py(f"from huggingface_hub import snapshot_download; snapshot_download('org/set-e2e', local_dir=r'{dl}')", env, tmp_path)
    assert d.returncode == 0, d.stderr
    got = {p.name: p.read_bytes() for p in dl.iterdir() if p.is_file()}
    local = {p.name: p.read_bytes() for p in rel.iterdir() if p.is_file() and p.name != "release.yaml"}
    assert {"NOTICE.txt", "GEMMA_TERMS_OF_USE.md"} <= set(got)
    assert {k: got[k] for k in local} == local


def test_exclude_notice_fails_the_checks(tmp_path):
    rel = make_release(tmp_path / "x", "org/x")
    (rel / "release.yaml").write_text((rel / "release.yaml").read_text() + "exclude: [NOTICE]\n")
    found = {f.rule: f for f in check_path(rel)}
    assert "GEMMA002" in found and found["GEMMA002"].severity == "error"
    assert "NOTICE (excluded by 'NOTICE')" in found["PUBLISH002"].message


def test_tag_pointing_elsewhere_fails_before_any_commit(hub, env, tmp_path):
    rel = make_release(tmp_path / "t", "org/set-tag")
    assert run_cli(["publish", str(rel), "--tag", "v1"], env, tmp_path).returncode == 0
    head = hub.state.head("org/set-tag", "main")
    (rel / "config.json").write_text((rel / "config.json").read_text() + "\n")
    n = len(hub.state.requests)
    r = run_cli(["publish", str(rel), "--tag", "v1"], env, tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "tag 'v1' already exists" in r.stderr and "nothing was uploaded" in r.stderr
    assert hub.state.head("org/set-tag", "main") == head
    assert not any("/commit/" in p or "lfs" in p or "/preupload/" in p for _, p in _writes(hub, n))


def test_card_link_to_a_file_outside_the_set_is_card011(tmp_path):
    rel = make_release(tmp_path / "l", "org/l", extra_card="\nThe full terms: [LICENSE.md](./LICENSE.md), "
                       "<a href=\"NOTICE\">notice</a>, [model](model.safetensors), [web](https://ai.google.dev/gemma/terms).\n")
    (rel / "LICENSE.md").write_text(TERMS)
    found = [f for f in check_path(rel) if f.rule == "CARD011"]
    assert [f.message.split("'")[1] for f in found] == ["LICENSE.md"]
    assert "left out of the release's files" in found[0].message and found[0].line and found[0].line > 10
    (rel / "LICENSE.md").unlink()
    assert "does not exist" in next(f.message for f in check_path(rel) if f.rule == "CARD011")


def test_readme_left_out_is_card012(tmp_path):
    rel = make_release(tmp_path / "c", "org/c")
    (rel / "release.yaml").write_text("repo: org/c\nfiles: ['*.safetensors', config.json, NOTICE]\n")
    assert "CARD012" in {f.rule for f in check_path(rel)}


def test_verify_runs_on_the_staged_set_only(tmp_path):
    """publish verifies the files it uploads: a golden check cannot pass on weights that are not uploaded."""
    import shutil

    from release.publish.plan import Options, plan
    from release.weights.golden import make_golden
    from release.weights.prompts import parse_ids

    rel = make_release(tmp_path / "v", "org/v")
    for f in ("config.json", "model.safetensors"):
        shutil.copy(Path(__file__).parent / "data/models/gemma1_mqa_bf16" / f, rel / f)
    make_golden(rel, rel / "before.golden", [parse_ids("2,5,7")])
    yaml_text = (rel / "release.yaml").read_text() + "golden: before.golden\n"
    (rel / "release.yaml").write_text(yaml_text)
    p = plan(rel, Options(dry_run=True))
    assert p.ok, [f.message for f in p.findings if f.severity == "error"]
    assert "before.golden" in {n for n, _ in p.left_out} and "model.safetensors" in {f.path_in_repo for f in p.files}

    (rel / "release.yaml").write_text(yaml_text.replace("'*.safetensors', ", ""))
    with pytest.raises(InputError, match="no safetensors weights"):
        plan(rel, Options(dry_run=True))


@pytest.mark.parametrize("text, message", [
    ("repo: a/b\nfiles: [README.md]\nfiles: [NOTICE]\n", "appears again"),
    ("repo: a/b\nfiles: &x [a, b]\n" + "".join(f"k{i}: &k{i} [*{'x' if i == 0 else f'k{i - 1}'}, *{'x' if i == 0 else f'k{i - 1}'}]\n" for i in range(120)),
     "alias"),
    ("repo: a/b\nfiles: &f [a, *f]\n", "recursive alias"),
    ("repo: a/b\nfiles: [a]\nvariants:\n  - {format: gguf, quant: Q4_0, repo: a/b-GGUF, file: m.gguf, local_dir: ../elsewhere}\n", "outside"),
])
def test_bad_release_yaml_is_a_clear_error_in_well_under_a_second(tmp_path, cli, text, message):
    (tmp_path / "release.yaml").write_text(text)
    (tmp_path / "README.md").write_text("# x\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=message):
        resolve(tmp_path)
    r = cli("card", "check", str(tmp_path))
    assert time.perf_counter() - t0 < 1.5
    assert r.code == 2 and "release.yaml" in r.err and message in r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_prompts_alias_bomb_is_refused_fast(tmp_path, cli):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    (tmp_path / "p.yaml").write_text("\n".join(lines) + "\nprompts: [*a8]\n")
    t0 = time.perf_counter()
    r = cli("golden", str(Path(__file__).parent / "data/models/gemma1_mqa_bf16"), "--prompts", str(tmp_path / "p.yaml"),
            "--out", str(tmp_path / "g.safetensors"))
    assert time.perf_counter() - t0 < 2 and r.code == 2 and "p.yaml" in r.err
    assert not (tmp_path / "g.safetensors").exists()


# --- property: the checks and the plan see the same files ------------------------------------------

USUAL = ["config.json", "model.safetensors", "tokenizer.model", "README.md", "NOTICE", "NOTICE.txt", "LICENSE",
         "GEMMA_TERMS_OF_USE.md", "USE_POLICY.md", "chat_template.jinja", "notes.txt", "sub/extra.json"]
PATTERNS = ["*", "*.json", "*.md", "*.txt", "NOTICE*", "LICENSE", "README.md", "*.safetensors", "**/*", "sub/*",
            "config.json", "GEMMA_TERMS_OF_USE.md", "*TERMS*", "[A-Z]*"]


def _fill(root: Path, names: list[str]) -> None:
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        if n == "README.md":
            p.write_text(make_release.__globals__["CARD"].format(name="p", extra=""))
        elif n.startswith("NOTICE"):
            p.write_text(NOTICE)
        elif n in ("LICENSE", "GEMMA_TERMS_OF_USE.md"):
            p.write_text(TERMS)
        elif n == "config.json":
            p.write_text(json.dumps({"model_type": "gemma"}))
        else:
            p.write_text(n)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(present=st.lists(st.sampled_from(USUAL), min_size=1, unique=True),
       files=st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=4, unique=True),
       exclude=st.lists(st.sampled_from(PATTERNS + ["NOTICE", "*.txt"]), max_size=2, unique=True))
def test_checks_judge_exactly_what_the_dry_run_would_upload(tmp_path, present, files, exclude):
    import tempfile

    from release.publish.plan import Options, plan

    root = Path(tempfile.mkdtemp(dir=tmp_path))
    _fill(root, present)
    (root / "release.yaml").write_text(f"repo: org/p\nfiles: {json.dumps(files)}\nexclude: {json.dumps(exclude)}\n")
    p = plan(root, Options(dry_run=True))
    uploaded = {f.path_in_repo for f in p.files}
    rules = {f.rule for f in p.findings if f.severity == "error"}
    left = next((f for f in p.findings if f.rule == "PUBLISH002"), None)

    # every file of the directory is either uploaded or reported as left out, never both
    on_disk = {q.relative_to(root).as_posix() for q in root.rglob("*") if q.is_file()}
    assert uploaded | {n for n, _ in p.left_out} == on_disk and not uploaded & {n for n, _ in p.left_out}
    assert (left is not None) == bool(p.left_out)
    assert "release.yaml" not in uploaded
    # the card rules saw the same set: README, NOTICE and a terms copy count only when uploaded
    assert ("CARD012" in rules) == ("README.md" in on_disk and "README.md" not in uploaded)
    assert ("CARD001" in rules) == ("README.md" not in on_disk)
    if "README.md" in uploaded:
        assert ("GEMMA002" in rules) == (not {"NOTICE", "NOTICE.txt"} & uploaded)
        has_copy = bool({"LICENSE", "GEMMA_TERMS_OF_USE.md"} & uploaded)
        gemma003 = [f for f in p.findings if f.rule == "GEMMA003"]
        assert (not gemma003) == has_copy
        links = [f for f in p.findings if f.rule == "CARD011"]
        assert links == []  # the fixture card links no local file


def test_hostile_config_through_verify_repo_is_exit_2_in_seconds(hub, env, tmp_path):
    """config.json values are bounded wherever the config comes from: `num_hidden_layers: 1e9` on the Hub too."""
    import shutil

    rel = make_release(tmp_path / "h", "org/set-hostile-config")
    for f in ("config.json", "model.safetensors"):
        shutil.copy(Path(__file__).parent / "data/models/gemma1_mqa_bf16" / f, rel / f)
    golden = Path(__file__).parent / "data/goldens/gemma1_mqa_bf16.safetensors"
    cfg = json.loads((rel / "config.json").read_text())
    cfg["num_hidden_layers"] = 1e9
    (rel / "config.json").write_text(json.dumps(cfg))
    assert run_cli(["publish", str(rel)], env, tmp_path).returncode == 0
    t0 = time.perf_counter()
    r = run_cli(["verify", "--repo", "org/set-hostile-config", "--golden", str(golden)], env, tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "num_hidden_layers" in r.stderr and "config.json" in r.stderr and "Traceback" not in r.stderr
    assert time.perf_counter() - t0 < 20  # a subprocess start plus a download; never an attempt to build 1e9 layers


def test_verify_repo_of_an_adapter_with_its_base_repo(hub, env, tmp_path):
    """`verify --repo ADAPTER --base-repo BASE`: both come from the Hub; the adapter runs on the downloaded base."""
    data = Path(__file__).parent / "data"
    for repo, folder in (("org/set-lora", data / "adapters/gemma2_lora_attn"), ("org/set-base", data / "models/gemma2_gqa_softcap")):
        up = run_py(f"from huggingface_hub import HfApi; a = HfApi(); a.create_repo({repo!r}, exist_ok=True); "
                    f"a.upload_folder(repo_id={repo!r}, folder_path=r'{folder}')", env, tmp_path)
        assert up.returncode == 0, up.stderr
    golden = data / "adapters/goldens/gemma2_lora_attn.safetensors"
    r = run_cli(["verify", "--repo", "org/set-lora", "--base-repo", "org/set-base", "--golden", str(golden), "--json"], env, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["ok"]
    # without the base the adapter cannot run (its base_model_name_or_path is not a local directory): exit 2, said clearly
    r = run_cli(["verify", "--repo", "org/set-lora", "--golden", str(golden)], env, tmp_path)
    assert r.returncode == 2 and "base" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(["verify", "tests/data/models/gemma2_gqa_softcap", "--base-repo", "org/set-base", "--golden", str(golden)], env, tmp_path)
    assert r.returncode == 2 and "--base-repo goes with --repo" in r.stderr
