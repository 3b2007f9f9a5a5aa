"""The readers' calibration map (curate.scorers.readermap): continuous where a judge's labels are discrete levels,
unchanged where they are continuous, strictly increasing and inside the labels' range."""

import numpy as np

from curate.scorers import Scorer, readermap

FLASK_LEVELS = np.array([1.0, 2.25, 3.5, 4.75, 6.0])  # FLASK's difficulty 1-5 on DEITA's 1-6


def near_a_level(scores: np.ndarray, levels: np.ndarray = FLASK_LEVELS, within: float = 0.03) -> float:
    """Share of ``scores`` within ``within`` of one of ``levels``."""
    return float(np.mean(np.min(np.abs(scores[:, None] - levels), axis=1) <= within))


def old_formula(raw: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The map as it was before dequantising: the knots as stored, blended with the same logistic."""
    k = len(x) - 1
    spread = max((x[(3 * k) // 4] - x[k // 4]) / 1.349, 1e-6)
    logistic = y[0] + (y[-1] - y[0]) / (1.0 + np.exp(-(raw - x[k // 2]) / spread))
    share = readermap.TIE_BREAK_SHARE
    return (1.0 - share) * np.interp(raw, x, y) + share * logistic


def discrete_fit(seed: int = 0, n: int = 4000) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Raw network scores and FLASK-like level labels that follow them noisily; the map fitted on them."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=n)
    level = np.clip(np.round(2 + 1.2 * raw + rng.normal(scale=0.7, size=n)), 0, 4).astype(int)
    labels = FLASK_LEVELS[level]
    x, y = readermap.quantile_map(raw, labels)
    return raw, labels, x, y


def test_discrete_level_knots_spread_each_level_over_its_interval_and_keep_the_labels_spread():
    # The quantiles of five levels made the map flat across each level (with a 2% logistic tie-break): 49% of 4,000
    # pool rows sat within 0.03 of a level, so a sort by complexity x quality ordered a level by quality alone.
    raw, labels, x, y = discrete_fit()
    assert set(np.unique(y)) <= set(FLASK_LEVELS) and len(np.unique(y)) < len(y)  # runs of equal knots
    scores = readermap.apply_map(raw, x, y)
    assert near_a_level(scores) < 0.15
    for i, v in enumerate(FLASK_LEVELS):  # rows labelled v by the map's own knots cover most of v's interval
        run = np.flatnonzero(y == v)
        if len(run) < 3:
            continue
        inside = (raw >= x[run[0]]) & (raw <= x[run[-1]])
        lo = v if i == 0 else (FLASK_LEVELS[i - 1] + v) / 2
        hi = v if i == len(FLASK_LEVELS) - 1 else (v + FLASK_LEVELS[i + 1]) / 2
        assert np.ptp(scores[inside]) > 0.5 * (hi - lo)
        assert lo - 0.05 <= scores[inside].min() and scores[inside].max() <= hi + 0.05
    assert abs(scores.mean() - labels.mean()) < 0.1
    assert abs(scores.std() - labels.std()) < 0.15 * labels.std()
    assert np.allclose(np.quantile(scores, [0.25, 0.5, 0.75]), np.quantile(labels, [0.25, 0.5, 0.75]), atol=0.5)


def test_the_map_stays_strictly_increasing_and_inside_the_labels_range():
    _, _, x, y = discrete_fit(seed=1)
    grid = np.linspace(x[0] - 5.0, x[-1] + 5.0, 20001)  # beyond the knots too
    scores = readermap.apply_map(grid, x, y)
    assert (np.diff(scores) > 0).all()
    assert y[0] <= scores.min() and scores.max() <= y[-1]
    knots = readermap.dequantise(y)
    assert (np.diff(knots) > 0).all() and knots[0] == y[0] and knots[-1] == y[-1]


def test_continuous_label_knots_keep_their_map_exactly():
    rng = np.random.default_rng(2)
    raw = rng.normal(size=3000)
    labels = 1 + 5 / (1 + np.exp(-(raw + rng.normal(scale=0.5, size=3000))))  # expected scores: no two alike
    x, y = readermap.quantile_map(raw, labels)
    assert len(np.unique(y)) == len(y)
    assert np.array_equal(readermap.dequantise(y), y)
    grid = np.linspace(-4, 4, 801)
    assert np.array_equal(readermap.apply_map(grid, x, y), old_formula(grid, x, y))


def test_a_lone_knot_keeps_its_value_and_runs_beside_it_stop_halfway_to_it():
    y = np.array([1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 4.5])
    knots = readermap.dequantise(y)
    assert knots[3] == 2.0 and knots[6] == 4.5  # no equal neighbour: unchanged
    assert knots[0] == 1.0 and knots[2] < 1.5  # the bottom run starts at the scale's end, ends below halfway to 2
    assert 2.5 < knots[4] < knots[5] < 3.75  # the middle run sits inside its half-intervals (2.5, 3.75)


def test_the_shipped_complexity_scorer_is_continuous_across_its_levels_and_its_columns_are_scored_again():
    sc = Scorer.load("complexity")
    x = sc.weights["calibration.x"]
    grid = np.linspace(x[0], x[-1], 4001)  # the network's raw scores over the training range
    scores = sc.calibrate(grid)
    assert (np.diff(scores) > 0).all() and 1.0 <= scores.min() and scores.max() <= 6.0
    assert near_a_level(scores) < 0.1  # 57% of this grid with the level-matching map
    # columns scored with the level-matching map ("quantile+logistic-1") have another fingerprint: scored again
    assert readermap.OUTPUT_MAP != "quantile+logistic-1" and sc.output_map == readermap.OUTPUT_MAP
    before = sc.fingerprint()
    sc.output_map = "quantile+logistic-1"
    assert sc.fingerprint() != before
