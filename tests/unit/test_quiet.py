"""Importing the engine prints nothing (darts' and prophet's notices about optional backends are silenced one by
one); every other warning still reaches the terminal."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from forecasting.quiet import KNOWN_IMPORT_NOTICES

ROOT = Path(__file__).resolve().parents[2]
IMPORTED = "--engine imported--"

_IMPORT_THEN_WARN = f"""
import logging, sys, warnings
import forecasting.engine
sys.stderr.write("{IMPORTED}\\n")
logging.getLogger("darts.models").warning("a darts warning of its own")
logging.getLogger("darts.utils.utils").warning("The `Foo` module could not be imported. (not a known notice)")
warnings.warn("a python warning")
warnings.warn("a runtime warning", RuntimeWarning)
"""


def test_importing_the_engine_prints_nothing_but_later_warnings_still_show() -> None:
    done = subprocess.run([sys.executable, "-W", "default", "-c", _IMPORT_THEN_WARN], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == ""
    before, marker, after = done.stderr.partition(IMPORTED)
    assert marker and before == "", done.stderr[-2000:]  # not a notice, not a DeprecationWarning, nothing
    for shown in ("a darts warning of its own", "The `Foo` module could not be imported",
                  "UserWarning: a python warning", "RuntimeWarning: a runtime warning"):  # fmt: skip
        assert shown in after, done.stderr


def test_without_the_filter_only_the_known_notices_show() -> None:
    """Loading every darts model the engine uses, unfiltered, prints nothing but notices a pattern matches, and the
    prophet one is real (a darts or prophet upgrade that adds or rewords an import notice fails here)."""
    models = ("NaiveSeasonal", "ExponentialSmoothing", "ARIMA", "FFT", "LinearRegressionModel", "Prophet")
    code = f"import darts.models as m, darts.utils.likelihood_models\nfor name in {models!r}:\n    getattr(m, name)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    for line in lines:
        assert any(p.match(line) for p in KNOWN_IMPORT_NOTICES.values()), line
    if importlib.util.find_spec("prophet") and not importlib.util.find_spec("plotly"):
        assert any(KNOWN_IMPORT_NOTICES["prophet.plot"].match(line) for line in lines), done.stderr
