"""gemma-release in the user's own CI, each integration run for real and offline.

* the GitHub Action (action.yml): validated against the GitHub Actions schema that
  check-jsonschema vendors from SchemaStore, then its `run:` steps executed with bash
  the way a runner would (inputs substituted, GITHUB_OUTPUT passed between steps,
  the install step pip-installing this source tree offline into a scratch venv);
* the pre-commit hooks (.pre-commit-hooks.yaml), through `pre-commit try-repo`;
* the pytest plugin (gemma_golden fixture, --gemma-golden), through pytester;
* `card check --repo` / `variants check --repo` against the loopback Hub (tests/hubserver.py);
* the CLI's --version, completion, help and non-terminal progress output.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import GOLDENS, MODELS
from hubserver import HubServer
from release_fixture import CARD, NOTICE, hub_env, make_release, run_cli
from venvs import overlay_venv

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TOKEN = "hf_CItoken0123456789abcdefghij"
pytest_plugins = ["pytester"]


def _vendored_schema(name: str) -> dict:
    """A SchemaStore schema as check-jsonschema ships it (no network)."""
    import check_jsonschema

    path = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / name
    return json.loads(path.read_text(encoding="utf-8"))


def _validate(instance: object, schema: dict) -> list[str]:
    import jsonschema

    cls = jsonschema.validators.validator_for(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in cls(schema).iter_errors(instance)]


def _release_dir(root: Path, case: str = "gemma2_gqa_softcap", card: str | None = None) -> Path:
    """A tiny checkpoint with a compliant card and NOTICE: what a user's repository would hold."""
    shutil.copytree(MODELS / case, root)
    (root / "README.md").write_text(card if card is not None else CARD.format(name="tiny", extra=""))
    (root / "NOTICE").write_text(NOTICE)
    return root


# --- the GitHub Action ------------------------------------------------------------------------


def test_action_yml_is_valid_against_the_github_actions_schema():
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert _validate(action, _vendored_schema("github-actions.json")) == []
    assert action["runs"]["using"] == "composite"
    assert {"model", "repo", "golden", "card-check", "atol", "rtol", "max-kl", "min-top1"} <= set(action["inputs"])
    uses = [s["uses"] for s in action["runs"]["steps"] if "uses" in s]
    assert any(u.startswith("github/codeql-action/upload-sarif@") for u in uses)
    for step in action["runs"]["steps"]:  # inputs reach the scripts through env, never pasted into the script
        assert "${{" not in step.get("run", ""), step["name"]


def _readme_blocks(lang: str) -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_example_workflow_is_a_valid_workflow_using_the_action():
    workflows = [yaml.safe_load(b) for b in _readme_blocks("yaml") if "runs-on:" in b]
    assert workflows, "README has no example workflow"
    schema = _vendored_schema("github-workflows.json")
    inputs = set(yaml.safe_load((ROOT / "action.yml").read_text())["inputs"])
    for wf in workflows:
        if True in wf:  # YAML 1.1 reads the key `on` as true; GitHub reads it as "on"
            wf["on"] = wf.pop(True)
        assert _validate(wf, schema) == []
        steps = [s for job in wf["jobs"].values() for s in job["steps"]]
        ours = [s for s in steps if "gemma-release" in s.get("uses", "")]
        assert ours and set(ours[0].get("with", {})) <= inputs
        perms = next(iter(wf["jobs"].values())).get("permissions", wf.get("permissions", {}))
        assert perms.get("security-events") == "write"  # upload-sarif needs it


_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def _expr(text: str, inputs: dict[str, str], outputs: dict[str, dict[str, str]]) -> str:
    """The two expression forms action.yml uses in values: inputs.X and steps.ID.outputs.K."""

    def one(m: re.Match) -> str:
        e = m.group(1)
        if e.startswith("inputs."):
            return inputs[e[len("inputs."):]]
        if e.startswith("steps."):
            step, _, key = e[len("steps."):].partition(".outputs.")
            return outputs.get(step, {}).get(key, "")
        raise AssertionError(f"unexpected expression {e!r} in action.yml")

    return _EXPR.sub(one, text)


def _run_action(inputs: dict[str, str], workspace: Path, env: dict[str, str], install: bool) -> tuple[list[tuple[str, int]], str, dict]:
    """Run action.yml's `run:` steps as a runner would (bash -eo pipefail, GITHUB_OUTPUT); `uses:` steps skipped."""
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    values = {k: str(v.get("default", "")) for k, v in action["inputs"].items()}
    values.update(inputs)
    outputs: dict[str, dict[str, str]] = {}
    results: list[tuple[str, int]] = []
    log = ""
    temp = workspace.parent / "runner_temp"
    temp.mkdir(exist_ok=True)
    for i, step in enumerate(action["runs"]["steps"]):
        if "run" not in step:  # actions/setup-python and upload-sarif: GitHub's own, not run offline
            continue
        if step["name"].startswith("Install") and not install:
            continue
        out_file = temp / f"output_{i}"
        out_file.write_text("")
        step_env = {**env, "GITHUB_ACTION_PATH": str(ROOT), "GITHUB_WORKSPACE": str(workspace), "RUNNER_TEMP": str(temp),
                    "GITHUB_OUTPUT": str(out_file)}
        step_env.update({k: _expr(str(v), values, outputs) for k, v in step.get("env", {}).items()})
        script = temp / f"step_{i}.sh"
        script.write_text(step["run"])
        p = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=workspace, env=step_env,
                           capture_output=True, text=True, timeout=300)
        log += f"--- {step['name']} (exit {p.returncode})\n{p.stdout}{p.stderr}"
        results.append((step["name"], p.returncode))
        if "id" in step:
            outputs[step["id"]] = dict(line.split("=", 1) for line in out_file.read_text().splitlines() if "=" in line)
        if p.returncode != 0:
            break
    return results, log, outputs


@pytest.fixture(scope="module")
def action_venv(tmp_path_factory):
    """A scratch venv seeing the test environment's packages (never the base interpreter's), where the action's
    install step puts gemma-release."""
    return overlay_venv(tmp_path_factory.mktemp("action") / "venv")


def _action_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "GITHUB_", "PIP_"))}
    # Offline: pip finds the dependencies already installed (the test environment, seen through the overlay)
    # and builds with its setuptools; nothing is fetched. The venv's bin comes first, as setup-python's would.
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", PIP_NO_INDEX="1", PIP_NO_BUILD_ISOLATION="0",
               PIP_DISABLE_PIP_VERSION_CHECK="1", HF_HUB_OFFLINE="1", NO_COLOR="1")
    return env


def test_action_steps_run_green_on_the_tiny_fixtures(action_venv, tmp_path, record_property):
    """Fresh clone -> green run: install from the action's own path, verify, card check to SARIF, verdict."""
    ws = tmp_path / "ws"
    ws.mkdir()
    model = _release_dir(ws / "model")
    shutil.copy(GOLDENS / "gemma2_gqa_softcap.safetensors", ws / "before.golden")
    t0 = time.monotonic()
    results, log, outputs = _run_action({"model": "model", "golden": "before.golden", "rtol": "1e-5", "min-top1": "1"},
                                        ws, _action_env(action_venv), install=True)
    seconds = time.monotonic() - t0
    record_property("action_seconds", round(seconds, 1))
    print(f"action steps, install included: {seconds:.1f} s")
    assert [c for _, c in results] == [0, 0, 0, 0], log
    assert (action_venv / "bin" / "gemma-release").exists(), log  # the install step put the tool in the venv
    assert "PASS" in log and outputs["verify"]["code"] == "0" and outputs["card"]["code"] == "0", log
    sarif = json.loads(Path(outputs["card"]["sarif-file"]).read_text())
    assert sarif["version"] == "2.1.0"
    uris = [loc["physicalLocation"]["artifactLocation"]["uri"] for r in sarif["runs"][0]["results"] for loc in r.get("locations", [])]
    assert all(not os.path.isabs(u) for u in uris), uris  # relative to the repository root, as code scanning wants
    assert json.loads(Path(outputs["verify"]["report"]).read_text())["ok"] is True
    assert model.is_dir()


def test_action_fails_the_job_on_a_mismatch_and_a_card_error_but_still_writes_sarif(action_venv, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    _release_dir(ws / "model", card="---\nlicense: mit\n---\n# tiny\n")
    shutil.copy(GOLDENS / "gemma1_mqa_bf16.safetensors", ws / "other.golden")  # another model's logits
    env = _action_env(action_venv)
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"  # the tool is installed here already; the install step is tested above
    results, log, outputs = _run_action({"model": "model", "golden": "other.golden"}, ws, env, install=False)
    assert outputs["verify"]["code"] == "1" and outputs["card"]["code"] == "1", log
    assert results[-1] == ("Fail on errors", 1), log
    sarif = json.loads(Path(outputs["card"]["sarif-file"]).read_text())
    rules = {r["ruleId"] for r in sarif["runs"][0]["results"]}
    assert "GEMMA002" not in rules and any(r.startswith(("CARD", "GEMMA")) for r in rules), rules
    assert any(r["level"] == "error" for r in sarif["runs"][0]["results"])
    results, log, outputs = _run_action({"model": "model", "golden": "", "card-check": "false"}, ws, env, install=False)
    assert [c for _, c in results] == [0, 0, 0] and "card check: off" in log and "no golden input" in log, log


# --- pre-commit hooks ---------------------------------------------------------------------------


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false",
                    "-c", "init.defaultBranch=main", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def test_pre_commit_hooks_via_try_repo(tmp_path):
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert {h["id"] for h in hooks} == {"gemma-release-card-check", "gemma-release-variants-check"}
    # The hooks repository as pre-commit clones it: .pre-commit-hooks.yaml at its root.
    hook_repo = tmp_path / "hooks"
    hook_repo.mkdir()
    shutil.copy(ROOT / ".pre-commit-hooks.yaml", hook_repo)
    _git("init", "-q", cwd=hook_repo)
    _git("add", ".", cwd=hook_repo)
    _git("commit", "-q", "-m", "hooks", cwd=hook_repo)
    # A user's repository holding a release.
    user = tmp_path / "user"
    user.mkdir()
    _release_dir(user / "release")
    _git("init", "-q", cwd=user)
    _git("add", ".", cwd=user)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PRE_COMMIT"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", PRE_COMMIT_HOME=str(tmp_path / "pc_home"), NO_COLOR="1")

    def try_repo(*hook: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pre_commit", "try-repo", str(hook_repo), *hook, "--all-files", "--color", "never"],
                              cwd=user, env=env, capture_output=True, text=True, timeout=300)

    p = try_repo()  # every hook of the repository
    assert p.returncode == 0 and p.stdout.count("Passed") == 2, p.stdout + p.stderr
    assert "gemma-release card check" in p.stdout and "gemma-release variants check" in p.stdout
    (user / "release" / "NOTICE").unlink()  # the Terms of Use NOTICE goes missing
    _git("add", "-A", ".", cwd=user)
    p = try_repo("gemma-release-card-check")
    assert p.returncode == 1 and "Failed" in p.stdout and "GEMMA002" in p.stdout, p.stdout + p.stderr


# --- pytest plugin ------------------------------------------------------------------------------


def _plugin_args() -> list[str]:
    """The plugin comes from the pytest11 entry point; a stale source checkout's metadata may hide it, then load it by name."""
    found = any(e.value == "release.pytest_plugin" for e in importlib.metadata.entry_points(group="pytest11"))
    return [] if found else ["-p", "release.pytest_plugin"]


def test_pytest11_entry_point_is_declared():
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["pytest11"] == {"gemma_release": "release.pytest_plugin"}


def test_plugin_fixture_passes_and_fails_with_verify_table(pytester):
    pytester.makepyfile(f"""
        def test_same(gemma_golden):
            report = gemma_golden({str(MODELS / 'gemma2_gqa_softcap')!r}, {str(GOLDENS / 'gemma2_gqa_softcap.safetensors')!r})
            assert report.ok

        def test_other(gemma_golden):
            gemma_golden({str(MODELS / 'gemma2_gqa_softcap')!r}, {str(GOLDENS / 'gemma1_mqa_bf16.safetensors')!r})

        def test_bad_input(gemma_golden):
            gemma_golden("no/such/model", {str(GOLDENS / 'gemma2_gqa_softcap.safetensors')!r})
    """)
    r = pytester.runpytest(*_plugin_args(), "-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, failed=2)
    out = r.stdout.str()
    assert "max |Δlogit|" in out and "MISMATCH" in out and "FAIL:" in out  # verify's table and verdict
    assert "bad input" in out and "Traceback" not in out


def test_plugin_command_line_pairs(pytester):
    good = f"{MODELS / 'gemma2_gqa_softcap'}={GOLDENS / 'gemma2_gqa_softcap.safetensors'}"
    bad = f"{MODELS / 'gemma2_gqa_softcap'}={GOLDENS / 'gemma3_1b_style.safetensors'}"
    r = pytester.runpytest(*_plugin_args(), "-p", "no:cacheprovider", "--gemma-golden", good, "--gemma-golden", bad, "-v")
    r.assert_outcomes(passed=1, failed=1)
    assert "gemma_golden[" in r.stdout.str() and "MISMATCH" in r.stdout.str()
    r = pytester.runpytest(*_plugin_args(), "-p", "no:cacheprovider", "--gemma-golden", "no-equals-sign")
    assert r.ret == pytest.ExitCode.USAGE_ERROR


# --- card check --repo / variants check --repo against the loopback Hub -------------------------


@pytest.fixture(scope="module")
def hub():
    server = HubServer(token=TOKEN).start()
    yield server
    server.stop()


def _seed(hub: HubServer, repo_id: str, root: Path, tag: str | None = None) -> None:
    """Put a directory on the loopback Hub as one commit (safetensors in LFS), as if someone had uploaded it."""
    import hashlib

    from hubserver import GITATTRIBUTES, Commit, Entry, Repo

    files = {".gitattributes": Entry(len(GITATTRIBUTES), content=GITATTRIBUTES)}
    for p in sorted(root.iterdir()):
        data = p.read_bytes()
        if p.suffix == ".safetensors":
            oid = hashlib.sha256(data).hexdigest()
            hub.state.lfs[oid] = data
            files[p.name] = Entry(len(data), lfs_oid=oid)
        else:
            files[p.name] = Entry(len(data), content=data)
    with hub.state.lock:
        repo = Repo(repo_id, False)
        commit = Commit(hub.state.new_oid(repo_id, "seed"), None, "upload", files)
        repo.commits[commit.oid] = commit
        repo.branches["main"] = commit.oid
        if tag:
            repo.tags[tag] = commit.oid
        hub.state.repos[repo_id] = repo


def test_card_check_repo_reads_the_published_repo_without_weights(hub, tmp_path):
    env = hub_env(hub.url, tmp_path / "hf_home", TOKEN)
    good = make_release(tmp_path / "good", "org/ci-good")
    (good / "release.yaml").unlink()
    _seed(hub, "org/ci-good", good, tag="v1")
    bad = make_release(tmp_path / "bad", "org/ci-bad")
    (bad / "NOTICE").unlink()  # publish would refuse this; on the Hub it happens
    (bad / "release.yaml").unlink()
    _seed(hub, "org/ci-bad", bad)
    n = len(hub.state.requests)

    r = run_cli(["card", "check", "--repo", "org/ci-good@v1"], env, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "hf://org/ci-good@v1" in r.stdout or "ok" in r.stdout
    assert "listed org/ci-good@v1" in r.stderr and "README.md" in r.stderr
    assert "%|" not in r.stderr and "it/s" not in r.stderr  # no tqdm bars in a non-terminal log
    new = [p for _, p in hub.state.requests[n:]]
    assert not any("model.safetensors" in p and ("/resolve/" in p or "/lfs/" in p) for p in new), new  # weights never downloaded
    assert any("/tree/" in p for p in new), new

    r = run_cli(["card", "check", "--repo", "org/ci-bad", "--format", "json"], env, tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    findings = json.loads(r.stdout)
    notice = [f for f in findings if f["rule"] == "GEMMA002"]
    assert notice and notice[0]["path"] == "hf://org/ci-bad@main/NOTICE", findings

    r = run_cli(["variants", "check", "--repo", "org/ci-good@v1"], env, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_cli(["card", "check", "--repo", "org/does-not-exist"], env, tmp_path)
    assert r.returncode == 2 and "not found" in r.stderr, r.stderr


def test_card_check_wants_a_path_or_a_repo(cli, tmp_path):
    assert "either a PATH or --repo" in cli("card", "check", tmp_path, "--repo", "org/x").err
    r = cli("variants", "check")
    assert r.code == 2 and "either a PATH or --repo" in r.err
    assert cli("card", "check", "--repo", "not a repo").code == 2


def test_card_check_repo_checks_variant_sizes_from_the_listing(hub, tmp_path):
    env = hub_env(hub.url, tmp_path / "hf_home", TOKEN)
    rel = make_release(tmp_path / "v", "org/ci-variants")
    size = (rel / "model.safetensors").stat().st_size
    table = ("\n| File | Size |\n| --- | --- |\n"
             f"| [model.safetensors]({hub.url}/org/ci-variants/blob/main/model.safetensors) | {size * 3 / 1e6:.2f} MB |\n")
    (rel / "README.md").write_text((rel / "README.md").read_text() + table)
    (rel / "release.yaml").unlink()
    _seed(hub, "org/ci-variants", rel)  # publish would refuse the wrong size: the card says 3x the real one
    r = run_cli(["variants", "check", "--repo", "org/ci-variants", "--format", "json"], env, tmp_path)
    rules = {f["rule"] for f in json.loads(r.stdout)} if r.stdout.strip().startswith("[") else set()
    assert r.returncode == 1 and "QUANT" in " ".join(rules), r.stdout + r.stderr


# --- CLI: version, completion, help, progress ---------------------------------------------------


def test_version_completion_and_help(cli):
    r = cli("--version")
    assert r.code == 0 and r.out.strip() == f"gemma-release {importlib.metadata.version('gemma-release')}"
    r = cli("--help")
    assert "--install-completion" in r.out and "--show-completion" in r.out
    for cmd in (("verify",), ("card", "check"), ("variants", "check"), ("golden",)):
        h = cli(*cmd, "--help").out
        assert "<bool>" not in h and "<str>" not in h and "<path>" not in h, h
    assert "[@REVISION]" in cli("verify", "--help").out
    assert "[@REVISION]" in cli("card", "check", "--help").out
    assert "[text|json|sarif]" in cli("card", "check", "--help").out


def test_shell_completion_script():
    exe = BIN / "gemma-release"
    p = subprocess.run([str(exe), "--show-completion", "bash"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "SHELL": "/bin/bash"})
    assert p.returncode == 0 and "_GEMMA_RELEASE_COMPLETE" in p.stdout, p.stdout + p.stderr
    p = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "_GEMMA_RELEASE_COMPLETE": "complete_bash", "COMP_WORDS": "gemma-release car", "COMP_CWORD": "1"})
    assert "card" in p.stdout, p.stdout + p.stderr


def test_golden_without_tokenizer_says_to_pass_ids(cli, tmp_path):
    r = cli("golden", MODELS / "gemma2_gqa_softcap", "--out", tmp_path / "g.golden")
    assert r.code == 2 and "--ids" in r.err and "--prompts" in r.err and "tokenizer.model" in r.err
    assert not (tmp_path / "g.golden").exists()


def test_non_terminal_progress_is_one_line_per_step(tmp_path):
    p = subprocess.run([sys.executable, "-m", "release.cli", "verify", str(MODELS / "gemma2_gqa_softcap"),
                        "--golden", str(GOLDENS / "gemma2_gqa_softcap.safetensors")],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "NO_COLOR": "1"})
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert lines and all(re.fullmatch(r".+: \d+/\d+ \(\d+\.\d s\)", ln) for ln in lines), p.stderr
    assert "\r" not in p.stderr and "\x1b" not in p.stderr
    assert len(lines) == len(set(lines))  # each step once


def test_hub_progress_bars_off_when_stderr_is_not_a_terminal():
    code = ("import sys; from release.hub import quiet_progress_bars; from huggingface_hub.utils import are_progress_bars_disabled;"
            "print(quiet_progress_bars(), are_progress_bars_disabled())")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert p.stdout.split() == ["True", "True"], p.stdout + p.stderr
