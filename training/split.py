"""Stage 2: split by time. Train on the past, evaluate on what came next.

A random split lets a model peek at the future of the very posts it is asked about and
flatters every model; a feed is judged on posts it has not seen engaged yet.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.schema import Dataset


@dataclass
class TimeSplit:
    split_ts: int  # first second of the evaluation window
    end_ts: int  # last event time + 1
    train: np.ndarray  # bool mask over events
    test: np.ndarray


def split_by_time(ds: Dataset, test_fraction: float = 0.1) -> TimeSplit:
    """The last `test_fraction` of the event time range is the evaluation window."""
    if len(ds.e_ts) == 0:
        raise ValueError("no events: nothing to train on")
    lo, hi = int(ds.e_ts.min()), int(ds.e_ts.max()) + 1
    split_ts = hi - int((hi - lo) * test_fraction) if test_fraction > 0 else hi
    train = ds.e_ts < split_ts
    return TimeSplit(split_ts=split_ts, end_ts=hi, train=train, test=~train)
