"""darts' (and prophet's) notices about optional backends are silenced at import, one by one; nothing else is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from forecasting.quiet import KNOWN_IMPORT_NOTICES

ROOT = Path(__file__).resolve().parents[2]

_IMPORT_THEN_WARN = """
import logging, warnings
import forecasting.engine
logging.getLogger("darts.models").warning("a darts warning of its own")
logging.getLogger("darts.utils.utils").warning("The `Foo` module could not be imported. (not a known notice)")
warnings.warn("a python warning")
"""


def test_importing_the_engine_prints_no_known_notice_but_other_warnings_still_show() -> None:
    done = subprocess.run([sys.executable, "-W", "default", "-c", _IMPORT_THEN_WARN], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    for notice in ("Support for Torch based models", "Support for PyTorch based likelihood", "StatsForecast module",
                   "`XGBoost` module", "Importing plotly failed"):  # fmt: skip
        assert notice not in done.stderr, done.stderr
    assert "a darts warning of its own" in done.stderr
    assert "The `Foo` module could not be imported" in done.stderr
    assert "UserWarning: a python warning" in done.stderr


def test_without_the_filter_darts_does_print_the_notices() -> None:
    """The notices the filter matches are darts' real ones (a darts upgrade that rewords them fails here)."""
    code = "import darts.models, darts.utils.likelihood_models"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stderr.splitlines() if "not available" in line or "could not be imported" in line]
    assert lines, done.stderr
    for line in lines:
        assert any(p.match(line) for p in KNOWN_IMPORT_NOTICES.values()), line
