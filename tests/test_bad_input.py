"""Bad input, tried systematically: every malformed file or flag exits 2 with a message that names the problem and the fix,
prints no traceback, and leaves every file that existed before exactly as it was."""
import contextlib, hashlib, io, json, subprocess, sys
from pathlib import Path
import pytest

from domaintune_course import cli, runs
from domaintune_course.config import TrainConfig
from domaintune_course.testing import tiny_model_dir, toy_dialogues, toy_qa_rows, toy_reviews, write_jsonl

QA, REVIEWS, DIALOGUES = toy_qa_rows(12), toy_reviews(12), toy_dialogues(8)


def jsonl(rows) -> str: return "".join(json.dumps(r) + "\n" for r in rows)


def fake_run(root: Path, name: str, task: str = "classify", status: str = "succeeded", model: bool = True) -> Path:
    "A run directory as a finished job leaves it (no real weights: every case here fails before loading any)."
    cfg = TrainConfig.tiny(task)
    d = runs.create_run(cfg, name, runs_dir=root)
    runs.save_config(d, cfg)
    runs.write_status(d, status, pid=1, step=4, max_steps=4, progress=1.0)
    if model: (d / "model").mkdir(); (d / "model" / "adapter_config.json").write_text("{}")
    return d


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    "A workspace: data files (good and bad), model directories, and a runs directory with existing runs."
    d = tmp_path_factory.mktemp("bad")
    files = {
        "qa_good.jsonl": jsonl(QA),
        "qa_broken.jsonl": jsonl(QA[:3]) + '{"prompt": "What colour is lamp 9?", "completion": \n',
        "qa_latin1.jsonl": None,
        "qa_no_completion.jsonl": jsonl([{"prompt": r["prompt"]} for r in QA]),
        "qa_empty_completion.jsonl": jsonl([{**r, "completion": "  "} for r in QA]),
        "qa_array_lines.jsonl": jsonl(QA[:3]) + "[1, 2, 3]\n",
        "qa_all_same.jsonl": jsonl([{"prompt": QA[0]["prompt"], "completion": QA[0]["completion"]}] * 12),
        "qa_one.jsonl": jsonl(QA[:1]),
        "qa.txt": "What colour is lamp 1? Red.\n",
        "reviews_unknown_label.jsonl": jsonl([{**r, "label": "maybe" if i == 3 else r["label"]} for i, r in enumerate(REVIEWS)]),
        "reviews_no_label.jsonl": jsonl([{"text": r["text"]} for r in REVIEWS]),
        "reviews_one.jsonl": jsonl(REVIEWS[:1]),
        "reviews_one_class.jsonl": jsonl([r for r in toy_reviews(24) if r["label"] == "positive"]),
        "reviews_bad_header.csv": "foo,bar\nhello,world\nagain,here\n",
        "dialogues_no_summary.jsonl": jsonl([{"dialogue": r["dialogue"]} for r in DIALOGUES]),
        "empty.jsonl": "",
    }
    for name, text in files.items():
        if text is not None: (d / name).write_text(text, encoding="utf-8")
    (d / "qa_latin1.jsonl").write_bytes(jsonl(QA[:2]).encode() + '{"prompt": "Café?", "completion": "Oui."}\n'.encode("latin-1"))
    (d / "a_folder").mkdir()
    enc = tiny_model_dir("encoder", d / "encoder")
    (d / "not_a_model").mkdir(); (d / "not_a_model" / "weights.txt").write_text("nothing")
    (d / "pickled").mkdir(); (d / "pickled" / "config.json").write_text('{"model_type": "bert"}')
    (d / "pickled" / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    (d / "remote").mkdir(); (d / "remote" / "model.safetensors").write_bytes(b"")
    (d / "remote" / "config.json").write_text('{"model_type": "custom", "auto_map": {"AutoModel": "modeling_custom.Custom"}}')
    root = d / "runs"
    fake_run(root, "done"); fake_run(root, "qa-done", task="qa")
    fake_run(root, "no-model", status="failed", model=False)
    fake_run(root, "cancelled-no-ckpt", status="cancelled", model=False)
    broken = fake_run(root, "broken-config"); (broken / "config.json").write_text('{"config": {"task": ')
    (root / "just-a-folder").mkdir()
    (d / "runs-file").write_text("not a directory")
    return d


def snapshot(root: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


# (case id, argv with {ws} for the workspace, substrings the message must contain: the problem, then the fix)
CASES = [
    ("qa-broken-json", "prepare {ws}/qa_broken.jsonl --task qa --out {ws}/out", ["qa_broken.jsonl:4", "invalid JSON", "Fix"]),
    ("qa-not-utf8", "prepare {ws}/qa_latin1.jsonl --task qa --out {ws}/out", ["qa_latin1.jsonl:3", "not UTF-8", "utf-8"]),
    ("qa-missing-column", "prepare {ws}/qa_no_completion.jsonl --task qa --out {ws}/out", ["qa_no_completion.jsonl:1", "completion", "Fix"]),
    ("qa-empty-values", "prepare {ws}/qa_empty_completion.jsonl --task qa --out {ws}/out", ["qa_empty_completion.jsonl:1", "completion", "Fix"]),
    ("qa-array-not-object", "prepare {ws}/qa_array_lines.jsonl --task qa --out {ws}/out", ["qa_array_lines.jsonl:4", "JSON object", "Fix"]),
    ("qa-nothing-survives-cleaning", "prepare {ws}/qa_all_same.jsonl --task qa --out {ws}/out", ["qa_all_same.jsonl", "cleaning", "Fix"]),
    ("qa-unknown-format", "prepare {ws}/qa.txt --task qa --out {ws}/out", ["qa.txt", "Fix"]),
    ("qa-empty-file", "prepare {ws}/empty.jsonl --task qa --out {ws}/out", ["empty.jsonl", "empty", "Fix"]),
    ("classify-unknown-label", "train --task classify --model {ws}/encoder --data {ws}/reviews_unknown_label.jsonl --max-steps 1",
     ["reviews_unknown_label.jsonl", "maybe", "Fix"]),
    ("classify-missing-label", "prepare {ws}/reviews_no_label.jsonl --task classify --out {ws}/out", ["reviews_no_label.jsonl:1", "label", "Fix"]),
    ("classify-one-example", "train --task classify --model {ws}/encoder --data {ws}/reviews_one.jsonl --max-steps 1",
     ["reviews_one.jsonl", "both classes"]),
    ("qa-one-example", "prepare {ws}/qa_one.jsonl --task qa --out {ws}/out", ["qa_one.jsonl", "Fix"]),
    ("classify-one-class", "train --task classify --model {ws}/encoder --data {ws}/reviews_one_class.jsonl --max-steps 1",
     ["reviews_one_class.jsonl", "negative", "both classes"]),
    ("classify-bad-csv-header", "prepare {ws}/reviews_bad_header.csv --task classify --out {ws}/out", ["reviews_bad_header.csv", "Fix"]),
    ("summarize-missing-summary", "prepare {ws}/dialogues_no_summary.jsonl --task summarize --out {ws}/out",
     ["dialogues_no_summary.jsonl:1", "summary", "Fix"]),
    ("summarize-empty-file", "prepare {ws}/empty.jsonl --task summarize --out {ws}/out", ["empty.jsonl", "empty", "Fix"]),
    ("data-file-missing", "train --task qa --data {ws}/nope.jsonl", ["--data", "nope.jsonl", "file not found", "Fix"]),
    ("data-is-a-folder", "train --task summarize --data {ws}/a_folder", ["a_folder", "is a directory", "Fix"]),
    ("classify-folder-not-aclimdb", "train --task classify --model {ws}/encoder --data {ws}/a_folder", ["a_folder", "not an aclImdb folder", "Fix"]),
    ("classify-imdb-offline", "train --task classify --model {ws}/encoder --data imdb", ["stanfordnlp/imdb", "Fix"]),
    ("prepare-file-missing", "prepare {ws}/nope.jsonl --task qa", ["nope.jsonl", "file not found"]),
    ("model-does-not-exist", "train --task qa --model no-such-model", ["no-such-model", "Unknown model", "local model directory"]),
    ("model-folder-without-config", "train --task classify --model {ws}/not_a_model", ["not_a_model", "config.json", "Point --model"]),
    ("model-pickle-only", "train --task classify --model {ws}/pickled", ["pytorch_model.bin", "safetensors", "--allow-pickle"]),
    ("model-remote-code", "train --task qa --model {ws}/remote", ["auto_map", "--trust-remote-code"]),
    ("zero-steps", "train --task qa --max-steps 0", ["max_steps=0", "positive number of steps"]),
    ("negative-steps", "train --task classify --max-steps -5", ["max_steps=-5", "positive number of steps"]),
    ("zero-epochs", "train --task summarize --epochs 0", ["epochs=0", "positive number of epochs"]),
    ("unknown-strategy", "train --task qa --strategy magic", ["strategy 'magic'", "full, frozen, lora or qlora"]),
    ("unknown-profile", "train --task qa --profile h900", ["Unknown profile 'h900'", "--profile"]),
    ("unknown-task", "train --task translate", ["Unknown task 'translate'", "qa, classify, summarize"]),
    ("no-task", "train --max-steps 2", ["--task is required", "qa, classify or summarize"]),
    ("bad-int-flag", "train --task qa --seed forty-two", ["--seed", "invalid int value"]),
    ("prepare-unknown-task", "prepare {ws}/qa_good.jsonl --task translate", ["--task", "invalid choice"]),
    ("out-escapes-runs-dir", "train --task qa --out ../../escaped", ["../../escaped", "outside the runs directory", "run name"]),
    ("out-absolute-elsewhere", "train --task qa --out /tmp/elsewhere-run", ["outside the runs directory"]),
    ("out-is-existing-run", "train --task classify --model {ws}/encoder --out done", ["done", "never overwritten", "--resume"]),
    ("runs-dir-is-a-file", "--runs-dir {ws}/runs-file train --task classify --model {ws}/encoder", ["runs-file", "is a file", "Fix"]),
    ("evaluate-not-a-run", "evaluate --run just-a-folder", ["just-a-folder", "not a run directory", "domaintune runs list"]),
    ("evaluate-missing-run", "evaluate --run ghost", ["ghost", "not a run directory"]),
    ("evaluate-run-without-model", "evaluate --run no-model", ["no trained model", "--resume no-model"]),
    ("evaluate-zero-limit", "evaluate --run done --limit 0", ["--limit 0", "positive number"]),
    ("evaluate-broken-config", "evaluate --run broken-config", ["config.json", "not valid JSON", "Restore"]),
    ("generate-empty-text", "generate --run done ''", ["TEXT is empty"]),
    ("show-escape", "runs show ../../etc", ["outside the runs directory"]),
    ("cancel-finished-run", "runs cancel done", ["done is not running", "nothing to cancel"]),
    ("cancel-without-run", "runs cancel", ["name the run", "runs list"]),
    ("resume-finished-run", "train --resume done", ["already succeeded", "--from-run done"]),
    ("resume-without-checkpoint", "train --resume cancelled-no-ckpt", ["no checkpoint", "start a new run"]),
    ("resume-nothing-named", "train --task qa --resume", ["--resume", "name the run"]),
    ("from-run-without-model", "train --from-run no-model --data {ws}/qa_good.jsonl", ["no-model", "no trained model"]),
    ("from-run-other-task", "train --from-run qa-done --task classify", ["the run was a qa run", "drop --task"]),
]


@pytest.mark.parametrize("case,argv,expect", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_a_fix_and_touches_nothing(ws, case, argv, expect):
    import shlex
    root = ws / "runs"
    before, runs_before = snapshot(ws), sorted(root.iterdir())
    args = ["--runs-dir", str(root)] + [a.replace("{ws}", str(ws)) for a in shlex.split(argv)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): code = cli.main(args)
    msg = err.getvalue()
    assert code == 2, f"{case}: exit {code}\n{msg[-3000:]}"
    assert "Traceback" not in msg and "Traceback" not in out.getvalue()
    for s in expect: assert s in msg, f"{case}: {s!r} not in message:\n{msg}"
    after = snapshot(ws)
    changed = [str(p) for p, h in before.items() if after.get(p) != h]
    assert not changed, f"{case} changed existing files: {changed}"
    assert sorted(root.iterdir()) == runs_before, f"{case} left a run behind: bad input must fail before a run is created"


def test_bad_input_through_the_console_script(ws):
    "The installed command behaves the same: exit 2, a one-paragraph message, no traceback."
    exe = Path(sys.executable).with_name("domaintune")
    r = subprocess.run([str(exe), "--runs-dir", str(ws / "runs"), "train", "--task", "qa", "--model", "no-such-model"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Unknown model 'no-such-model'" in r.stderr and "Traceback" not in r.stderr


def test_there_are_at_least_25_cases_across_tasks_and_cli():
    assert len(CASES) >= 25
    text = " ".join(c[1] for c in CASES)
    assert all(f"--task {t}" in text for t in ("qa", "classify", "summarize"))
