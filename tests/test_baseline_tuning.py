"""The baselines' searches bracket their optimum (training/baselines.py `bracketed`): a
grid whose best point sits at its edge says nothing about what lies beyond it."""

from training.baselines import bracketed


def search(score, start, shape):
    calls = []

    def make(*point):
        calls.append(point)
        return point  # the "score function" is the point itself; measure reads it

    values = bracketed(make, start, shape, score)
    return values, calls


def test_a_peak_beyond_the_start_is_walked_to_and_bracketed():
    peak = (3, 5)
    values, calls = search(lambda p: -abs(p[0] - peak[0]) - abs(p[1] - peak[1]), [(1, 2), (2, 2), (1, 4)], (4, 7))
    best = max(values, key=values.get)
    assert best == peak
    # every neighbour of the peak inside the grid was measured, and none twice
    assert {(2, 5), (3, 4), (3, 6)} <= set(values)
    assert len(calls) == len(set(calls))


def test_a_peak_inside_the_start_stops_after_its_neighbours():
    values, calls = search(lambda p: -abs(p[0] - 3), [(3,), (2,)], (7,))
    assert calls == [(3,), (2,), (4,)]
    assert max(values, key=values.get) == (3,)


def test_a_flat_start_is_not_walked_and_a_ladder_end_stops_the_walk():
    # every start point alike (the ALS stage alone on a feed: 0 for all): no walk
    values, calls = search(lambda p: 0.0, [(2,), (3,)], (5,))
    assert calls == [(2,), (3,)] and max(values, key=values.get) == (2,)
    # ties after the start keep the first tried
    values, calls = search(lambda p: float(p[0] == 2), [(2,), (3,)], (5,))
    assert calls == [(2,), (3,), (1,)]
    values, calls = search(lambda p: float(p[0]), [(0,)], (3,))
    assert calls == [(0,), (1,), (2,)] and max(values, key=values.get) == (2,)


def test_a_method_that_cannot_be_built_scores_minus_infinity():
    values = bracketed(lambda *p: None, [(0,)], (2,), lambda fn: 1.0)
    assert values == {(0,): float("-inf"), (1,): float("-inf")}
