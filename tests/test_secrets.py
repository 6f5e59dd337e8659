"""Secrets never leave the machine: `publish` and `card check` scan the release set for credentials.

Every case builds a small release (tests/release_fixture.py) with something secret in it
and checks three things: the secret is reported (PUBLISH004, file, line, kind), nothing
is uploaded, and no character of the secret past its kind's fixed prefix reaches any
output. The tokens below have the shape of real ones but are made up, and they are
written split in two ("hf_" + body) so that secret scanners reading this file (GitHub's
push protection, this tool) do not flag the test itself.
"""

from __future__ import annotations

import base64
import json
import pickle
import random
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from hubserver import HubServer
from release_fixture import hub_env, make_release, run_cli

from release import secrets
from release.errors import InputError
from release.releaseset import ReleaseFile, ReleaseSet, resolve
from release.secrets import scan_release_set

HF = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"  # hf_ + 34, mixed case and digits
GHP = "ghp_" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb3d"  # ghp_ + 36
GH_PAT = "github_pat_" + "11ABCDEFG0a1b2c3d4e5f6" + "_" + "Zy9Xw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa9Zy8Xw7Vu6Ts5Rq4Po3Nm2Lk1Ji0Hg"
AWS_ID = "AKIA" + "2E0A8F3B244C9986"
AWS_SECRET = "8kQm1Zr9Yx2Vw3Ut4Sr5" + "Qp6On7Ml8Kj9Ih0Gf1E/"  # 40 characters
SK_PROJ = "sk-" + "proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z_Ab3dEf6h-Ij9kLm2nOp"
NETRC_PASSWORD = "Pa55w0rd-" + "QzV8xK2m"
KEY_BODY = base64.b64encode(random.Random(7).randbytes(180)).decode()
OPENSSH_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(KEY_BODY[i:i + 70] for i in range(0, len(KEY_BODY), 70))
               + "\n-----END OPENSSH PRIVATE KEY-----\n")
SECRETS = (HF, GHP, GH_PAT, AWS_ID, AWS_SECRET, SK_PROJ, NETRC_PASSWORD, KEY_BODY[:40])
ALL_FILES = "files: ['**/*', '.*']\n"
HUB_TOKEN = "hf_SECRETStoken0123456789abcdef"


def release(tmp_path: Path, files: dict[str, str | bytes], files_line: str = ALL_FILES, **kw: str) -> Path:
    """The fixture release plus ``files`` (repo path: content), with release.yaml's ``files:`` replaced."""
    rel = make_release(tmp_path / "rel", "org/secrets", **kw)
    for name, content in files.items():
        p = rel / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
    yaml = (rel / "release.yaml").read_text()
    (rel / "release.yaml").write_text(yaml.split("files:")[0] + files_line)
    return rel


def found(rel: Path, *allow: str) -> dict[tuple[str, int | None], str]:
    """{(repo path, line): message} of the PUBLISH004 findings of a release directory."""
    return {(f.extra["file"], f.line): f.message for f in scan_release_set(resolve(rel), allow) if f.rule == "PUBLISH004"}


def assert_no_secret(text: str) -> None:
    """No secret, nor any 8 characters of one past its prefix, in ``text``."""
    for s in SECRETS:
        body = s.split("_", 1)[-1] if s.startswith(("hf_", "ghp_", "github_pat_")) else s[4:]
        assert all(body[i:i + 8] not in text for i in range(len(body) - 7)), f"part of a secret leaked: {s[:4]}…"


# --- publish and card check, end to end ---------------------------------------------------------


def test_env_file_with_hf_token_fails_publish_and_is_never_printed(cli, tmp_path):
    rel = release(tmp_path, {".env": f"# local settings\nHF_TOKEN={HF}\n"})
    r = cli("publish", rel, "--dry-run")
    assert r.code == 1, r.out + r.err
    assert ".env:2: a Hugging Face token (hf_…)" in r.err and "[PUBLISH004] error" in r.err
    assert ".env: an environment file (.env)" in r.err  # by name too
    assert "nothing was uploaded" in r.err
    assert_no_secret(r.out + r.err)

    r = cli("publish", rel, "--dry-run", "--json")
    assert r.code == 1
    checks = json.loads(r.out)["checks"]
    hits = [c for c in checks if c["rule"] == "PUBLISH004"]
    assert {(Path(c["path"]).name, c.get("line")) for c in hits} == {(".env", 2), (".env", None)}
    assert_no_secret(r.out + r.err)


def test_publish_with_a_secret_uploads_nothing_to_the_hub(tmp_path):
    """Not a dry run: a real publish against the loopback Hub stops before any request that writes."""
    rel = release(tmp_path, {".env": f"HF_TOKEN={HF}\n"})
    with HubServer(token=HUB_TOKEN) as hub:
        r = run_cli(["publish", str(rel)], hub_env(hub.url, tmp_path / "hf_home", HUB_TOKEN), tmp_path)
        writes = [(m, p) for m, p in hub.state.requests if m in ("POST", "PUT", "DELETE")]
    assert r.returncode == 1, r.stdout + r.stderr
    assert "PUBLISH004" in r.stderr and "nothing was uploaded" in r.stderr
    assert writes == [] and "org/secrets" not in hub.state.repos
    assert_no_secret(r.stdout + r.stderr)


def test_token_pasted_into_the_card(cli, tmp_path):
    rel = release(tmp_path, {}, files_line="files: ['*.safetensors', config.json, README.md, NOTICE]\n",
                  extra_card=f"\nLog in first:\n\n```bash\nhuggingface-cli login --token {HF}\n```\n")
    line = next(i for i, ln in enumerate((rel / "README.md").read_text().split("\n"), 1) if "--token" in ln)
    assert found(rel) == {("README.md", line): f"README.md:{line}: a Hugging Face token (hf_…) — revoke it and remove "
                                                 "it from the release; --allow-secret README.md if deliberate"}
    r = cli("card", "check", rel, "--format", "sarif")
    assert r.code == 1
    result = next(x for x in json.loads(r.out)["runs"][0]["results"] if x["ruleId"] == "PUBLISH004")
    assert result["locations"][0]["physicalLocation"]["region"]["startLine"] == line
    assert_no_secret(r.out + r.err)


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("train_config.json", json.dumps({"push": {"hub": "org/x", "github": GHP}}, indent=2),
     {4: "a GitHub token (ghp_…)"}),
    ("ci/settings.json", '{\n  "token": "' + GH_PAT + '"\n}\n', {2: "a GitHub fine-grained token (github_pat_…)"}),
    ("aws.txt", f"[default]\naws_access_key_id = {AWS_ID}\naws_secret_access_key = {AWS_SECRET}\n",
     {2: "an AWS access key id (AKIA…)", 3: "an AWS secret access key"}),
    ("notes.md", f"# Evaluation\n\nOPENAI_API_KEY={SK_PROJ} python eval.py\n", {3: "an OpenAI API key (sk-proj-…)"}),
    ("deploy_key", OPENSSH_KEY, {1: "a private key (-----BEGIN OPENSSH PRIVATE KEY-----)"}),
])
def test_tokens_by_content(tmp_path, name, content, expected):
    rel = release(tmp_path, {name: content})
    got = found(rel)
    assert {line: msg.split(": ", 1)[1].split(" — ")[0] for (_, line), msg in got.items()} == expected
    assert {path for path, _ in got} == {name}
    assert_no_secret(json.dumps([f.to_dict() for f in scan_release_set(resolve(rel))]))


def test_credentials_files_by_name(tmp_path):
    rel = release(tmp_path, {
        "id_ed25519": OPENSSH_KEY,
        "id_ed25519.pub": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk2bW9kZWwtcmVsZWFzZS1rZXktZm9yLXRlc3Rz me@host\n",
        ".netrc": f"machine huggingface.co\n  login me\n  password {NETRC_PASSWORD}\n",
        ".aws/credentials": "[default]\n",
        "cache/huggingface/token": "",
    }, files_line="files: ['*', '.*', .aws/credentials, 'cache/**/*']\n")
    got = found(rel)
    kinds = {k: m.split(": ", 1)[1].split(" — ")[0] for k, m in got.items()}
    assert kinds == {
        ("id_ed25519", None): "an SSH private key file",
        ("id_ed25519", 1): "a private key (-----BEGIN OPENSSH PRIVATE KEY-----)",
        (".netrc", None): "a netrc file (machine logins and passwords)",
        (".netrc", 3): "a password (netrc)",
        (".aws/credentials", None): "an AWS credentials file",
        ("cache/huggingface/token", None): "a Hugging Face token file",  # empty, and still a finding: by name
    }
    assert_no_secret(json.dumps(list(got.values())))


def test_secrets_inside_binary_files(tmp_path):
    """A pickled TrainingArguments keeps hub_token; trainers write their arguments into safetensors metadata."""
    rel = release(tmp_path, {"training_args.bin": pickle.dumps({"output_dir": "out", "hub_token": HF})})
    save_file({"w": np.zeros((2, 2), np.float32)}, str(rel / "adapter.safetensors"),
              metadata={"args": json.dumps({"hub_token": GHP})})
    got = found(rel)
    assert {k: m.split(": ", 1)[1].split(" — ")[0] for k, m in got.items()} == {
        ("training_args.bin", None): "a Hugging Face token (hf_…) in its binary content",
        ("adapter.safetensors", None): "a GitHub token (ghp_…) in its metadata header",
    }


# --- no false positives -------------------------------------------------------------------------


PROSE = f"""# Notes

Download with `hf_hub_download` or `huggingface_hub.snapshot_download`, converted by
`hf_export_gemma2_checkpoint_to_safetensors_v3()`; the eval uses sk-learn
(sk-learn-compatible-estimators-v1-2-3) and the ghp_xxx / gho_ prefixes are GitHub's.
Set `HF_TOKEN=hf_...` or `HF_TOKEN=<YOUR_HF_TOKEN>` or export HF_TOKEN=YOUR_HF_TOKEN_GOES_HERE.
In CI: `HF_TOKEN: ${{{{ secrets.HF_TOKEN }}}}` and `token = os.environ["HF_TOKEN"]`.
Placeholders: {"hf_" + "x" * 34}, {"ghp_" + "X" * 36}, {"hf_" + "abcdefghijklmnopqrstuvwxyzabcdefgh"}.
AWS's documentation key: AKIAIOSFODNN7EXAMPLE / wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY.
A key file starts with `-----BEGIN OPENSSH PRIVATE KEY-----` and ends with the END line.
"""


def test_no_false_positives(cli, tmp_path):
    assert found(make_release(tmp_path / "plain", "org/plain")) == {}  # the compliant fixture release
    rel = release(tmp_path, {
        "notes.md": PROSE,
        ".env.example": "HF_TOKEN=YOUR_HF_TOKEN_HERE\n",
        "id_ed25519.pub": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk2bW9kZWwtcmVsZWFzZS1rZXktZm9yLXRlc3Rz me@host\n",
        # a vocabulary is not scanned (word pieces are not secrets), even when a piece has a token's shape
        "tokenizer.json": json.dumps({"model": {"vocab": {"sk-": 1, "hf_": 2, HF: 3}}}),
        # a saved copy of a web page holds that page's public browser keys (the Gemma terms page does)
        "GEMMA_TERMS.html": '<script>var k="AIza' + "SyAb3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z_" + '";</script>',
    })
    assert found(rel) == {}
    r = cli("publish", rel, "--dry-run")
    assert r.code == 0 and "PUBLISH004" not in r.err, r.err


def test_google_key_outside_a_web_page_is_found(tmp_path):
    rel = release(tmp_path, {"app.json": '{"maps_key": "AIza' + "SyAb3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z_" + '"}'})
    assert list(found(rel)) == [("app.json", 1)]


def test_env_template_with_a_real_token_is_found(tmp_path):
    rel = release(tmp_path, {".env.example": f"HF_TOKEN={HF}\n"})
    assert list(found(rel)) == [(".env.example", 1)]  # by content only: a template is not a secret by name


def test_env_left_out_of_the_release_is_not_reported(cli, tmp_path):
    rel = release(tmp_path, {".env": f"HF_TOKEN={HF}\n"},
                  files_line="files: ['*.safetensors', config.json, README.md, NOTICE]\n")
    assert found(rel) == {}
    rel2 = release(tmp_path / "x", {".env": f"HF_TOKEN={HF}\n"}, files_line="files: ['*', '.*']\nexclude: ['.env']\n")
    assert found(rel2) == {}
    r = cli("publish", rel2, "--dry-run")
    assert r.code == 0 and "PUBLISH004" not in r.err


# --- --allow-secret -------------------------------------------------------------------------------


def test_allow_secret_turns_the_error_into_an_info(cli, tmp_path):
    rel = release(tmp_path, {".env": f"HF_TOKEN={HF}\n", "aws.txt": f"key {AWS_ID}\n"})
    r = cli("publish", rel, "--dry-run", "--allow-secret", ".env")
    assert r.code == 1 and "aws.txt:1" in r.err and ".env:1" not in r.err  # only what was named is allowed
    r = cli("publish", rel, "--dry-run", "--allow-secret", ".env", "--allow-secret", str(rel / "aws.txt"))
    assert r.code == 0, r.err
    assert "[PUBLISH005] info: 3 secret finding(s) allowed by --allow-secret" in r.err and ".env (2)" in r.err
    assert_no_secret(r.out + r.err)
    r = cli("card", "check", rel, "--allow-secret", ".env", "--allow-secret", "aws.txt")
    assert r.code == 0 and "PUBLISH004" not in r.out


def test_allow_secret_must_name_a_file_of_the_release(cli, tmp_path):
    rel = release(tmp_path, {".env": f"HF_TOKEN={HF}\n", "private.txt": "x\n"},
                  files_line="files: ['*', '.*']\nexclude: [private.txt]\n")
    r = cli("publish", rel, "--dry-run", "--allow-secret", "nothere.txt")
    assert r.code == 2 and "--allow-secret 'nothere.txt': no such file in the release" in r.err
    r = cli("card", "check", rel, "--allow-secret", "private.txt")
    assert r.code == 2 and "it is not uploaded (excluded by 'private.txt')" in r.err
    r = cli("card", "check", rel / "README.md", "--allow-secret", ".env")
    assert r.code == 2 and "applies to a release directory" in r.err
    with pytest.raises(InputError):
        scan_release_set(resolve(rel), ["nothere.txt"])


def test_card_check_reports_what_publish_reports(cli, tmp_path):
    rel = release(tmp_path, {".env": f"HF_TOKEN={HF}\n"})
    r = cli("card", "check", rel, "--format", "json")
    assert r.code == 1
    got = sorted((Path(f["path"]).name, f.get("line", 0)) for f in json.loads(r.out) if f["rule"] == "PUBLISH004")
    assert got == [(".env", 0), (".env", 1)]  # 0: the finding about the file (by name), without a line
    p = cli("publish", rel, "--dry-run", "--json")
    assert sorted((Path(f["path"]).name, f.get("line", 0)) for f in json.loads(p.out)["checks"] if f["rule"] == "PUBLISH004") == got
    assert_no_secret(r.out + p.out)


# --- bounded reading ----------------------------------------------------------------------------


def test_huge_files_are_not_read(tmp_path, monkeypatch):
    rel = release(tmp_path, {})
    for name in ("model.safetensors", "model-q4.gguf", "pytorch_model.bin", "data.log"):
        with open(rel / name, "wb") as f:
            f.truncate(2 << 30)  # 2 GiB, sparse
    opened: list[str] = []
    real_open = secrets._open_regular
    monkeypatch.setattr(secrets, "_open_regular", lambda p: opened.append(Path(p).name) or real_open(p))
    rs = resolve(rel)
    start = time.monotonic()
    assert scan_release_set(rs) == []
    assert time.monotonic() - start < 2
    # the weights with a binary suffix are never opened; the safetensors header length (0) and data.log's
    # first 8 KiB (NUL bytes: binary, too large to scan) are the only reads
    assert "model-q4.gguf" not in opened and "pytorch_model.bin" not in opened
    assert {"model.safetensors", "data.log"} <= set(opened)


def test_text_past_the_scan_limit_is_said_to_be_unscanned(tmp_path, monkeypatch):
    monkeypatch.setattr(secrets, "SCAN_LIMIT", 1 << 16)
    filler = ("lorem ipsum dolor sit amet\n" * 4000)  # > 64 KiB
    rel = release(tmp_path, {"log.txt": f"first {GHP}\n" + filler + f"late {AWS_ID}\n"})
    fs = scan_release_set(resolve(rel))
    assert [(f.rule, f.line) for f in fs if f.rule == "PUBLISH004"] == [("PUBLISH004", 1)]
    note = next(f for f in fs if f.rule == "PUBLISH006")
    assert note.severity == "info" and "log.txt" in note.message and "only its first" in note.message


def test_findings_per_file_are_capped(tmp_path):
    rel = release(tmp_path, {"dump.txt": "".join(f"k{i} {AWS_ID[:-2]}{i:02d}\n" for i in range(30))})
    fs = [f for f in scan_release_set(resolve(rel)) if f.rule == "PUBLISH004"]
    assert len(fs) == secrets.MAX_PER_FILE + 1 and "10 more secret(s) not listed" in fs[-1].message


def test_rules_are_registered_for_card_rules():
    code = "from release.findings import load_all_rules; r = load_all_rules(); print(r['PUBLISH004'].severity, r['PUBLISH005'].severity)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["error", "info"]


# --- property: any real-looking token in any text is found, and never shown -----------------------

ALNUM = string.ascii_letters + string.digits
KINDS = {  # prefix, body alphabet, body length, the label's fixed text
    "hf": ("hf_", string.ascii_letters, 34, "a Hugging Face token (hf_…)"),
    "ghp": ("ghp_", ALNUM, 36, "a GitHub token (ghp_…)"),
    "sk-proj": ("sk-proj-", ALNUM + "_-", 48, "an OpenAI API key (sk-proj-…)"),
    "aws": ("AKIA", string.ascii_uppercase + string.digits, 16, "an AWS access key id (AKIA…)"),
}
SEP_BEFORE = st.sampled_from([" ", "\n", "\t", "=", ": ", '"', "'", "`", "(", ",", "--token=", "\r\n"])
SEP_AFTER = st.sampled_from([" ", "\n", "\t", '"', "'", "`", ")", ",", ".", "\r\n"])  # a "-" would continue an sk-proj- key


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=st.text(string.printable, max_size=300), after=st.text(string.printable, max_size=300),
       sep1=SEP_BEFORE, sep2=SEP_AFTER, kind=st.sampled_from(sorted(KINDS)), seed=st.integers(0, 2**32))
def test_property_real_looking_tokens_are_found_and_never_shown(before, after, sep1, sep2, kind, seed):
    prefix, alphabet, n, label = KINDS[kind]
    rng = random.Random(seed)
    body = "".join(rng.choice(alphabet) for _ in range(n))
    if not secrets.looks_real(body.encode(), classes=1 if kind == "aws" else 2):
        return  # a random body that reads like a placeholder (~1e-5): not a token by design
    token = prefix + body
    text = before + sep1 + token + sep2 + after
    line = (before + sep1).count("\n") + 1
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp, "notes.txt")
        local.write_text(text, encoding="utf-8", newline="")
        rs = ReleaseSet(Path(tmp).resolve(), {"notes.txt": ReleaseFile("notes.txt", local, local.stat().st_size)})
        fs = scan_release_set(rs)
    assert any(f.line == line and label in f.message for f in fs), (line, [f.message for f in fs])
    shown = json.dumps([f.to_dict() for f in fs])
    assert token not in shown and all(body[i:i + 6] not in shown for i in range(len(body) - 5))
