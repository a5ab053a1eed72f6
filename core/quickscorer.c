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
    /* Feature by feature, in two passes over a chunk of rows: first how many thresholds
     * lie below each row's value, then the ANDs. The counts do not depend on one another,
     * so the CPU overlaps them; a binary search's steps each wait on the last load, so
     * it only narrows a long list to a window of WINDOW thresholds, and the rest are
     * counted by comparing against all of them, which the compiler vectorises (100 trees
     * x 500 rows: 0.10 against 0.17 ms with a full binary search interleaved with the
     * ANDs). */
    enum { CHUNK = 512, WINDOW = 32 };
    int32_t below[CHUNK];
    for (int64_t i = 0; i < n_used; i++) {
        const float *t = thr + thr_off[i];
        const int64_t count = thr_off[i + 1] - thr_off[i];
        const uint64_t *table = prefix + pre_off[i] * W;
        const int64_t column = used[i];
        for (int64_t r0 = 0; r0 < n; r0 += CHUNK) {
            const int64_t rows = n - r0 < CHUNK ? n - r0 : CHUNK;
            for (int64_t r = 0; r < rows; r++) {
                float v = X[(r0 + r) * stride + column];
                if (!(fabsf(v) > zero_threshold))
                    v = 0.0f;
                /* How many thresholds lie below v: numpy's searchsorted, side "left".
                 * The binary search has no branch on the comparison (it is
                 * unpredictable row to row). */
                const float *base = t;
                int64_t m = count;
                while (m > WINDOW) {
                    const int64_t half = m >> 1;
                    base = base[half] < v ? base + half : base;
                    m -= half;
                }
                int32_t c = 0;
                for (int64_t k = 0; k < m; k++)
                    c += base[k] < v;
                below[r] = (int32_t)(base - t) + c;
            }
            for (int64_t r = 0; r < rows; r++) {
                const uint64_t *ruled = table + (int64_t)below[r] * W;
                uint64_t *a = alive + (r0 + r) * W;
                for (int64_t w = 0; w < W; w++)
                    a[w] &= ruled[w];
            }
        }
    }
    /* The leaves' sums, SUMS rows at a time: each row's additions stay in the same order
     * (so the same double), and the rows' chains of additions overlap where one row's
     * would wait on each addition in turn. */
    enum { SUMS = 8 };
    for (int64_t r0 = 0; r0 < n; r0 += SUMS) {
        const int64_t rows = n - r0 < SUMS ? n - r0 : SUMS;
        double sum[SUMS] = {0};
        int64_t tree = 0;
        for (int64_t w = 0; w < W; w++) {
            for (int64_t j = 0; j < per_word && tree < n_trees; j++, tree++) {
                const double *values = leaf_values + tree * lane;
                for (int64_t b = 0; b < rows; b++) {
                    /* never 0: a row reaches a leaf */
                    const int leaf = __builtin_ctzll((alive[(r0 + b) * W + w] >> (j * lane)) & mask);
                    sum[b] = tree == 0 ? values[leaf] : sum[b] + values[leaf]; /* numpy's sum down the trees: from the first */
                }
            }
        }
        for (int64_t b = 0; b < rows; b++)
            out[r0 + b] = sum[b];
    }
}

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_quickscorer", "qs_score, called through ctypes", -1, NULL};

PyMODINIT_FUNC PyInit__quickscorer(void) { return PyModule_Create(&module); }
