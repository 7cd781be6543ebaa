"""The summarization task end to end on a tiny causal model: train and evaluate through the task contract and the CLI,
DialogSum's three-reference layout, and bad input."""
import csv, json, math, shutil
import pytest
from clirunner import dt, dt_ok
from domaintune_course import metrics as M
from domaintune_course.config import InputError, make_config
from domaintune_course.formats import DataError
from domaintune_course.metrics import ROUGE_TYPES
from domaintune_course.prompting import few_shot_instruction, prompt_settings
from domaintune_course.tasks import summarize
from domaintune_course.training import run_config
from domaintune_course.sources import use_hub
from domaintune_course.testing import tiny_model_dir, toy_dialogues, write_jsonl


def three_reference_rows(dialogues: list[dict]) -> list[dict]:
    "Rows in the original DialogSum test layout: fname, dialogue, summary1..3, topic1..3."
    return [dict(fname=f"test_{i}", dialogue=d["dialogue"], summary1=d["summary"], summary2=f"A purchase: {d['summary']}",
                 summary3="#Person1# and #Person2# talk about a price.", topic1="shopping", topic2="buying", topic3="price")
            for i, d in enumerate(dialogues)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    "A summarize run trained through the CLI on toy dialogues with a tiny causal model (smoke budget; LoRA, since NF4 needs wider layers)."
    root = tmp_path_factory.mktemp("summarize")
    data = write_jsonl(toy_dialogues(24), root / "toy.jsonl")
    model = tiny_model_dir("causal", root / "tiny")
    dt_ok("train", "--task", "summarize", "--data", data, "--model", model, "--profile", "smoke", "--strategy", "lora", "--out", "r1",
          runs_dir=root / "runs")
    return root, root / "runs" / "r1"


def test_train_writes_model_splits_and_settings(trained):
    root, run = trained
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == make_config("summarize", "smoke").max_steps
    assert (run / "model" / "adapter_config.json").is_file()
    counts = json.loads((run / "manifest.json").read_text())["counts"]
    assert sum(counts.values()) == 24 and counts["test"] > 0
    gen = json.loads((run / "generation.json").read_text())
    assert gen["do_sample"] is False and gen["padding_side"] == "left" and gen["max_new_tokens"] > 0


def test_evaluate_on_test_split(trained):
    root, run = trained
    result = summarize.evaluate(run)
    test_ids = [json.loads(l)["id"] for l in (run / "data" / "test.jsonl").read_text().splitlines()]
    assert result["n"] == len(test_ids) and result["combine"] == "max"
    for system in ("base", "finetuned"):
        assert set(ROUGE_TYPES) <= set(result[system]) and all(0 <= result[system][t] <= 1 for t in ROUGE_TYPES)
    for t in ROUGE_TYPES:
        d = result["delta"][t]
        assert d["low"] <= d["delta"] <= d["high"]
        assert d["delta"] == pytest.approx(result["finetuned"][t] - result["base"][t], abs=1e-9)
    assert json.loads((run / "eval.json").read_text())["n"] == result["n"]
    gen = json.loads((run / "generation.json").read_text())
    for system in ("base", "finetuned"):
        t = result["generation_time"][system]
        assert t["examples"] == result["n"] and t["seconds"] > 0 and 0 < t["new_tokens"] <= result["n"] * gen["max_new_tokens"]
    with open(run / "results.csv", newline="", encoding="utf-8") as f: rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == test_ids
    assert {"dialogue", "references", "base_summary", "finetuned_summary"} <= set(rows[0])


def test_evaluate_three_references_and_skips_training_dialogues(trained):
    root, run = trained
    train_dialogues = [json.loads(l) for l in (run / "data" / "train.jsonl").read_text().splitlines()]
    unseen = [dict(id="new", dialogue="#Person1#: Where is the station?\n#Person2#: Two streets north, next to the bank.\n#Person1#: Thanks a lot.",
                   summary="#Person2# tells #Person1# the station is two streets north.")]
    path = write_jsonl(three_reference_rows(train_dialogues[:2] + unseen), root / "dialogsum.test.jsonl")
    dt_ok("evaluate", "--run", "r1", "--data", path, runs_dir=root / "runs")
    result = json.loads((run / "eval.json").read_text())
    assert result["n"] == 1, "dialogues the run trained on must not be scored"
    assert result["references"]["max"] == 3
    with open(run / "results.csv", newline="", encoding="utf-8") as f: rows = list(csv.DictReader(f))
    assert rows[0]["id"] == "test_2" and len(json.loads(rows[0]["references"])) == 3


def test_generate_stops_before_end_marker(trained):
    root, run = trained
    out = summarize.generate(run, ["#Person1#: I want to buy a kettle.\n#Person2#: It costs 12 dollars."])
    assert len(out) == 1 and isinstance(out[0], str) and "### End" not in out[0]


def test_missing_dialogue_names_the_line(tmp_path):
    rows = [dict(dialogue=d["dialogue"], summary=d["summary"]) for d in toy_dialogues(3)]
    rows.insert(1, dict(summary="A summary without its dialogue."))
    bad = write_jsonl(rows, tmp_path / "bad.jsonl")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: field 'dialogue'"): summarize.prepare(bad, tmp_path / "out")
    cfg = make_config("summarize", "smoke", data=str(bad))
    with pytest.raises(DataError, match=r"bad\.jsonl:2"): summarize.train(cfg, tmp_path / "run")
    r = dt("train", "--task", "summarize", "--data", bad, "--profile", "smoke", runs_dir=tmp_path / "runs")
    assert r.returncode == 2 and "bad.jsonl:2" in r.stderr


def test_evaluate_refuses_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(InputError, match="config.json"): summarize.evaluate(tmp_path)


def test_from_run_continues_from_the_merged_model(trained, tmp_path):
    root, run = trained
    cfg = make_config("summarize", "smoke", model=str(root / "tiny"), data=str(root / "toy.jsonl"), strategy="lora", max_steps=2)
    metrics = summarize.train(cfg, tmp_path / "r2", from_run=run)
    assert metrics["global_step"] == 2
    assert (run / "model-merged" / "config.json").is_file(), "the first run's adapter is merged once, beside it, for every continuation"
    assert json.loads((tmp_path / "r2" / "model" / "finetune.json").read_text())["model"] == str(run / "model-merged")


def test_compare_summaries_scores_rougelsum_sentence_by_sentence():
    "rougeLsum matches sentence with sentence, so a summary saying the reference's sentences in another order keeps it (not rougeL)."
    refs = ["#Person1# asks Dr. Lee about the pills at 9 p.m. tonight. #Person2# says to take two with water.",
            "#Person1# books a table for four. #Person2# confirms it for Friday."]
    reordered = ["#Person2# says to take two with water. #Person1# asks Dr. Lee about the pills at 9 p.m. tonight.",
                 "#Person2# confirms it for Friday. #Person1# books a table for four."]
    c = summarize.compare_summaries(["#Person1# talks to #Person2#."] * 2, reordered, refs, seed=0)
    assert c["finetuned"]["rougeLsum"] == pytest.approx(1.0) and c["finetuned"]["rougeL"] < 0.75
    assert "Punkt" in c["rougeLsum_sentences"]


def test_compare_scores_prompting_baselines_beside_the_fine_tuned_model(trained):
    "Few-shot examples come from the run's training split; every system reports ROUGE-L with an interval, its cost, and its gap to the fine-tuned model."
    root, run = trained
    held, _ = summarize.held_out(run, limit=2)
    train = [json.loads(l) for l in (run / "data" / "train.jsonl").read_text().splitlines()]
    table, out = summarize.compare(run, held, shots=1)
    assert list(table) == list(summarize.COMPARED) and all(len(out[s]) == 2 for s in table)
    assert table["base, few-shot"]["prompt_tokens"] > table["base"]["prompt_tokens"]
    assert all(r["rougeL_low"] <= r["rougeL"] <= r["rougeL_high"] and r["seconds_per_summary"] > 0 for r in table.values())
    assert "finetuned_gain" in table["base"] and "finetuned_gain" not in table["fine-tuned"]
    few = few_shot_instruction("summarize", train[:1])
    assert train[0]["summary"] in few and not any(r["summary"] in few for r in held)
    with pytest.raises(InputError, match="Unknown systems"): summarize.compare(run, held, systems=("oracle",))
    default, texts = summarize.compare(run, systems=("base",))  # no records: the run's held-out dialogues
    assert default["base"]["rougeL"] >= 0 and len(texts["base"]) == min(len(summarize.held_out(run)[0]), run_config(run).eval_limit)


def test_train_and_evaluate_name_the_fit_like_the_other_tasks(trained, tmp_path):
    "metrics.json and eval.json carry `fit`, from the saved history and ln(vocabulary): a run stuck there is at chance, never a fit."
    from transformers import AutoTokenizer
    root, run = trained
    vocab, fit = len(AutoTokenizer.from_pretrained(run / "model")), json.loads((run / "metrics.json").read_text())["fit"]
    assert fit == M.fit_verdict("summarize", json.loads((run / "history.json").read_text()), vocab_size=vocab)
    gen = json.loads((run / "generation.json").read_text())
    assert prompt_settings(run) == dict(task="summarize", style=gen["style"], max_new_tokens=gen["max_new_tokens"])  # what serve and export use
    copy = shutil.copytree(run, tmp_path / "run")
    flat = lambda loss: ([{"loss": loss * (1.2 - 0.2 * s / 30), "step": s} for s in range(1, 31)] +
                         [{"eval_loss": loss, "step": s} for s in (10, 20, 30)])
    for loss, verdict in ((math.log(vocab), "at chance"), (1.0, "good fit")):
        (copy / "history.json").write_text(json.dumps(flat(loss)))
        assert summarize.evaluate(copy, limit=1)["fit"].startswith(verdict)


# --- DialogSum is never swapped ------------------------------------------------------------------------------------

def test_a_gpu_profile_gets_dialogsum_or_a_clear_error_never_the_bundled_dialogues(tmp_path):
    cfg = make_config("summarize", "t4", rehearsal=False)
    assert cfg.data == "dialogsum" and use_hub(cfg)
    with pytest.raises(InputError, match="DialogSum.*Internet.*--data"):
        summarize.prepare_run_data(cfg, tmp_path / "data")  # the hub is offline here (conftest)
    assert not (tmp_path / "data" / "train.jsonl").exists()
