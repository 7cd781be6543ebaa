"""The benchmark scripts' --quick modes run (tiny models, toy rows, smoke profile) and write the results the summary reads.

The figures of a --quick run mean nothing; these tests check that every script still runs against the package and
writes every key `SUMMARY.md` and the README quote, so the benchmarks cannot rot between full runs."""
import importlib.util, json, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
HEADER = ("date", "machine", "versions", "command")


def script(name: str):
    "Import bench/<name>.py as a module."
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


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
    assert set(d["causal"]["packed_speedup"]) == {"classic", "dynamic"}, "packing is measured beside it"
    assert d["classify"]["course"] == "group_by_length" and "packed" not in d["classify"]["strategies"]
    assert set(d["causal"]["meets_targets"]) == {"padding_fraction", "speedup_vs_classic", "speedup_vs_dynamic"}


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


def test_lessons_quick_and_summary(out):
    "run_all runs a benchmark in its own process and writes SUMMARY.md from every results file present."
    assert script("run_all").main(["--quick", "--only", "lessons", "--out", str(out)]) == 0
    d = read(out, "lessons.json")
    assert d["notebooks"]["00a_config"]["ok"] and d["notebooks"]["00a_config"]["peak_rss_mb"] > 50
    assert d["total_seconds"] == pytest.approx(sum(r["seconds"] for r in d["notebooks"].values()), abs=0.2)
    text = (out / "SUMMARY.md").read_text(encoding="utf-8")
    for title in ("Training throughput", "Memory", "Held-out quality", "Lesson cost"): assert f"## {title}" in text
    assert "00a_config" in text and "--quick" in text and "AMD" in text or "cores" in text


def test_summary_of_an_empty_directory(tmp_path):
    assert script("run_all").main(["--summary-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "SUMMARY.md").read_text(encoding="utf-8").count("Not run yet.") == 4


def test_bad_arguments_name_the_fix(tmp_path, capsys):
    with pytest.raises(SystemExit) as e: script("quality").main(["--quick", "--runs", "poetry=somewhere", "--out", str(tmp_path)])
    assert "task=DIR" in str(e.value)
    with pytest.raises(SystemExit) as e: script("lessons").main(["--only", "99_nothing", "--out", str(tmp_path)])
    assert "99_nothing" in str(e.value) and "00a_config" in str(e.value)
    assert not (tmp_path / "lessons.json").exists()
