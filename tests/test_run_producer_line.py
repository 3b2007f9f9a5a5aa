"""The run's score lines say who wrote each column: a trained scorer says which judge it imitates, and only then."""
from curate.cli.run_steps import _producer
from curate.scorers import Scorer

ROWS = [{"instruction": f"q{i}", "response": "a" * (i + 1)} for i in range(12)]
SCORES = [float(i % 5) for i in range(12)]


def _fitted(**kwargs) -> Scorer:
    return Scorer(reads=["instruction", "response"], features=["length", "stats"], **kwargs).fit(ROWS, SCORES)


def test_a_scorer_fitted_on_scores_of_no_named_judge_claims_no_judge():
    # Scorer().fit(rows, scores).save(DIR), as the README's Trained scorers section does, then --scorer quality=DIR:
    # its column is "score", and it imitates no judge of that name
    line = _producer(_fitted().describe())
    assert line == "trained scorer, no judge recorded"
    assert _producer(_fitted(name="mine").describe()) == "trained scorer, no judge recorded"


def test_a_scorer_imitating_a_judge_names_it_and_its_model():
    prov = _fitted(imitates={"judge": "quality", "model": "gpt-4"}).describe()
    assert _producer(prov) == "trained scorer imitating the quality judge (gpt-4)"
    legacy = {k: v for k, v in prov.items() if k != "imitates_detail"}  # a column written before imitates_detail
    assert _producer(legacy) == "trained scorer imitating the quality judge"
