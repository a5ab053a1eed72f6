"""Split by time. Train on the past, evaluate on what came next.

A random split lets a model peek at the future of the very posts it is asked about and
flatters every model; a feed is judged on posts it has not seen engaged yet. The
evaluation window is the last `test_fraction` of the event time range. The scorer is
fitted by replaying the same split inside the training window (`inner_split`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.csvio import DataError
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
        raise DataError("events.csv: no events, nothing to train on")
    lo, hi = int(ds.e_ts.min()), int(ds.e_ts.max()) + 1
    if hi - lo < 2:
        raise DataError(
            f"events.csv: column 'ts': every event has the same time ({lo}); a time split needs event times"
        )
    split_ts = hi - max(1, int((hi - lo) * test_fraction)) if test_fraction > 0 else hi
    train = ds.e_ts < split_ts
    return TimeSplit(split_ts=split_ts, end_ts=hi, train=train, test=~train)


def inner_split(ds: Dataset, split: TimeSplit) -> TimeSplit:
    """The same split replayed inside the training window: [.., inner) / [inner, split_ts)."""
    lo = int(ds.e_ts.min())
    length = split.end_ts - split.split_ts
    inner = max(lo + 1, split.split_ts - length)
    train = ds.e_ts < inner
    return TimeSplit(split_ts=inner, end_ts=split.split_ts, train=train, test=split.train & ~train)
