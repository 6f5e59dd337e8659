"""The `gemma-release` command line: thin, one function per command, no logic.

Every command parses its options, calls one function of the library, prints
the result and picks an exit code. Domain errors (:class:`InputError`) become
one paragraph on stderr and exit code 2; a traceback only with ``--debug``.
Exit codes everywhere: 0 ok, 1 a check failed, 2 bad input or usage.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console

from release.errors import InputError

app = typer.Typer(
    name="gemma-release",
    help="Verify Gemma-derived weights against golden logits and check/publish compliant Hub releases.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
card_app = typer.Typer(help="Check and fix model cards (metadata schema, Gemma Terms of Use).", no_args_is_help=True)
app.add_typer(card_app, name="card")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
_state = {"debug": False}

# --- shared options, defined once -------------------------------------------------------------

ModelArg = Annotated[Path, typer.Argument(help="Model directory (config.json + safetensors).", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="Output format: text, json or sarif.", click_type=click.Choice(["text", "json", "sarif"]))]


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False) -> None:
    _state["debug"] = debug


def main() -> None:
    """Console-script entry point: run the app, turn domain errors into exit code 2."""
    try:
        rv = app(standalone_mode=False)
    except InputError as e:
        if _state["debug"]:
            raise
        err.print(f"[bold red]error:[/] {e}", markup=True)
        sys.exit(2)
    except click.exceptions.UsageError as e:
        e.show()
        sys.exit(2)
    except click.exceptions.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


# --- reference model: inspect, golden, verify ---------------------------------------------------

# --- tokenizer ---------------------------------------------------------------------------------

# --- cards and Terms of Use --------------------------------------------------------------------

# --- releases: init, publish -------------------------------------------------------------------


if __name__ == "__main__":  # pragma: no cover
    main()
