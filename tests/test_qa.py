"""The Q&A task: prepare, train, evaluate, generate and retrieval, on tiny offline models and a user's JSONL."""
import json, shutil
import pytest
from domaintune_course.config import InputError, make_config
from domaintune_course.data import format_report
from domaintune_course.formats import DataError
from domaintune_course.testing import tiny_model_dir, toy_qa_rows, write_jsonl
from domaintune_course.prompting import pick_shots, system_instructions
from domaintune_course.tasks import qa


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory): return tiny_model_dir("causal", tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def data_file(tmp_path_factory): return write_jsonl(toy_qa_rows(30), tmp_path_factory.mktemp("data") / "lamps.jsonl")


@pytest.fixture(scope="module")
def trained(model_dir, data_file, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    cfg = make_config("qa", "smoke", model=str(model_dir), data=str(data_file), strategy="lora", max_steps=2, batch_size=4,
                      max_length=64, eval_steps=1, eval_limit=3, lora_r=4)
    return run, qa.train(cfg, run)


def test_prepare_writes_splits_manifest_and_report(data_file, tmp_path):
    report = qa.prepare(data_file, tmp_path)
    assert sum(report["splits"].values()) == 30
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "manifest.json", "report.json"):
        assert (tmp_path / name).is_file(), name
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["counts"] == report["splits"] and manifest["read"]["layout"] == {"prompt/completion": 30}


def test_prepare_report_prints_as_the_command_line_prints_it(data_file, tmp_path):
    "The report of the task's own `prepare` is one `format_report` can print (it once lacked keys and crashed the CLI)."
    text = format_report(qa.prepare(data_file, tmp_path))
    assert "JSON Lines, 30 rows -> 30 records" in text and "conflicting labels: 0" in text and "Read these records" in text


def test_prepare_names_the_bad_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "What is HbA1c?", "completion": "A blood test."}\n{"prompt": "Why?"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:2.*completion"): qa.prepare(bad, tmp_path / "out")


def test_train_writes_the_run_and_reports_costs(trained):
    run, metrics = trained
    assert (run / "model" / "adapter_config.json").is_file() and (run / "manifest.json").is_file()
    assert (run / "loss_curves.png").is_file() and json.loads((run / "history.json").read_text())
    for key in ("trainable_params", "total_params", "model_memory_mb", "peak_memory_mb", "tokens_per_second", "wall_time_s"):
        assert metrics[key] > 0, key
    assert "log_history" not in metrics


def test_evaluate_reports_base_and_fine_tuned(trained):
    run, metrics = trained
    result = qa.evaluate(run, limit=2)
    assert result["n"] == 2 and len(result["examples"]) == 2
    assert result["fit"] == metrics["fit"] and metrics["fit"].startswith("at chance")  # random weights: ln(vocabulary), one verdict
    for system in ("base", "finetuned"):
        assert result[system]["perplexity"] > 1 and 0 <= result[system]["token_f1"] <= 1
    assert result["base"]["perplexity"] != result["finetuned"]["perplexity"]
    assert (run / "eval.json").is_file() and (run / "eval_comparison.png").is_file()
    for system in ("base", "finetuned"):
        t = result["generation_time"][system]
        assert t["examples"] == 2 and t["seconds"] > 0 and 0 < t["new_tokens"] <= 2 * min(96, 64 // 2)


def test_evaluate_on_a_user_file_and_generate(trained, tmp_path):
    run, _ = trained
    other = write_jsonl(toy_qa_rows(3), tmp_path / "held_out.jsonl")
    assert qa.evaluate(run, data=str(other))["n"] == 3
    answers = qa.generate(run, ["What colour is lamp number 5?", "And lamp 6?"])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_training_from_a_previous_run(trained, model_dir, data_file, tmp_path):
    run, _ = trained
    cfg = make_config("qa", "smoke", model=str(model_dir), data=str(data_file), strategy="lora", max_steps=1, batch_size=4,
                      max_length=64, eval_limit=2, lora_r=4)
    m = qa.train(cfg, tmp_path / "second", from_run=run)
    assert (run / "model-merged" / "config.json").is_file() and m["global_step"] == 1


def test_evaluate_without_a_trained_model_names_the_fix(tmp_path):
    with pytest.raises(InputError, match="no fine-tuned model"): qa.evaluate(tmp_path)


def test_continuing_from_a_run_without_a_model_names_the_fix(trained, model_dir, data_file, tmp_path):
    "--from-run of a run that never finished training: the run and the fix are named, nothing is trained."
    run, _ = trained
    (tmp_path / "unfinished").mkdir()
    cfg = make_config("qa", "smoke", model=str(model_dir), data=str(data_file), strategy="lora", max_steps=1, batch_size=4, max_length=64)
    with pytest.raises(InputError, match=r"unfinished.*no trained model.*finished training"): qa.train(cfg, tmp_path / "new", from_run=tmp_path / "unfinished")
    assert not (tmp_path / "new" / "model").exists()
    without_test = shutil.copytree(run, tmp_path / "no-test"); (without_test / "data" / "test.jsonl").unlink()
    with pytest.raises(InputError, match="no data/test.jsonl.*--data"): qa.evaluate(without_test)


def test_retrieval_finds_the_paraphrase():
    from domaintune_course.data import load_task_data
    records = load_task_data("qa")
    question = next(r for r in records if r["id"] == "cc-0002")["prompt"]
    corpus = [r for r in records if r["id"] != "cc-0002"]
    top = qa.retrieve([question], corpus, k=3)[0]
    assert top[0]["id"] == "cc-0001" and top[0]["similarity"] > top[2]["similarity"]
    assert "Q: " in qa.rag_instruction(top) and top[0]["completion"] in qa.rag_instruction(top)


def test_cli_trains_evaluates_and_generates_on_a_user_file(model_dir, data_file, tmp_path, capsys):
    from domaintune_course.cli import main
    out = tmp_path / "runs"
    code = main(["--runs-dir", str(out), "train", "--task", "qa", "--model", str(model_dir), "--data", str(data_file),
                 "--max-steps", "1", "--strategy", "lora", "--out", "cli-run"])
    assert code == 0
    run = next(p for p in out.rglob("metrics.json")).parent
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["trainable_params"] > 0 and metrics["tokens_per_second"] > 0
    capsys.readouterr()
    assert main(["--runs-dir", str(out), "evaluate", "--run", str(run), "--limit", "2"]) == 0
    assert {"base", "finetuned"} <= set(json.loads((run / "eval.json").read_text()))
    err = capsys.readouterr().err
    assert "base" in err and "finetuned" in err and "ex/s" in err and "2/2" in err, "a progress bar per system, with examples per second"
    assert main(["--runs-dir", str(out), "generate", "--run", str(run), "What colour is lamp 2?"]) == 0


def test_prompt_baselines_draw_their_examples_from_the_corpus_only():
    "Few-shot examples come from the training records, the same for every question; an unknown prompt or system is refused."
    train, test = toy_qa_rows(12)[:8], toy_qa_rows(12)[8:]
    few = system_instructions("qa", "few-shot", test, train, qa.BETTER_INSTRUCTION, shots=3, seed=0)
    assert len(set(few)) == 1 and all(r["prompt"] in few[0] for r in pick_shots(train, 3, 0))
    assert not any(r["prompt"] in few[0] for r in test)
    assert system_instructions("qa", "plain", test, train, qa.BETTER_INSTRUCTION) is None
    assert system_instructions("qa", "better instruction", test, train, qa.BETTER_INSTRUCTION) == [qa.BETTER_INSTRUCTION] * len(test)
    retrieved = system_instructions("qa", "retrieval", test[:2], train, qa.BETTER_INSTRUCTION, retrieval=qa.retrieval_instructions)
    assert len(retrieved) == 2 and all(r.startswith("Answer the question. These answers") for r in retrieved)
    with pytest.raises(InputError, match="Unknown prompt kind"): system_instructions("qa", "telepathy", test, train, qa.BETTER_INSTRUCTION)


def test_compare_scores_every_system_with_its_cost(trained):
    run, _ = trained
    recs = [json.loads(l) for l in (run / "data" / "test.jsonl").read_text().splitlines()][:2]
    corpus = [json.loads(l) for l in (run / "data" / "train.jsonl").read_text().splitlines()]
    table, raw = qa.compare(run, recs, corpus, shots=2, systems=("base", "base, few-shot", "fine-tuned, sampled"))
    assert list(table) == ["base", "base, few-shot", "fine-tuned, sampled"]
    assert table["base, few-shot"]["prompt_tokens"] > table["base"]["prompt_tokens"]
    assert all(r["seconds_per_answer"] > 0 and 0 <= r["token_f1"] <= 1 for r in table.values())
    assert raw["base"]["perplexity"] != raw["base, few-shot"]["perplexity"]  # the examples change what the model expects
    assert len(raw["fine-tuned, sampled"]["answers"]) == 2
    with pytest.raises(InputError, match="Unknown systems"): qa.compare(run, recs, corpus, systems=("oracle",))
