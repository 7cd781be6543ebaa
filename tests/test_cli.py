"""The `domaintune` command end to end on tiny models: train, list, show, evaluate, generate, detach, cancel, resume, continue."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest

from domaintune_course import cli, jobs, training
from domaintune_course.formats import read_json
from domaintune_course.testing import tiny_causal_lm, tiny_model_dir, tiny_tokenizer, toy_qa_rows, toy_reviews, write_jsonl

from clirunner import EXE, dt_ok as dt  # every command here must succeed unless a test says otherwise


def last_json(stdout: str) -> dict: return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    "A runs directory, a tiny encoder, two review files and one finished classify run shared by the tests."
    d = tmp_path_factory.mktemp("cli")
    enc = tiny_model_dir("encoder", d / "encoder")
    old, new = write_jsonl(toy_reviews(40), d / "reviews.jsonl"), write_jsonl(toy_reviews(60)[20:], d / "new_reviews.jsonl")
    r = dt("train", "--task", "classify", "--model", enc, "--data", old, "--max-steps", 4, "--out", "base", runs_dir=d / "runs")
    return dict(root=d / "runs", enc=enc, old=old, new=new, base=d / "runs" / "base", train_out=r.stdout)


def test_help_is_light():
    "The command line module imports neither torch nor transformers, so `--help` answers at once."
    code = "import sys, domaintune_course.cli; sys.exit(int(any(m in sys.modules for m in ('torch', 'transformers'))))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    r = subprocess.run([str(EXE), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "prepare" in r.stdout and "demo" in r.stdout


def test_env_lists_offline_models():
    info = json.loads(dt("env", "--json", subprocess_=True).stdout)
    assert info["offline_models"]["smollm2-135m"] and info["offline_models"]["minilm-l6"]


def test_env_shows_each_registry_models_licence():
    "`domaintune env` names every registry model's licence, in its text and in its JSON."
    from domaintune_course.models import REGISTRY
    info = json.loads(dt("env", "--json").stdout)
    assert info["licenses"] == {n: s.license for n, s in REGISTRY.items()} and all(info["licenses"].values())
    text = dt("env").stdout
    assert "smollm2-135m (Apache-2.0, yes)" in text and "phi-2 (MIT, " in text


def test_env_on_a_gpu_the_pytorch_build_cannot_run_says_what_to_do(monkeypatch):
    "Kaggle's P100 under a CUDA 12.8 build of torch (kernels for sm_75 and newer): profile cpu, and the fix, as text and JSON; a T4 gets t4."
    import torch, types
    gpu = types.SimpleNamespace(name="Tesla P100-PCIE-16GB", major=6, minor=0, total_memory=16 * 2**30)
    for name, fn in dict(is_available=lambda: True, device_count=lambda: 1, get_device_properties=lambda i=0: gpu,
                         get_arch_list=lambda: ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"],
                         is_bf16_supported=lambda including_emulation=True: False).items(): monkeypatch.setattr(torch.cuda, name, fn)
    monkeypatch.delenv("DOMAINTUNE_PROFILE")
    text = dt("env").stdout
    assert "profile: cpu" in text and "1 x Tesla P100-PCIE-16GB" in text
    assert "no kernels for the Tesla P100-PCIE-16GB (compute capability 6.0; the build carries sm_75, sm_80" in text
    assert "On Kaggle: Settings > Accelerator > GPU T4 x2; elsewhere install a PyTorch build for this GPU" in text
    info = json.loads(dt("env", "--json").stdout)
    assert (info["profile"], info["hardware"]["cuda_usable"]) == ("cpu", False) and info["gpu_advice"] in text
    gpu.name, gpu.major, gpu.minor = "Tesla T4", 7, 5
    info = json.loads(dt("env", "--json").stdout)
    assert (info["profile"], info["hardware"]["cuda_usable"], info["gpu_advice"]) == ("t4", True, None)


def test_prepare_writes_splits(space, tmp_path):
    r = dt("prepare", space["old"], "--task", "classify", "--out", tmp_path / "prep")
    assert {p.name for p in (tmp_path / "prep").iterdir()} >= {"train.jsonl", "validation.jsonl", "test.jsonl", "manifest.json", "report.json"}
    assert str(tmp_path / "prep") in r.stdout


def test_prepare_reads_an_aclimdb_folder_for_classify(tmp_path):
    "The command line takes the original IMDb folder layout for classify (and only there, where a folder is a data set)."
    root = tmp_path / "aclImdb"
    for split in ("train", "test"):
        for lab in ("pos", "neg"):
            (root / split / lab).mkdir(parents=True)
            for i in range(10): (root / split / lab / f"{i}_{9 if lab == 'pos' else 1}.txt").write_text(f"{lab} review number {i}", encoding="utf-8")
    dt("prepare", root, "--task", "classify", "--out", tmp_path / "prep")
    counts = json.loads((tmp_path / "prep" / "manifest.json").read_text())["counts"]
    assert counts["test"] == 20 and counts["train"] + counts["validation"] == 20


# ---- prepare keeps a repeated prompt in one split (a user's CSV: question/answer, multi-paragraph quoted answers) ----

WORDS = ("insulin glucose pressure kidney statin diet sleep walking salt sugar fibre heart lungs inhaler dose tablet nurse "
         "doctor clinic morning evening weekly daily blood test result target range symptom warning swelling cough fever "
         "pain rest water coffee alcohol smoking weight exercise stairs shoes feet eyes").split()


def _words(rng, n: int) -> str: return " ".join(rng.choice(WORDS) for _ in range(n))

def _paragraphs(rng) -> str:
    "Two paragraphs of three sentences each: long, quoted, multi-line fields like the user's answers."
    return "\n\n".join(" ".join(_words(rng, 12).capitalize() + "." for _ in range(3)) for _ in range(2))

def _same(text: str) -> str:
    "Lower-cased, punctuation removed, whitespace collapsed (written apart from the library)."
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def _user_csv(path, header, rows, repeated):
    "A CSV of `rows` (input, target) with the three `repeated` rows placed early, midway and late."
    import csv
    rows = list(rows)
    for at, row in zip((3, len(rows) // 2, len(rows) - 2), repeated): rows.insert(at, row)
    with open(path, "w", newline="", encoding="utf-8") as f: csv.writer(f).writerows([header, *rows])
    return path


def _prepare_for_seeds(tmp_path, path, task, field, repeated, seeds=range(8)):
    "Run `domaintune prepare` with each seed; check no test or validation input is a train input and the repeated one sits in one split."
    for seed in seeds:
        out = tmp_path / f"seed{seed}"
        r = dt("prepare", path, "--task", task, "--out", out, "--seed", seed)
        rows = {k: [json.loads(l) for l in (out / f"{k}.jsonl").read_text(encoding="utf-8").splitlines()] for k in ("train", "validation", "test")}
        seen = {k: {_same(x[field]) for x in v} for k, v in rows.items()}
        assert not seen["test"] & seen["train"] and not seen["validation"] & seen["train"] and not seen["test"] & seen["validation"], seed
        holding = [k for k, v in rows.items() if any(_same(x[field]) == _same(repeated) for x in v)]
        assert len(holding) == 1, (seed, holding)
        yield r.stdout, json.loads((out / "report.json").read_text()), rows[holding[0]]


def test_prepare_keeps_a_repeated_question_in_one_split(tmp_path):
    "The same question twice with two answers, and once more in other case, punctuation and spacing: one split, for every seed."
    import random
    rng = random.Random(0)
    q = "Can I drink coffee if I have high blood pressure?"
    repeated = [(q, _paragraphs(rng)), (q, _paragraphs(rng)), ("can i drink  coffee, if I have HIGH blood pressure", _paragraphs(rng))]
    path = _user_csv(tmp_path / "medical_qa.csv", ("question", "answer"),
                     [(f"What should I know about {_words(rng, 3)}?", _paragraphs(rng)) for _ in range(40)], repeated)
    for stdout, report, held in _prepare_for_seeds(tmp_path, path, "qa", "prompt", q):
        assert (report["records_out"], report["duplicate_prompt_groups"], report["duplicate_prompt_records"]) == (43, 1, 3)
        assert sum(_same(x["prompt"]) == _same(q) for x in held) == 3
        assert "duplicate prompts: 1 group holding 3 records" in stdout


def test_prepare_keeps_a_review_with_conflicting_labels_in_one_split_and_names_it(tmp_path):
    "The same review labelled positive and negative (and once more, re-punctuated): all kept, in one split, reported as a conflict."
    import random
    rng = random.Random(1)
    text = "A strange film: slow, loud and oddly moving. I cannot decide."
    repeated = [(text, "positive"), (text, "negative"), ("a strange film slow loud and oddly moving i cannot decide", "negative")]
    path = _user_csv(tmp_path / "reviews.csv", ("review", "sentiment"),
                     [(_words(rng, 15).capitalize() + ".", ("negative", "positive")[i % 2]) for i in range(40)], repeated)
    for stdout, report, held in _prepare_for_seeds(tmp_path, path, "classify", "text", text):
        assert (report["records_out"], report["exact_duplicates"], report["duplicate_prompt_groups"], report["duplicate_prompt_records"]) == (42, 1, 1, 2)
        assert report["conflicting_labels"] == 1 and len(report["conflicts"]) == 1
        assert sorted(x["label"] for x in held if _same(x["text"]) == _same(text)) == ["negative", "positive"]
        assert "conflicting labels: 1" in stdout and all(i in stdout for i in report["conflicts"][0])


def test_prepare_keeps_a_repeated_dialogue_in_one_split(tmp_path):
    "The same dialogue with two summaries (and once more in other case and spacing, a third): all kept, in one split."
    import random
    rng = random.Random(2)
    turns = lambda: "\n".join(f"#Person{1 + i % 2}#: {_words(rng, 9).capitalize()}." for i in range(4))
    dialogue = turns()
    repeated = [(dialogue, "#Person1# asks about coffee."), (dialogue, "#Person2# explains the dose."),
                (dialogue.upper().replace("\n", "\n\n  "), "They talk about blood tests.")]
    path = _user_csv(tmp_path / "dialogues.csv", ("dialogue", "summary"), [(turns(), f"#Person1# {_words(rng, 6)}.") for _ in range(40)], repeated)
    for stdout, report, held in _prepare_for_seeds(tmp_path, path, "summarize", "dialogue", dialogue):
        assert (report["records_out"], report["duplicate_prompt_groups"], report["duplicate_prompt_records"]) == (43, 1, 3)
        assert len({x["summary"] for x in held if _same(x["dialogue"]) == _same(dialogue)}) == 3
        assert "duplicate prompts: 1 group holding 3 records" in stdout


def test_train_writes_a_complete_run(space):
    base = space["base"]
    out = last_json(space["train_out"])
    assert out["status"] == "succeeded" and Path(out["run"]) == base.resolve()
    for f in ("config.json", "status.json", "metrics.json", "log_history.json", "manifest.json"): assert (base / f).is_file(), f
    assert (base / "model").is_dir() and list(base.glob("*.png"))
    saved = json.loads((base / "config.json").read_text())
    assert saved["data_fingerprint"] == jobs.fingerprint(space["old"]) and saved["versions"]["transformers"]
    assert json.loads((base / "metrics.json").read_text()) == out["metrics"]


def test_runs_list_and_show(space):
    r = dt("runs", "list", runs_dir=space["root"])
    line = next(l for l in r.stdout.splitlines() if l.startswith("base "))
    assert "classify" in line and "succeeded" in line and "100%" in line
    rows = json.loads(dt("runs", "list", "--json", runs_dir=space["root"]).stdout)
    assert [r["status"] for r in rows if r["run"] == "base"] == ["succeeded"]
    shown = json.loads(dt("runs", "show", "base", runs_dir=space["root"]).stdout)
    assert shown["status"]["status"] == "succeeded" and shown["config"]["task"] == "classify"


def test_evaluate_writes_and_prints_eval_json(space):
    r = dt("evaluate", "--run", "base", "--limit", 4, runs_dir=space["root"])
    printed = json.loads(r.stdout)
    assert printed == json.loads((space["base"] / "eval.json").read_text())
    assert 0 <= printed["accuracy"] <= 1 and printed["n"] == 4


def test_generate(space):
    r = dt("generate", "--run", "base", "What a wonderful, moving film.", runs_dir=space["root"])
    assert r.stdout.strip().split()[0] in ("positive", "negative")


def test_from_run_continues_into_a_new_run(space):
    "`--from-run` trains a finished run's model on new data into a new run; the old run is left as it was."
    before = {p: p.read_bytes() for p in space["base"].rglob("*") if p.is_file()}
    r = dt("train", "--from-run", "base", "--data", space["new"], "--max-steps", 2, "--out", "continued", runs_dir=space["root"])
    out = last_json(r.stdout)
    assert out["status"] == "succeeded"
    cfg = json.loads((space["root"] / "continued" / "config.json").read_text())
    assert cfg["config"]["extra"]["from_run"] == str(space["base"].resolve()) and cfg["config"]["data"] == str(space["new"])
    assert cfg["config"]["task"] == "classify" and cfg["config"]["max_steps"] == 2
    after = {p: p.read_bytes() for p in before}
    assert after == before


def wait_for(pred, timeout=300, every=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred(): return True
        time.sleep(every)
    return False


@pytest.mark.slow
def test_detach_cancel_resume(space):
    "A detached run is listed as running, `runs cancel` ends it `cancelled` with a checkpoint, and `--resume` finishes it."
    r = dt("train", "--task", "classify", "--model", space["enc"], "--data", space["old"], "--max-steps", 400, "--out", "bg",
           "--detach", runs_dir=space["root"], subprocess_=True)
    run = Path(r.stdout.strip().splitlines()[-1])
    assert run == (space["root"] / "bg").resolve()
    assert wait_for(lambda: read_json(run / "status.json").get("step", 0) >= 1), (run / "train.log").read_text()[-3000:]
    assert [x["status"] for x in jobs.list_runs(space["root"]) if x["run"] == "bg"] == ["running"]
    c = dt("runs", "cancel", "bg", runs_dir=space["root"], subprocess_=True)
    st = jobs.read_status(run)
    assert st["status"] == "cancelled", (run / "train.log").read_text()[-3000:]
    ckpt = training.last_checkpoint(run)
    assert ckpt is not None and ckpt.name in c.stdout and int(ckpt.name.split("-")[1]) == st["step"]
    assert wait_for(lambda: not jobs._alive(st["pid"]), timeout=60)
    r = dt("train", "--resume", "bg", "--max-steps", st["step"] + 2, runs_dir=space["root"])
    assert last_json(r.stdout)["status"] == "succeeded"
    assert jobs.read_status(run)["step"] == st["step"] + 2


def _kill_at(run: Path, step: int, seen: dict):
    "SIGKILL a detached run's process once its status shows `step` steps; record the pid, the step it reached and what the run reads as."
    if not wait_for(lambda: read_json(run / "status.json").get("step", 0) >= step, every=0.02):
        seen["error"] = (run / "train.log").read_text()[-3000:]; return
    st = read_json(run / "status.json")
    try: os.kill(st["pid"], signal.SIGKILL)
    except ProcessLookupError: seen["error"] = f"it ended at step {st['step']}, before it could be killed"; return
    if wait_for(lambda: not jobs._alive(st["pid"]), timeout=30):
        seen.update(pid=st["pid"], step=st["step"], status=jobs.read_status(run), checkpoint=training.last_checkpoint(run))


@pytest.fixture(scope="module")
def killed(space):
    """Two runs started through the real command, detached, and killed with SIGKILL: a classify run at step 3 of 8 and a
    qa (LoRA) run in its second epoch (step 9 of 14); each beside the same run uninterrupted, then resumed with `--resume`.
    Both start at once and are killed from threads while the uninterrupted runs train here: one start-up's wait for both."""
    import threading
    d = space["root"].parent
    root = d / "kill-runs"
    causal = tiny_model_dir("causal", d / "causal")
    data = write_jsonl(toy_qa_rows(40), d / "qa.jsonl")   # 28 training records: 7 batches of 4 per epoch
    args = dict(classify=("train", "--task", "classify", "--model", space["enc"], "--data", space["old"], "--max-steps", 8, "--seed", 3),
                qa=("train", "--task", "qa", "--model", causal, "--data", data, "--strategy", "lora", "--max-steps", 14, "--seed", 5))
    kill_at, runs, seen, watchers = dict(classify=3, qa=9), {}, {}, []
    for task, a in args.items():
        runs[task] = Path(dt(*a, "--out", f"killed-{task}", "--detach", runs_dir=root, subprocess_=True).stdout.strip().splitlines()[-1])
        seen[task] = {}
        watchers.append(threading.Thread(target=_kill_at, args=(runs[task], kill_at[task], seen[task]), daemon=True))
        watchers[-1].start()
    ref = {task: last_json(dt(*a, "--out", f"ref-{task}", runs_dir=root).stdout) for task, a in args.items()}  # uninterrupted
    for w in watchers: w.join(timeout=330)
    for task in args: assert seen[task].get("pid"), f"{task}: not killed\n{seen[task].get('error', '')}"
    resumed = {task: last_json(dt("train", "--resume", f"killed-{task}", runs_dir=root).stdout) for task in args}
    return dict(runs=runs, refs={t: root / f"ref-{t}" for t in args}, ref=ref, seen=seen, resumed=resumed)


def _losses(run: Path) -> list: return [(h["step"], h["loss"]) for h in json.loads((run / "log_history.json").read_text()) if "loss" in h]


@pytest.mark.slow
def test_sigkill_leaves_a_failed_run_with_its_checkpoint(killed):
    "A run whose process is killed with SIGKILL reads as failed, says how to resume, and keeps its last complete checkpoint."
    for task, seen in killed["seen"].items():
        assert seen["status"]["status"] == "failed", task
        assert "ended without a final status" in seen["status"]["error"] and f"--resume killed-{task}" in seen["status"]["error"]
        assert seen["checkpoint"] is not None and int(seen["checkpoint"].name.split("-")[1]) <= seen["step"], task


@pytest.mark.slow
def test_sigkill_and_resume_match_an_uninterrupted_run(killed):
    "Through the real command: a classify run killed with SIGKILL resumes from its checkpoint and ends with the same losses."
    run, got, ref = killed["runs"]["classify"], killed["resumed"]["classify"], killed["ref"]["classify"]
    assert got["status"] == "succeeded" and jobs.read_status(run)["status"] == "succeeded"
    assert _losses(run)[-1][1] == pytest.approx(_losses(killed["refs"]["classify"])[-1][1], abs=1e-4)
    assert got["metrics"]["val_loss"] == pytest.approx(ref["metrics"]["val_loss"], abs=1e-4)


@pytest.mark.slow
def test_sigkill_in_the_second_epoch_resumes_that_epoch(killed):
    "Killed mid-way through its second epoch, a run resumes with that epoch's batch order and ends with the uninterrupted losses."
    ckpt = int(killed["seen"]["qa"]["checkpoint"].name.split("-")[1])
    assert killed["resumed"]["qa"]["status"] == "succeeded" and jobs.read_status(killed["runs"]["qa"])["status"] == "succeeded"
    assert 7 < ckpt < 14, f"checkpoint-{ckpt} is not inside the second epoch (steps 8 to 13)"
    got, ref = _losses(killed["runs"]["qa"]), _losses(killed["refs"]["qa"])
    assert [s for s, _ in got] == [s for s, _ in ref] == list(range(1, 15))
    assert [l for _, l in got] == pytest.approx([l for _, l in ref], abs=1e-4), f"resumed from checkpoint-{ckpt}"


def test_safety_refuses_pickles_and_remote_code(tmp_path, space):
    "Pickle-only weights and repository code are refused unless the user opts in."
    pkl = tmp_path / "pickled"; pkl.mkdir()
    (pkl / "config.json").write_text(json.dumps({"model_type": "bert"})); (pkl / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(cli.InputError, match="--allow-pickle"): cli.check_model(str(pkl))
    assert cli.check_model(str(pkl), allow_pickle=True) == str(pkl)
    remote = tmp_path / "remote"; remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"model_type": "x", "auto_map": {"AutoModel": "modeling_x.X"}}))
    (remote / "model.safetensors").write_bytes(b"")
    with pytest.raises(cli.InputError, match="--trust-remote-code"): cli.check_model(str(remote))
    assert cli.check_model(str(remote), trust_remote_code=True) == str(remote)


def test_missing_task_module_is_a_clear_error(monkeypatch, capsys):
    "A task whose module is not installed gets exit 1 and a sentence, not a traceback."
    monkeypatch.setitem(sys.modules, "domaintune_course.tasks.summarize", None)
    code = cli.main(["train", "--task", "summarize", "--max-steps", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "not available in this installation" in err and "Traceback" not in err


@pytest.mark.slow
def test_demo(tmp_path):
    "`domaintune demo` trains and evaluates the Q&A task and prints what to open (needs the qa task)."
    pytest.importorskip("domaintune_course.tasks.qa")
    tok = tiny_tokenizer()   # hidden size 64: bitsandbytes' CPU 4-bit kernels need rows of at least one 64-value block
    model = tmp_path / "causal"; tiny_causal_lm(tok, hidden_size=64).save_pretrained(model); tok.save_pretrained(model)
    r = dt("demo", "--out", tmp_path / "demo-runs", "--model", model, "--max-steps", 2, "--profile", "smoke", subprocess_=True)
    (run,) = [p for p in (tmp_path / "demo-runs").iterdir() if jobs.is_run(p)]
    assert jobs.read_status(run)["status"] == "succeeded" and (run / "eval.json").is_file()
    assert "eval.json" in r.stdout and "domaintune generate" in r.stdout
