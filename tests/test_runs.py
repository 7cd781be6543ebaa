"""Run directories: atomic writes, no collisions or escapes, status tracking, and clean cancel. Resume after SIGKILL, through
the real command, is in tests/test_cli.py (`killed`)."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

from domaintune_course import jobs, training
from domaintune_course.formats import write_json
from domaintune_course.config import InputError, TrainConfig
from domaintune_course.testing import toy_qa_rows


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "runs"


def test_atomic_write_keeps_old_file_when_the_write_fails(tmp_path, monkeypatch):
    "A write that fails half-way leaves the previous content and no temporary file behind."
    target = write_json({"loss": 1.0}, tmp_path / "metrics.json")
    def exploding_fsync(fd): raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", exploding_fsync)
    with pytest.raises(OSError, match="disk full"): write_json({"loss": 2.0}, target)
    assert json.loads(target.read_text()) == {"loss": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_create_run_never_reuses_a_directory(root):
    cfg = TrainConfig.tiny("qa")
    a, b = jobs.create_run(cfg, runs_dir=root), jobs.create_run(cfg, runs_dir=root)
    assert a != b and a.parent == b.parent == root.resolve()
    (a / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(InputError, match="never overwritten"): jobs.create_run(cfg, a.name, runs_dir=root)
    assert (a / "model.safetensors").read_bytes() == b"weights"


@pytest.mark.parametrize("name", ["../outside", "a/../../outside", "/tmp/elsewhere", "~/elsewhere"])
def test_run_names_cannot_escape_the_runs_dir(root, name):
    with pytest.raises(InputError, match="outside the runs directory"): jobs.create_run(TrainConfig.tiny("qa"), name, runs_dir=root)
    assert not (root.parent / "outside").exists()


def test_a_symlink_cannot_lead_out_of_the_runs_dir(root, tmp_path):
    root.mkdir(parents=True); (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InputError, match="outside the runs directory"): jobs.create_run(TrainConfig.tiny("qa"), "link/run", runs_dir=root)
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_config_round_trip_with_versions_seed_and_fingerprint(root, tmp_path):
    data = tmp_path / "rows.jsonl"; data.write_text('{"prompt": "a", "completion": "b"}\n')
    cfg = TrainConfig.tiny("qa", data=str(data), seed=7)
    run = jobs.create_run(cfg, "cfg", runs_dir=root)
    jobs.save_config(run, cfg)
    saved = json.loads((run / "config.json").read_text())
    assert saved["seed"] == 7 and saved["versions"]["transformers"] and saved["versions"]["torch"]
    assert saved["data_fingerprint"] == jobs.fingerprint(data) and len(saved["data_fingerprint"]) == 16
    assert training.run_config(run, trained=False) == cfg


def test_status_and_listing(root):
    cfg = TrainConfig.tiny("classify")
    run = jobs.create_run(cfg, "listed", runs_dir=root)
    jobs.save_config(run, cfg)
    with jobs.track(run): assert jobs.read_status(run)["status"] == "running"
    write_json({"accuracy": 0.875, "n": 8}, run / "eval.json")
    (row,) = jobs.list_runs(root)
    assert (row["run"], row["task"], row["status"], row["metric"]) == ("listed", "classify", "succeeded", "accuracy=0.875")


def test_track_records_failure_and_interruption(root):
    run = jobs.create_run(TrainConfig.tiny("qa"), "t", runs_dir=root)
    with pytest.raises(ValueError):
        with jobs.track(run): raise ValueError("bad shape")
    st = jobs.read_status(run)
    assert st["status"] == "failed" and "bad shape" in st["error"] and st["finished"]
    with pytest.raises(KeyboardInterrupt):
        with jobs.track(run): raise KeyboardInterrupt
    assert jobs.read_status(run)["status"] == "cancelled"


def test_a_dead_running_process_reads_as_failed(root):
    run = jobs.create_run(TrainConfig.tiny("qa"), "dead", runs_dir=root)
    p = subprocess.Popen([sys.executable, "-c", "pass"]); p.wait()
    jobs.write_status(run, "running", pid=p.pid)
    st = jobs.read_status(run)
    assert st["status"] == "failed" and "--resume" in st["error"]


def test_cancel_saves_a_checkpoint_and_resume_matches(root, causal_dir):
    "A cancel request stops training after the current step with a checkpoint; resuming reaches the uninterrupted loss."
    rows, cfg = toy_qa_rows(16), TrainConfig.tiny("qa")
    full = jobs.create_run(cfg, "full", runs_dir=root)
    ref = jobs.fit_lm(causal_dir, rows, full, max_steps=4, callbacks=jobs.run_callbacks(full))
    part = jobs.create_run(cfg, "part", runs_dir=root)
    jobs.request_cancel(part)
    with jobs.track(part): jobs.fit_lm(causal_dir, rows, part, max_steps=4, callbacks=jobs.run_callbacks(part))
    assert jobs.read_status(part)["status"] == "cancelled"
    assert training.last_checkpoint(part).name == "checkpoint-1"
    with jobs.track(part): got = jobs.fit_lm(causal_dir, rows, part, max_steps=4, resume=True, callbacks=jobs.run_callbacks(part))
    assert jobs.read_status(part)["status"] == "succeeded" and got["global_step"] == 4
    assert got["final_loss"] == pytest.approx(ref["final_loss"], abs=1e-4)
