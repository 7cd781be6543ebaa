"""The benchmark scripts' --quick modes run (tiny models, toy rows, smoke profile) and write the results the summary reads.

The figures of a --quick run mean nothing; these tests check that every script still runs against the package and
writes every key `SUMMARY.md` and the README quote, so the benchmarks cannot rot between full runs."""
import importlib.util, json, math, subprocess
from pathlib import Path
import pytest

from benchscripts import HEADER, ROOT, script


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    "One results directory the scripts fill in turn, as `make bench` does."
    return tmp_path_factory.mktemp("bench-results")


def read(out: Path, name: str) -> dict:
    d = json.loads((out / name).read_text(encoding="utf-8"))
    for k in HEADER: assert d[k], f"{name} lacks {k}"
    assert {"cores", "cpu", "gpu"} <= set(d["machine"]) and d["machine"]["cores"] >= 1
    assert d["versions"]["torch"] and d["versions"]["transformers"]
    assert d["command"].startswith("python bench/") and "--quick" in d["command"]
    return d


@pytest.mark.slow
def test_throughput_quick(out):
    script("throughput").main(["--quick", "--out", str(out)])
    d = read(out, "throughput.json")
    assert {"speedup_vs_classic", "speedup_vs_dynamic", "padding_fraction"} <= set(d)
    for path in ("causal", "classify"):
        p = d[path]
        assert p["examples"] == 12
        pads = p["padding_fraction"]
        assert pads["pad_to_max"] > pads["dynamic"] > 0, "padding to max_length must waste more than padding to the batch's longest"
        for r in p["strategies"].values():
            assert r["tokens_per_second"] > 0 and r["steps"] == 3
        assert len({r["real_tokens"] for r in p["strategies"].values()}) == 1, "every strategy must train on the same tokens"
        assert p["speedup_vs_classic"] == pytest.approx(p["strategies"][p["course"]]["tokens_per_second"]
                                                        / p["strategies"]["pad_to_max"]["tokens_per_second"], rel=0.01)
    assert d["causal"]["padding_fraction"]["packed"] == 0
    assert d["causal"]["packing_check"]["ok"] is True and d["causal"]["course"] == "group_by_length", "the default: what the Trainer uses"
    assert set(d["causal"]["packed_speedup"]) == {"classic", "dynamic", "trl"}, "packing is measured beside it"
    trl = d["causal"]["strategies"]["trl"]
    assert d["causal"]["trl"]["ran"] and trl["padding_fraction"] == d["causal"]["strategies"]["dynamic"]["padding_fraction"], "TRL's batches: random, padded to the longest"
    assert d["speedup_vs_trl"] == d["causal"]["speedup_vs_trl"] == pytest.approx(
        d["causal"]["strategies"]["group_by_length"]["tokens_per_second"] / trl["tokens_per_second"], rel=0.01)
    assert d["classify"]["course"] == "group_by_length" and "packed" not in d["classify"]["strategies"]
    assert set(d["causal"]["meets_targets"]) == {"padding_fraction", "speedup_vs_classic", "speedup_vs_dynamic", "speedup_vs_trl"}


@pytest.mark.slow
def test_throughput_trl_run_merges_into_the_full_result(out):
    "A run of the course against TRL alone keeps the full run's figures and adds its own, with its command."
    script("throughput").main(["--quick", "--paths", "classify", "--out", str(out)])
    full = read(out, "throughput.json")
    script("throughput").main(["--quick", "--paths", "causal", "--strategies", "group_by_length", "trl", "--merge", "--out", str(out)])
    d = read(out, "throughput.json")
    assert d["classify"] == full["classify"] and d["command"] == full["command"], "the full run's figures stay"
    c = d["trl_comparison"]
    assert set(c["causal"]["strategies"]) == {"group_by_length", "trl"} and "--strategies" in c["command"]
    assert d["speedup_vs_trl"] == c["speedup_vs_trl"] == pytest.approx(
        c["causal"]["strategies"]["group_by_length"]["tokens_per_second"] / c["causal"]["strategies"]["trl"]["tokens_per_second"], rel=0.01)
    with pytest.raises(SystemExit): script("throughput").main(["--quick", "--strategies", "dynamic", "trl", "--out", str(out)])


@pytest.mark.slow
def test_memory_quick(out):
    script("memory").main(["--quick", "--models", "smollm2-135m", "--precisions", "fp32", "nf4", "--out", str(out)])
    d = read(out, "memory.json")
    assert d["failed"] == [], d["rows"]
    assert [(r["name"], r["precision"], r["strategy"]) for r in d["rows"]] == [("tiny-causal", "fp32", "lora"), ("tiny-causal", "nf4", "qlora")]
    for r in d["rows"]:
        assert r["footprint_tensor_mb"] > 0 and r["peak_training_mb"] > 0
        assert r["peak_training_mb"] >= r["footprint_rss_mb"] * 0.5
        assert {"estimated_footprint_mb", "footprint_error_pct", "estimated_peak_training_mb", "peak_training_error_pct",
                "peak_training_rss_mb", "peak_training_rss_error_pct"} <= set(r)
        assert r["peak_measured_as"] == ("allocated" if script("benchlib").heap_bytes() is not None else "rss")
    assert d["max_error_pct"] == max(abs(r[k]) for r in d["rows"] for k in ("footprint_error_pct", "peak_training_error_pct"))
    assert d["rows"][0]["trainable_parameters"] == d["rows"][0]["estimated_trainable_parameters"], "the estimator's LoRA count must match peft's"


def test_heap_bytes_follow_tensors():
    "The allocated-bytes counter memory.py checks the estimator against sees a tensor come and go."
    import torch
    lib = script("benchlib")
    if lib.heap_bytes() is None: pytest.skip("no glibc mallinfo2 here: memory.py falls back to the RSS")
    before = lib.heap_bytes()
    t = torch.ones(16 * 2**20)  # 64 MiB of float32
    during = lib.heap_bytes()
    del t
    assert during - before >= 60 * 2**20 and lib.heap_bytes() - before < 8 * 2**20


@pytest.mark.slow
def test_quality_quick(out):
    d = script("quality").main(["--quick", "--out", str(out)])
    d = read(out, "quality.json")
    assert set(d["tasks"]) == {"classify", "summarize", "qa"}
    for task, t in d["tasks"].items():
        assert t["status"] == "ok", t.get("traceback", t)
        assert t["systems"] and (out / t["plot"]).is_file()
    c = d["tasks"]["classify"]["systems"]
    assert set(c) == {"fine-tuned encoder", "tf-idf + logistic regression", "zero-shot prompting"}
    for r in c.values(): assert r["ci_low"] <= r["accuracy"] <= r["ci_high"] and r["n"] == d["limit"]


@pytest.mark.slow
def test_hallucination_quick(out):
    "Both tasks scored by every remedy's system, the references as the yardstick, the remedy table and its plot."
    script("hallucination").main(["--quick", "--out", str(out)])
    d = read(out, "hallucination.json")
    for task, t in d["tasks"].items(): assert t["status"] == "ok", t.get("traceback", t)
    s, q = d["tasks"]["summarize"]["systems"], d["tasks"]["qa"]["systems"]
    assert set(s) == set(script("hallucination").SUMMARY_SYSTEMS) | {"reference"}
    assert all(r["unfaithful"]["low"] <= r["unfaithful"]["rate"] <= r["unfaithful"]["high"] for r in s.values())
    assert set(q) == set(script("hallucination").QA_SYSTEMS) and d["tasks"]["qa"]["with_key_fact"] > 0
    assert all(abs(r["supported"] + r["contradicted"] + r["missing"] - 1) < 1e-3 for r in q.values())  # shares rounded to 4 places
    assert d["remedies"]["fine-tuned"]["remedy"] == "fine-tuning" and (out / d["plot"]).is_file()


def test_quality_targets_and_update_keep_earlier_tasks(tmp_path):
    "Targets are checked from the systems measured; --update keeps other tasks' entries, stamped with their own run."
    q = script("quality")
    systems = {"fine-tuned encoder": {"accuracy": 0.95}, "tf-idf + logistic regression": {"accuracy": 0.90}}
    t = q.check_targets("classify", systems, {"train_seconds": 700.0})
    assert t["gain_vs_tfidf"] == pytest.approx(0.05) and t["gain_met"] and t["train_time_met"] is False and t["met"] is False
    assert q.check_targets("classify", systems, None)["met"] is None, "no training time measured: not claimed met"
    delta = {"n": 5, "rougeL": 0.02, "rougeL_low": -0.01, "rougeL_high": 0.05}
    (tmp_path / "quality.json").write_text(json.dumps({"date": "2026-01-01", "command": "python bench/quality.py --tasks summarize",
        "tasks": {"summarize": {"status": "ok", "systems": {"fine-tuned - base": delta}, "train_metrics": {"wall_time_s": 10}}}}))
    kept = q.kept_tasks(tmp_path / "quality.json")
    assert kept["summarize"]["date"] == "2026-01-01" and kept["summarize"]["targets"]["gain_met"] is False


@pytest.mark.slow
def test_generation_quick(out):
    "Both paths, both models, both tasks; speedups are the ratio of the medians; the summary renders them."
    script("generation").main(["--quick", "--out", str(out)])
    d = read(out, "generation.json")
    assert set(d["tasks"]) == {"summarize", "qa"} and d["speedup"] == d["tasks"]["summarize"]["speedup"]["both"]
    for t in d["tasks"].values():
        assert 0 < t["examples"] <= 6 and t["paths"]["new"]["batch_size"] > 0
        for path in ("today", "new"):
            for m in ("base", "finetuned"):
                r = t["paths"][path][m]
                assert r["seconds"] > 0 and r["new_tokens"] > 0 and r["new_tokens_per_second"] == pytest.approx(r["new_tokens"] / r["seconds"], rel=0.02)
        for m in ("base", "finetuned", "both"):
            assert t["speedup"][m] == pytest.approx(t["paths"]["today"][m]["seconds"] / t["paths"]["new"][m]["seconds"], rel=0.01)
        assert [t["answers_identical"][m]["of"] for m in ("base", "finetuned")] == [t["examples"]] * 2
    assert "## Generation speed" in script("run_all").summary(out).read_text(encoding="utf-8")


@pytest.mark.slow
def test_lessons_quick_and_summary(out):
    "run_all runs a benchmark in its own process and writes SUMMARY.md from every results file present."
    assert script("run_all").main(["--quick", "--only", "lessons", "--out", str(out)]) == 0
    d = read(out, "lessons.json")
    assert d["notebooks"]["00c_compat"]["ok"] and d["notebooks"]["00c_compat"]["peak_rss_mb"] > 50
    assert d["total_seconds"] == pytest.approx(sum(r["seconds"] for r in d["notebooks"].values()), abs=0.2)
    text = (out / "SUMMARY.md").read_text(encoding="utf-8")
    for title in ("Training throughput", "Memory", "Held-out quality", "Generation speed", "Lesson cost"): assert f"## {title}" in text
    assert "00c_compat" in text and "--quick" in text and "AMD" in text or "cores" in text


def _notebook(path: Path, lesson: str) -> Path:
    "A two-cell notebook that asks `course.lesson_run` for the same stand-in run as `lesson`."
    code = ("from pathlib import Path\nfrom domaintune_course.config import TrainConfig\nfrom domaintune_course.course import lesson_run\n"
            "def stand_in(cfg, run_dir):\n    Path(run_dir).mkdir(parents=True, exist_ok=True); return dict(global_step=cfg.max_steps)\n"
            f"run_dir, metrics = lesson_run(TrainConfig.tiny('qa'), stand_in, {lesson!r})\nassert metrics == dict(global_step=TrainConfig.tiny('qa').max_steps)")
    cells = [dict(cell_type="code", id="c0", metadata={}, execution_count=None, outputs=[], source=code)]
    path.write_text(json.dumps(dict(cells=cells, metadata=dict(kernelspec=dict(name="python3", display_name="python3", language="python")),
                                    nbformat=4, nbformat_minor=5)), encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_lesson_that_reuses_a_run_is_also_measured_alone(tmp_path):
    "The second notebook reuses the first one's run (the row says whose); measured alone, with nothing kept, it trains its own."
    lessons, shared = script("lessons"), tmp_path / "shared"
    first, second = _notebook(tmp_path / "A.ipynb", "A"), _notebook(tmp_path / "B.ipynb", "B")
    a = lessons.run_notebook(first, "smoke", [], 300, lesson_runs=shared)
    b = lessons.run_notebook(second, "smoke", [], 300, lesson_runs=shared)
    assert a["ok"] and b["ok"] and "reused" not in a and list(b["reused"].values()) == ["A"], (a, b)
    solo = lessons.alone(second, b, "smoke", [], 300)
    assert solo["ok"] and solo["alone_seconds"] > 0 and solo["alone_peak_rss_mb"] > 50 and solo["reused"] == b["reused"]
    assert lessons.alone(first, a, "smoke", [], 300)["alone_seconds"] == a["seconds"]  # reused nothing: the same run counts
    assert len(list(shared.iterdir())) == 1  # one run kept, for both


def test_summary_of_an_empty_directory(tmp_path):
    run_all = script("run_all")
    assert run_all.main(["--summary-only", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "SUMMARY.md").read_text(encoding="utf-8")
    assert text.count("Not run yet.") == len(run_all.SECTIONS) == 9 and "It needs a CUDA GPU" in text


def test_bad_arguments_name_the_fix(tmp_path, capsys):
    with pytest.raises(SystemExit) as e: script("quality").main(["--quick", "--runs", "poetry=somewhere", "--out", str(tmp_path)])
    assert "task=DIR" in str(e.value)
    with pytest.raises(SystemExit) as e: script("lessons").main(["--only", "99_nothing", "--out", str(tmp_path)])
    assert "99_nothing" in str(e.value) and "reference/config" in str(e.value)
    assert not (tmp_path / "lessons.json").exists()
    with pytest.raises(SystemExit): script("gpu_check").main(["--dry-run", "--profiles", "t5", "--out", str(tmp_path)])
    assert "'t5'" in capsys.readouterr().err and not (tmp_path / "gpu.json").exists()


# The GPU check (bench/gpu_check.py) has its own file: tests/test_gpu_check.py


# ---------------------------------------------------------------- GGUF parity, where llama.cpp's converter and runtime are here

def _gguf_tools() -> bool:
    from domaintune_course.gguf import find_converter
    return find_converter() is not None and importlib.util.find_spec("llama_cpp") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _gguf_tools(), reason="needs llama.cpp's converter (cached by `make gguf`) and llama-cpp-python (the gguf extra)")
def test_gguf_parity_quick(out):
    script("gguf_parity").main(["--quick", "--types", "f32", "q8_0", "--out", str(out)])
    d = read(out, "gguf_parity.json")
    assert list(d["types"]) == ["f32", "q8_0"] and d["prompts"] == 2 and d["converter"].startswith("llama.cpp-")
    f32 = d["types"]["f32"]
    assert f32["exact"] == d["prompts"] and f32["agreement"] == 1.0 and f32["size_mb"] > d["types"]["q8_0"]["size_mb"]
    measured = {k: t for k, t in d["types"].items() if "crashed" not in t}  # a llama.cpp build may crash at q8_0 on some CPUs
    assert "f32" in measured and all(t["prompt_tokens_match"] and t["meets_threshold"] for t in measured.values())
    assert all("llama.cpp could not run" in t["crashed"] and not t["meets_threshold"] for k, t in d["types"].items() if k not in measured)


def test_make_outputs_runs_only_the_lessons_named():
    "`make outputs LESSONS=...` (README) hands the names to bench/lessons.py, which checks them all before running any; it refuses the quick mode."
    before = {p: p.stat().st_mtime_ns for p in (ROOT / "nbs").glob("*.ipynb")}
    r = subprocess.run(["make", "--no-print-directory", "outputs", "LESSONS=02_qlora no_such_lesson"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "No such notebook(s) in nbs/: no_such_lesson." in r.stderr and "02_qlora" in r.stderr, r.stdout + r.stderr
    assert {p: p.stat().st_mtime_ns for p in before} == before, "no lesson was run or rewritten"
    with pytest.raises(SystemExit): script("lessons").main(["--write-outputs", "--quick", "--out", "/nonexistent"])


@pytest.mark.slow
def test_quantization_quick(out):
    "fp32, 8-bit and NF4 bases under one LoRA budget, and the rank sweep: every figure lesson 01b quotes is written."
    script("quantization").main(["--quick", "--out", str(out)])
    d = read(out, "quantization.json")
    runs = d["precisions"]
    assert list(runs) == ["fp32", "int8", "nf4"]
    assert runs["fp32"]["footprint_mb"] > runs["int8"]["footprint_mb"] > runs["nf4"]["footprint_mb"]
    assert len({r["trainable"] for r in runs.values()}) == 1, "the same adapter on every base"
    for r in runs.values(): assert math.isfinite(r["loss_before"]) and math.isfinite(r["loss_after"]) and r["loss_after"] != r["loss_before"]
    ranks = {int(k): v["trainable"] for k, v in d["ranks"].items()}
    assert len(ranks) == 3 and all(ranks[k] * min(ranks) == ranks[min(ranks)] * k for k in ranks), "trainable parameters linear in the rank"
    assert d["ranks"][str(d["lora_r"])] == runs["nf4"]
    e = {k: v["relative_error"] for k, v in d["roundtrip"]["formats"].items()}
    assert e["fp16"] < e["int8, per row"] < e["nf4, per block"]


def _numbers(tree) -> list[float]:
    "Every number in a JSON tree."
    if isinstance(tree, dict): return [x for v in tree.values() for x in _numbers(v)]
    if isinstance(tree, list): return [x for v in tree for x in _numbers(v)]
    return [float(tree)] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


@pytest.mark.parametrize("lesson, result", [("01b_lora_nf4", "quantization.json"), ("05b_hallucination", "hallucination.json"),
                                            ("03_domain_qa", "quality.json"), ("05_dialogsum", "quality.json"),
                                            ("07_should_i_finetune", "advise.json")])
def test_lessons_quote_the_committed_results(lesson, result):
    "Every figure a lesson quotes from a file under bench/results/ is in that file, at the precision quoted, beside its command and date."
    import re
    d = json.loads((ROOT / "bench" / "results" / result).read_text(encoding="utf-8"))
    assert d["profile"] == "cpu" and not d["quick"]
    cells = json.loads((ROOT / "nbs" / f"{lesson}.ipynb").read_text(encoding="utf-8"))["cells"]
    quotes = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown" and f"bench/results/{result}" in "".join(c["source"])]
    assert quotes, f"lesson {lesson} quotes nothing from {result}"
    values = [abs(v) for v in _numbers(d)]
    for quote in quotes:
        command = re.sub(r"=\S+", "=DIR", re.sub(r" --keep-runs \S+", "", d["command"]))  # where runs were kept or read: DIR
        assert command in quote and d["date"][:10] in quote
        text = re.sub(r"`[^`]*`|\d{4}-\d\d-\d\d", " ", quote)  # commands and dates are checked above
        quoted = re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.]*\d)", text)
        assert len(quoted) >= 5, quoted
        for q in quoted:
            places = len(q.split(".")[1]) if "." in q else 0
            assert any(round(v, places) == float(q) for v in values), f"lesson {lesson} quotes {q}, which {result} does not hold"