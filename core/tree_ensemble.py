"""A LightGBM tree ensemble evaluated in numpy, to the same float64 as LightGBM's predict.

The blend scorer's 100 trees were the costliest stage of a Rank call: LightGBM walks each
of 500 candidates down each tree, a branch at every node, about 1.8 ms of CPU per call.
Here no row walks a tree (QuickScorer: Lucchese et al., SIGIR 2015):

- Every node tests `x[f] <= threshold`; where that is false, the leaves of its left
  subtree cannot be reached. Number each tree's leaves left to right, one bit each: the
  leaf a row reaches is the leftmost one that no false node of that tree rules out.
- The nodes testing one feature, sorted by threshold, are false for a row exactly up to
  the first threshold at or above its value: one `searchsorted` per feature gives how
  many, and a table of the masks ANDed over each prefix of that order gives what they
  rule out in every tree at once. A row's surviving leaves are the AND of one prefix
  mask per feature; the lowest set bit of each tree's lane is its leaf.
- The trees' leaf values are summed one tree after another from 0.0, in LightGBM's
  order, so the score is the same double LightGBM returns (tests compare them bit for bit
  on random, tied, missing and infinite values).

What the model text may hold is checked when it is read, and anything outside what this
evaluates exactly (categorical splits, linear trees, a missing-value rule other than
LightGBM's "none", more than 64 leaves a tree, averaged output) is refused with the
reason: core.scoring then keeps LightGBM's own predict for that model.

The same evaluation runs compiled (core/quickscorer.c, the extension core._quickscorer)
where the install could build it: float32 rows, a request's 500 candidates x 100 trees
in ~0.1 ms against ~0.5 ms in numpy, the same doubles. Where it is missing (no C
compiler at install time), or for float64 rows, numpy scores.
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys

import numpy as np

LANE_BITS = (8, 16, 32, 64)  # a tree's leaves are one lane of a uint64 word
ALL_ONES = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
ZERO_THRESHOLD = float(np.float32(1e-35))  # LightGBM's kZeroThreshold, a float literal read as a double
CHUNK_ROWS = 8192  # rows evaluated at once: training scores a million, the service 500


KERNEL_ABI = 1  # core/quickscorer.c's qs_abi(): the signature below


def load_kernel():
    """core/quickscorer.c's qs_score through ctypes, or None where the extension was not
    built (or is a stale build of another signature). ctypes releases the GIL for the
    call: other requests' threads run meanwhile."""
    spec = importlib.util.find_spec("core._quickscorer")
    if spec is None or not spec.origin:
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
        lib.qs_abi.restype = ctypes.c_int64
        if lib.qs_abi() != KERNEL_ABI:
            return None
        fn = lib.qs_score
    except (OSError, AttributeError):
        return None
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    fn.argtypes = [ptr, i64, i64, i64, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, ptr, ctypes.c_float, ptr, ptr]
    fn.restype = None
    return fn


KERNEL = load_kernel()


class Unsupported(ValueError):
    """A model this evaluator cannot reproduce exactly (LightGBM's predict serves it)."""


def parse_model(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """LightGBM's model text: its header's key=value lines, and each tree's."""
    header: dict[str, str] = {}
    trees: list[dict[str, str]] = []
    current = header
    for line in text.splitlines():
        if line.startswith("Tree="):
            current = {}
            trees.append(current)
        elif line.startswith("end of trees"):
            break
        elif "=" in line:
            key, value = line.split("=", 1)
            current[key] = value
    return header, trees


class TreeEnsemble:
    """score(X) = the model's raw prediction for each row of X (float32 or float64)."""

    def __init__(self, model_text: str, n_features: int, compiled: bool = True):
        header, trees = parse_model(model_text)
        if not trees:
            raise Unsupported("no trees in the model text")
        if header.get("num_tree_per_iteration", "1") != "1" or header.get("num_class", "1") != "1":
            raise Unsupported("more than one output per row")
        if "average_output" in header:
            raise Unsupported("averaged output (random forest mode)")
        if header.get("max_feature_idx") != str(n_features - 1):
            raise Unsupported(f"a model of {header.get('max_feature_idx')} + 1 features, {n_features} scored")
        leaves = max(int(t["num_leaves"]) for t in trees)
        self.lane = next((b for b in LANE_BITS if b >= leaves), 0)
        if not self.lane:
            raise Unsupported(f"trees of {leaves} leaves (at most {LANE_BITS[-1]})")
        self.per_word = 64 // self.lane
        self.n_trees = len(trees)
        self.n_words = -(-self.n_trees // self.per_word)
        self.leaf_values = np.zeros((self.n_trees, self.lane), np.float64)
        tests: list[list[tuple[float, int, int]]] = [[] for _ in range(n_features)]  # (threshold, word, mask)
        for t, tree in enumerate(trees):
            self._read_tree(t, tree, n_features, tests)
        self.used = np.array([f for f in range(n_features) if tests[f]], dtype=np.intp)
        self.thresholds64: list[np.ndarray] = []
        self.thresholds32: list[np.ndarray] = []
        self.prefix: list[np.ndarray] = []  # [tests + 1, words]: masks ANDed over the first i tests
        for f in self.used:
            ordered = sorted(tests[f], key=lambda test: test[0])
            thresholds = np.array([test[0] for test in ordered], np.float64)
            prefix = np.full((len(ordered) + 1, self.n_words), ALL_ONES)
            for i, (_, word, mask) in enumerate(ordered):
                prefix[i + 1] = prefix[i]
                prefix[i + 1, word] &= np.uint64(mask)
            self.thresholds64.append(thresholds)
            self.thresholds32.append(float32_below(thresholds))
            self.prefix.append(prefix)
        # A table of each 16-bit lane value's lowest set bit (its leftmost surviving leaf).
        self._low16 = lowest_bit_table() if self.lane <= 16 and sys.byteorder == "little" else None
        # Tree t's leaf i is leaf_values' flat entry t * lane + i; a 16-bit index where it
        # fits (a smaller array to add to and take with).
        index = np.uint16 if self.n_trees * self.lane <= 1 << 16 else np.intp
        self._tree_base = (np.arange(self.n_trees, dtype=index) * index(self.lane))[:, None]
        self._flat_values = self.leaf_values.reshape(-1)
        # The compiled kernel's view of the same tables: one array of every feature's
        # thresholds and one of every prefix table, with where each begins.
        self.kernel = "c" if compiled and KERNEL is not None else "numpy"
        if self.kernel == "c":
            self._c_tables = (
                np.ascontiguousarray(self.used, dtype=np.int64),
                np.cumsum([0] + [len(t) for t in self.thresholds32], dtype=np.int64),
                np.concatenate([np.empty(0, np.float32), *self.thresholds32]).astype(np.float32),
                np.cumsum([0] + [len(p) for p in self.prefix], dtype=np.int64),
                np.ascontiguousarray(np.concatenate([np.empty((0, self.n_words), np.uint64), *self.prefix])),
                np.ascontiguousarray(self._flat_values),
            )
            self._c_args = tuple(a.ctypes.data for a in self._c_tables)

    def _read_tree(self, t: int, tree: dict[str, str], n_features: int, tests: list) -> None:
        n_leaves = int(tree["num_leaves"])
        values = np.array(tree["leaf_value"].split(), dtype=np.float64)
        if tree.get("is_linear", "0") != "0":
            raise Unsupported("linear trees")
        if n_leaves == 1:
            self.leaf_values[t, 0] = values[0]
            return
        feature = [int(v) for v in tree["split_feature"].split()]
        threshold = [float(v) for v in tree["threshold"].split()]
        decision = [int(v) for v in tree["decision_type"].split()]
        left = [int(v) for v in tree["left_child"].split()]
        right = [int(v) for v in tree["right_child"].split()]
        if any(d & 1 for d in decision):
            raise Unsupported("categorical splits")
        if any((d >> 2) & 3 for d in decision):
            raise Unsupported("a missing-value rule other than 'none' (zero or NaN as missing)")
        if any(not 0 <= f < n_features for f in feature):
            raise Unsupported(f"a split on a feature outside the {n_features} scored")
        # Leaves left to right: leaf bit i is the i-th from the left. Each node's leaves
        # are a contiguous run of bits, its left child's first.
        first, last, order = {}, {}, []

        def walk(node: int) -> None:
            if node < 0:
                order.append(~node)
                return
            start = len(order)
            walk(left[node])
            walk(right[node])
            first[node], last[node] = start, len(order)

        walk(0)
        if sorted(order) != list(range(n_leaves)):
            raise Unsupported(f"tree {t}: its children do not form one tree of {n_leaves} leaves")
        self.leaf_values[t, : len(order)] = values[order]
        word, lane_at = divmod(t, self.per_word)
        shift = lane_at * self.lane
        for node in range(n_leaves - 1):
            left_end = first[node] + (1 if left[node] < 0 else last[left[node]] - first[left[node]])
            ruled_out = ((1 << left_end) - 1) ^ ((1 << first[node]) - 1)  # the left subtree's leaves
            tests[feature[node]].append((threshold[node], word, ~(ruled_out << shift) & 0xFFFF_FFFF_FFFF_FFFF))

    def score(self, X: np.ndarray) -> np.ndarray:
        if len(X) == 0:  # a request whose candidates were all filtered out
            return np.empty(0, np.float64)
        if len(X) <= CHUNK_ROWS:  # a request's candidates: one pass
            return self._score(X)
        out = np.empty(len(X), np.float64)
        for lo in range(0, len(X), CHUNK_ROWS):
            out[lo : lo + CHUNK_ROWS] = self._score(X[lo : lo + CHUNK_ROWS])
        return out

    def kernels(self) -> dict:
        """Each evaluation this process can run, by name (for checks against LightGBM)."""
        found = {"numpy": self._score_numpy}
        if self.kernel == "c":
            found["c"] = self._score_compiled
        return found

    def _score(self, X: np.ndarray) -> np.ndarray:
        if self.kernel == "c" and X.dtype == np.float32:
            return self._score_compiled(X)
        return self._score_numpy(X)

    def _score_compiled(self, X: np.ndarray) -> np.ndarray:
        if X.strides[1] != X.itemsize or X.strides[0] % X.itemsize:
            X = np.ascontiguousarray(X)
        used, thr_off, thr, pre_off, prefix, values = self._c_args
        out = np.empty(len(X), np.float64)
        alive = np.empty(len(X) * self.n_words, np.uint64)  # per call: requests score on several threads
        KERNEL(
            X.ctypes.data, len(X), X.strides[0] // X.itemsize, len(self.used), used, thr_off, thr, pre_off, prefix,
            self.n_words, self.n_trees, self.lane, values, ZERO_THRESHOLD, out.ctypes.data, alive.ctypes.data,
        )  # fmt: skip
        return out

    def _score_numpy(self, X: np.ndarray) -> np.ndarray:
        if X.dtype != np.float32:
            X, thresholds = np.asarray(X, dtype=np.float64), self.thresholds64
        else:
            thresholds = self.thresholds32
        # LightGBM reads a missing value as 0 under the "none" rule, and any value within
        # its zero threshold as 0 before a tree sees it.
        kept = np.abs(X) > ZERO_THRESHOLD  # False for NaN too
        if not kept.all():
            X = np.where(kept, X, 0)
        columns = np.ascontiguousarray(X.T)  # searchsorted reads each feature's column
        alive = None
        for i, f in enumerate(self.used):
            # How many of f's tests are false (threshold < x), and what they rule out.
            # (the arrays' own methods: np.searchsorted's wrapper costs ~5% of a call)
            ruled = self.prefix[i].take(thresholds[i].searchsorted(columns[f], side="left"), axis=0)
            if alive is None:
                alive = ruled
            else:
                np.bitwise_and(alive, ruled, out=alive)
        if alive is None:
            alive = np.full((len(X), self.n_words), ALL_ONES)
        leaf = self._leaves(alive)  # [trees, rows]
        values = self._flat_values.take(self._tree_base + leaf)
        # Summed down axis 0 one tree after another, as LightGBM adds them: the same double.
        return values.sum(axis=0) if self.n_trees > 1 else values[0].copy()

    def _leaves(self, alive: np.ndarray) -> np.ndarray:
        """Each tree's leaf for each row: the lowest set bit of its lane, [trees, rows]."""
        rows = len(alive)
        if self._low16 is not None:
            # A little-endian word's lane j is its j-th uint16 (uint8) element.
            lanes = alive.view(np.uint16) if self.lane == 16 else alive.view(np.uint8)
            return self._low16.take(lanes.reshape(rows, -1)[:, : self.n_trees].T)
        shifts = np.arange(self.per_word, dtype=np.uint64) * np.uint64(self.lane)
        mask = np.uint64((1 << self.lane) - 1) if self.lane < 64 else ALL_ONES
        lanes = ((alive[:, :, None] >> shifts) & mask).reshape(rows, -1)[:, : self.n_trees]
        lowest = lanes & (~lanes + np.uint64(1))  # each lane's lowest set bit alone
        leaf = np.frexp(lowest.astype(np.float64))[1] - 1  # a power of two's exponent: exact
        return np.ascontiguousarray(leaf.T, dtype=np.intp)


def float32_below(thresholds: np.ndarray) -> np.ndarray:
    """The largest float32 at or below each threshold. For a float32 x, `x > t` and
    `x > float32_below(t)` agree: no float32 lies strictly between the two."""
    nearest = thresholds.astype(np.float32)
    above = nearest.astype(np.float64) > thresholds
    return np.where(above, np.nextafter(nearest, np.float32(-np.inf)), nearest)


def lowest_bit_table() -> np.ndarray:
    """For each 16-bit value, the index of its lowest set bit (0 for 0: never looked up,
    since a row always reaches a leaf)."""
    values = np.arange(1 << 16, dtype=np.int64)
    lowest = values & -values
    table = np.zeros(1 << 16, np.uint8)
    table[1:] = np.frexp(lowest[1:].astype(np.float64))[1] - 1
    return table


def threshold_probes(ensemble: TreeEnsemble, n_features: int, rows: int = 512, seed: int = 0) -> np.ndarray:
    """float32 rows whose values sit on, just below and just above the model's thresholds,
    with zeros, missing and infinite values among them: where an evaluation that differs
    from LightGBM's would show it."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, n_features)).astype(np.float32)
    for i, f in enumerate(ensemble.used):
        on = ensemble.thresholds64[i].astype(np.float32)
        values = np.concatenate(
            [
                on,
                np.nextafter(on, np.float32(np.inf)),
                np.nextafter(on, np.float32(-np.inf)),
                np.array([0.0, ZERO_THRESHOLD, -ZERO_THRESHOLD, 1e-36, np.nan, np.inf, -np.inf], np.float32),
            ]
        )
        X[:, f] = rng.choice(values, rows)
    return X
