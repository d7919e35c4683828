"""A global LSTM over the fleet (issue 22): darts' `BlockRNNModel` with an LSTM cell and quantile outputs, trained
across every series of a panel on scale-free inputs. Optional: it needs the `lstm` extra (CPU torch); without it
`available()` is False and nothing here imports torch.

Each series is divided by its own scale (the mean of its observed hours before the training cut; at forecast time
the mean of the week before the origin), so one model serves MHz and percent alike. Inputs: the last
`input_hours` of the scaled series with hour-of-day and day-of-week encoders; outputs: the next `horizon` hours at
each of `quantiles` (darts' QuantileRegression, read directly with `predict_likelihood_parameters`, no sampling).
Gaps are filled as the fleet model fills them (`global_model.fill_for_features`); they are never targets of the
loss only in so far as they are rare: darts trains on every window.
"""

from __future__ import annotations

import importlib.util
import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from forecasting import quiet
from forecasting.global_model import DAY, WEEK, fill_for_features

quiet.install()


def available() -> bool:
    """True when the `lstm` extra (torch, pytorch-lightning) is installed."""
    return importlib.util.find_spec("torch") is not None and importlib.util.find_spec("pytorch_lightning") is not None


@dataclass(frozen=True)
class LSTMConfig:
    input_hours: int = WEEK
    horizon: int = DAY
    hidden: int = 32
    layers: int = 1
    epochs: int = 15  # chosen on 2013-08-11..08-17 (docs/forecasting.md#candidates-drivers-and-the-lstm-issue-22)
    batch_size: int = 256
    samples_per_series: int = 128  # training windows drawn per series per epoch (the newest ones)
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    learning_rate: float = 3e-3
    seed: int = 0
    threads: int = 1  # torch's intra-op threads while fitting and predicting
    instance_norm: bool = False  # darts' reversible instance norm: each input window normalised on its own


@dataclass
class LSTMModel:
    config: LSTMConfig
    model: Any  # darts BlockRNNModel
    fit_seconds: float
    series: int

    def predict(self, values: np.ndarray, index: pd.DatetimeIndex, at: int) -> dict[float, np.ndarray]:
        """Hours at..at+horizon-1 of every row of `values` (N x T; hours before `at` are the past) per quantile
        (N x horizon), in the series' own units."""
        import torch

        cfg = self.config
        past = fill_for_features(values[:, :at])
        window = past[:, at - cfg.input_hours : at]
        scale = _scale(past[:, max(at - WEEK, 0) : at])
        series = [_ts(index[at - cfg.input_hours : at], row / s) for row, s in zip(window, scale, strict=True)]
        threads = torch.get_num_threads()
        torch.set_num_threads(cfg.threads)
        try:
            with warnings.catch_warnings(), _quiet_lightning():
                warnings.simplefilter("ignore")
                out = self.model.predict(cfg.horizon, series=series, predict_likelihood_parameters=True,
                                         verbose=False, show_warnings=False)  # fmt: skip
        finally:
            torch.set_num_threads(threads)
        arr = np.stack([ts.values(copy=False) for ts in out])  # N x horizon x quantiles
        return {q: np.maximum(arr[:, :, i] * scale[:, None], 0.0) for i, q in enumerate(cfg.quantiles)}


def fit_lstm(values: np.ndarray, index: pd.DatetimeIndex, end: int, config: LSTMConfig | None = None) -> LSTMModel:
    """Fits on hours before `end` of every row of `values` (N x T) with at least input + horizon + a day observed."""
    import torch
    from darts.models import BlockRNNModel
    from darts.utils.likelihood_models import QuantileRegression

    cfg = config or LSTMConfig()
    past = values[:, :end]
    keep = np.sum(~np.isnan(past), axis=1) >= cfg.input_hours + cfg.horizon + DAY
    if not keep.any():
        raise ValueError(f"no series has {cfg.input_hours + cfg.horizon + DAY} observed hours before the cut")
    filled = fill_for_features(past[keep])
    scale = _scale(filled)
    train = [_ts(index[:end], row / s) for row, s in zip(filled, scale, strict=True)]
    model = BlockRNNModel(
        model="LSTM", input_chunk_length=cfg.input_hours, output_chunk_length=cfg.horizon,
        hidden_dim=cfg.hidden, n_rnn_layers=cfg.layers, dropout=0.0, n_epochs=cfg.epochs,
        batch_size=cfg.batch_size, likelihood=QuantileRegression(list(cfg.quantiles)),
        optimizer_kwargs={"lr": cfg.learning_rate}, random_state=cfg.seed,
        add_encoders={"cyclic": {"past": ["hour", "dayofweek"]}}, use_reversible_instance_norm=cfg.instance_norm,
        pl_trainer_kwargs={"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False,
                           "logger": False, "enable_checkpointing": False},
    )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    began = time.process_time()
    try:
        with warnings.catch_warnings(), _quiet_lightning():
            warnings.simplefilter("ignore")
            model.fit(train, max_samples_per_ts=cfg.samples_per_series, verbose=False)
    finally:
        torch.set_num_threads(threads)
    return LSTMModel(cfg, model, time.process_time() - began, int(keep.sum()))


def _scale(filled: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        scale = np.nanmean(filled, axis=1)
    return np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)


def _ts(index: pd.DatetimeIndex, row: np.ndarray) -> Any:
    from darts import TimeSeries

    naive = pd.DatetimeIndex(index).tz_convert(None) if index.tz is not None else pd.DatetimeIndex(index)
    return TimeSeries.from_times_and_values(naive, row.astype(np.float32).reshape(-1, 1))


class _quiet_lightning:
    """pytorch-lightning's INFO lines ("GPU available: False", "Trainer will use only 1 of 2 CPUs") at every fit and
    predict; its warnings still go through `warnings`."""

    NAMES = ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric")

    def __enter__(self) -> None:
        self._levels = {n: logging.getLogger(n).level for n in self.NAMES}
        for n in self.NAMES:
            logging.getLogger(n).setLevel(logging.ERROR)

    def __exit__(self, *_: object) -> None:
        for n, level in self._levels.items():
            logging.getLogger(n).setLevel(level)
