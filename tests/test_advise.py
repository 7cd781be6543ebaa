"""`domaintune advise` end to end: the bundled dialogues at the smoke budget (the README's command runs it on the Q&A set,
lesson 07 on the reviews), a job listed as a run, resumed without redoing finished stages, and bad input refused with
nothing left behind."""
import json
from pathlib import Path
import pytest

from domaintune_course import advise, jobs
from domaintune_course.formats import read_json
from domaintune_course.testing import tiny_model_dir, toy_qa_rows, write_jsonl

from clirunner import dt

DATA = Path(advise.__file__).parent / "data"
BUNDLED = {"summarize": DATA / "dialogues.jsonl"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    "A runs directory, a tiny causal model, a toy Q&A file and one finished advise job on them."
    d = tmp_path_factory.mktemp("advise")
    model, data = tiny_model_dir("causal", d / "tiny"), write_jsonl(toy_qa_rows(30), d / "qa.jsonl")
    r = dt("advise", data, "--task", "qa", "--profile", "smoke", "--model", model, "--limit", 3, "--out", "job", runs_dir=d / "runs", check=True)
    return dict(root=d / "runs", model=model, data=data, job=d / "runs" / "job", out=r.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["summarize"])  # qa: the README's command runs it on a copy of the bundled set; classify: lesson 07
def test_advise_on_each_bundled_set_at_the_smoke_budget(task, tmp_path):
    "The documented command on a bundled set: every system answers the same held-out examples, the report and the run listing."
    r = dt("advise", BUNDLED[task], "--task", task, "--profile", "smoke", "--limit", 4, "--answers", 500, "--out", "advice", runs_dir=tmp_path, check=True)
    job, result = tmp_path / "advice", read_json(tmp_path / "advice" / "advice.json")
    assert set(result["systems"]) == set(advise.systems_of(task)) and result["n"] == 4 and result["answers"] == 500
    assert result["recommended"] in result["systems"] and result["reasons"] in (job / "advice.md").read_text(encoding="utf-8")
    assert (job / "advice.png").stat().st_size > 10_000 and (job / "run" / "model").is_dir()
    assert [l.split("]")[0] for l in r.stdout.splitlines() if l.startswith("advise [")] == [f"advise [{i}/4" for i in range(1, 5)]
    listed = json.loads(dt("runs", "list", "--json", runs_dir=tmp_path, check=True).stdout)
    assert [(x["run"], x["task"], x["status"]) for x in listed] == [("advice", task, "succeeded")]
    assert listed[0]["metric"].startswith(advise.METRIC[task][1] + "=")
    assert all("hallucination" in s for s in result["systems"].values())


def test_a_finished_job_is_a_run(tiny):
    "The job folder holds the report, its configuration and status; its fine-tuning run can be served like any other."
    st, cfg = jobs.read_status(tiny["job"]), read_json(tiny["job"] / "config.json")["config"]
    assert st["status"] == "succeeded" and cfg["task"] == "qa" and cfg["extra"]["advise"] == {"minutes": None, "limit": 3}
    assert jobs.is_run(tiny["job"] / "run") and (tiny["job"] / "run" / "model").is_dir()
    assert f"The report: {tiny['job'] / 'advice.md'}" in tiny["out"]


def test_resume_redoes_only_what_is_missing(tiny):
    "With the comparison lost, --resume answers again and reports, without calibrating or training again."
    trained = (tiny["job"] / "run" / "train.json").stat().st_mtime_ns
    (tiny["job"] / "compare.json").unlink(); (tiny["job"] / "advice.md").unlink()
    r = dt("advise", "--out", "job", "--resume", "--answers", 10, runs_dir=tiny["root"], check=True)
    stages = [l.split("]")[0] for l in r.stdout.splitlines() if l.startswith("advise [")]
    assert stages == ["advise [3/4", "advise [4/4"] and (tiny["job"] / "advice.md").is_file()
    assert (tiny["job"] / "run" / "train.json").stat().st_mtime_ns == trained and read_json(tiny["job"] / "advice.json")["answers"] == 10


def test_resume_refuses_what_it_cannot_continue(tiny, tmp_path):
    "--resume needs --out, an advise job, the same file and the same budget: each refusal exits 2 with the fix."
    other = write_jsonl(toy_qa_rows(31), tmp_path / "other.jsonl")
    cases = {("advise", "--resume"): "--out NAME", ("advise", other, "--out", "job", "--resume"): "not the file",
             ("advise", "--out", "job", "--resume", "--minutes", 5): "was planned for None minutes",
             ("advise", "--out", "missing", "--resume"): "not a run directory"}
    for argv, message in cases.items():
        r = dt(*argv, runs_dir=tiny["root"])
        assert r.returncode == 2 and message in r.stderr, (argv, r.stderr)


def test_bad_input_leaves_nothing_behind(tiny, tmp_path):
    "A file without answers, a missing file, an unknown model, a budget too short: exit 2, the fix, and no job folder."
    bad = write_jsonl([dict(prompt=f"Only a question number {i}?") for i in range(10)], tmp_path / "bad.jsonl")
    common = ("--task", "qa", "--profile", "smoke", "--limit", 3)
    cases = [((bad, *common, "--model", tiny["model"]), "bad.jsonl"), ((tmp_path / "nope.jsonl", *common), "nope.jsonl"),
             ((tiny["data"], *common, "--model", "no-such-model"), "no-such-model"),
             ((tiny["data"], *common, "--model", tiny["model"], "--minutes", 0.01), "--minutes"),
             ((tiny["data"], "--profile", "smoke"), "--task is required")]
    for argv, message in cases:
        r = dt("advise", *argv, "--out", "bad-job", runs_dir=tmp_path / "runs")
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (argv, r.stderr)
        assert not (tmp_path / "runs" / "bad-job").exists()


def test_a_messy_real_world_file_is_advised_on(tiny, tmp_path):
    "What real files hold: long answers, one question asked twice with different answers, one-word fields; Latin-1 bytes and an empty field get the fix."
    rows = [dict(question=f"How should a patient with condition {i} take medicine {i % 7}?", answer=("Take it with food, " * (60 if i % 5 == 0 else 2)) + f"dose {i}.")
            for i in range(40)]
    rows += [dict(question="How should a patient with condition 3 take medicine 3?", answer="Only in the evening, with water."),
             dict(question="Why?", answer="Yes"), dict(question="Caf\u00e9 au lait spots: harmful?", answer="Usually not harmful.")]
    import pandas as pd
    path = tmp_path / "clinic.csv"
    pd.DataFrame(rows).to_csv(path, index=False, encoding="latin-1")
    r = dt("advise", path, "--task", "qa", "--profile", "smoke", "--model", tiny["model"], "--out", "messy", runs_dir=tmp_path / "runs")
    assert r.returncode == 2 and "clinic.csv:44" in r.stderr and "UTF-8" in r.stderr and not (tmp_path / "runs" / "messy").exists()
    pd.DataFrame(rows).to_csv(path, index=False, encoding="utf-8")
    r = dt("advise", path, "--task", "qa", "--profile", "smoke", "--model", tiny["model"], "--limit", 3, "--out", "messy", runs_dir=tmp_path / "runs")
    assert r.returncode == 0, r.stderr[-3000:]
    advice = read_json(tmp_path / "runs" / "messy" / "advice.json")
    from domaintune_course.formats import read_jsonl
    splits = {s: {x["prompt"] for x in read_jsonl(tmp_path / "runs" / "messy" / "run" / "data" / f"{s}.jsonl")} for s in ("train", "validation", "test")}
    assert not (splits["train"] & splits["test"]) and not (splits["train"] & splits["validation"])  # the repeated question never straddles splits
    assert advice["n"] == 3 and len(advice["systems"]) == 6
    pd.DataFrame(rows + [dict(question="", answer="An answer without a question.")]).to_csv(path, index=False)
    r = dt("advise", path, "--task", "qa", "--profile", "smoke", "--model", tiny["model"], "--out", "empty", runs_dir=tmp_path / "runs")
    assert r.returncode == 2 and "clinic.csv:45: field 'question': empty" in r.stderr and not (tmp_path / "runs" / "empty").exists()
