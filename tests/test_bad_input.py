"""Bad input, tried systematically: every malformed file or flag exits 2 with a message that names the problem and the fix,
prints no traceback, and leaves every file that existed before exactly as it was."""
import hashlib, io, json, subprocess
from pathlib import Path
import pytest

from domaintune_course import jobs
from clirunner import EXE, dt
from domaintune_course.config import TrainConfig
from domaintune_course.testing import tiny_model_dir, toy_dialogues, toy_qa_rows, toy_reviews

QA, REVIEWS, DIALOGUES = toy_qa_rows(12), toy_reviews(12), toy_dialogues(8)


def jsonl(rows) -> str: return "".join(json.dumps(r) + "\n" for r in rows)


def fake_run(root: Path, name: str, task: str = "classify", status: str = "succeeded", model: bool = True) -> Path:
    "A run directory as a finished job leaves it (no real weights: every case here fails before loading any)."
    cfg = TrainConfig.tiny(task)
    d = jobs.create_run(cfg, name, runs_dir=root)
    jobs.save_config(d, cfg)
    jobs.write_status(d, status, pid=1, step=4, max_steps=4, progress=1.0)
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
    for name, raw in real_world_files().items(): (d / name).write_bytes(raw)
    (d / "DialogSum_Data").mkdir(); (d / "DialogSum_Data" / "dialogsum.train.jsonl").write_text(jsonl(DIALOGUES), encoding="utf-8")
    (d / "qa_latin1.jsonl").write_bytes(jsonl(QA[:2]).encode() + '{"prompt": "Café?", "completion": "Oui."}\n'.encode("latin-1"))
    (d / "a_folder").mkdir()
    tiny_model_dir("encoder", d / "encoder")
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


def real_world_files() -> dict[str, bytes]:
    "Files as spreadsheets, editors, other tools and half-finished downloads leave them, each wrong in one way users hit."
    import pandas as pd
    csv_rows = "".join(f'"{r["text"]}",{r["label"]}\n' for r in REVIEWS)
    pq = io.BytesIO(); pd.DataFrame(REVIEWS).to_parquet(pq); pq = bytearray(pq.getvalue())
    corrupt = bytes(pq[:4]) + b"\x55" * (len(pq) // 2 - 4) + bytes(pq[len(pq) // 2:])
    nan_label = io.BytesIO(); pd.DataFrame([dict(r, label=None if i == 2 else r["label"]) for i, r in enumerate(REVIEWS)]).to_parquet(nan_label)
    turns = io.BytesIO(); pd.DataFrame([dict(dialogue=r["dialogue"].split("\n"), summary=r["summary"]) for r in DIALOGUES]).to_parquet(turns)
    qa_lines = [json.dumps(r) for r in QA[:4]]
    return {
        "reviews_excel_unicode.csv": ("text\tlabel\n" + csv_rows.replace(",", "\t")).encode("utf-16"),   # Excel "Unicode Text"
        "reviews_utf16_no_bom.csv": ("text,label\n" + csv_rows).encode("utf-16-le"),
        "reviews_windows.csv": ("text,label\n" + csv_rows + "It\u2019s a dull film.,negative\n").encode("cp1252"),
        "reviews_unquoted_comma.csv": b"text,label\nGreat film, loved every minute,positive\nDull and slow.,negative\n",
        "reviews_open_quote.csv": b'text,label\n"A great film,positive\nDull and slow.,negative\nBoring plot.,negative\n',
        "reviews_no_header.csv": csv_rows.encode(),
        "reviews_header_only.csv": b"text,label\n,\n,\n",
        "reviews.xlsx": b"PK\x03\x04" + b"\x00" * 64,
        "aclImdb_v1.tar.gz": b"\x1f\x8b\x08\x00" + b"\x00" * 64,
        "reviews_download.csv": b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please sign in</body></html>\n",
        "reviews_corrupt.parquet": corrupt,
        "reviews_cut.parquet": bytes(pq[: len(pq) // 2]),
        "reviews_renamed.parquet": ("text,label\n" + csv_rows).encode(),
        "reviews_missing_label.parquet": nan_label.getvalue(),
        "reviews_stars.jsonl": jsonl([dict(r, label=str(1 + i % 5)) for i, r in enumerate(REVIEWS)]).encode(),
        "qa_lfs_pointer.jsonl": b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 48213\n",
        "qa_cut_download.jsonl": ("\n".join(qa_lines) + "\n" + qa_lines[0][:25]).encode(),
        "qa_pretty.jsonl": "".join(json.dumps(r, indent=2) + "\n" for r in QA[:3]).encode(),
        "qa_wrapped.json": json.dumps({"version": 1, "data": QA[:3]}, indent=2).encode(),
        "qa_python_dicts.jsonl": "".join(repr({"prompt": r["prompt"], "completion": r["completion"]}) + "\n" for r in QA[:3]).encode(),
        "qa_curly_quotes.jsonl": "".join(json.dumps(r).replace('"', "\u201c", 1) + "\n" for r in QA[:3]).encode(),
        "qa_trailing_commas.jsonl": "".join(json.dumps(r) + ",\n" for r in QA[:3]).encode(),
        "qa_other_tool.jsonl": jsonl([dict(input_text=r["prompt"], target_text=r["completion"]) for r in QA]).encode(),
        "qa_chat_no_answer.jsonl": jsonl([dict(messages=[{"role": "user", "content": r["prompt"]}]) for r in QA]).encode(),
        "qa_nulls.jsonl": jsonl([dict(r, completion=None) if i == 1 else r for i, r in enumerate(QA)]).encode(),
        "dialogues_turn_lists.parquet": turns.getvalue(),
    }


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
    # what spreadsheets, editors, other tools and half-finished downloads produce
    ("excel-unicode-text", "prepare {ws}/reviews_excel_unicode.csv --task classify --out {ws}/out", ["reviews_excel_unicode.csv", "UTF-16", "CSV UTF-8"]),
    ("utf16-without-bom", "train --task classify --model {ws}/encoder --data {ws}/reviews_utf16_no_bom.csv", ["reviews_utf16_no_bom.csv", "NUL bytes", "UTF-8"]),
    ("windows-1252-csv", "prepare {ws}/reviews_windows.csv --task classify --out {ws}/out", ["reviews_windows.csv:14", "not UTF-8", "CSV UTF-8"]),
    ("csv-unquoted-comma", "train --task classify --model {ws}/encoder --data {ws}/reviews_unquoted_comma.csv", ["reviews_unquoted_comma.csv:2", "3 fields", "header names 2", "quote"]),
    ("csv-quote-never-closed", "prepare {ws}/reviews_open_quote.csv --task classify --out {ws}/out", ["reviews_open_quote.csv:2", "never closed", "Fix"]),
    ("csv-without-header", "prepare {ws}/reviews_no_header.csv --task classify --out {ws}/out", ["reviews_no_header.csv:1", "no text column", "first line"]),
    ("csv-header-and-empty-rows", "prepare {ws}/reviews_header_only.csv --task classify --out {ws}/out", ["reviews_header_only.csv", "no records found", "below the header"]),
    ("excel-workbook", "prepare {ws}/reviews.xlsx --task classify --out {ws}/out", ["reviews.xlsx", "'.xlsx'", "CSV UTF-8"]),
    ("aclimdb-tarball", "train --task classify --model {ws}/encoder --data {ws}/aclImdb_v1.tar.gz", ["aclImdb_v1.tar.gz", "'.gz'", "extract it", "aclImdb/ folder"]),
    ("download-saved-a-web-page", "train --task classify --model {ws}/encoder --data {ws}/reviews_download.csv", ["reviews_download.csv", "web page", "download the file itself"]),
    ("parquet-corrupted", "train --task classify --model {ws}/encoder --data {ws}/reviews_corrupt.parquet", ["reviews_corrupt.parquet", "not a readable parquet file", "Fix"]),
    ("parquet-cut-short", "prepare {ws}/reviews_cut.parquet --task classify --out {ws}/out", ["reviews_cut.parquet", "cut short", "again"]),
    ("csv-renamed-parquet", "prepare {ws}/reviews_renamed.parquet --task classify --out {ws}/out", ["reviews_renamed.parquet", "not a parquet file", "Fix"]),
    ("parquet-missing-label", "train --task classify --model {ws}/encoder --data {ws}/reviews_missing_label.parquet", ["reviews_missing_label.parquet:3", "field 'label': empty", "Fix"]),
    ("star-ratings-not-sentiment", "train --task classify --model {ws}/encoder --data {ws}/reviews_stars.jsonl", ["reviews_stars.jsonl", "'3'", "binary sentiment"]),
    ("git-lfs-pointer", "prepare {ws}/qa_lfs_pointer.jsonl --task qa --out {ws}/out", ["qa_lfs_pointer.jsonl", "Git LFS pointer", "git lfs pull"]),
    ("jsonl-cut-off-download", "train --task qa --data {ws}/qa_cut_download.jsonl", ["qa_cut_download.jsonl:5", "cut off", "fetch the file again"]),
    ("jsonl-pretty-printed", "prepare {ws}/qa_pretty.jsonl --task qa --out {ws}/out", ["qa_pretty.jsonl:1", "on one line"]),
    ("json-object-not-records", "prepare {ws}/qa_wrapped.json --task qa --out {ws}/out", ["qa_wrapped.json:1", "one JSON object", "JSON array"]),
    ("python-dicts-not-json", "prepare {ws}/qa_python_dicts.jsonl --task qa --out {ws}/out", ["qa_python_dicts.jsonl:1", "Python dict", "json.dumps"]),
    ("curly-quotes", "prepare {ws}/qa_curly_quotes.jsonl --task qa --out {ws}/out", ["qa_curly_quotes.jsonl:1", "curly quotes"]),
    ("jsonl-trailing-commas", "prepare {ws}/qa_trailing_commas.jsonl --task qa --out {ws}/out", ["qa_trailing_commas.jsonl:1", "remove the comma"]),
    ("qa-unknown-layout", "train --task qa --data {ws}/qa_other_tool.jsonl", ["qa_other_tool.jsonl:1", "input_text", "question/answer"]),
    ("chat-without-answer", "prepare {ws}/qa_chat_no_answer.jsonl --task qa --out {ws}/out", ["qa_chat_no_answer.jsonl:1", "no non-empty assistant message", "Fix"]),
    ("jsonl-null-value", "prepare {ws}/qa_nulls.jsonl --task qa --out {ws}/out", ["qa_nulls.jsonl:2", "field 'completion': empty", "Fix"]),
    ("summarize-turn-lists", "prepare {ws}/dialogues_turn_lists.parquet --task summarize --out {ws}/out", ["dialogues_turn_lists.parquet:1", "dialogue", "wrong type"]),
    ("summarize-release-folder", "train --task summarize --data {ws}/DialogSum_Data", ["DialogSum_Data", "is a directory", "dialogsum.train.jsonl"]),
    ("prepare-out-is-a-file", "prepare {ws}/qa_good.jsonl --task qa --out {ws}/qa.txt", ["qa.txt", "is a file", "Fix"]),
    ("prepare-out-under-a-file", "prepare {ws}/qa_good.jsonl --task qa --out {ws}/qa.txt/prepared", ["qa.txt", "is a file", "Fix"]),
    ("runs-dir-under-a-file", "--runs-dir {ws}/runs-file/runs train --task classify --model {ws}/encoder", ["runs-file", "cannot be created", "Fix"]),
    ("out-under-a-file-in-runs", "train --task classify --model {ws}/encoder --out done/config.json/again", ["done/config.json/again", "cannot create", "Fix"]),
]


@pytest.mark.parametrize("case,argv,expect", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_a_fix_and_touches_nothing(ws, case, argv, expect):
    import shlex
    root = ws / "runs"
    before, runs_before = snapshot(ws), sorted(root.iterdir())
    r = dt(*[a.replace("{ws}", str(ws)) for a in shlex.split(argv)], runs_dir=root)
    code, msg = r.returncode, r.stderr
    assert code == 2, f"{case}: exit {code}\n{msg[-3000:]}"
    assert "Traceback" not in msg and "Traceback" not in r.stdout
    for s in expect: assert s in msg, f"{case}: {s!r} not in message:\n{msg}"
    after = snapshot(ws)
    changed = [str(p) for p, h in before.items() if after.get(p) != h]
    assert not changed, f"{case} changed existing files: {changed}"
    assert sorted(root.iterdir()) == runs_before, f"{case} left a run behind: bad input must fail before a run is created"


def test_bad_input_through_the_console_script(ws):
    "The installed command behaves the same: exit 2, a one-paragraph message, no traceback."
    r = subprocess.run([str(EXE), "--runs-dir", str(ws / "runs"), "train", "--task", "qa", "--model", "no-such-model"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Unknown model 'no-such-model'" in r.stderr and "Traceback" not in r.stderr


def test_there_are_at_least_25_cases_across_tasks_and_cli():
    assert len(CASES) >= 25
    text = " ".join(c[1] for c in CASES)
    assert all(f"--task {t}" in text for t in ("qa", "classify", "summarize"))
