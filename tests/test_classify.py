"""The classification task end to end on a tiny encoder: a user's Kaggle-layout CSV, bad labels, strategies, eval.json."""
import json, math, shutil, types
import numpy as np
import pandas as pd
import pytest
import torch

from domaintune_course import metrics as M, pooling
from domaintune_course.config import InputError, make_config
from domaintune_course.formats import DataError
from domaintune_course.testing import tiny_model_dir, tiny_tokenizer, toy_reviews, write_jsonl
from domaintune_course.tasks import classify

EVAL_KEYS = {"accuracy", "precision", "recall", "f1", "roc_auc", "n", "baseline_accuracy"}


def kaggle_csv(path, n=40):
    "Toy reviews written in the Kaggle 'IMDB Dataset.csv' layout: columns review, sentiment."
    rows = toy_reviews(n)
    pd.DataFrame({"review": [r["text"] for r in rows], "sentiment": [r["label"] for r in rows]}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return tiny_model_dir("encoder", tmp_path_factory.mktemp("tiny-encoder"))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, encoder_dir):
    "One full fine-tune of the tiny encoder on a Kaggle-layout CSV, shared by the tests that only read it."
    d = tmp_path_factory.mktemp("classify")
    csv = kaggle_csv(d / "IMDB Dataset.csv")
    cfg = make_config("classify", "smoke", model=str(encoder_dir), data=str(csv), strategy="full")
    run = d / "run"
    metrics = classify.train(cfg, run)
    return run, metrics, cfg


def test_train_writes_model_labels_and_manifest(full_run):
    run, metrics, cfg = full_run
    assert (run / "model" / "config.json").is_file() and (run / "manifest.json").is_file()
    assert json.loads((run / "labels.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}
    assert json.loads((run / "classify.json").read_text())["truncation"] in classify.TRUNCATIONS
    assert metrics["steps"] == cfg.max_steps and 0 <= metrics["val_accuracy"] <= 1
    assert metrics["best_checkpoint"] and (run / "loss_curves.png").is_file()
    manifest = json.loads((run / "manifest.json").read_text())
    assert sum(manifest["counts"].values()) == 40


def test_evaluate_writes_eval_json_and_plots(full_run):
    run, _, _ = full_run
    ev = classify.evaluate(run)
    saved = json.loads((run / "eval.json").read_text())
    assert EVAL_KEYS <= set(saved) and saved["n"] == ev["n"] == len((run / "data" / "test.jsonl").read_text().splitlines())
    assert 0 <= saved["baseline_accuracy"] <= 1 and 0 <= saved["accuracy"] <= 1
    assert saved["roc_auc"] is not None
    for png in ("confusion.png", "roc_pr.png", "loss_curves.png"): assert (run / png).stat().st_size > 1000
    assert isinstance(json.loads((run / "errors.json").read_text()), list)


def test_evaluate_on_a_user_file_with_limit(full_run, tmp_path):
    run, _, _ = full_run
    other = kaggle_csv(tmp_path / "mine.csv", n=20)
    ev = classify.evaluate(run, data=str(other), limit=6)
    assert ev["n"] == 6 and sum(ev["confusion"][0]) == sum(ev["confusion"][1]) == 3
    assert ev["data"].endswith("mine.csv")


def test_generate_returns_labels_with_probabilities(full_run):
    run, _, _ = full_run
    out = classify.generate(run, ["I loved every minute.", "A dull, tedious mess."])
    assert len(out) == 2
    for o in out:
        label, prob = o.split()
        assert label in classify.LABELS and 0.5 <= float(prob.strip("()")) <= 1


def test_lora_run_saves_an_adapter_and_evaluates(encoder_dir, tmp_path):
    csv = kaggle_csv(tmp_path / "IMDB Dataset.csv", n=24)
    cfg = make_config("classify", "smoke", model=str(encoder_dir), data=str(csv), strategy="lora")
    m = classify.train(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "model" / "adapter_config.json").is_file()
    assert m["trainable_parameters"] < m["total_parameters"] / 2
    assert EVAL_KEYS <= set(classify.evaluate(tmp_path / "run"))
    # a LoRA run continued: its adapter merged once, beside it, into a plain encoder that predicts what the adapter did
    m2 = classify.train(cfg, tmp_path / "run2", from_run=tmp_path / "run")
    merged = tmp_path / "run" / "model-merged"
    assert m2["steps"] > 0 and json.loads((tmp_path / "run2" / "classify.json").read_text())["source"] == str(merged)
    from transformers import AutoModelForSequenceClassification
    texts = [r["text"] for r in toy_reviews(6)]
    lora, tok = classify.load_classifier(tmp_path / "run")
    plain = AutoModelForSequenceClassification.from_pretrained(merged)
    p_lora, p_plain = (classify.predict_proba(m, tok, texts, cfg.max_length, progress=False) for m in (lora, plain))
    assert np.allclose(p_lora, p_plain, atol=1e-5) and not (tmp_path / "run" / "model").joinpath("config.json").is_file()


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_mean_pooling_survives_save_and_reload(encoder_dir, tmp_path, strategy):
    "A run trained with mean pooling is rebuilt with it (as its classify.json says), and that changes the predictions."
    import numpy as np
    csv = kaggle_csv(tmp_path / "IMDB Dataset.csv", n=24)
    cfg = make_config("classify", "smoke", model=str(encoder_dir), data=str(csv), strategy=strategy, extra={"pooling": "mean"})
    classify.train(cfg, tmp_path / "run")
    info_path = tmp_path / "run" / "classify.json"
    info = json.loads(info_path.read_text())
    assert info["pooling"] == "mean"
    model, tok = classify.load_classifier(tmp_path / "run")
    assert any(isinstance(m, pooling.MeanPooler) for m in model.modules())
    texts = [r["text"] for r in toy_reviews(6)]
    mean = classify.predict_proba(model, tok, texts, 64)
    info_path.write_text(json.dumps(info | {"pooling": "cls"}))
    cls = classify.predict_proba(*classify.load_classifier(tmp_path / "run"), texts, 64)
    assert np.abs(mean - cls).max() > 1e-4


def test_pooling_follows_the_checkpoint_and_refuses_models_without_a_pooler(encoder_dir, tmp_path):
    assert pooling.pooling_mode(str(encoder_dir)) == "cls"
    d = tmp_path / "st"; d.mkdir(); (d / "1_Pooling").mkdir(); (d / "config.json").write_text("{}")
    (d / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    assert pooling.pooling_mode(str(d)) == "mean"
    with pytest.raises(InputError, match="pooling 'sum'"): pooling.run_pooling(make_config("classify", "smoke", extra={"pooling": "sum"}))


def test_frozen_trains_only_the_head(encoder_dir):
    cfg = make_config("classify", "smoke", model=str(encoder_dir), strategy="frozen")
    model = classify.build_classifier(cfg)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("classifier.", "bert.pooler.")) for n in trainable)
    lower = make_config("classify", "smoke", model=str(encoder_dir), strategy="full", extra={"freeze_layers": 1})
    counts = classify.count_parameters(classify.build_classifier(lower))
    assert 0 < counts["trainable"] < counts["total"]


def test_qlora_is_refused_for_the_encoder(encoder_dir, tmp_path):
    cfg = make_config("classify", "smoke", model=str(encoder_dir), strategy="qlora")
    with pytest.raises(InputError, match="--strategy lora"): classify.train(cfg, tmp_path / "run")


def test_third_class_in_a_label_column_names_the_rows(tmp_path):
    rows = toy_reviews(6) + [dict(id="x1", text="Meh.", label="neutral"), dict(id="x2", text="Odd.", label="mixed")]
    path = write_jsonl(rows, tmp_path / "three.jsonl")
    with pytest.raises(InputError) as e: classify.prepare(path, tmp_path / "out")
    assert "id x1" in str(e.value) and "id x2" in str(e.value) and "'neutral'" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_unknown_sentiment_string_names_the_line(tmp_path):
    path = tmp_path / "IMDB Dataset.csv"
    path.write_text("review,sentiment\nGreat.,positive\nAwful.,negative\nHm.,postive\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"IMDB Dataset.csv:4: field 'sentiment': unknown label 'postive'"):
        classify.prepare(path, tmp_path / "out")


def test_one_class_only_cannot_train(tmp_path):
    path = write_jsonl([r for r in toy_reviews(10) if r["label"] == "positive"], tmp_path / "pos.jsonl")
    with pytest.raises(InputError, match="needs both classes"): classify.prepare(path, tmp_path / "out")


def test_truncation_keeps_the_budget():
    tok = tiny_tokenizer()
    text = " ".join(r["text"] for r in toy_reviews(12))
    for side in classify.TRUNCATIONS:
        clipped = classify.clip_text(text, tok, 24, side)
        assert len(tok(clipped, add_special_tokens=False)["input_ids"]) <= 24
    assert classify.clip_text(text, tok, 24, "tail").endswith(text[-5:])
    with pytest.raises(InputError, match="truncation"): classify.keep_tokens([1, 2, 3], 2, "middle")


def test_label_aliases_reach_splits_training_and_the_baseline(encoder_dir, tmp_path):
    "pos/neg labels are normalised once, where the file is read: the splits, the model and the TF-IDF baseline all see negative/positive."
    rows = [dict(r, label={"positive": "pos", "negative": "neg"}[r["label"]]) for r in toy_reviews(40)]
    cfg = make_config("classify", "smoke", model=str(encoder_dir), data=str(write_jsonl(rows, tmp_path / "posneg.jsonl")), max_steps=1)
    classify.train(cfg, tmp_path / "run")
    labels = {json.loads(l)["label"] for k in ("train", "test") for l in (tmp_path / "run" / "data" / f"{k}.jsonl").read_text().splitlines()}
    assert labels == {"negative", "positive"}
    assert classify.evaluate(tmp_path / "run")["baseline_accuracy"] > 0.5  # TF-IDF trained on the same two names it is scored with


# --- evaluation on a GPU: zero-shot in batches, the profile's half precision, one fit verdict ---------------------------

def test_zero_shot_scores_in_batches_as_one_at_a_time_with_progress(tmp_path, capfd):
    "Left-padded batches with the attention mask and positions give each review the score it gets alone; a bar shows progress."
    lm = tiny_model_dir("causal", tmp_path / "lm")
    texts = [r["text"] * (1 + i % 3) for i, r in enumerate(toy_reviews(7))]  # three lengths: the batches need padding
    alone = classify.zero_shot_scores(texts, str(lm), max_length=64, batch_size=1, progress=False)
    capfd.readouterr()
    batched = classify.zero_shot_scores(texts, str(lm), max_length=64, batch_size=4)
    assert "scoring (zero-shot)" in capfd.readouterr().err
    assert np.ptp(alone) > 1e-4  # the reviews score differently, so a mix-up of rows would show
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-5)
    assert ((batched >= 0.5) == (alone >= 0.5)).all()


def _fake_gpu(monkeypatch, major: int):
    "Make torch report one 16 GB CUDA device of compute capability `major`.0 (bf16 native from 8, emulated below), as tests/test_profiles.py does."
    props = types.SimpleNamespace(name=f"GPU sm_{major}0", major=major, minor=0, total_memory=16 * 2**30)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=0: props)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: major >= 8 or including_emulation)


@pytest.mark.parametrize("profile, major, dtype", [("t4", 7, torch.float16), ("p100", 6, torch.float16),
                                                   ("l4", 8, torch.bfloat16), ("a100", 8, torch.bfloat16)])
def test_a_gpu_scores_in_the_profiles_half_precision_and_a_cpu_in_fp32(profile, major, dtype, monkeypatch):
    precision = make_config("classify", profile, rehearsal=False).precision
    assert classify.scoring_dtype(precision, "cpu") == torch.float32
    _fake_gpu(monkeypatch, major)
    assert classify.scoring_dtype(precision, "cuda") == dtype
    assert classify.scoring_dtype(precision, torch.device("cpu")) == torch.float32  # a model left on the CPU
    _fake_gpu(monkeypatch, 7)
    assert classify.scoring_dtype("bf16", "cuda") == torch.float16  # bf16 only where the GPU computes it natively


def test_evaluate_and_generate_score_in_the_precision_the_run_trained_in(full_run, tmp_path, monkeypatch):
    run, _, cfg = full_run
    assert json.loads((run / "classify.json").read_text())["precision"] == cfg.precision
    copy = shutil.copytree(run, tmp_path / "run")
    (copy / "classify.json").write_text(json.dumps(json.loads((copy / "classify.json").read_text()) | {"precision": "bf16"}))
    asked, decide = [], classify.scoring_dtype
    monkeypatch.setattr(classify, "scoring_dtype", lambda precision, device="cuda": asked.append(precision) or decide(precision, device))
    ev = classify.evaluate(copy, limit=4)
    classify.generate(copy, ["A joy."])
    assert asked == ["bf16", "bf16"] and ev["n"] == 4


def test_every_public_path_calls_a_classifier_at_chance_at_chance(full_run, tmp_path):
    "train's and evaluate's `fit` and the lesson's `metrics.fit_verdict` agree, and none calls curves flat at ln 2 with majority accuracy a fit."
    run, metrics, _ = full_run
    labels = [json.loads(l)["label"] for l in (run / "data" / "train.jsonl").read_text().splitlines()]
    saved = json.loads((run / "history.json").read_text())
    assert metrics["fit"] == M.fit_verdict("classify", saved, labels=labels, classes=2) == classify.evaluate(run, limit=4)["fit"]
    copy = shutil.copytree(run, tmp_path / "run")
    major = max(labels.count(l) for l in set(labels)) / len(labels)
    flat = ([{"loss": 0.8 - 0.004 * s, "step": s} for s in range(1, 31)] +
            [{"eval_loss": math.log(2) + 1e-4 * (s == 10), "eval_accuracy": major, "step": s} for s in (10, 20, 30)])
    (copy / "history.json").write_text(json.dumps(flat))
    assert M.diagnose_fit(flat).startswith("good fit")  # the curves alone
    for verdict in (classify.evaluate(copy, limit=4)["fit"], M.fit_verdict("classify", flat, labels=labels, classes=2)):
        assert verdict.startswith("at chance"), verdict


def test_a_new_head_loads_quietly_and_a_missing_body_is_named(tmp_path, capfd):
    "The classifier head starts random without transformers' load report; a checkpoint lacking weights of the body says so."
    import warnings
    from safetensors.torch import load_file, save_file
    from domaintune_course.models import load_model
    from domaintune_course.testing import tiny_model_dir
    d = tiny_model_dir("encoder", tmp_path / "enc")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        load_model(str(d), kind="encoder", num_labels=3, ignore_mismatched_sizes=True)
    assert "LOAD REPORT" not in capfd.readouterr().err
    assert not [w for w in seen if "body" in str(w.message)]
    weights = load_file(d / "model.safetensors")
    lost = next(k for k in weights if ".encoder." in k)
    save_file({k: v for k, v in weights.items() if k != lost}, d / "model.safetensors", metadata={"format": "pt"})
    with pytest.warns(UserWarning, match="body were missing or had other shapes"):
        load_model(str(d), kind="encoder", num_labels=2)


# --- classifier evaluation -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def classify_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("classify")
    data = write_jsonl(toy_reviews(120), d / "reviews.jsonl")
    cfg = make_config("classify", "smoke", model=str(tiny_model_dir("encoder", d / "enc")), data=str(data), eval_limit=6)
    classify.train(cfg, d / "run")
    return d / "run"


def test_classifier_evaluation_is_capped_and_shows_progress(classify_run, capfd):
    ev = classify.evaluate(classify_run)
    assert ev["n"] == 6 < ev["held_out_available"]
    assert "scoring" in capfd.readouterr().err
    assert classify.evaluate(classify_run, limit=ev["held_out_available"])["n"] == ev["held_out_available"]


def test_the_classifier_is_loaded_on_the_inference_device(classify_run, monkeypatch):
    "Evaluation runs where `inference_device` says (the GPU when there is one): here the meta device stands in for it."
    monkeypatch.setattr(classify, "inference_device", lambda: torch.device("meta"))
    model, _ = classify.load_classifier(classify_run)
    assert {p.device.type for p in model.parameters()} == {"meta"}


# --- a diagnosis that knows chance -----------------------------------------------------------------------------------

def test_a_classifier_that_cannot_read_is_diagnosed_at_chance(tmp_path):
    "Every word [UNK] (the tokenizer of a partial snapshot): validation at ln 2 and 50%, which the curves alone call a good fit."
    from transformers import BertTokenizer
    enc = tiny_model_dir("encoder", tmp_path / "enc")
    BertTokenizer(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])}).save_pretrained(enc)
    for f in ("tokenizer_config.json", "tokenizer.json"): assert (enc / f).is_file()
    rows = [dict(id=f"r{i}", text=f"Review {i}: {'good' if i % 2 else 'bad'}", label="positive" if i % 2 else "negative") for i in range(80)]
    data = write_jsonl(rows, tmp_path / "reviews.jsonl")  # learnable with a vocabulary; every review alike without one
    cfg = make_config("classify", "smoke", model=str(enc), data=str(data), max_steps=-1, epochs=3, learning_rate=1e-3, extra={"pooling": "cls"})
    m = classify.train(cfg, tmp_path / "run")
    assert m["fit"].startswith("at chance"), m["fit"]
