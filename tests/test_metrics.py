"""Edge cases of the metrics module that the lesson does not dwell on: empty and mismatched inputs, one-class data, numpy input, saving plots."""
import json, math
import numpy as np
import pytest
from domaintune_course import metrics as M


@pytest.mark.parametrize("call", [
    lambda: M.classification_report([], []),
    lambda: M.rouge_scores([], []),
    lambda: M.bootstrap_ci([]),
    lambda: M.paired_bootstrap([], []),
    lambda: M.perplexity([]),
    lambda: M.most_confident_errors([], [], [], []),
    lambda: M.plot_confusion([], [], labels=[0, 1]),
], ids=["classification_report", "rouge_scores", "bootstrap_ci", "paired_bootstrap", "perplexity", "most_confident_errors", "plot_confusion"])
def test_empty_inputs_raise_a_clear_error(call):
    with pytest.raises(ValueError, match="is empty"):
        call()


@pytest.mark.parametrize("call, names", [
    (lambda: M.classification_report([0, 1, 1], [0, 1]), "`y_pred` has 2"),
    (lambda: M.classification_report([0, 1], [0, 1], scores=[0.2]), "`scores` has 1"),
    (lambda: M.rouge_scores(["a b", "c d"], ["a b"]), "`references` has 1"),
    (lambda: M.paired_bootstrap([1, 0, 1], [1, 1]), "`b` has 2"),
    (lambda: M.perplexity([1.0, 2.0], token_counts=[3]), "`token_counts` has 1"),
    (lambda: M.most_confident_errors(["x"], [0, 1], [0, 1], [0.1, 0.9]), "`texts` has 1"),
    (lambda: M.plot_roc_pr([0, 1, 1], [0.2, 0.8]), "`scores` has 2"),
], ids=["report-pred", "report-scores", "rouge", "paired", "perplexity", "errors", "roc_pr"])
def test_mismatched_lengths_name_the_argument(call, names):
    with pytest.raises(ValueError, match="Lengths differ") as e:
        call()
    assert names in str(e.value)


def test_single_class_gives_no_auc_but_a_full_report():
    rep = M.classification_report([1, 1, 1], [1, 0, 1], scores=[0.9, 0.4, 0.7])
    assert rep["roc_auc"] is None
    assert rep["labels"] == [0, 1] and rep["confusion"] == [[0, 0], [1, 2]]
    assert rep["per_class"][0]["precision"] == 0.0  # zero_division handled, no warning turned into a crash
    assert math.isclose(rep["accuracy"], 2 / 3)


def test_auc_is_none_without_scores_or_for_three_classes():
    assert M.classification_report([0, 1], [0, 1])["roc_auc"] is None
    assert M.classification_report([0, 1, 2], [0, 1, 1], scores=[0.1, 0.5, 0.9])["roc_auc"] is None


def test_numpy_labels_give_a_json_ready_report():
    y = np.array([0, 1, 1, 0], dtype=np.int64)
    rep = M.classification_report(y, np.array([0, 1, 0, 0]), scores=np.array([0.1, 0.9, 0.3, 0.2]))
    back = json.loads(json.dumps(rep))
    assert back["confusion"] == [[2, 0], [1, 1]] and back["roc_auc"] == 1.0
    assert all(type(l) is int for l in rep["labels"])


def test_string_labels_take_the_last_label_as_positive():
    rep = M.classification_report(["neg", "pos", "pos"], ["neg", "pos", "neg"], scores=[0.2, 0.9, 0.4])
    assert rep["roc_auc"] == 1.0  # both positives score above the negative
    rep = M.classification_report(["neg", "pos", "pos"], ["neg", "pos", "neg"], scores=[0.2, 0.9, 0.4], pos_label="neg")
    assert rep["roc_auc"] == 0.0


def test_two_column_probabilities_are_accepted():
    probs = np.array([[0.8, 0.2], [0.1, 0.9], [0.7, 0.3]])
    rep = M.classification_report([0, 1, 1], [0, 1, 0], scores=probs)
    assert rep["roc_auc"] == 1.0
    errs = M.most_confident_errors(["a", "b", "c"], [0, 1, 1], [0, 1, 0], probs, labels=[0, 1])
    assert [e["index"] for e in errs] == [2] and math.isclose(errs[0]["confidence"], 0.7)


def test_roc_pr_plot_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        M.plot_roc_pr([1, 1, 1], [0.2, 0.5, 0.9])


def test_rouge_rejects_bad_references_and_combine():
    with pytest.raises(ValueError, match="empty list of references"):
        M.rouge_scores(["a b"], [[]])
    with pytest.raises(ValueError, match="combine"):
        M.rouge_scores(["a b"], ["a b"], combine="median")


def test_rouge_mixes_single_and_multi_references():
    r = M.rouge_scores(["the cat sat", "a dog"], ["the cat sat", ["a dog", "no match here"]], combine="mean")
    assert r["per_example"]["rouge1"] == [1.0, 0.5]
    assert r["n"] == 2 and math.isclose(r["rouge1"], 0.75)


def test_rouge_stemmer_switch_matches_evaluate_default():
    "`use_stemmer=False` is evaluate's default; with it, inflected forms stop matching."
    stem = M.rouge_scores(["the cats jumped"], ["the cat jumps"])["rouge1"]
    plain = M.rouge_scores(["the cats jumped"], ["the cat jumps"], use_stemmer=False)["rouge1"]
    assert stem == 1.0 and math.isclose(plain, 1 / 3)


def test_empty_prediction_scores_zero_not_error():
    r = M.rouge_scores([""], ["a reference"])
    assert all(r[t] == 0.0 for t in M.ROUGE_TYPES)


def test_token_f1_rejects_empty_reference_list():
    with pytest.raises(ValueError, match="empty list"):
        M.token_f1("paris", [])


def test_perplexity_weights_and_limits():
    with pytest.raises(ValueError, match="non-negative"):
        M.perplexity([1.0, 2.0], token_counts=[0, 0])
    assert M.perplexity([1000.0]) == math.inf
    assert math.isclose(M.perplexity([1.0, 5.0], token_counts=[1, 0]), math.e)


def test_bootstrap_rejects_bad_coverage_and_is_seeded():
    with pytest.raises(ValueError, match="fraction"):
        M.bootstrap_ci([0.1, 0.2, 0.3], ci=95)
    v = np.random.default_rng(3).random(50)
    assert M.bootstrap_ci(v, seed=7) == M.bootstrap_ci(v, seed=7)
    assert M.bootstrap_ci(v, seed=7) != M.bootstrap_ci(v, seed=8)


def test_paired_bootstrap_direction_and_large_n():
    rng = np.random.default_rng(0)
    a = rng.random(20_000)
    worse = M.paired_bootstrap(a, a - 0.05, n_resamples=500)
    assert worse["delta"] < 0 and worse["high"] < 0 and worse["p_value"] == 1.0
    assert worse["n"] == 20_000


def test_diagnose_fit_ignores_trainer_summary_entry():
    "The last entry a Trainer logs has `train_loss`, not `loss`; it must not count as a point of the curve."
    hist = [{"loss": 2.0, "step": 1}, {"eval_loss": 1.9, "step": 1}, {"loss": 1.0, "step": 2}, {"eval_loss": 1.2, "step": 2},
            {"train_loss": 9.9, "train_runtime": 1.0, "step": 2}]
    verdict = M.diagnose_fit(hist)
    assert verdict.startswith("still improving"), verdict
    fig = M.plot_loss_curves([{"train_runtime": 1.0}])  # nothing to draw: a figure that says so, so a finished run still saves its plots
    assert "no `loss`" in fig.axes[0].texts[0].get_text()


def test_figures_save_as_png(tmp_path):
    "The CLI saves plots into the run directory; every figure must render headless."
    hist = [{"loss": 1.0, "step": 1}, {"eval_loss": 1.1, "step": 1}]
    figs = {"confusion": M.plot_confusion([0, 1, 1], [0, 1, 0], labels=[0, 1]),
            "roc_pr": M.plot_roc_pr([0, 1, 1], [0.1, 0.8, 0.4]),
            "loss": M.plot_loss_curves(hist),
            "compare": M.plot_metric_comparison({"a": {"f1": 0.5}, "b": {"f1": 0.6}}, "f1", intervals={"a": (0.4, 0.6)})}
    for name, fig in figs.items():
        fig.savefig(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sentences_split_at_ends_not_at_abbreviations_and_offline():
    "The split rougeLsum needs: sentence ends, not the full stops of Dr., p.m. or prices; newlines kept as breaks."
    text = "#Person1# asks Dr. Lee for the bill at 9 p.m. tonight. #Person2# pays $3.50!\nThey leave. Why?"
    assert M.split_sentences(text) == ["#Person1# asks Dr. Lee for the bill at 9 p.m. tonight.", "#Person2# pays $3.50!", "They leave.", "Why?"]
    one_line = M.rouge_scores(["Bob came home. Ann left early."], ["Ann left early. Bob came home."], split_sentences=True)
    assert one_line["rougeLsum"] == pytest.approx(1.0) and one_line["rougeL"] < 1.0


def _flat_history(eval_loss: float, eval_accuracy: float | None = None) -> list[dict]:
    "Curves that look healthy (train loss falls, eval loss flat at `eval_loss`): what a model that learned nothing can log."
    train = [{"loss": l, "step": s + 1} for s, l in enumerate(np.linspace(eval_loss * 1.2, eval_loss, 30))]
    evals = [{"eval_loss": eval_loss * f, "step": s, **({"eval_accuracy": eval_accuracy} if eval_accuracy is not None else {})}
             for s, f in ((10, 1.0001), (20, 1.0), (30, 1.0))]
    return train + evals


def test_fit_verdict_never_calls_a_classifier_at_chance_a_fit():
    "Accuracy at the majority class and loss at ln 2 (or at the label prior's loss) is at chance, though the curves alone read as a fit."
    balanced = _flat_history(math.log(2), 0.5)
    assert M.diagnose_fit(balanced).startswith("good fit")  # the rule without the task's chance levels
    assert M.fit_verdict("classify", balanced, labels=["positive", "negative"] * 50, classes=2).startswith("at chance")
    prior = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))  # always predicting the 70/30 prior
    skewed = _flat_history(prior, 0.7)
    assert M.diagnose_fit(skewed).startswith("good fit")
    assert M.fit_verdict("classify", skewed, labels=["positive"] * 70 + ["negative"] * 30, classes=2).startswith("at chance")
    with pytest.raises(ValueError, match="labels"): M.fit_verdict("classify", balanced)


def test_fit_verdict_knows_a_language_model_at_chance_scores_ln_vocabulary():
    for task in ("qa", "summarize"):
        assert M.fit_verdict(task, _flat_history(math.log(400)), vocab_size=400).startswith("at chance")
        assert M.fit_verdict(task, _flat_history(math.log(2)), vocab_size=400).startswith("good fit")  # ln 2 is far below ln 400
        with pytest.raises(ValueError, match="vocab_size"): M.fit_verdict(task, _flat_history(1.0))
    with pytest.raises(ValueError, match="unknown task"): M.fit_verdict("translate", _flat_history(1.0), vocab_size=400)
