"""The `gemma-release` command line: thin, one function per command, no logic.

Every command parses its options, calls one function of the library, prints
the result and picks an exit code. Domain errors (:class:`InputError`) become
one paragraph on stderr and exit code 2; a traceback only with ``--debug``.
Exit codes everywhere: 0 ok, 1 a check failed, 2 bad input or usage, or the Hub/network failed,
3 a bug of ours (an internal error).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.console import Console
from rich.markup import escape

from release.errors import InputError
from release.findings import printable

app = typer.Typer(
    name="gemma-release",
    help="Verify Gemma-derived weights against golden logits and check/publish compliant Hub releases.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
)
card_app = typer.Typer(help="Check and fix model cards (metadata schema, Gemma Terms of Use).", no_args_is_help=True)
app.add_typer(card_app, name="card")



class _Console(Console):
    """Prints plain strings with control characters from input escaped (ESC -> ``\\x1b``); newlines kept."""

    def print(self, *objects, **kwargs) -> None:  # noqa: ANN002, ANN003 - rich's signature
        super().print(*(printable(o, keep_lines=True) if isinstance(o, str) else o for o in objects), **kwargs)


# Piped output is not cut to 80 columns: tables stay whole in logs and CI.
out = _Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = _Console(stderr=True, highlight=False, soft_wrap=True)
_state = {"debug": False}

# --- shared options, defined once -------------------------------------------------------------

ModelArg = Annotated[Path, typer.Argument(help="Model directory (config.json + safetensors).", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
BaseOpt = Annotated[Optional[Path], typer.Option("--base", help="For a LoRA adapter MODEL (adapter_config.json): its base "
                                                 "model directory (default: the adapter's base_model_name_or_path, "
                                                 "when local).", show_default=False)]


def _finite(value: float | None) -> float | None:
    """Option callback: NaN and infinities pass click's range checks (every comparison is False); refuse them."""
    import math

    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


FormatOpt = Annotated[Literal["text", "json", "sarif"], typer.Option("--format", "-f", help="Output format: text, json or sarif.")]


def _show_version(value: bool) -> None:
    if value:
        from release import __version__

        typer.echo(f"gemma-release {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                                    callback=_show_version, show_default=False)] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors (the exit code stays the same).")] = False,
    hub_timeout: Annotated[Optional[float], typer.Option(
        "--hub-timeout", min=0.1, max=3600, show_default=False, metavar="SECONDS",
        help="Give up on any single Hub request after this long (default: $GEMMA_RELEASE_HUB_TIMEOUT, else 30).")] = None,
) -> None:
    from release.hub import set_timeout

    _state["debug"] = debug
    set_timeout(hub_timeout)


def _fail(code: int, label: str, e: BaseException, message: str | None = None) -> None:
    """One paragraph on stderr (control characters escaped), the traceback first with --debug; exit ``code``."""
    if _state["debug"]:
        import traceback

        sys.stderr.write("".join(traceback.format_exception(e)))
        sys.stderr.flush()
    err.print(f"[bold red]{label}:[/] {escape(printable(str(e) if message is None else message))}")
    sys.exit(code)


def _classic_help_types() -> None:
    """Help shows types the way typer users know them: ``PATH``, ``FLOAT RANGE``, ``[text|json|sarif]``, nothing for flags.

    typer 0.29 prints ``<bool>`` beside every flag and ``<str>``/``<path>`` elsewhere; this applies only to
    gemma-release's own commands (the root context's name), not to other typer apps in the same process.
    """
    from typer import core

    if getattr(core.TyperOption, "_gemma_release_types", False):
        return
    names = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "bool": "BOOLEAN"}

    def classic(self, ctx):  # noqa: ANN001, ANN202 - typer's signature
        if ctx.find_root().info_name != "gemma-release":
            return original[type(self)](self, ctx)
        if self.metavar is not None:
            return self.metavar
        if getattr(self, "is_flag", False):
            return None
        desc = self.type_descriptor
        if desc.is_choice:
            label = "[" + "|".join(str(c) for c in desc.choices or ()) + "]"
        elif desc.is_ranged:
            label = f"{desc.ranged_type_name} range".upper()
        elif desc.is_path:
            label = "PATH"
        else:
            label = names.get(self._bare_type(desc.annotation).removeprefix("list[").removesuffix("]"), "TEXT")
        return label + ("..." if self.nargs != 1 else "")

    original = {cls: cls.display_type_rich for cls in (core.TyperOption, core.TyperArgument)}
    for cls in original:
        cls.display_type_rich = classic
    core.TyperOption._gemma_release_types = True  # noqa: SLF001 - idempotence marker


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001 - warnings' signature
    """A warning as one line for the user: no source file:line of ours or NumPy's, each text once.

    NumPy's floating-point warnings (``invalid value encountered in multiply``) mean the computation met
    NaN/Inf, nearly always from the weights or the inputs: said so, with where to look. ``--debug`` keeps
    Python's own format (file:line and the source line).
    """
    if _state["debug"]:
        return _python_showwarning(message, category, filename, lineno, file, line)
    text = printable(str(message))
    if text in _warned:
        return None
    _warned.add(text)
    if category is RuntimeWarning and "encountered in" in text:
        text = (f"the computation met NaN/Inf ({text}): the weights or inputs hold non-finite values "
                "(verify's NaN/Inf scan names the tensors; --no-scan skips it)")
    err.print(f"[yellow]warning:[/] {escape(text)}")
    return None


_python_showwarning = warnings.showwarning
_warned: set[str] = set()


def main() -> None:
    """Console-script entry point: 0 ok, 1 a check failed, 2 bad input/usage or the Hub failed, 3 a bug of ours."""
    with warnings.catch_warnings():  # the user's warning filters stay; only how a warning is shown changes
        warnings.showwarning = _show_warning
        _warned.clear()
        _main()


def _main() -> None:
    from release.hub import HubError

    _classic_help_types()
    try:
        rv = app(standalone_mode=False, prog_name="gemma-release")
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except InputError as e:
        _fail(2, "error", e)
    except HubError as e:  # the network or the Hub failed: not a failed check (1), not a bug (3)
        _fail(2, "Hub error", e)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except typer.TyperException as e:  # usage errors (exit 2) and other click-level errors
        show = getattr(e, "show", None)
        show() if show else err.print(f"error: {escape(printable(str(e)))}")
        sys.exit(getattr(e, "exit_code", 2))
    except OSError as e:  # the environment (permissions, a full disk, an I/O error), not our code
        where = f"{e.filename}: " if e.filename else ""
        _fail(2, "error", e, f"{where}{e.strerror or e}")
    except Exception as e:  # a bug of ours: one line, the traceback only with --debug
        _fail(3, "internal error", e, f"{type(e).__name__}: {e}" + ("" if _state["debug"] else " (rerun with --debug for the traceback)"))
    sys.exit(rv if isinstance(rv, int) else 0)


# --- reference model: inspect, golden, verify ---------------------------------------------------


class _StepLines:
    """Progress for logs (stderr not a terminal): no bar, one line per finished step, e.g. ``scan: 26/26 (0.4 s)``."""

    def __init__(self) -> None:
        import time

        self._clock = time.monotonic
        self._started: dict[str, float] = {}
        self._done: set[str] = set()

    def __enter__(self) -> "_StepLines":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def step(self, what: str, done: int, total: int) -> None:
        start = self._started.setdefault(what, self._clock())
        if done >= total and what not in self._done:
            self._done.add(what)
            err.print(escape(printable(f"{what}: {done}/{total} ({self._clock() - start:.1f} s)")))


def _progress():
    """A transient progress bar on stderr when it is a terminal; one line per step otherwise (CI logs)."""
    from release.hub import _isatty

    if not _isatty(sys.stderr):
        return _StepLines()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True)


def _progress_callback(bar):
    if isinstance(bar, _StepLines):
        return bar.step
    tasks: dict[str, object] = {}

    def update(what: str, done: int, total: int) -> None:
        if what not in tasks:
            tasks[what] = bar.add_task(what, total=total)
        bar.update(tasks[what], completed=done, total=total)

    return update


@app.command()
def inspect(model: ModelArg, json_out: JsonOpt = False, base: BaseOpt = None) -> None:
    """Show a checkpoint's generation, sizes, parameter count, storage dtype and bytes on disk (or an adapter's)."""
    from release.weights.inspect import inspect_adapter, inspect_model, render_inspect

    info = inspect_adapter(model, base) if (model / "adapter_config.json").is_file() or base else inspect_model(model)
    out.print_json(data=info) if json_out else out.print(render_inspect(info))
    raise typer.Exit(1 if info["errors"] else 0)


@app.command()
def golden(
    model: ModelArg,
    out_file: Annotated[Path, typer.Option("--out", "-o", help="Golden file to write (safetensors).")],
    ids: Annotated[Optional[list[str]], typer.Option("--ids", help="A prompt as token ids, e.g. '2,651,6037'. Repeatable.")] = None,
    prompts: Annotated[Optional[Path], typer.Option("--prompts", help="YAML/JSON prompts file (text or chat).")] = None,
    backend: Annotated[Literal["gemma_ref", "transformers"],
                       typer.Option(help="Who computes the logits: gemma_ref, or transformers (needs torch).")] = "gemma_ref",
    storage: Annotated[Optional[Literal["full", "topk"]],
                       typer.Option(help="full rows, or top-k + log-sum-exp (default: full up to 64 MB of logits, "
                                         "top-k beyond).", show_default=False)] = None,
    topk: Annotated[int, typer.Option(help="k for --storage topk.", min=1)] = 64,
    name: Annotated[Optional[str], typer.Option(help="Model name/repo id to record (default: the path).")] = None,
    revision: Annotated[Optional[str], typer.Option(help="Model revision to record.")] = None,
    base: BaseOpt = None,
    image: Annotated[Optional[list[Path]], typer.Option("--image", help="An image of the one prompt given by --ids (its "
                                                        "image tokens expanded) or a one-prompt --prompts file "
                                                        "(multimodal Gemma 3 / Gemma 4); repeatable, in order.",
                                                        show_default=False)] = None,
    pixels: Annotated[bool, typer.Option("--pixels/--no-pixels", help="Record the producer's pixel values of each "
                                         "image (Gemma 3: 9.6 MB an image at 896x896), so verify checks the tower on "
                                         "exactly those whatever resizes differently; without, only their SHA-256.")] = True,
) -> None:
    """Compute golden logits for prompts and write them to a golden file."""
    from gemma_ref.tokenizer import has_tokenizer
    from release.weights.golden import make_golden
    from release.weights.prompts import select_prompts

    specs = select_prompts(ids, prompts, image, images_ok=True)
    if (any(p.ids is None for p in specs) and not has_tokenizer(model) and (model / "config.json").is_file()
            and base is None):
        what = "the built-in prompts are text" if prompts is None else "the prompts file holds text"
        raise InputError(f"{what}, and the model has no tokenizer.model (nor tokenizer.json) to turn them into ids",
                         model, hint="pass token ids instead, e.g. --ids 2,651,6037 (repeatable), or a --prompts file "
                                     "of ids, or put the model's tokenizer.model in that directory")
    with _progress() as bar:
        step = _progress_callback(bar)
        g = make_golden(model, out_file, specs, backend, storage, topk, name, revision,
                        lambda done, total: step(f"logits ({backend})", done, total), base, keep_pixels=pixels)
    n_tok = sum(len(p.ids) for p in g.prompts)
    why = ""
    if storage is None:  # say why, since the user did not choose
        mb = n_tok * g.vocab_size * 4 / 2**20
        why = (f" (full rows would be {mb:.0f} MB, over 64 MB: top-{g.topk} + log-sum-exp; --storage full to keep them)"
               if g.storage == "topk" else f" ({mb:.1f} MB; top-k is used past 64 MB)")
    n_img = sum(len(p.images or ()) for p in g.prompts)
    imgs = (f", {n_img} image(s) preprocessed by {g.extra.get('image_processor_backend')}" if n_img else "")
    out.print(f"wrote {out_file}: {len(g.prompts)} prompts, {n_tok} positions, {g.storage} logits{why} "
              f"from {g.producer} {g.producer_version}{imgs}")


def _refuse_quantized(model: Path) -> None:
    """A quantized directory has no float weights to check against a golden: say what to run instead (exit 2)."""
    from release.weights.quant import quantized_variant

    found = quantized_variant(model)
    if found is not None:
        raise InputError(f"this is a {found[1].format} quantized variant ({found[1].label}): use --against ORIGINAL_DIR "
                         "to measure it against the model it was made from", model)


@app.command()
def verify(
    golden_file: Annotated[Optional[Path], typer.Option("--golden", "-g", help="Golden file to compare a model directory against.")] = None,
    model: Annotated[Optional[Path], typer.Argument(help="Model directory (config.json + safetensors), or a .gguf variant (with --against).", show_default=False)] = None,
    repo: Annotated[Optional[str], typer.Option("--repo", metavar="ORG/NAME[@REVISION]", help=escape(
                                                "Verify ORG/NAME[@REVISION] from the Hub instead "
                                                "(downloads config, safetensors and tokenizer only)."))] = None,
    token: Annotated[Optional[str], typer.Option("--token", help="Hub token (prefer HF_TOKEN: options end up in shell history).",
                                                 show_default=False)] = None,
    against: Annotated[Optional[Path], typer.Option("--against", help="For a .gguf or a quantized MODEL directory (MLX, bitsandbytes, GPTQ, AWQ, compressed-tensors, FP8): the original model directory it was made from.")] = None,
    ids: Annotated[Optional[list[str]], typer.Option("--ids", help="For a .gguf or quantized variant: a prompt as token ids, e.g. '2,651,6037'. Repeatable.")] = None,
    prompts: Annotated[Optional[Path], typer.Option("--prompts", help="For a .gguf or quantized variant: YAML/JSON prompts file (default: the built-in set).")] = None,
    atol: Annotated[Optional[float], typer.Option(help="Absolute tolerance on every logit (default 1e-4; none for a .gguf).", min=0, callback=_finite, show_default=False)] = None,
    rtol: Annotated[float, typer.Option(help="Relative tolerance (times |golden|).", min=0, callback=_finite)] = 1e-5,
    row_rtol: Annotated[Optional[float], typer.Option(help="Tolerance relative to each position's max |golden| (default 5e-5; 0 for the per-logit bound alone).", min=0, callback=_finite, show_default=False)] = None,
    max_kl: Annotated[Optional[float], typer.Option(help="Fail when a position's KL(golden||ours) exceeds this (nats, >= 0).", min=0, callback=_finite)] = None,
    min_top1: Annotated[Optional[float], typer.Option(help="Fail when top-1 agreement is below this fraction, 0..1 (per prompt; for a .gguf over all positions, default per quant type).", min=0, max=1, callback=_finite)] = None,
    max_mean_kl: Annotated[Optional[float], typer.Option(help="Fail when the mean KL over all positions exceeds this (nats, >= 0; a .gguf: default per quant type).", min=0, callback=_finite)] = None,
    scan: Annotated[bool, typer.Option("--scan/--no-scan", help="Scan every weight for NaN/Inf first.")] = True,
    json_out: JsonOpt = False,
    out_file: Annotated[Optional[Path], typer.Option("--out", "-o", help="Also write the JSON report to this file (e.g. for `variants table --fidelity`).")] = None,
    base: BaseOpt = None,
    base_repo: Annotated[Optional[str], typer.Option("--base-repo", metavar="ORG/NAME[@REVISION]", help=escape(
                                                     "With --repo naming an adapter repo: download its base model from "
                                                     "the Hub too."), show_default=False)] = None,
) -> None:
    """Check a checkpoint against a golden file, or a GGUF / quantized variant against its original. Exit 0 pass, 1 fail, 2 bad input."""
    from release.weights.verify import Tolerance, render_report, verify_model, write_report_json

    is_gguf = model is not None and model.suffix.lower() == ".gguf"
    if is_gguf or (model is not None and against is not None):  # a lossy variant (GGUF, or MLX/bnb/GPTQ ... dir)
        from release.weights.prompts import select_prompts

        what = "a .gguf variant" if is_gguf else "a quantized variant"
        if against is None or golden_file is not None or repo is not None:
            raise typer.BadParameter(f"{what} is compared with its original: give --against MODEL_DIR (not --golden or --repo)")
        if atol is not None:
            raise typer.BadParameter(f"--atol does not apply to {what} (lossy variants are judged by --max-mean-kl, "
                                     "--min-top1, --max-kl)")
        if is_gguf:
            from release.weights.gguf_verify import verify_gguf as measure
        else:
            from release.weights.quant_verify import verify_quant as measure
        with _progress() as bar:
            report = measure(model, against, select_prompts(ids, prompts), max_mean_kl, min_top1, max_kl,
                             _progress_callback(bar))
    else:
        if model is not None:
            _refuse_quantized(model)
        if (model is None) == (repo is None):
            raise typer.BadParameter("give either a MODEL directory or --repo ORG/NAME[@REVISION]")
        if golden_file is None or against is not None or ids or prompts is not None:
            raise typer.BadParameter("a model directory is checked against --golden FILE (--against, --ids and --prompts are for a .gguf or a quantized variant)")
        if repo is not None:
            from release.hub import download_for_verify, parse_repo_ref

            model = download_for_verify(*parse_repo_ref(repo), token=token)
            _refuse_quantized(model)
            if base_repo is not None:
                if base is not None:
                    raise typer.BadParameter("give --base DIR or --base-repo ORG/NAME, not both")
                base = download_for_verify(*parse_repo_ref(base_repo), token=token)
        elif base_repo is not None:
            raise typer.BadParameter("--base-repo goes with --repo (a local adapter takes --base DIR)")
        tol = Tolerance(atol=1e-4 if atol is None else atol, rtol=rtol, max_kl=max_kl, min_top1=min_top1, max_mean_kl=max_mean_kl,
                        **({} if row_rtol is None else {"row_rtol": row_rtol}))
        with _progress() as bar:
            report = verify_model(model, golden_file, tol, scan, _progress_callback(bar), base)
    if out_file is not None:
        write_report_json(report, out_file)
    if json_out:
        out.print_json(data=report.to_dict())
    else:
        out.print(render_report(report))
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def diagnose(
    model: ModelArg,
    candidate: Annotated[Path, typer.Option("--candidate", "-c", help="The other implementation's logits: a golden file, "
                                            "or an .npz with input_ids [T] or [N, T] and logits [T, V] or [N, T, V].",
                                            show_default=False)],
    json_out: JsonOpt = False,
) -> None:
    """Name the known Gemma port bug (or pair) a wrong model's logits match. Exit 0 matches the reference, 1 a bug or
    nothing explains it, 2 bad input."""
    from release.weights.diagnose import diagnose as run
    from release.weights.diagnose import render

    with _progress() as bar:
        step = _progress_callback(bar)
        report = run(model, candidate, progress=lambda done, total: step("bug variants", done, total))
    out.print_json(data=report) if json_out else out.print(escape(render(report)))
    raise typer.Exit(0 if report["best"] == "none" else 1)


@app.command("trace")
def trace_cmd(
    model: ModelArg,
    ids: Annotated[str, typer.Option("--ids", help="The token ids to run, e.g. '2,651,6037'.", show_default=False)],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="Trace file to write (safetensors).", show_default=False)],
    detail: Annotated[bool, typer.Option("--detail", help="Also each layer's q, k, v, attention and MLP outputs.")] = False,
    bug: Annotated[Optional[str], typer.Option("--bug", help="Trace with known bugs switched on (ids joined by '+').")] = None,
    image: Annotated[Optional[list[Path]], typer.Option("--image", help="An image of the prompt (multimodal Gemma 3 / "
                                                        "Gemma 4; --ids hold its image tokens expanded); repeatable. "
                                                        "The tower's hidden states are traced too.")] = None,
) -> None:
    """Save the residual stream after every layer (named like transformers' output_hidden_states)."""
    from gemma_ref.bugs import parse
    from release.weights.prompts import parse_ids
    from release.weights.trace import meta_for, trace, write_trace

    try:
        bug_ids = [b.id for b in parse(bug)] if bug else []
    except ValueError as e:
        raise InputError(str(e)) from None
    seq = parse_ids(ids).ids
    pictures = None
    if image:
        from release.images import load_image

        pictures = [load_image(p) for p in image]
    t = trace(model, seq, detail, bug_ids, pictures)
    write_trace(t, out_file, meta_for(model, t["input_ids"], detail, bug_ids))
    n = sum(k.startswith("hidden_states.") for k in t)
    views = len({k.split(".")[1] for k in t if k.startswith("vision.") and ".hidden_states." in k})
    out.print(f"wrote {out_file}: {n} hidden states" + (", with q/k/v/attention/MLP per layer" if detail else "")
              + (f"; the vision tower's for {views} view(s) of {len(pictures)} image(s)" if pictures else ""))


@app.command("trace-diff")
def trace_diff_cmd(
    a: Annotated[Path, typer.Argument(help="Trace A (the reference, e.g. from `gemma-release trace`).", show_default=False)],
    b: Annotated[Path, typer.Argument(help="Trace B (same tensor names).", show_default=False)],
    atol: Annotated[float, typer.Option(help="Absolute tolerance.", min=0, callback=_finite)] = 1e-4,
    rtol: Annotated[float, typer.Option(help="Tolerance relative to max |A| of the tensor.", min=0, callback=_finite)] = 1e-4,
    every: Annotated[bool, typer.Option("--all", help="Show every tensor, not only the hidden states.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Per layer, max and relative error between two traces, and the first layer where they part. Exit 1 when they do."""
    from release.weights.trace import read_trace, render_diff, trace_diff

    report = trace_diff(read_trace(a), read_trace(b), atol, rtol)
    out.print_json(data=report) if json_out else out.print(escape(render_diff(report, every)))
    raise typer.Exit(1 if report["parted"] else 0)


@app.command("export")
def export_cmd(
    gguf_file: Annotated[Path, typer.Argument(help="A Gemma .gguf (llama.cpp's format; the first part of a split one), "
                                                   "or with --merge a LoRA adapter directory.", show_default=False)],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory to create (must not exist, or be empty).", show_default=False)],
    dtype: Annotated[Literal["auto", "float32", "bfloat16", "float16"],
                     typer.Option(help="Storage dtype; auto: exact (float32 for quantized tensors, else the stored float type; "
                                       "float32 for --merge).")] = "auto",
    json_out: JsonOpt = False,
    merge: Annotated[bool, typer.Option("--merge", help="Merge a LoRA adapter (the argument) into its base and write "
                                        "the result as a plain checkpoint.")] = False,
    base: BaseOpt = None,
) -> None:
    """Rebuild a Hugging Face checkpoint (config.json, safetensors, tokenizer.model) from a Gemma GGUF, or merge an adapter."""
    if merge or base is not None:
        from release.weights.merge import merge_adapter

        if not merge:
            raise typer.BadParameter("--base goes with --merge (an adapter directory to merge into its base)")
        with _progress() as bar:
            res = merge_adapter(gguf_file, out_dir, base, dtype, _progress_callback(bar))
        if json_out:
            out.print_json(data=res)
        else:
            out.print(escape(f"wrote {res['out']}: {res['adapter']} merged into {res['base']} ({res['merged_projections']} "
                             f"projections, {res['tensors']} tensors, {res['dtype']}, {res['bytes'] / 2**20:.1f} MiB) "
                             f"in {res['seconds']:.1f} s"))
        return
    from release.weights.export import export_gguf

    with _progress() as bar:
        res = export_gguf(gguf_file, out_dir, dtype, _progress_callback(bar))
    if json_out:
        out.print_json(data={"out": str(res.out), "config_source": res.config_source, "variant": res.variant,
                             "dtype": res.dtype, "tensors": res.n_tensors, "bytes": res.bytes_written,
                             "files": res.files, "seconds": res.seconds, "tokenizer_pieces": res.tokenizer_pieces,
                             "tokenizer_rewrites_reversed": res.tokenizer_rewrites_reversed, "notes": res.notes,
                             "findings": [f.to_dict() for f in res.findings]})
        return
    out.print(escape(res.summary()))
    for note in res.notes:
        out.print(escape(f"  note: {note}"))
    for f in res.findings:
        out.print(escape(f"  {f.severity} {f.rule}: {f.message}"))


@app.command()
def generate(
    model: ModelArg,
    prompt: Annotated[str, typer.Argument(help="Prompt text, taken verbatim (BOS is added).", show_default=False)],
    chat: Annotated[bool, typer.Option("--chat", help="Wrap PROMPT as one user turn of the chat template.")] = False,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n", help="Stop after this many new tokens.", min=0)] = 64,
    temperature: Annotated[float, typer.Option(help="0 = greedy; higher = more random.", min=0, callback=_finite)] = 0.0,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Sample among the k most likely tokens.", min=1)] = None,
    top_p: Annotated[Optional[float], typer.Option("--top-p", help="Sample among the fewest tokens holding this much probability.",
                                                   min=0, max=1, callback=_finite)] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (same seed, same text).")] = None,
    cache_weights: Annotated[bool, typer.Option("--cache-weights", help="Keep weights in float32 after first use "
                                                "(2x the bf16 size in RAM; faster prompts).")] = False,
    json_out: JsonOpt = False,
    base: BaseOpt = None,
    image: Annotated[Optional[list[Path]], typer.Option("--image", help="An image (PNG, JPEG, ...) for a multimodal "
                                                        "Gemma 3 / Gemma 4; repeatable, in the order of the placeholders "
                                                        "in PROMPT (none there: the images go first).")] = None,
) -> None:
    """Generate text with the reference model, streaming tokens as they come (KV cache, greedy or sampled)."""
    import json

    from gemma_ref.generate import Sampling, TextStream, generate as run, stop_ids
    from gemma_ref import adapters
    from gemma_ref.model import load_model
    from gemma_ref.tokenizer import Tokenizer, has_tokenizer

    from release.files import check_model_files

    check_model_files(model)  # a FIFO among the model files would block gemma_ref's readers
    sampling = Sampling(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    tok_dir = model  # an adapter without a tokenizer of its own uses its base's
    if adapters.is_adapter_dir(model) and not has_tokenizer(model):
        tok_dir = adapters.resolve_base(model, base)
        check_model_files(tok_dir)
    tok = Tokenizer(tok_dir)
    pictures = vc = None
    if image:
        from gemma_ref import vision
        from release.images import load_image

        pictures = [load_image(p) for p in image]  # uint8 [H, W, 3] each; bad files are exit 2 here
        vc = vision.load_vision_config(adapters.resolve_base(model, base) if adapters.is_adapter_dir(model) else model)
        if vc is None:
            raise InputError("--image needs a multimodal Gemma 3 or Gemma 4 checkpoint (a vision_config and its "
                             "tower); this one has none gemma_ref runs", model)
        if vc.placeholder not in prompt:  # as the chat templates do: the images before the text
            prompt = vc.placeholder * len(pictures) + prompt
    with load_model(model, cache_weights=cache_weights, base=base) as m:
        tok.check_vocab(m.config.vocab_size)
        if pictures:  # placeholders expanded as the processor does, in the rendered turn (golden's own encoder)
            from release.weights.prompts import PromptSpec, encode_prompts

            spec = (PromptSpec("prompt", messages=[{"role": "user", "content": prompt}], images=pictures) if chat
                    else PromptSpec("prompt", text=prompt, images=pictures))
            ((_, ids),) = encode_prompts(tok, [spec], m.config.generation, vc)
        else:
            ids = (tok.apply_chat_template([{"role": "user", "content": prompt}], generation=m.config.generation)
                   if chat else tok.encode(prompt))  # the model's own template (Gemma 4: <|turn>), not a guess
        stop = stop_ids(m.config, tok)
        stream = TextStream(tok, ids, hide=stop)

        def show(token: int) -> None:
            if not json_out:
                sys.stdout.write(stream.push(token))
                sys.stdout.flush()

        result = run(m, ids, max_new_tokens, sampling, stop, on_token=show, images=pictures)
    text = tok.decode([i for i in result.ids if i not in stop])
    per_token = result.seconds_per_token
    if json_out:
        print(json.dumps({"prompt_tokens": len(ids), "ids": result.ids, "text": text, "stop_reason": result.stop_reason,
                          "prefill_seconds": round(result.prefill_seconds, 4),
                          "seconds_per_token": None if per_token is None else round(per_token, 4)}, ensure_ascii=False))
        return
    sys.stdout.write("\n")
    rate = f", {per_token:.3f} s/token" if per_token is not None else ""
    err.print(f"[dim]{len(ids)} prompt tokens in {result.prefill_seconds:.2f} s; {len(result.ids)} new{rate}; "
              f"stopped: {result.stop_reason}[/]")


# --- tokenizer ---------------------------------------------------------------------------------


@app.command("tokenize")
def tokenize_cmd(
    model: Annotated[Path, typer.Argument(help="Model directory holding tokenizer.model (or tokenizer.json), or that file.", show_default=False)],
    text: Annotated[str, typer.Argument(help="Text to tokenize, taken verbatim (quote it).", show_default=False)],
    json_out: JsonOpt = False,
    backend: Annotated[Literal["sentencepiece", "reference"], typer.Option("--backend", help="sentencepiece (the library) or reference (pure Python).")] = "sentencepiece",
    no_bos: Annotated[bool, typer.Option("--no-bos", help="Do not prepend the BOS id.")] = False,
    chat: Annotated[bool, typer.Option("--chat", help="Treat TEXT as one user turn of the chat template (BOS and generation prompt included).")] = False,
) -> None:
    """Print the token ids and pieces of TEXT with the model's own tokenizer."""
    import json
    import warnings

    from rich.table import Table
    from rich.text import Text

    from gemma_ref.tokenizer import Tokenizer, printable_piece

    tok = Tokenizer(model, backend=backend)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if chat:
            ids = tok.apply_chat_template([{"role": "user", "content": text}])
        else:
            ids = tok.encode(text, bos=not no_bos)
    for w in caught:
        err.print(Text(f"warning: {w.message}"))
    pieces = tok.pieces(ids)
    if json_out:
        print(json.dumps({"tokenizer": str(tok.path), "backend": backend, "ids": ids, "pieces": pieces}, ensure_ascii=False))
        return
    table = Table(box=None, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("id", justify="right")
    table.add_column("piece")
    for n, (i, piece) in enumerate(zip(ids, pieces)):
        table.add_row(str(n), str(i), Text(printable_piece(piece)))
    out.print(table)
    out.print(Text(f"{len(ids)} tokens ({tok.path}, {backend})"))


# --- cards and Terms of Use --------------------------------------------------------------------

CardPathArg = Annotated[Path, typer.Argument(help="A model card (README.md) or a release directory.", show_default=False)]


PublishedRepoOpt = Annotated[Optional[str], typer.Option(
    "--repo", metavar="ORG/NAME[@REVISION]", show_default=False,
    help=escape("Check ORG/NAME[@REVISION] as published on the Hub instead of PATH "
                "(downloads only the card, NOTICE, terms copies and configs; weights are listed, never downloaded)."))]
TokenOpt = Annotated[Optional[str], typer.Option("--token", help="Hub token (prefer HF_TOKEN: options end up in shell history).",
                                                 show_default=False)]


def _published(path: Path | None, repo: str | None, token: str | None, work: Path):
    """For ``--repo``: the published repo's small files in ``work`` and its listing as a release set; else None."""
    if (path is None) == (repo is None):
        raise typer.BadParameter("give either a PATH or --repo ORG/NAME[@REVISION]")
    if repo is None:
        return None
    from release import release_yaml
    from release.hub import fetch_published, parse_repo_ref
    from release.releaseset import from_listing

    pub = fetch_published(*parse_repo_ref(repo), work, token=token, say=lambda s: err.print(escape(printable(s))))
    if "README.md" not in pub.files:
        raise InputError(f"{pub.repo_id}@{pub.revision} has no README.md (the model card)", hint="publish a card first")
    rs = from_listing(pub.root, {p: f.size for p, f in pub.files.items()})
    own = release_yaml.ReleaseConfig(root=pub.root, repo=pub.repo_id, files=(), revision=pub.revision)  # the card's own repo
    return pub, rs, own


def _relabel(findings: list, pub) -> list:  # noqa: ANN001
    """Finding paths under the download directory, shown as ``hf://ORG/NAME@REV/FILE``."""
    import dataclasses

    base = str(pub.root)
    return [dataclasses.replace(f, path=pub.label + "/" + f.path[len(base):].lstrip("/\\")) if f.path and f.path.startswith(base) else f
            for f in findings]


def _published_listing(pub, rs):  # noqa: ANN001
    """Variant-table listings: the published repo's own files at its revision, the Hub for every other repo."""
    from release.hub import variant_listing

    others = variant_listing()

    def listing(repo_id: str, revision: str) -> dict[str, int] | None:
        if repo_id == pub.repo_id and revision in (pub.revision, pub.commit):
            return rs.listing()
        return others(repo_id, revision)

    return listing


@card_app.command("check")
def card_check(
    path: Annotated[Optional[Path], typer.Argument(help="A model card (README.md) or a release directory.", show_default=False)] = None,
    fmt: FormatOpt = "text",
    hub: Annotated[bool, typer.Option("--hub", help="Also check variant-table links against the Hub's file listings.")] = False,
    repo: PublishedRepoOpt = None,
    token: TokenOpt = None,
    repo_id: Annotated[Optional[str], typer.Option("--repo-id", metavar="ORG/NAME", show_default=False,
                                                  help="Judge a local card as this Hub repo (google/... is the upstream: derivative-only rules do not apply).")] = None,
    allow_secret: Annotated[Optional[list[str]], typer.Option("--allow-secret", metavar="FILE", show_default=False,
                                                              help="A release file (repo path) whose secret findings (PUBLISH004) are deliberate. Repeatable.")] = None,
) -> None:
    """Check card metadata (schema, Hub rules), the Gemma Terms of Use obligations and variant tables.

    Exit 0 when no finding is an error, 1 when one is, 2 when the input cannot be read.
    """
    import tempfile

    from release.card.rules import check_release_card, check_release_set
    from release.card.variants import check_variants
    from release.findings import has_errors, render

    with tempfile.TemporaryDirectory(prefix="gemma-release-repo-") as work:
        published = _published(path, repo, token, Path(work))
        if published is None:
            findings = check_release_card(path, hub=True if hub else None, repo_id=repo_id, allow_secrets=allow_secret or ())
        else:
            pub, rs, own = published
            rid = repo_id or (repo.split("@", 1)[0] if repo else None)
            findings = _relabel(check_release_set(rs, repo_id=rid, allow_secrets=allow_secret or ())
                                + check_variants(pub.root, own, hub=_published_listing(pub, rs), release_set=rs, repo_id=rid), pub)
    typer.echo(render(findings, fmt))
    raise typer.Exit(1 if has_errors(findings) else 0)


@card_app.command("fix")
def card_fix(path: CardPathArg) -> None:
    """Add missing license fields, a Terms of Use section and (for a directory) NOTICE; change nothing else."""
    from release.card.rules import fix_card

    changes = fix_card(path)
    typer.echo(printable("\n".join(changes), keep_lines=True) if changes else "nothing to change")


@card_app.command("rules")
def card_rules() -> None:
    """List every rule the tool can report (card, Terms of Use, Apache-2.0, variants, weights, logits, GGUF, publish) as a Markdown table."""
    from release.findings import load_all_rules, rules_table

    load_all_rules()
    typer.echo(rules_table())


@app.command("notice")
def notice(directory: Annotated[Path, typer.Argument(help="Release directory to write NOTICE into.", show_default=False)]) -> None:
    """Write (or complete) the NOTICE file the Gemma Terms of Use require in DIR."""
    from release.card.terms import write_notice

    typer.echo(printable(str(write_notice(directory))))

# --- releases: init, publish -------------------------------------------------------------------

ReleaseDirArg = Annotated[Path, typer.Argument(help="Release directory (holds release.yaml, the card and the files).", show_default=False)]
RepoOpt = Annotated[Optional[str], typer.Option("--repo", help="Destination ORG/NAME (overrides release.yaml).")]
HubOpt = Annotated[bool, typer.Option("--hub/--offline", help="Also check variant links against the Hub listing.")]
variants_app = typer.Typer(help="Quantized variants: check the card's tables, generate them from release.yaml, measure "
                                "every local variant against the original, chart size against fidelity.", no_args_is_help=True)
app.add_typer(variants_app, name="variants")


@app.command()
def init(
    directory: ReleaseDirArg,
    repo: RepoOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing release.yaml.")] = False,
) -> None:
    """Write DIR/release.yaml drafted from what DIR holds (files by name, card metadata, golden file); list what it leaves out."""
    from release.publish.draft import init as init_release

    path, cfg, left_out = init_release(directory, repo=repo, overwrite=force)
    out.print(escape(f"wrote {path}: {cfg.repo}, {len(cfg.files)} files" + (f", golden {cfg.golden.name}" if cfg.golden else "")))
    for name in cfg.files:
        out.print(escape(f"  + {name}"))
    if left_out:
        out.print(f"left out ({len(left_out)}):")
        for name, why in left_out:
            out.print(escape(f"  - {name}: {why}"))
    out.print("review it (repo, base_model, variants), then run `gemma-release publish DIR --dry-run`")


@app.command()
def publish(
    directory: ReleaseDirArg,
    repo: RepoOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Run the checks and print the plan; touch no network.")] = False,
    private: Annotated[Optional[bool], typer.Option("--private/--public", help="Visibility when the repo is created.", show_default=False)] = None,
    revision: Annotated[Optional[str], typer.Option("--revision", help="Branch to commit to (created if missing).")] = None,
    create_pr: Annotated[bool, typer.Option("--create-pr", help="Open a pull request instead of committing to the branch.")] = False,
    commit_message: Annotated[Optional[str], typer.Option("--commit-message", "-m", help="Commit message.")] = None,
    tag: Annotated[Optional[str], typer.Option("--tag", help="Tag the release commit.")] = None,
    token: Annotated[Optional[str], typer.Option("--token", help="Hub token. Discouraged (it lands in shell history): prefer HF_TOKEN or `hf auth login`.", show_default=False)] = None,
    json_out: JsonOpt = False,
    allow_secret: Annotated[Optional[list[str]], typer.Option("--allow-secret", metavar="FILE", show_default=False,
                                                              help="Upload this release file (repo path) although the secret scan flags it (PUBLISH004). Repeatable.")] = None,
) -> None:
    """Check everything, then upload DIR to the Hub in one commit and validate what landed."""
    from release.findings import render
    from release.hub import HubError
    from release.publish.plan import Options, execute, plan, render_plan

    opts = Options(repo=repo, revision=revision, private=private, create_pr=create_pr,
                   commit_message=commit_message, tag=tag, token=token, dry_run=dry_run, allow_secrets=tuple(allow_secret or ()))
    p = plan(directory, opts)
    if p.findings and not json_out:
        err.print(escape(render(p.findings, "text")))
    if not p.ok:
        if json_out:
            out.print_json(data={"ok": False, "uploaded": [], "checks": [f.to_dict() for f in p.findings]})
        err.print("publish: checks failed; nothing was uploaded")
        raise typer.Exit(1)
    if dry_run:
        out.print_json(data=p.to_dict()) if json_out else out.print(escape(render_plan(p)))
        return
    try:
        res = execute(p, token, say=lambda s: err.print(escape(s)))
    except HubError as e:
        err.print(f"[bold red]publish failed:[/] {escape(str(e))}")
        err.print("fix the cause and run publish again: files that already reached the Hub are not uploaded twice, and the checks after the commit are repeated")
        raise typer.Exit(2)  # the network or the Hub failed: exit 2, distinct from a failed check (1)
    if res.findings:
        err.print(escape(render(list(res.findings), "text")))
    if json_out:
        out.print_json(data={"ok": not any(f.severity == "error" for f in res.findings), "repo": res.repo_id,
                             "commit": res.commit_oid, "commit_url": res.commit_url, "pr_url": res.pr_url,
                             "uploaded": list(res.uploaded), "checks": [f.to_dict() for f in p.findings],
                             "findings": [f.to_dict() for f in res.findings]})
    else:
        out.print("nothing to upload; the Hub already has this release" if not res.uploaded else f"uploaded {len(res.uploaded)} files")
        out.print(f"commit: {res.commit_url}" + (f"\npull request: {res.pr_url}" if res.pr_url else ""))
    if any(f.severity == "error" for f in res.findings):
        err.print("publish: the files on the Hub do not match the local release (see above)")
        raise typer.Exit(1)


@variants_app.command("check")
def variants_check(
    path: Annotated[Optional[Path], typer.Argument(help="Card (README.md) or release directory.", show_default=False)] = None,
    hub: HubOpt = False,
    fmt: FormatOpt = "text",
    repo: PublishedRepoOpt = None,
    token: TokenOpt = None,
) -> None:
    """Check the card's variant tables (QUANT rules); with --hub, against the Hub's files too; with --repo, a published card."""
    import tempfile

    from release.findings import render
    from release.card.variants import check_variants

    with tempfile.TemporaryDirectory(prefix="gemma-release-repo-") as work:
        published = _published(path, repo, token, Path(work))
        if published is None:
            findings = check_variants(path, hub=True if hub else None)
        else:
            pub, rs, own = published
            findings = _relabel(check_variants(pub.root, own, hub=_published_listing(pub, rs), release_set=rs), pub)
    out.print(escape(render(findings, fmt)))
    raise typer.Exit(1 if any(f.severity == "error" for f in findings) else 0)


@variants_app.command("table")
def variants_table(
    directory: ReleaseDirArg,
    write: Annotated[bool, typer.Option("--write", help="Write the table into DIR/README.md between the markers.")] = False,
    hub: HubOpt = False,
    fidelity: Annotated[Optional[list[Path]], typer.Option("--fidelity", help="JSON report of `verify VARIANT --against M` (--out or --json; "
                                                          "VARIANT a .gguf or a quantized directory), or a directory of them "
                                                          "(`variants fidelity`'s); adds a fidelity column matched by file or "
                                                          "directory name. Repeatable.")] = None,
) -> None:
    """Generate the variant table from release.yaml and the real files (local_dir, or the Hub with --hub)."""
    from release import release_yaml
    from release.card.variants import generate_table, listing_for, load_fidelity, write_table

    measured = load_fidelity(fidelity) if fidelity else None
    if write:
        card, changed = write_table(directory, hub=True if hub else None, fidelity=measured)
        out.print(f"{'updated' if changed else 'unchanged'}: {card}")
        return
    cfg = release_yaml.load(directory)
    listing = listing_for(cfg, True if hub else None, Path(directory))
    if listing is None:
        raise InputError("no variant has a local_dir and Hub access is off; pass --hub", path=cfg.path)
    out.print(escape(generate_table(cfg, listing, measured)), end="")


@variants_app.command("fidelity")
def variants_fidelity(
    directory: ReleaseDirArg,
    ids: Annotated[Optional[list[str]], typer.Option("--ids", help="A prompt as token ids, e.g. '2,651,6037'. Repeatable.")] = None,
    prompts: Annotated[Optional[Path], typer.Option("--prompts", help="YAML/JSON prompts file (default: the built-in set, "
                                                    "tokenized with the original's tokenizer).")] = None,
    against: Annotated[Optional[Path], typer.Option("--against", help="The original model directory (default: the release "
                                                    "directory itself).", show_default=False)] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out-dir", "-o", help="Directory for the reports, one "
                                                    "VARIANT.json each (default: DIR/fidelity).", show_default=False)] = None,
    storage: Annotated[Optional[Literal["full", "topk"]], typer.Option(
        help="How the original's logits are kept: full rows, or top-k + log-sum-exp (default: full up to 64 MB of "
             "logits, as `golden` decides).", show_default=False)] = None,
    topk: Annotated[Optional[int], typer.Option(help="k for top-k storage (default 4096: the KL is then ~1.5% under the "
                                                 "full one on gemma-3-270m).", min=1, show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Measure every local variant in release.yaml (GGUFs, quantized directories) against the original, run once.

    Writes one `verify --against` report per variant (for `variants table --fidelity DIR/fidelity`) and prints a summary. Exit 0 all within their bounds, 1 one is not, 2 bad input.
    """
    from release.weights.fidelity import measure_release, render_run
    from release.weights.prompts import select_prompts

    specs = select_prompts(ids, prompts)
    with _progress() as bar:
        run = measure_release(directory, specs, against=against, out_dir=out_dir, storage=storage, topk=topk,
                              progress=_progress_callback(bar))
    if json_out:
        out.print_json(data=run.to_dict())
    else:
        out.print(render_run(run))
    raise typer.Exit(0 if run.ok else 1)


@variants_app.command("chart")
def variants_chart(
    directory: ReleaseDirArg,
    out_file: Annotated[Path, typer.Option("--out", "-o", help="The chart to write: .png or .svg.", show_default=False)],
    fidelity: Annotated[Optional[list[Path]], typer.Option("--fidelity", help="A report of `verify VARIANT --against M` or "
                                                          "`variants fidelity`, or a directory of them (default: "
                                                          "DIR/fidelity). Repeatable.", show_default=False)] = None,
    x: Annotated[Literal["size", "bits"], typer.Option("--x", help="The x axis: the variant's size on disk, or bits per "
                                                       "weight of its quantized tensors.")] = "size",
    json_out: JsonOpt = False,
) -> None:
    """Chart every measured variant: size (or bits per weight) against mean KL, log scale. Needs matplotlib (pip install 'gemma-release\\[chart]')."""
    from release import release_yaml
    from release.card.variants import load_fidelity
    from release.weights.fidelity import DEFAULT_OUT_DIR, write_chart

    cfg = release_yaml.load(directory)
    measured = list(load_fidelity(fidelity or [Path(directory) / DEFAULT_OUT_DIR]).values())
    info = write_chart(measured, out_file, x, title=f"{cfg.repo}: quantized variants, {'size' if x == 'size' else 'bits per weight'} against mean KL")
    if json_out:
        out.print_json(data=info)
        return
    clamped = [p["label"] for p in info["points"] if p["clamped"]]
    n = len(info["points"])
    out.print(escape(printable(f"wrote {out_file}: {n} variant{'s' if n != 1 else ''}"
                               + (f" ({', '.join(clamped)}: KL 0, drawn at {info['floor']:.0e})" if clamped else ""))))


if __name__ == "__main__":  # pragma: no cover
    main()
