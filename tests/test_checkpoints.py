"""Checkpoints: the best one kept, not the last, through resume and cancel; a resumed run keeps its data; two GPUs do not
double a 4-bit model's batch and loss."""
import json
from pathlib import Path
import pytest
import torch

from domaintune_course import qlora, training
from domaintune_course.config import make_config
from domaintune_course.data import build_example
from domaintune_course import sources
from domaintune_course.tasks import summarize
from domaintune_course.testing import toy_qa_rows, write_jsonl


def example_fn(record, tokenizer): return build_example("qa", record, tokenizer, style="instruction")


def _cfg(model_dir, **kw):
    base = dict(model=str(model_dir), strategy="lora", max_steps=4, batch_size=4, max_length=64, eval_steps=1, logging_steps=1,
                lora_r=4, learning_rate=0.3)
    return make_config("qa", "smoke", **(base | kw))


def _adapter(folder: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(folder / "adapter_model.safetensors"))


def test_fine_tune_keeps_the_best_checkpoint_not_the_last(causal_dir, tmp_path):
    "Trained on answers unlike the validation ones, at a learning rate that overshoots, validation loss rises after its best step."
    rows = toy_qa_rows(16)
    junk = [r | dict(completion=" ".join(["zebra"] * 12)) for r in rows[:12]]
    m = qlora.fine_tune(_cfg(causal_dir), tmp_path, junk, rows[12:], example_fn)
    evals = {h["step"]: h["eval_loss"] for h in m["log_history"] if "eval_loss" in h}
    best = min(evals, key=evals.get)
    assert best != max(evals), evals  # the scenario: the last evaluation is not the best
    assert m["eval_loss"] == pytest.approx(evals[best]) and m["best_checkpoint"] == f"checkpoint-{best}"
    saved, kept = _adapter(tmp_path / "model"), _adapter(tmp_path / "checkpoints" / f"checkpoint-{best}")
    assert all(torch.equal(saved[k], kept[k]) for k in kept)


def test_resume_ends_with_the_best_of_the_whole_run(causal_dir, tmp_path):
    """Cancel after 2 updates, resume to 4: the newest checkpoint resumes, the best one survives the rotation and is kept; the
    token count goes on from the checkpoint's and the speed is this process's own."""
    rows = toy_qa_rows(16)
    qlora.fine_tune(_cfg(causal_dir, max_steps=2), tmp_path, rows[:12], rows[12:], example_fn)
    assert training.newest_checkpoint(tmp_path / "checkpoints").name == "checkpoint-2"
    done = json.loads((tmp_path / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())["num_input_tokens_seen"]
    m = qlora.fine_tune(_cfg(causal_dir), tmp_path, rows[:12], rows[12:], example_fn, resume=True)
    evals = {h["step"]: h["eval_loss"] for h in m["log_history"] if "eval_loss" in h}
    assert m["resumed_from"] == "checkpoint-2" and m["global_step"] == 4 and set(evals) == {1, 2, 3, 4}
    assert 0 < done < m["tokens_seen"]
    # the speed of this process: the tokens it trained on (not the checkpoint's) over its own time (wall_time_s is rounded to 0.1 s)
    assert m["tokens_per_second"] == pytest.approx((m["tokens_seen"] - done) / m["wall_time_s"], rel=0.3)
    assert m["eval_loss"] == pytest.approx(min(evals.values()))
    assert (tmp_path / "checkpoints" / m["best_checkpoint"]).is_dir() and training.newest_checkpoint(tmp_path / "checkpoints").name == "checkpoint-4"


def test_a_cancelled_run_resumes_from_its_cancel_checkpoint_and_still_ends_with_the_best(causal_dir, tmp_path):
    "Cancel saves a checkpoint between evaluations; the resumed run starts there, and the kept weights are the best evaluated."
    from domaintune_course import jobs
    rows = toy_qa_rows(16)
    jobs.request_cancel(tmp_path)
    stopped = qlora.fine_tune(_cfg(causal_dir, eval_steps=2), tmp_path, rows[:12], rows[12:], example_fn, callbacks=jobs.run_callbacks(tmp_path))
    assert stopped["global_step"] == 1 and training.newest_checkpoint(tmp_path / "checkpoints").name == "checkpoint-1"
    (tmp_path / "cancel.request").unlink()
    m = qlora.fine_tune(_cfg(causal_dir, eval_steps=2), tmp_path, rows[:12], rows[12:], example_fn, resume=True, callbacks=jobs.run_callbacks(tmp_path))
    evals = {h["step"]: h["eval_loss"] for h in m["log_history"] if "eval_loss" in h}
    assert m["resumed_from"] == "checkpoint-1" and m["global_step"] == 4 and set(evals) == {2, 4}
    best = min(evals, key=evals.get)
    assert m["eval_loss"] == pytest.approx(evals[best]) and (tmp_path / "checkpoints" / m["best_checkpoint"]).is_dir()
    saved, kept = _adapter(tmp_path / "model"), _adapter(tmp_path / "checkpoints" / f"checkpoint-{best}")
    assert all(torch.equal(saved[k], kept[k]) for k in kept)


# --- two GPUs and a 4-bit model --------------------------------------------------------------------------------------

def _first_loss(hub_root, tmp_path, fake_gpus: int, monkeypatch) -> tuple[float, int]:
    "The first logged training loss and the tokens trained on, with `fake_gpus` GPUs as the Trainer counts them."
    cfg = make_config("qa", "smoke", model=str(hub_root / "models" / "microsoft" / "phi-2"), strategy="qlora", max_steps=1, batch_size=2,
                      max_length=64, lora_r=4, logging_steps=1, eval_steps=1)
    made = training.training_arguments
    def arguments(*a, **kw):
        args = made(*a, **kw); args._n_gpu = fake_gpus  # what TrainingArguments counts with two visible GPUs and one process
        return args
    monkeypatch.setattr(qlora, "training_arguments", arguments)
    m = qlora.fine_tune(cfg, tmp_path / f"gpus-{fake_gpus}", toy_qa_rows(8), [], example_fn)
    return next(h["loss"] for h in m["log_history"] if "loss" in h), m["tokens_seen"]


def test_two_gpus_do_not_double_a_4bit_models_batch_and_loss(hub_root, tmp_path, monkeypatch):
    "Kaggle's T4 x2, with two fake devices: a 4-bit model trains on one, so its loss and tokens are those of a one-GPU run."
    one = _first_loss(hub_root, tmp_path, 1, monkeypatch)
    two = _first_loss(hub_root, tmp_path, 2, monkeypatch)
    assert two[0] == pytest.approx(one[0], rel=1e-4) and two[1] == one[1]


def test_a_resumed_run_keeps_the_data_it_started_with(tmp_path):
    "Its splits are on disk: resuming reads them, whatever the hub (or the bundled data) would give today."
    rows = {s: [dict(id=f"{s}-{i}", dialogue=f"#Person1#: hi {i}", summary=f"they greet {i}", references=[f"they greet {i}"]) for i in range(3)]
            for s in ("train", "validation", "test")}
    d = tmp_path / "data"
    for s, r in rows.items(): write_jsonl(r, d / f"{s}.jsonl")
    (d / "manifest.json").write_text(json.dumps(dict(source=sources.DIALOGSUM)))
    got = summarize.prepare_run_data(make_config("summarize", "t4", rehearsal=False), d, resume=True)
    assert got == rows
