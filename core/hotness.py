"""Hotness: engagement that fades with a half-life, kept as (value, as-of time).

A post's hotness is its positive engagement, each event's weight halved every
`half_life` seconds since it happened: "hot now" rather than "popular ever". Training
computes it from the log as of any moment; the write path keeps it current in each post
record (the engagement script in service/writes/scripts.py applies `add` below in Lua)
and in each community's hot list; the score stage reads it with `decayed`. The half-life
is a model parameter (tuned in training, in the manifest), so all three agree.

A community's hot list orders posts by hotness without rewriting every score as time
passes: a post's list score is its hotness scaled by 2^((t - epoch) / half_life) at the
last update (epoch = the model's data end), so scores of one list compare at any time.
"""

from __future__ import annotations

import numpy as np

MAX_EXPONENT = 1000.0  # 2^1000 is near float64's end: past it list scores saturate (retrain)


def decayed(value: np.ndarray, at: np.ndarray, now: float, half_life_s: float) -> np.ndarray:
    """Hotness at `now` of values last updated at `at` (never grows for a past `at`)."""
    age = np.maximum(now - np.asarray(at, dtype=np.float64), 0.0)
    return (np.asarray(value, dtype=np.float64) * np.exp2(-age / half_life_s)).astype(np.float32)


def as_of_last_activity(
    value: np.ndarray, at: float, last_active: np.ndarray, half_life_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """(value, at) re-based from `at` back to each post's last activity (at most `at`):
    the same hotness, since no engagement came between, and `decayed` of either gives
    the same value later. A post record keeps its hotness this way (its hot_at is its
    last activity: contract POST_DTYPE), so publish writes it so, and training computes
    its hot feature through this very function (no train/serve difference in rounding)."""
    last = np.minimum(np.asarray(last_active, dtype=np.float64), at)
    grow = np.exp2(np.minimum((at - last) / half_life_s, 126.0))  # float32's range: a tinier value stays tiny
    value = np.asarray(value, dtype=np.float64)
    return np.where(value > 0, value * grow, 0.0).astype(np.float32), last


def add(value: float, at: float, weight: float, ts: float, half_life_s: float) -> tuple[float, float]:
    """(value, at) after an engagement of `weight` at `ts` (an event older than `at`
    is added already decayed, and `at` stays)."""
    if ts >= at:
        return value * 2.0 ** (-(ts - at) / half_life_s) + weight, ts
    return value + weight * 2.0 ** (-(at - ts) / half_life_s), at


def list_score(weight: np.ndarray, ts: np.ndarray, epoch: float, half_life_s: float) -> np.ndarray:
    """A hot list's score increment for engagement `weight` at `ts`."""
    exponent = np.minimum((np.asarray(ts, dtype=np.float64) - epoch) / half_life_s, MAX_EXPONENT)
    return np.asarray(weight, dtype=np.float64) * np.exp2(exponent)
