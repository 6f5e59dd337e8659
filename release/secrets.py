"""Secrets never leave the machine: the release set is scanned for credentials before any upload.

A release directory is usually the directory someone trained or converted in, and a
``files: ['*', '.*']`` pattern uploads whatever sits there: a ``.env`` holding
``HF_TOKEN=hf_…``, an SSH key, a token pasted into the card. Once on the Hub a token
is public (and cached by mirrors) whatever is deleted later. So ``publish`` and
``card check`` on a release scan exactly the files the release uploads
(:class:`release.releaseset.ReleaseSet`; files left out of it are never uploaded and
never reported) and report each hit as ``PUBLISH004`` (error: nothing is uploaded):

* **by name**, at any depth: dotenv files (``.env``, ``.env.local``; not the
  ``.env.example``-style templates, which are scanned by content like any text),
  ``.netrc``/``_netrc``, ``.git-credentials``, ``.pypirc``, SSH private keys
  (``id_rsa``, ``id_ed25519``, ...; a ``.pub`` is public), PKCS#12 key stores,
  ``.aws/credentials`` and Hugging Face token files (``token``/``stored_tokens``
  under a ``huggingface``/``hf`` folder);
* **by content**, every text file of the set, line by line: Hugging Face, GitHub,
  AWS, OpenAI/Anthropic, Slack and Google API keys by their fixed prefixes, private
  key blocks, ``HF_TOKEN=...`` assignments, and ``password`` lines in netrc files;
  and the metadata header of each ``.safetensors`` file (trainers write their
  arguments there).

A finding names the file, the line and the kind of secret ("a Hugging Face token
(hf_…)"), never the secret: no character of it beyond the kind's fixed prefix
reaches a message, a JSON report or a CI log. ``--allow-secret FILE`` (a repo path
of the set) drops a file's findings for a deliberate case; one ``PUBLISH005`` info
says how many were allowed.

What is read, and why (the scan must not read a multi-GB weight file or misfire on a
vocabulary): vocabularies are skipped by name (``tokenizer.json``, ``vocab.txt``, ...:
word pieces such as ``sk-`` or long alphanumeric runs are not secrets, and
tokenizer.json can be 30 MB); of a ``.safetensors`` file only the header is read; a
file with a NUL byte in its first 8 KiB, or a weights/array/archive suffix (``.gguf``,
``.bin``, ``.pt``, ...), is binary: scanned as raw bytes, without line numbers, when it
is at most 1 MiB (a pickled ``training_args.bin`` keeps ``hub_token``), never opened
past its first 8 KiB otherwise (never at all with such a suffix). Text is anything
else (UTF-8, latin-1, any ASCII-compatible encoding; UTF-16 has NULs, so it counts as
binary); of a text file the first 16 MiB are scanned, and a larger one gets a
``PUBLISH006`` info saying so.
"""

from __future__ import annotations

import os
import re
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from release.errors import InputError
from release.findings import Finding, Rule, register_rules

if TYPE_CHECKING:
    from release.releaseset import ReleaseSet

register_rules(
    Rule("PUBLISH004", "error", "a secret (token, private key, credentials file) in the release set: it would be uploaded"),
    Rule("PUBLISH005", "info", "secret findings dropped for files named with --allow-secret (they will be uploaded)"),
    Rule("PUBLISH006", "info", "a text file of the release is larger than the secret scan reads; only its start was scanned"),
)

SCAN_LIMIT = 16 << 20  # bytes of a text file that are scanned; past this a file is data, not configuration
SNIFF = 8 << 10  # a NUL byte in the first 8 KiB: binary
SMALL_BINARY = 1 << 20  # a binary file up to this size is scanned as raw bytes (no lines); a larger one is not read
MAX_PER_FILE = 20  # findings listed per file; a file with more is reported with a count

# Weights, arrays and archives: binary formats, often many GB; never read. (.safetensors: header only.)
BINARY_SUFFIXES = (".gguf", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".npz", ".npy", ".h5", ".msgpack", ".tflite",
                   ".pb", ".pkl", ".pickle", ".model", ".zip", ".tar", ".gz", ".zst", ".xz", ".png", ".jpg", ".jpeg",
                   ".gif", ".webp", ".mp3", ".wav", ".mp4", ".parquet", ".arrow")
# Vocabularies: lists of word pieces ("sk-", "hf_", long alphanumeric runs) that look like token prefixes
# without being secrets; tokenizer.json is 30+ MB for a 256k vocabulary. tokenizer_config.json is scanned.
VOCABULARY_NAMES = frozenset({"tokenizer.json", "vocab.json", "vocab.txt", "merges.txt", "spiece.model",
                              "sentencepiece.bpe.model", "added_tokens.json"})
VOCABULARY_SUFFIXES = (".tiktoken",)


# --- credentials files, by name ----------------------------------------------------------------

_ENV_TEMPLATES = frozenset({"example", "sample", "template", "dist"})  # .env.example & co: documentation, scanned by content
_BY_NAME = {
    ".netrc": "a netrc file (machine logins and passwords)",
    "_netrc": "a netrc file (machine logins and passwords)",
    ".git-credentials": "a git credentials file",
    ".pypirc": "a PyPI credentials file (.pypirc)",
    **{name: "an SSH private key file" for name in ("id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "id_ecdsa_sk", "id_ed25519_sk")},
}
_HF_DIRS = frozenset({"huggingface", ".huggingface", "hf"})  # where huggingface_hub keeps `token` / `stored_tokens`


def credentials_file_kind(path: str) -> str | None:
    """What kind of credentials file a repo path is by its name alone (None: not one)."""
    parts = PurePosixPath(path.lower()).parts
    name, parents = parts[-1], parts[:-1]
    if name in _BY_NAME:
        return _BY_NAME[name]
    if name == ".env" or (name.startswith(".env.") and name.rsplit(".", 1)[1] not in _ENV_TEMPLATES):
        return "an environment file (.env), where credentials are kept by convention"
    if name.endswith((".p12", ".pfx")):
        return "a PKCS#12 key store (private keys)"
    if name == "credentials" and ".aws" in parents:
        return "an AWS credentials file"
    if name in ("token", "stored_tokens") and _HF_DIRS & set(parents):
        return "a Hugging Face token file"
    return None


def _is_netrc(path: str) -> bool:
    return PurePosixPath(path.lower()).name in (".netrc", "_netrc")


# --- secrets, by content -----------------------------------------------------------------------

# Words that mark a documentation placeholder ("hf_xxxxx…", "YOUR_HF_TOKEN", "<your token here>", AWS's
# "AKIAIOSFODNN7EXAMPLE"). A real token is random: words of 5+ letters turn up in one by chance with a
# probability of about 1e-5 (so no 4-letter words such as "your" or "test": ~1e-4 each).
_PLACEHOLDER_WORDS = (b"xxxxx", b"token", b"example", b"placeholder", b"dummy", b"redacted", b"sample", b"changeme",
                      b"insert")


def looks_real(value: bytes, classes: int = 2) -> bool:
    """Whether a token-shaped string looks generated rather than written by a person.

    Random: at least 8 distinct characters (no ``hf_aaaa…``), at least ``classes`` of upper case,
    lower case and digits (real Hugging Face tokens are mixed-case letters; ``hf_hub_download``-style
    identifiers are lower case), and no placeholder word.
    """
    if len(set(value)) < 8:
        return False
    kinds = sum(bool(re.search(p, value)) for p in (rb"[A-Z]", rb"[a-z]", rb"[0-9]"))
    if kinds < classes:
        return False
    low = value.lower()
    return not any(w in low for w in _PLACEHOLDER_WORDS)


@dataclass(frozen=True)
class Pattern:
    """One kind of secret: its regex (group ``v``: the part judged by ``check``) and how it is named."""

    kind: str  # dedupe key: one finding per (file, line, kind)
    regex: re.Pattern[bytes]
    label: Callable[[re.Match[bytes]], str]  # the message's name for it, from fixed parts of the match only
    check: Callable[[bytes], bool] = looks_real
    netrc_only: bool = False
    not_in: tuple[str, ...] = ()  # file suffixes where this kind is not a secret
    on_lower: bool = False  # match in the lower-cased text (a case-insensitive name); ``v`` is read from the original


def _fixed(text: str) -> Callable[[re.Match[bytes]], str]:
    return lambda m: text


def _prefix(fmt: str, n: int) -> Callable[[re.Match[bytes]], str]:
    """A label quoting the match's first ``n`` bytes: the kind's fixed prefix (``ghp_``), never more."""
    return lambda m: fmt.format(m.group()[:n].decode("ascii"))


def _group(fmt: str, group: str) -> Callable[[re.Match[bytes]], str]:
    """A label quoting a group that holds only fixed text (a prefix from an alternation, a variable name)."""
    return lambda m: fmt.format(m.group(group).decode("ascii"))


# A token starts a word: no letter, digit or "_" just before its prefix (a "-", "=" or quote is fine: `--token=hf_…`).
# The check is a lookbehind written *after* the literal prefix, so that each regex starts with a literal,
# which `re` finds with a fast substring search (a leading lookbehind makes it try every position: ~30x slower).
_E = rb"(?![A-Za-z0-9_])"  # and ends one


def _after(prefix: bytes) -> bytes:
    """``prefix`` (a fixed-width regex) starting a word: the prefix, then a lookbehind over it and the byte before."""
    return prefix + rb"(?<![A-Za-z0-9_]" + prefix + rb")"


_HF_VARS = rb"F_TOKEN|F_API_TOKEN|F_HUB_TOKEN|UGGING_FACE_HUB_TOKEN|UGGINGFACE_TOKEN|UGGINGFACEHUB_API_TOKEN"  # after "H"

PATTERNS: tuple[Pattern, ...] = (
    # Hugging Face: hf_ + 34 letters today; 30+ letters/digits (no "_": hf_hub_download is an identifier).
    Pattern("huggingface", re.compile(_after(rb"hf_") + rb"(?P<v>[A-Za-z0-9]{30,})" + _E), _fixed("a Hugging Face token (hf_…)")),
    # HF_TOKEN=<value> with a value that is not a token-shaped hf_… (judged above), a variable or a placeholder.
    Pattern("huggingface", re.compile(rb"(?P<n>" + _after(rb"H") + rb"(?:" + _HF_VARS + rb"))[\"']?\s*[:=]\s*[\"']?"
                                      rb"(?!hf_)(?P<v>[A-Za-z0-9_-]{20,})(?![A-Za-z0-9_-])"),
            _group("a Hugging Face token ({}=…)", "n")),
    # GitHub: classic tokens are a 4-character prefix + 36; fine-grained ones github_pat_ + 22 + "_" + 59.
    Pattern("github", re.compile(_after(rb"gh[pousr]_") + rb"(?P<v>[A-Za-z0-9]{36,})" + _E), _prefix("a GitHub token ({}…)", 4)),
    Pattern("github", re.compile(_after(rb"github_pat_") + rb"(?P<v>[A-Za-z0-9]{22,}_[A-Za-z0-9]{50,})" + _E),
            _fixed("a GitHub fine-grained token (github_pat_…)")),
    # AWS: the access key id is fixed-format (AKIA long-term, ASIA temporary), so no case/digit mix is asked;
    # the 40-character secret key is recognised only where it is named.
    Pattern("aws-id", re.compile(rb"A[KS]IA(?<![A-Za-z0-9]A[KS]IA)(?P<v>[A-Z0-9]{16})(?![A-Za-z0-9])"),
            _prefix("an AWS access key id ({}…)", 4), check=lambda v: looks_real(v, classes=1)),
    # (matched in the lower-cased text, so that the regex starts with the literal "secret"; the value is judged
    # in the original text at the same offsets)
    Pattern("aws-secret", re.compile(rb"secret(?:(?<=aws_secret)|(?<=awssecret)|(?=_?access_?key))(?:_?access)?(?:_?key)?"
                                     rb"[\"']?\s*[:=]\s*[\"']?(?P<v>[a-z0-9/+]{40})(?![a-z0-9/+=])"),
            _fixed("an AWS secret access key"), on_lower=True),
    # OpenAI-style: legacy sk- + 48 letters/digits (no "-": sk-learn-compatible is prose); project, service-account,
    # admin and Anthropic keys have a second prefix and may hold "-" and "_".
    Pattern("openai", re.compile(_after(rb"sk-") + rb"(?P<v>[A-Za-z0-9]{20,})" + _E), _fixed("an OpenAI-style API key (sk-…)")),
    Pattern("openai", re.compile(_after(rb"sk-") + rb"(?P<p>proj|svcacct|admin)-(?P<v>[A-Za-z0-9_-]{20,})(?![A-Za-z0-9_-])"),
            _group("an OpenAI API key (sk-{}-…)", "p")),
    Pattern("anthropic", re.compile(_after(rb"sk-ant-") + rb"(?P<v>[A-Za-z0-9_-]{20,})(?![A-Za-z0-9_-])"),
            _fixed("an Anthropic API key (sk-ant-…)")),
    # A private key block: the header, then (after PEM headers such as Proc-Type) key material, so that a
    # card mentioning the header line alone is not a key.
    Pattern("private-key", re.compile(rb"-----BEGIN (?P<p>(?:RSA |DSA |EC |OPENSSH |ENCRYPTED |PGP )?)PRIVATE KEY(?: BLOCK)?-----"
                                      rb"(?:\s*[A-Za-z-]+:[^\n]*)*\s*(?P<v>[A-Za-z0-9+/=]{32,})"),
            _group("a private key (-----BEGIN {}PRIVATE KEY-----)", "p"), check=lambda v: True),
    Pattern("slack", re.compile(_after(rb"xox[abposr]-") + rb"(?P<v>[A-Za-z0-9-]{20,})(?![A-Za-z0-9-])"),
            _prefix("a Slack token ({}…)", 5)),
    # Google API keys in a web page are that page's public browser keys (restricted by referrer): a saved copy of
    # the Gemma Terms of Use page (GEMMA_TERMS.html, a valid terms copy) holds several.
    Pattern("google", re.compile(_after(rb"AIza") + rb"(?P<v>[0-9A-Za-z_-]{35})(?![0-9A-Za-z_-])"), _fixed("a Google API key (AIza…)"),
            not_in=(".html", ".htm")),
    # netrc: `password SECRET` (also on a `machine` line); only in netrc files, where the word has that meaning.
    Pattern("netrc-password", re.compile(_after(rb"password") + rb"[ \t]+(?P<v>\S+)"), _fixed("a password (netrc)"),
            check=lambda v: True, netrc_only=True),
)


@dataclass(frozen=True)
class Hit:
    """One secret found: where (1-based line, None for a whole file) and what kind, never its value."""

    path: str
    line: int | None
    kind: str
    label: str


def scan_bytes(data: bytes, path: str = "") -> list[Hit]:
    """Every secret in ``data`` (the text of repo file ``path``), one hit per (line, kind), in order."""
    hits: dict[tuple[int, str], Hit] = {}
    netrc = _is_netrc(path)
    low = data.lower()
    for pat in PATTERNS:
        if (pat.netrc_only and not netrc) or (pat.not_in and path.lower().endswith(pat.not_in)):
            continue
        for m in pat.regex.finditer(low if pat.on_lower else data):
            if not pat.check(data[m.start("v"):m.end("v")]):
                continue
            line = data.count(b"\n", 0, m.start()) + 1
            hits.setdefault((line, pat.kind), Hit(path, line, pat.kind, pat.label(m)))
    return sorted(hits.values(), key=lambda h: (h.line or 0, h.kind))


# --- reading the set, bounded ------------------------------------------------------------------


def is_vocabulary(path: str) -> bool:
    name = PurePosixPath(path.lower()).name
    return name in VOCABULARY_NAMES or name.endswith(VOCABULARY_SUFFIXES)


def is_binary_format(path: str) -> bool:
    return PurePosixPath(path.lower()).name.endswith(BINARY_SUFFIXES)


def _open_regular(local: Path) -> int | None:
    """A read-only descriptor of a regular file; None when the file is not there (a published repo's unfetched file).

    Opened non-blocking and checked after opening: a file replaced by a FIFO since the set was
    resolved must not block the scan.
    """
    try:
        fd = os.open(local, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise InputError(f"cannot read it to scan for secrets ({e.strerror or e})", local) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError("not a regular file any more; it cannot be scanned or published", local)
    return fd


def _read(local: Path, size: int, binary_suffix: bool) -> tuple[bytes, bool] | None:
    """(the bytes to scan, is text) of a file: nothing past SCAN_LIMIT, a large binary file not past its first 8 KiB.

    None: nothing to scan (the file is not there, or it is binary and larger than SMALL_BINARY).
    """
    if binary_suffix and size > SMALL_BINARY:
        return None  # weights: not even opened
    fd = _open_regular(local)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as fh:
        head = fh.read(SNIFF)
        text = not binary_suffix and b"\0" not in head
        if not text and size > SMALL_BINARY:
            return None
        return head + fh.read((SCAN_LIMIT if text else SMALL_BINARY) - len(head)), text


def _safetensors_header(local: Path) -> bytes | None:
    """The JSON header of a .safetensors file (names, shapes, ``__metadata__``), if it is at most SCAN_LIMIT."""
    fd = _open_regular(local)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        return fh.read(n) if 0 < n <= SCAN_LIMIT else None


def _whole_file(hits: list[Hit], where: str) -> list[Hit]:
    """Hits in data without lines (a binary file, a one-line header): one per kind, about the file."""
    by_kind = {h.kind: h for h in reversed(hits)}  # the first hit of each kind
    return [Hit(h.path, None, h.kind, f"{h.label} {where}") for h in by_kind.values()]


def _scan_file(path: str, local: Path, size: int) -> tuple[list[Hit], bool]:
    """(hits, scanned only in part) for one file of the set."""
    if is_vocabulary(path):
        return [], False
    if path.lower().endswith(".safetensors"):
        header = _safetensors_header(local)
        return (_whole_file(scan_bytes(header, path), "in its metadata header") if header else []), False
    got = _read(local, size, is_binary_format(path))
    if got is None:
        return [], False
    data, text = got
    if not text:  # a small pickle (training_args.bin keeps TrainingArguments' hub_token), archive, image
        return _whole_file(scan_bytes(data, path), "in its binary content"), False
    return scan_bytes(data, path), size > SCAN_LIMIT


def scan_files(files: Iterable[tuple[str, Path, int]]) -> tuple[list[Hit], list[str]]:
    """(every hit, files scanned only in part) for (repo path, local file, size) triples."""
    hits: list[Hit] = []
    partial: list[str] = []
    for path, local, size in files:
        kind = credentials_file_kind(path)
        if kind is not None:
            hits.append(Hit(path, None, "file", kind))
        found, cut = _scan_file(path, local, size)
        hits += found
        if cut:
            partial.append(path)
    return hits, partial


# --- findings -----------------------------------------------------------------------------------


def _message(h: Hit) -> str:
    where = h.path if h.line is None else f"{h.path}:{h.line}"
    if h.kind == "file":
        return (f"{where}: {h.label} — remove it from the release (exclude it in release.yaml); "
                f"--allow-secret {h.path} if deliberate")
    return f"{where}: {h.label} — revoke it and remove it from the release; --allow-secret {h.path} if deliberate"


def _findings(rs: ReleaseSet, hits: list[Hit]) -> Iterator[Finding]:
    """PUBLISH004 per hit, at most MAX_PER_FILE per file (then one with the count of the rest)."""
    per_file: dict[str, list[Hit]] = {}
    for h in hits:
        per_file.setdefault(h.path, []).append(h)
    for path, found in per_file.items():
        local = str(rs.root.joinpath(*PurePosixPath(path).parts))
        for h in found[:MAX_PER_FILE]:
            yield Finding("PUBLISH004", "error", _message(h), local, h.line, extra={"kind": h.kind, "file": path})
        if len(found) > MAX_PER_FILE:
            yield Finding("PUBLISH004", "error", f"{path}: {len(found) - MAX_PER_FILE} more secret(s) not listed — "
                          "this file should not be in the release", local, extra={"kind": "more", "file": path})


def _check_allow(rs: ReleaseSet, allow: Iterable[str]) -> set[str]:
    """The --allow-secret paths as repo paths; each must be a file of the set (InputError otherwise)."""
    out: set[str] = set()
    left_out = dict(rs.left_out)
    for raw in allow:
        p = PurePosixPath(raw.replace("\\", "/")).as_posix()
        if p not in rs and Path(raw).exists():  # a path from here (my-release/.env) rather than the repo path
            real = Path(raw).absolute().parent.resolve() / Path(raw).name  # the folders resolved, as rs.root is; not the file
            p = real.relative_to(rs.root).as_posix() if rs.root in real.parents else p
        if p not in rs:
            why = (f"it is not uploaded ({left_out[p]}), so there is nothing to allow" if p in left_out
                   else "no such file in the release; give its path in the repo, e.g. .env or configs/train.yaml")
            raise InputError(f"--allow-secret {raw!r}: {why}", path=rs.root)
        out.add(p)
    return out


def scan_release_set(rs: ReleaseSet, allow: Iterable[str] = ()) -> list[Finding]:
    """PUBLISH004 for every secret in the files the release uploads; PUBLISH005/006 notes.

    ``allow``: repo paths (``--allow-secret``) whose findings are dropped and counted in one
    PUBLISH005 info. A path that is not a file of the set is an :class:`InputError`.
    """
    allowed = _check_allow(rs, allow)
    hits, partial = scan_files((p, f.local, f.size) for p, f in rs.files.items())
    kept = [h for h in hits if h.path not in allowed]
    findings = list(_findings(rs, kept))
    dropped = Counter(h.path for h in hits if h.path in allowed)
    if dropped:
        listed = ", ".join(f"{p} ({n})" for p, n in sorted(dropped.items()))
        findings.append(Finding("PUBLISH005", "info", f"{sum(dropped.values())} secret finding(s) allowed by --allow-secret "
                                f"(not reported): {listed}", str(rs.root)))
    limit = f"{SCAN_LIMIT / 2**20:g} MiB"
    for p in partial:
        findings.append(Finding("PUBLISH006", "info", f"{p}: larger than {limit}; only its first {limit} were scanned for secrets",
                                str(rs.root.joinpath(*PurePosixPath(p).parts))))
    return findings
