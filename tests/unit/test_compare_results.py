"""`benchmarks.compare_results`: two results.json documents compared figure by figure."""

import copy

from benchmarks.compare_results import compare

RESULTS = {"selection": {"model": "blend"},
           "models": {"blend": {"valid": {"ndcg@10": 0.05}, "test": {"recall@10": 0.09, "users": 10}},
                      "sasrec": {"valid": {"ndcg@10": 0.03}, "flags": {"published": True}}}}


def test_identical_results_have_no_differences() -> None:
    assert compare(RESULTS, copy.deepcopy(RESULTS)) == []


def test_a_changed_figure_a_missing_one_and_another_selection_are_each_named() -> None:
    after = copy.deepcopy(RESULTS)
    after["models"]["blend"]["test"]["recall@10"] = 0.1
    del after["models"]["sasrec"]["valid"]["ndcg@10"]
    after["selection"]["model"] = "sasrec"
    assert compare(RESULTS, after) == ["blend.test.recall@10: 0.09 -> 0.1", "sasrec.valid.ndcg@10: only before",
                                       "selection: blend -> sasrec"]
