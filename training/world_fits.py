"""The world and the pipeline's vectors as of a split time, each fitted once a run (and
a scorer window's examples, built once: WorldFits.remember).

A training run asks for the same fit many times: the scorer of every later split point
is fitted on the 7-day windows before it, which are the previous point's windows plus
one, and its newest window starts at the previous point itself, whose world and vectors
the replay has just fitted. A small log pooling W windows a point over P points (the 16
Stack Exchange sites: up to 128 over 16) asks for P x W window fits, over only about
W + P distinct times. A fit is a pure function of
the data, the ALS parameters, the hot half-life and the time (implicit's ALS with a fixed
seed gives the same factors, bit for bit), so a remembered one is the same answer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from training import schema
from training.als import fit_community_als
from training.embeddings import post_embeddings
from training.features import Model
from training.neighbours import item_neighbours
from training.params import AlsParams
from training.state import WorldState, state_as_of

# Fits kept at most (least recently used dropped first). A default-world fit is ~110 MB,
# a 1M-post one ~400 MB; the evaluation holds every split point's fit anyway.
KEEP_BYTES = 2 << 30


def fit_model(ds: schema.Dataset, split_ts: int, als_params: AlsParams, hot_half_life_h: float, progress: bool):
    """The world as of split_ts and the vectors fitted on the events before it."""
    state = state_as_of(ds, split_ts, ds.memberships_derived, hot_half_life_h, als_params.engine)
    als = fit_community_als(ds, state, als_params, progress)
    posts, authors = post_embeddings(ds, als)
    neighbours, sims = item_neighbours(state.history, ds.n_posts)
    return state, Model(als.user_factors, als.community_factors, posts, authors, neighbours, sims)


class WorldFits:
    """fit_model for one run's data, ALS parameters and hot half-life, by split time,
    remembering recent fits within KEEP_BYTES. Callers must not change what it returns
    (nothing does: states and models are read-only after their fit)."""

    def __init__(self, ds: schema.Dataset, als: AlsParams, hot_half_life_h: float, keep_bytes: int = KEEP_BYTES):
        self.ds, self.als, self.hot_half_life_h = ds, als, hot_half_life_h
        self.keep_bytes = keep_bytes
        self._fits: OrderedDict[int, tuple[WorldState, Model, int]] = OrderedDict()
        self.fitted = 0  # fits computed (the rest were remembered)
        self._kept: OrderedDict[tuple, tuple[object, int]] = OrderedDict()  # remember()'s values

    def __call__(self, split_ts: int, progress: bool = False) -> tuple[WorldState, Model]:
        split_ts = int(split_ts)
        if split_ts in self._fits:
            self._fits.move_to_end(split_ts)
            state, model, _ = self._fits[split_ts]
            return state, model
        state, model = fit_model(self.ds, split_ts, self.als, self.hot_half_life_h, progress)
        self.fitted += 1
        size = nbytes(state) + nbytes(model)
        if size <= self.keep_bytes:
            self._fits[split_ts] = (state, model, size)
            while sum(s for _, _, s in self._fits.values()) > self.keep_bytes:
                self._fits.popitem(last=False)
        return state, model

    def remember(self, key: tuple, build: Callable[[], object]) -> object:
        """build(), remembered under `key` for the rest of the run, within a byte budget of
        its own, as large as the fits' (a value over it is returned, not kept). For what is
        a pure function of the run's data and parameters and of the key, as a fit is: a
        scorer window's examples (training/train.py, window_examples)."""
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key][0]
        value = build()
        size = nbytes(value)
        if size <= self.keep_bytes:
            self._kept[key] = (value, size)
            while sum(s for _, s in self._kept.values()) > self.keep_bytes:
                self._kept.popitem(last=False)
        return value


def nbytes(obj: object) -> int:
    """Bytes of the numpy arrays and sparse matrices among obj's fields."""
    total = 0
    for value in vars(obj).values():
        if isinstance(value, np.ndarray):
            total += value.nbytes
        elif sp.issparse(value):
            total += sum(
                getattr(value, part).nbytes
                for part in ("data", "indices", "indptr", "row", "col")
                if hasattr(value, part)
            )
    return total
