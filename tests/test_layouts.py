"""Every input layout the course documents, end to end through the command line: `prepare`, then `train` (smoke budget,
a tiny model passed with --model), then `evaluate --data` on the same layout; the run records what it read."""
import json
from pathlib import Path
import pandas as pd
import pytest

import clirunner
from domaintune_course.testing import tiny_model_dir, toy_dialogues, toy_qa_rows, toy_reviews, write_jsonl

QA, REVIEWS, DIALOGUES = toy_qa_rows(24), toy_reviews(40), toy_dialogues(16)


def dt(*argv, runs_dir: Path) -> tuple[int, str, str]:
    "A `domaintune` command's exit code, stdout and stderr."
    r = clirunner.dt(*argv, runs_dir=runs_dir)
    return r.returncode, r.stdout, r.stderr


def jsonl(rows): return lambda p: write_jsonl(rows, p)
def frame(rows, **kw): return lambda p: getattr(pd.DataFrame(rows), {".csv": "to_csv", ".tsv": "to_csv", ".parquet": "to_parquet"}[p.suffix])(p, **kw)
def labels(mapping): return [dict(r, label=mapping[r["label"]]) for r in REVIEWS]


def acl_imdb(root: Path) -> Path:
    "The original IMDb release's layout: train/ and test/ with pos/ and neg/ folders of .txt reviews (and unsup/, skipped)."
    for i, r in enumerate(REVIEWS):
        d = root / ("test" if i % 4 < 2 else "train") / ("pos" if r["label"] == "positive" else "neg")
        d.mkdir(parents=True, exist_ok=True); (d / f"{i}_{8 if r['label'] == 'positive' else 2}.txt").write_text(r["text"], encoding="utf-8")
    (root / "train" / "unsup").mkdir(); (root / "train" / "unsup" / "0_0.txt").write_text("Unlabelled.", encoding="utf-8")
    return root


# (case, task, file name, writer, what the run must record: format, layout, columns, label aliases)
LAYOUTS = [
    ("qa-prompt-completion-jsonl", "qa", "qa.jsonl", jsonl(QA), "JSON Lines", "prompt/completion", {"prompt": "prompt"}, None),
    ("qa-chat-messages-jsonl", "qa", "chat.jsonl", jsonl([dict(id=r["id"], messages=[{"role": "system", "content": "Be brief."},
     {"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]) for r in QA]),
     "JSON Lines", "messages", {"messages": "prompt, completion"}, None),
    ("qa-sharegpt-conversations-jsonl", "qa", "sharegpt.jsonl", jsonl([dict(conversations=[{"from": "human", "value": r["prompt"]},
     {"from": "gpt", "value": r["completion"]}]) for r in QA]), "JSON Lines", "conversations", {"conversations": "prompt, completion"}, None),
    ("qa-question-answer-csv", "qa", "faq.csv", frame([dict(Question=r["prompt"], Answer=r["completion"]) for r in QA], index=False),
     "CSV", "question/answer", {"Question": "prompt", "Answer": "completion"}, None),
    ("qa-prompt-completion-parquet", "qa", "qa.parquet", frame(QA), "parquet", "prompt/completion", {"completion": "completion"}, None),
    ("qa-alpaca-json-array", "qa", "alpaca.json", lambda p: p.write_text(json.dumps([dict(instruction=r["prompt"], input="", output=r["completion"])
     for r in QA]), encoding="utf-8"), "JSON array", "instruction/output", {"instruction": "prompt", "output": "completion"}, None),
    ("qa-text-jsonl", "qa", "prose.jsonl", jsonl([dict(text=f"{r['prompt']} {r['completion']}") for r in QA]), "JSON Lines", "text", {"text": "completion"}, None),
    ("classify-text-label-jsonl", "classify", "reviews.jsonl", jsonl(REVIEWS), "JSON Lines", "text/label", {"text": "text", "label": "label"}, {}),
    ("classify-pos-neg-csv", "classify", "posneg.csv", frame(labels({"positive": "pos", "negative": "neg"}), index=False), "CSV", "text/label",
     {"label": "label"}, {"neg": "negative", "pos": "positive"}),
    ("classify-kaggle-imdb-csv", "classify", "IMDB Dataset.csv", frame([dict(review=r["text"] + "<br /><br />Seen twice.", sentiment=r["label"].title()
     if i % 2 else r["label"].upper()) for i, r in enumerate(REVIEWS)], index=False), "CSV", "review/sentiment", {"review": "text", "sentiment": "label"},
     {"NEGATIVE": "negative", "Positive": "positive"}),
    ("classify-0-1-parquet", "classify", "binary.parquet", frame([dict(text=r["text"], label=int(r["label"] == "positive")) for r in REVIEWS]),
     "parquet", "text/label", {"label": "label"}, {"0": "negative", "1": "positive"}),
    ("classify-tsv", "classify", "reviews.tsv", frame(REVIEWS, sep="\t", index=False), "TSV", "text/label", {"text": "text"}, {}),
    ("classify-spreadsheet-semicolon-csv", "classify", "export.csv", frame([dict(Review=r["text"], Sentiment=r["label"][:3]) for r in REVIEWS],
     sep=";", index=False), "CSV (';'-separated)", "review/sentiment", {"Review": "text", "Sentiment": "label"}, {"neg": "negative", "pos": "positive"}),
    ("classify-aclimdb-folder", "classify", "aclImdb", acl_imdb, "aclImdb folder", "{train,test}/{pos,neg}/*.txt", {"pos/, neg/": "label"},
     {"neg": "negative", "pos": "positive"}),
    ("summarize-dialogue-summary-jsonl", "summarize", "dialogues.jsonl", jsonl(DIALOGUES), "JSON Lines", "dialogue/summary", {"summary": "summary"}, None),
    ("summarize-csv", "summarize", "dialogues.csv", frame(DIALOGUES, index=False), "CSV", "dialogue/summary", {"dialogue": "dialogue"}, None),
    ("summarize-parquet", "summarize", "dialogues.parquet", frame(DIALOGUES), "parquet", "dialogue/summary", {"summary": "summary"}, None),
    ("summarize-dialogsum-release-three-references", "summarize", "dialogsum.test.jsonl", jsonl([dict(fname=f"test_{i}_1", dialogue=d["dialogue"],
     summary1=d["summary"], summary2=f"A sale: {d['summary']}", summary3="#Person1# pays #Person2#.", topic1="shopping") for i, d in enumerate(DIALOGUES)]),
     "JSON Lines", "dialogue/summary1/summary2/summary3", {"summary1": "references", "summary3": "references"}, None),
    ("summarize-dialogsum-release-train", "summarize", "dialogsum.train.jsonl", jsonl([dict(fname=f"train_{i}", dialogue=d["dialogue"],
     summary=d["summary"], topic=d["topic"]) for i, d in enumerate(DIALOGUES)]), "JSON Lines", "dialogue/summary", {"summary": "summary"}, None),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    "Tiny models per task, passed to `train --model` (a documented option): the matrix checks data paths, not model quality."
    d = tmp_path_factory.mktemp("tiny")
    causal = tiny_model_dir("causal", d / "causal")
    return dict(qa=causal, summarize=causal, classify=tiny_model_dir("encoder", d / "encoder"))


@pytest.mark.parametrize("case,task,name,write,fmt,layout,columns,aliases", LAYOUTS, ids=[c[0] for c in LAYOUTS])
def test_layout_end_to_end_through_the_cli(models, tmp_path, case, task, name, write, fmt, layout, columns, aliases):
    "prepare, train and evaluate --data on one layout all exit 0; the run's manifest (and `runs show`) say what was read."
    data, root = tmp_path / name, tmp_path / "runs"
    write(data)
    code, out, err = dt("prepare", data, "--task", task, "--out", tmp_path / "prepared", runs_dir=root)
    assert code == 0, f"prepare: {err[-3000:]}"
    assert f"read: {fmt}" in out and "splits:" in out
    strategy = ["--strategy", "lora"] if task != "classify" else []  # NF4 needs wider layers than the tiny model has
    code, out, err = dt("train", "--task", task, "--data", data, "--model", models[task], "--max-steps", 2, *strategy, "--out", "run", runs_dir=root)
    assert code == 0, f"train: {err[-3000:]}"
    assert json.loads(out.strip().splitlines()[-1])["status"] == "succeeded"
    code, out, err = dt("evaluate", "--run", "run", "--data", data, runs_dir=root)
    assert code == 0, f"evaluate --data: {err[-3000:]}"
    shown = json.loads(dt("runs", "show", "run", runs_dir=root)[1])["data"]
    read = shown["read"]
    assert Path(read["source"]).name == name and read["format"] == fmt and layout in read["layout"], read
    assert columns.items() <= read["columns"].items(), read["columns"]
    assert read["records"] >= sum(shown["counts"].values()) > 0
    if task == "classify": check_classify_run(root / "run", aliases, read, out)


def check_classify_run(run: Path, aliases: dict, read: dict, eval_out: str):
    "Labels reached the splits, the model and the TF-IDF baseline as negative/positive, whatever the file wrote."
    assert read["label_aliases"] == aliases
    split_labels = {json.loads(l)["label"] for k in ("train", "validation", "test") for l in (run / "data" / f"{k}.jsonl").read_text().splitlines()}
    assert split_labels == {"negative", "positive"}
    result = json.loads(eval_out)
    assert result["labels"] == ["negative", "positive"] and result["baseline_accuracy"] > 0.5, result  # the baseline trained on the same names


def test_evaluate_takes_an_aclimdb_folder_and_the_hub_id_for_a_classify_run(models, tmp_path):
    "`evaluate --data` reaches the task for an aclImdb/ folder and for `imdb` (offline: the hub's message), where both were once refused."
    data, root = write_jsonl(REVIEWS, tmp_path / "reviews.jsonl"), tmp_path / "runs"
    assert dt("train", "--task", "classify", "--data", data, "--model", models["classify"], "--max-steps", 1, "--out", "run", runs_dir=root)[0] == 0
    code, out, err = dt("evaluate", "--run", "run", "--data", acl_imdb(tmp_path / "aclImdb"), runs_dir=root)
    assert code == 0 and json.loads(out)["n"] == 20, err[-3000:]
    code, out, err = dt("evaluate", "--run", "run", "--data", "imdb", runs_dir=root)
    assert code == 2 and "stanfordnlp/imdb" in err and "aclImdb" in err and "file not found" not in err, err
    code, out, err = dt("evaluate", "--run", "run", "--data", tmp_path / "nowhere", runs_dir=root)
    assert code == 2 and "file not found" in err and "aclImdb/ folder" in err, err
