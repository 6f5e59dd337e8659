"""pytest plugin: golden-logit tests in your own test suite (entry point ``pytest11``, loaded automatically).

Two ways to use it once gemma-release is installed::

    def test_logits(gemma_golden):
        gemma_golden("path/to/model", "before.golden")              # verify's defaults: atol 1e-4, rtol 1e-5
        gemma_golden("path/to/q-model", "before.golden", max_kl=0.01, min_top1=0.95, atol=10)

or, with no test file at all::

    pytest --gemma-golden path/to/model=before.golden [--gemma-golden M2=G2 ...]

which adds one test per pair (``gemma_golden[path/to/model=before.golden]``). A test passes when
``gemma-release verify MODEL --golden GOLDEN`` would exit 0; it fails with verify's findings, table
and verdict as the message; bad input (a missing file, a golden of another vocabulary) fails with
the one-paragraph error the CLI would print. Relative paths are taken from pytest's rootdir for
``--gemma-golden`` and from the current directory for the fixture.

This module imports nothing heavy at import time: pytest loads it in every session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

OPTION = "--gemma-golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gemma-release", "golden-logit tests (gemma-release)")
    group.addoption(OPTION, action="append", default=[], metavar="MODEL=GOLDEN", dest="gemma_golden",
                    help="verify the model directory MODEL against the golden file GOLDEN as one test (repeatable)")
    group.addoption("--gemma-atol", type=float, default=None, metavar="ATOL", dest="gemma_atol",
                    help="absolute tolerance for --gemma-golden tests (default 1e-4)")
    group.addoption("--gemma-rtol", type=float, default=None, metavar="RTOL", dest="gemma_rtol",
                    help="relative tolerance for --gemma-golden tests (default 1e-5)")


def _report_text(report: Any) -> str:
    """verify's text output (findings, the per-prompt table, the verdict), rendered without colour."""
    import io

    from rich.console import Console

    from release.weights.verify import render_report

    buf = io.StringIO()
    Console(file=buf, width=160, color_system=None, highlight=False, soft_wrap=True).print(render_report(report))
    return buf.getvalue().rstrip()


def check_golden(model: str | Path, golden: str | Path, *, atol: float = 1e-4, rtol: float = 1e-5,
                 max_kl: float | None = None, min_top1: float | None = None, max_mean_kl: float | None = None,
                 scan: bool = True) -> Any:
    """Verify ``model`` against ``golden`` like ``gemma-release verify``; ``pytest.fail`` with verify's table unless it passes.

    Returns the :class:`release.weights.verify.VerifyReport` of a pass.
    """
    from release.errors import InputError
    from release.weights.verify import Tolerance, verify_model

    tol = Tolerance(atol=atol, rtol=rtol, max_kl=max_kl, min_top1=min_top1, max_mean_kl=max_mean_kl)
    try:
        report = verify_model(Path(model), Path(golden), tol, scan)
    except InputError as e:
        pytest.fail(f"gemma-release verify: bad input: {e}", pytrace=False)
    if not report.ok:
        pytest.fail(_report_text(report), pytrace=False)
    return report


@pytest.fixture
def gemma_golden():
    """``gemma_golden(model, golden, **tolerances)``: fails the test with verify's table when the logits differ."""
    return check_golden


class GoldenItem(pytest.Item):
    """One ``--gemma-golden MODEL=GOLDEN`` pair."""

    def __init__(self, *, model: Path, golden: Path, tol: dict[str, float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model, self.golden, self.tol = model, golden, tol

    def runtest(self) -> None:
        check_golden(self.model, self.golden, **self.tol)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, pytest.fail.Exception):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.golden, None, f"gemma-release verify {self.model} --golden {self.golden}"


def _pairs(config: pytest.Config) -> list[tuple[str, Path, Path]]:
    root = Path(config.rootpath)
    out = []
    for spec in config.getoption("gemma_golden") or []:
        model, sep, golden = spec.partition("=")
        if not sep or not model or not golden:
            raise pytest.UsageError(f"{OPTION} {spec!r}: expected MODEL=GOLDEN (a model directory and a golden file)")
        out.append((spec, root / model, root / golden))
    return out


def pytest_configure(config: pytest.Config) -> None:
    _pairs(config)  # a malformed pair is a usage error before anything is collected


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    tol = {k: v for k, v in (("atol", config.getoption("gemma_atol")), ("rtol", config.getoption("gemma_rtol"))) if v is not None}
    for spec, model, golden in _pairs(config):
        items.append(GoldenItem.from_parent(session, name=f"gemma_golden[{spec}]", model=model, golden=golden, tol=tol))
