/*
 * core/tree_ensemble.py's QuickScorer evaluation of LightGBM trees, compiled: the same
 * tables, the same comparisons, the same additions in the same order, so the same
 * doubles (tests/test_tree_ensemble.py compares both with LightGBM bit for bit).
 *
 * Why C: numpy runs the evaluation as ~25 whole-array passes (a searchsorted, a take
 * and an AND per feature, then the leaves' lookup and sum), each writing a [rows x
 * words] temporary; at 100 trees x 500 candidates that was ~0.65 ms of a Rank call's
 * ~3 ms. Here each row's words stay in cache between features and nothing is allocated.
 *
 * Built by setuptools as the extension module core._quickscorer (pyproject.toml, an
 * optional extension: without a C compiler the install goes on and numpy scores), and
 * called through ctypes, which releases the GIL for the call. The module itself is
 * empty; qs_score is the one entry point. No -ffast-math: the sum must keep its order.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

/* qs_score's signature and meaning: core/tree_ensemble.py refuses a build that answers
 * another number (a stale .so from before an edit). Bump it with any change to them. */
int64_t qs_abi(void) { return 1; }

/*
 * out[r] = the ensemble's raw score of row r of X (float32, row r at X + r * stride).
 *
 * Feature i of the n_used tested ones is column used[i]; its thresholds (float32, each
 * the largest float32 at or below LightGBM's double: `x > t` reads the same) are
 * thr[thr_off[i] .. thr_off[i + 1]), ascending, and its prefix table is the
 * (count + 1) x W words at prefix + pre_off[i] * W: row j = the masks of its first j
 * tests ANDed. A value within zero_threshold of 0 (NaN too) is read as 0, as LightGBM's
 * "none" missing-value rule does. Tree t is lane t % (64 / lane) of word t / (64 / lane);
 * its leaf is the lowest set bit of that lane, its value leaf_values[t * lane + leaf].
 * alive: scratch of n * W words.
 */
void qs_score(const float *X, int64_t n, int64_t stride, int64_t n_used, const int64_t *used,
              const int64_t *thr_off, const float *thr, const int64_t *pre_off, const uint64_t *prefix,
              int64_t W, int64_t n_trees, int64_t lane, const double *leaf_values, float zero_threshold,
              double *out, uint64_t *alive)
{
    const int64_t per_word = 64 / lane;
    const uint64_t mask = lane == 64 ? ~(uint64_t)0 : (((uint64_t)1 << lane) - 1);
    for (int64_t k = 0; k < n * W; k++)
        alive[k] = ~(uint64_t)0;
    /* Feature by feature over all rows: the rows' binary searches do not depend on one
     * another, so the CPU overlaps them (row by row, each waited on the last: 0.28
     * against 0.24 ms for 100 trees x 500 rows). */
    for (int64_t i = 0; i < n_used; i++) {
        const float *t = thr + thr_off[i];
        const int64_t count = thr_off[i + 1] - thr_off[i];
        const uint64_t *table = prefix + pre_off[i] * W;
        const int64_t column = used[i];
        for (int64_t r = 0; r < n; r++) {
            float v = X[r * stride + column];
            if (!(fabsf(v) > zero_threshold))
                v = 0.0f;
            /* How many thresholds lie below v (numpy's searchsorted, side "left"),
             * without a branch on the comparison: it is unpredictable row to row. */
            const float *base = t;
            int64_t m = count;
            while (m > 1) {
                const int64_t half = m >> 1;
                base = base[half] < v ? base + half : base;
                m -= half;
            }
            const int64_t below = (base - t) + (m == 1 && *base < v);
            const uint64_t *ruled = table + below * W;
            uint64_t *a = alive + r * W;
            for (int64_t w = 0; w < W; w++)
                a[w] &= ruled[w];
        }
    }
    for (int64_t r = 0; r < n; r++) {
        const uint64_t *a = alive + r * W;
        double sum = 0.0;
        int64_t tree = 0;
        for (int64_t w = 0; w < W; w++) {
            const uint64_t word = a[w];
            for (int64_t j = 0; j < per_word && tree < n_trees; j++, tree++) {
                const int leaf = __builtin_ctzll((word >> (j * lane)) & mask); /* never 0: a row reaches a leaf */
                const double value = leaf_values[tree * lane + leaf];
                sum = tree == 0 ? value : sum + value; /* numpy's sum down the trees: from the first */
            }
        }
        out[r] = sum;
    }
}

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_quickscorer", "qs_score, called through ctypes", -1, NULL};

PyMODINIT_FUNC PyInit__quickscorer(void) { return PyModule_Create(&module); }
