"""What a read of the GPU path found broken, each checked on this CPU: partial hub snapshots, pickle-only checkpoints, LoRA
targets on a wrapped 4-bit model, lesson budgets per GPU profile, the best checkpoint kept, two GPUs and a 4-bit model, bf16
without emulation, a GPU the PyTorch build has no kernels for, classifier evaluation, DialogSum never swapped, a diagnosis
that knows chance, and remote code that is not needed."""
import contextlib, io, json, math, os, subprocess, sys, types
from pathlib import Path
import pytest
import torch

from domaintune_course import cli, config, metrics, models, qlora, testing
from domaintune_course.config import InputError, make_config
from domaintune_course.data import build_example, load_task_data
from domaintune_course.tasks import classify, summarize
from domaintune_course.testing import tiny_model_dir, toy_qa_rows, toy_reviews, write_jsonl

GPU_PROFILES = ("t4", "p100", "l4", "a100")
FALCON = "tiiuae/falcon-rw-1b"


def example_fn(record, tokenizer): return build_example("qa", record, tokenizer, style="instruction")


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory):
    "The tiny stand-ins of the hub repositories the GPU profiles download."
    return testing.tiny_hub(tmp_path_factory.mktemp("hub"))


# --- resolve_model and partial snapshots -------------------------------------------------------------------------

@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    "An empty Hugging Face cache that huggingface_hub and `resolve_model` use (offline, as conftest sets)."
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    return tmp_path / "hub-cache"


def test_offline_a_partial_snapshot_is_refused_with_the_fix(hub_root, hub_cache):
    "A cached snapshot that holds only config.json is not a model: offline, `resolve_model` says what it lacks."
    testing.hub_cache(hub_root, hub_cache, "distilbert/distilbert-base-uncased", files=["config.json"])
    with pytest.raises(InputError, match="lacks model.safetensors.*tokenizer files.*Internet"):
        models.resolve_model("distilbert-base-uncased")


def test_offline_a_complete_snapshot_loads_with_its_own_tokenizer(hub_root, hub_cache):
    snap = testing.hub_cache(hub_root, hub_cache, "distilbert/distilbert-base-uncased")
    assert models.resolve_model("distilbert-base-uncased") == str(snap)
    tok = models.load_tokenizer("distilbert-base-uncased")
    assert tok.unk_token_id not in tok("a great film")["input_ids"]  # a real vocabulary, not every word [UNK]
    assert type(models.load_model("distilbert-base-uncased", kind="encoder", num_labels=2)).__name__ == "DistilBertForSequenceClassification"


# --- pickle-only checkpoints: falcon-rw-1b's main branch holds pytorch_model.bin only --------------------------------------

LOADER = """
import json
from domaintune_course import models
out = {}
for name in ("phi-2", "falcon-rw-1b"):
    tok, model = models.load_tokenizer(name), models.load_model(name)
    out[name] = dict(path=models.resolve_model(name), model=type(model).__name__, eos=tok.eos_token)
print("LOADED " + json.dumps(out))
"""  # in a process of its own: huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE once per process


def _same_weights(converted: Path, reference: Path):
    "Every tensor of `reference` (a safetensors file) is in `converted` with the same values."
    from safetensors.torch import load_file
    got, want = load_file(str(converted)), load_file(str(reference))
    assert set(want) <= set(got) and all(torch.equal(got[k], v) for k, v in want.items())


def test_both_hub_layouts_load_through_the_hub(hub_root, tmp_path):
    "phi-2's main holds safetensors (loaded by hub id); falcon-rw-1b's a pickle only: downloaded, converted once, loaded from the copy."
    with testing.MockHub(hub_root) as hub:
        env = {**os.environ, **testing.hub_env(hub.endpoint, tmp_path / "hf"), "DOMAINTUNE_CACHE": str(tmp_path / "cache")}
        r = subprocess.run([sys.executable, "-c", LOADER], env=env, capture_output=True, text=True, timeout=600)
    line = next((l for l in r.stdout.splitlines() if l.startswith("LOADED ")), None)
    assert line, r.stderr[-4000:]
    falcon = tmp_path / "cache" / "models" / "falcon-rw-1b"
    assert json.loads(line[len("LOADED "):]) == {"phi-2": dict(path="microsoft/phi-2", model="PhiForCausalLM", eos="<|endoftext|>"),
                                                 "falcon-rw-1b": dict(path=str(falcon), model="FalconForCausalLM", eos="<|endoftext|>")}
    assert any(q.startswith("GET /microsoft/phi-2/resolve/") and "/model.safetensors 200" in q for q in hub.requests)
    assert any(q.startswith(f"GET /{FALCON}/resolve/") and "/pytorch_model.bin 200" in q for q in hub.requests)
    _same_weights(falcon / "model.safetensors", testing.revision_dir(hub_root, FALCON, "refs/pr/1") / "model.safetensors")


def test_offline_a_cached_pickle_only_snapshot_is_complete_and_loads(hub_root, hub_cache, tmp_path, monkeypatch):
    "The Hugging Face cache holds falcon-rw-1b's main as downloaded (pickle weights): offline it loads, through a safetensors copy."
    monkeypatch.setenv("DOMAINTUNE_CACHE", str(tmp_path / "cache"))
    snap = testing.hub_cache(hub_root, hub_cache, FALCON)
    assert not (snap / "model.safetensors").exists() and models.snapshot_missing(snap, allow_pickle=True) == []
    model, tok = models.load_model("falcon-rw-1b"), models.load_tokenizer("falcon-rw-1b")
    assert models.resolve_model("falcon-rw-1b") == str(tmp_path / "cache" / "models" / "falcon-rw-1b") and tok.eos_token == "<|endoftext|>"
    state = torch.load(snap / "pytorch_model.bin", weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_offline_a_missing_weights_file_is_named_with_the_fix(hub_root, hub_cache, tmp_path, monkeypatch):
    "A download cut short before pytorch_model.bin: the error names it and says how to finish, in Python and on the command line."
    monkeypatch.setenv("DOMAINTUNE_CACHE", str(tmp_path / "cache"))
    testing.hub_cache(hub_root, hub_cache, FALCON, files=[p.name for p in (hub_root / "models" / FALCON).iterdir() if p.suffix != ".bin"])
    fix = r"lacks model\.safetensors or pytorch_model\.bin \(weights\)\) and the hub is not reachable\. Fix: run again where the hub is reachable"
    with pytest.raises(InputError, match=fix): models.load_model("falcon-rw-1b")
    err = io.StringIO()
    with contextlib.redirect_stderr(err): code = cli.main(["train", "--task", "qa", "--model", "falcon-rw-1b", "--out", "falcon-run"])
    assert code == 2 and "pytorch_model.bin" in err.getvalue() and "Traceback" not in err.getvalue()


def test_with_the_hub_reachable_the_hub_id_wins_over_a_partial_cache(hub_root, hub_cache, monkeypatch):
    testing.hub_cache(hub_root, hub_cache, "distilbert/distilbert-base-uncased", files=["config.json"])
    monkeypatch.setattr(models, "hub_reachable", lambda: True)
    assert models.resolve_model("distilbert-base-uncased") == "distilbert/distilbert-base-uncased"


def test_hub_reachable_probes_the_endpoint_it_is_given(monkeypatch):
    "An HF_ENDPOINT on a port of its own is probed there (the course's probe used to try port 443 whatever the URL said)."
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); s.listen(1)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0"); monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.getsockname()[1]}")
        models.hub_reachable.cache_clear()
        try: assert models.hub_reachable(timeout=2)
        finally: models.hub_reachable.cache_clear()


# --- LoRA targets on a wrapped 4-bit model ---------------------------------------------------------------------------

def test_lora_targets_look_through_the_lora_layers_of_a_4bit_model(hub_root):
    "Lesson 05 checks the targets on the model it trains: 4-bit layers wrapped by LoRA, seen through their `base_layer`."
    cfg = make_config("summarize", "smoke", model=str(hub_root / "models" / "microsoft" / "phi-2"), strategy="qlora", lora_r=4)
    model, _ = qlora.load_for_training(cfg)
    assert qlora.quantized_layers(model) > 0
    names = ["q_proj", "k_proj", "v_proj", "dense"]
    assert qlora.lora_targets(model.get_base_model(), ",".join(names)) == names
    assert sorted(qlora.lora_targets(model.get_base_model())) == sorted(names)


def test_falcon_is_quantized_and_a_model_bitsandbytes_cannot_quantize_is_reported(hub_root, monkeypatch):
    "transformers 5 quantizes only layers whose type is nn.Linear; the course builds Falcon with nn.Linear, and says when a model escapes."
    cfg = make_config("qa", "smoke", model=str(testing.revision_dir(hub_root, FALCON, "refs/pr/1")), strategy="qlora", lora_r=4)
    model, _ = qlora.load_for_training(cfg)
    import bitsandbytes as bnb
    four_bit = [n for n, m in model.get_base_model().named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(four_bit) == 4 * model.config.num_hidden_layers and qlora.quantization_gap(model, cfg) == {}, four_bit
    monkeypatch.setattr(qlora, "EQUIVALENT_LINEARS", {})  # as transformers alone would build it: FalconLinear, left in full precision
    model, _ = qlora.load_for_training(cfg)
    gap = qlora.quantization_gap(model, cfg)
    assert qlora.quantized_layers(model) == 0 and gap["quantization"]["asked"] == "nf4" and "FalconLinear" in gap["quantization"]["why"]


# --- lesson budgets and the Q&A budget ---------------------------------------------------------------------------------

def _epochs(cfg, n_train: int) -> float:
    "Passes over `n_train` examples that `cfg`'s budget trains."
    return cfg.epochs if cfg.max_steps == -1 else cfg.max_steps * cfg.batch_size * cfg.grad_accum / n_train


@pytest.mark.parametrize("profile", GPU_PROFILES)
def test_every_gpu_profile_has_lesson_budgets_smaller_than_its_full_ones(profile):
    for task in ("qa", "summarize"):
        lesson, full = make_config(task, profile, lesson=True, rehearsal=False), make_config(task, profile, rehearsal=False)
        assert 0 < lesson.max_steps <= 100 and lesson.eval_limit <= 24, (task, lesson)
        assert lesson.eval_steps < lesson.max_steps
    lesson = make_config("classify", profile, lesson=True, rehearsal=False)
    assert _epochs(lesson, 600) <= 1


@pytest.mark.parametrize("profile", GPU_PROFILES)
def test_the_qa_budget_fits_the_data(profile):
    "A few passes over the ~240 training pairs, not the 17 to 33 a 1000-step budget meant."
    cfg = make_config("qa", profile, rehearsal=False)
    assert _epochs(cfg, 240) <= 4 and qlora.training_arguments(cfg, "/tmp/x").load_best_model_at_end


@pytest.fixture(scope="module")
def causal_dir(tmp_path_factory): return tiny_model_dir("causal", tmp_path_factory.mktemp("tiny-causal"))


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
    "Cancel after 2 updates, resume to 4: the newest checkpoint resumes, the best one survives the rotation and is kept."
    rows = toy_qa_rows(16)
    first = qlora.fine_tune(_cfg(causal_dir, max_steps=2), tmp_path, rows[:12], rows[12:], example_fn)
    assert qlora.newest_checkpoint(tmp_path / "checkpoints").name == "checkpoint-2"
    m = qlora.fine_tune(_cfg(causal_dir), tmp_path, rows[:12], rows[12:], example_fn, resume=True)
    evals = {h["step"]: h["eval_loss"] for h in m["log_history"] if "eval_loss" in h}
    assert m["resumed_from"] == "checkpoint-2" and set(evals) == {1, 2, 3, 4}
    assert m["eval_loss"] == pytest.approx(min(evals.values()))
    assert (tmp_path / "checkpoints" / m["best_checkpoint"]).is_dir() and qlora.newest_checkpoint(tmp_path / "checkpoints").name == "checkpoint-4"


def test_a_cancelled_run_resumes_from_its_cancel_checkpoint_and_still_ends_with_the_best(causal_dir, tmp_path):
    "Cancel saves a checkpoint between evaluations; the resumed run starts there, and the kept weights are the best evaluated."
    from domaintune_course import runs
    rows = toy_qa_rows(16)
    runs.request_cancel(tmp_path)
    stopped = qlora.fine_tune(_cfg(causal_dir, eval_steps=2), tmp_path, rows[:12], rows[12:], example_fn, callbacks=runs.run_callbacks(tmp_path))
    assert stopped["global_step"] == 1 and qlora.newest_checkpoint(tmp_path / "checkpoints").name == "checkpoint-1"
    (tmp_path / "cancel.request").unlink()
    m = qlora.fine_tune(_cfg(causal_dir, eval_steps=2), tmp_path, rows[:12], rows[12:], example_fn, resume=True, callbacks=runs.run_callbacks(tmp_path))
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
    made = qlora.training_arguments
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


# --- bf16 without emulation, unknown GPUs ---------------------------------------------------------------------------

def _fake_gpu(monkeypatch, name: str, major: int, gb: float, count: int = 1, minor: int = 0,
              archs: list | None = None): # what the torch build was compiled for; None: a build with kernels for this GPU
    "Make torch report one CUDA device of compute capability `major`.`minor` (bf16 emulated below 8, as torch does)."
    props = types.SimpleNamespace(name=name, major=major, minor=minor, total_memory=int(gb * 2**30))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=0: props)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: [f"sm_{major}{minor}"] if archs is None else archs)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: major >= 8 or including_emulation)
    monkeypatch.delenv("DOMAINTUNE_PROFILE", raising=False)


def test_a_v100_gets_fp16_and_the_t4_budget_not_emulated_bf16(monkeypatch):
    _fake_gpu(monkeypatch, "Tesla V100-SXM2-16GB", 7, 15.8)
    h = config.hardware()
    assert h["bf16"] is False and h["capability"] == "7.0" and config.detect_profile() == "t4"


def test_unknown_gpus_get_a_profile_their_memory_and_bf16_allow(monkeypatch):
    _fake_gpu(monkeypatch, "NVIDIA RTX A1000 8GB Laptop GPU", 8, 7.7)
    assert config.detect_profile() == "cpu"            # "A100" in its name, but 8 GB
    _fake_gpu(monkeypatch, "NVIDIA A10G", 8, 22.0)
    assert config.detect_profile() == "l4"
    _fake_gpu(monkeypatch, "NVIDIA H200", 9, 139.8)
    assert config.detect_profile() == "a100" and config.hardware()["bf16"]


# --- a GPU the installed PyTorch build has no kernels for (Kaggle's P100 under a CUDA 12.8 build) ---------------------

KAGGLE_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]  # torch.cuda.get_arch_list() there


def _no_kernel(*args, **kwargs): raise RuntimeError("CUDA error: no kernel image is available for execution on the device")


@pytest.mark.parametrize("capability, archs, runs", [
    ((6, 0), KAGGLE_ARCHS, False),                # a P100: no 6.x kernels, and the PTX is for 12.0
    ((6, 1), ["sm_60", "sm_70"], True),           # kernels run on later minors of their major version...
    ((6, 0), ["sm_61"], False),                   # ... not on earlier ones
    ((7, 5), KAGGLE_ARCHS, True), ((8, 9), ["sm_80", "sm_86"], True), ((12, 1), KAGGLE_ARCHS, True),
    ((9, 0), ["compute_80"], True),               # PTX is compiled just in time for a newer GPU...
    ((8, 0), ["compute_86"], False),              # ... never for an older one
    ((12, 0), ["sm_90"], False), ((12, 0), ["sm_90", "compute_90"], True),
    ((9, 0), ["sm_90a"], True), ((10, 0), ["sm_90a"], False),  # arch-specific: that GPU only
    ((10, 3), ["sm_100f"], True), ((12, 0), ["sm_100f"], False),  # family-specific: its major version
    ((8, 6), [" SM_86 "], True), ((9, 0), ["gfx90a"], True), ((9, 0), [], True)])  # names torch may print; nothing to judge by
def test_build_runs_on_reads_an_arch_list_as_the_cuda_driver_does(capability, archs, runs):
    assert config.build_runs_on(capability, archs) is runs


def test_a_p100_the_build_has_no_kernels_for_computes_on_the_cpu_and_says_what_to_do(monkeypatch, tmp_path, capsys):
    "Every choice of device is the CPU (profile cpu, even a GPU profile trains on it), and the setup report gives the fix."
    _fake_gpu(monkeypatch, "Tesla P100-PCIE-16GB", 6, 15.9, archs=KAGGLE_ARCHS)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", _no_kernel)  # with emulation it launches a kernel: not to be asked here
    h = config.hardware()
    assert (h["cuda"], h["cuda_usable"], h["bf16"], h["arch_list"]) == (True, False, False, KAGGLE_ARCHS)
    assert config.detect_profile() == "cpu" and models.inference_device().type == "cpu" and qlora.inference_device() == "cpu"
    t4 = make_config("qa", "t4", rehearsal=False)
    assert qlora.compute_dtype(t4) == torch.float32 and qlora.training_arguments(t4, tmp_path).use_cpu
    assert qlora.substitutions(t4)["precision"]["why"] == "no kernels for this GPU in this PyTorch build"
    env = models.setup_report()
    out = capsys.readouterr().out
    assert env["profile"] == "cpu" and "profile: cpu" in out and env["gpu_advice"] in out
    assert "no kernels for the Tesla P100-PCIE-16GB (compute capability 6.0; the build carries sm_75, sm_80, sm_86" in out
    assert "On Kaggle: Settings > Accelerator > GPU T4 x2; elsewhere install a PyTorch build for this GPU" in out
    monkeypatch.delenv("DOMAINTUNE_REHEARSAL", raising=False)
    assert not config.gpu_cell("trains a 1B model") and "GPU T4 x2" in capsys.readouterr().out


def test_a_p100_a_build_runs_keeps_its_profile_and_a_t4_gets_t4(monkeypatch):
    _fake_gpu(monkeypatch, "Tesla P100-PCIE-16GB", 6, 15.9, archs=["sm_60", "sm_70", "sm_75", "compute_75"])
    assert config.detect_profile() == "p100" and config.cuda_usable() and config.gpu_advice() is None
    _fake_gpu(monkeypatch, "Tesla T4", 7, 14.6, minor=5, archs=KAGGLE_ARCHS)
    assert config.detect_profile() == "t4" and models.inference_device().type == "cuda" and config.gpu_advice() is None


def test_a_4bit_model_loads_on_the_cpu_beside_a_gpu_the_build_cannot_run(monkeypatch, causal_dir):
    "transformers puts a 4-bit model on `torch.cuda.current_device()` unless told where; the course names the CPU."
    import bitsandbytes, peft, transformers.trainer  # imported before the fake GPU: their CUDA backends need a CUDA build of torch
    _fake_gpu(monkeypatch, "Tesla P100-PCIE-16GB", 6, 15.9, archs=KAGGLE_ARCHS)
    monkeypatch.setattr(torch.cuda, "current_device", _no_kernel)
    model, _ = qlora.load_for_training(make_config("qa", "smoke", model=str(causal_dir), strategy="qlora", lora_r=4))
    assert qlora.quantized_layers(model) > 0 and {p.device.type for p in model.parameters()} == {"cpu"}


# --- classifier evaluation -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def classify_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("classify")
    data = write_jsonl(toy_reviews(120), d / "reviews.jsonl")
    cfg = make_config("classify", "smoke", model=str(tiny_model_dir("encoder", d / "enc")), data=str(data), eval_limit=6)
    classify.train(cfg, d / "run")
    return d / "run"


def test_classifier_evaluation_is_capped_and_shows_progress(classify_run, capfd):
    ev = classify.evaluate(classify_run)
    assert ev["n"] == 6 < ev["held_out_available"]
    assert "scoring" in capfd.readouterr().err
    assert classify.evaluate(classify_run, limit=ev["held_out_available"])["n"] == ev["held_out_available"]


def test_the_classifier_is_loaded_on_the_inference_device(classify_run, monkeypatch):
    "Evaluation runs where `inference_device` says (the GPU when there is one): here the meta device stands in for it."
    monkeypatch.setattr(classify, "inference_device", lambda: torch.device("meta"))
    model, _ = classify.load_classifier(classify_run)
    assert {p.device.type for p in model.parameters()} == {"meta"}


# --- DialogSum is never swapped ------------------------------------------------------------------------------------

def test_a_gpu_profile_gets_dialogsum_or_a_clear_error_never_the_bundled_dialogues(tmp_path):
    cfg = make_config("summarize", "t4", rehearsal=False)
    assert cfg.data == "dialogsum" and summarize.use_hub(cfg)
    with pytest.raises(InputError, match="DialogSum.*Internet.*--data"):
        summarize.prepare_run_data(cfg, tmp_path / "data")  # the hub is offline here (conftest)
    assert not (tmp_path / "data" / "train.jsonl").exists()


def test_a_resumed_run_keeps_the_data_it_started_with(tmp_path):
    "Its splits are on disk: resuming reads them, whatever the hub (or the bundled data) would give today."
    rows = {s: [dict(id=f"{s}-{i}", dialogue=f"#Person1#: hi {i}", summary=f"they greet {i}", references=[f"they greet {i}"]) for i in range(3)]
            for s in ("train", "validation", "test")}
    d = tmp_path / "data"
    for s, r in rows.items(): write_jsonl(r, d / f"{s}.jsonl")
    (d / "manifest.json").write_text(json.dumps(dict(source=summarize.DIALOGSUM)))
    got = summarize.prepare_run_data(make_config("summarize", "t4", rehearsal=False), d, resume=True)
    assert got == rows


# --- a diagnosis that knows chance -----------------------------------------------------------------------------------

def test_a_classifier_that_cannot_read_is_diagnosed_at_chance(tmp_path):
    "Every word [UNK] (the tokenizer of a partial snapshot): validation at ln 2 and 50%, which the curves alone call a good fit."
    from transformers import BertTokenizer
    enc = tiny_model_dir("encoder", tmp_path / "enc")
    BertTokenizer(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])}).save_pretrained(enc)
    for f in ("tokenizer_config.json", "tokenizer.json"): assert (enc / f).is_file()
    rows = [dict(id=f"r{i}", text=f"Review {i}: {'good' if i % 2 else 'bad'}", label="positive" if i % 2 else "negative") for i in range(80)]
    data = write_jsonl(rows, tmp_path / "reviews.jsonl")  # learnable with a vocabulary; every review alike without one
    cfg = make_config("classify", "smoke", model=str(enc), data=str(data), max_steps=-1, epochs=3, learning_rate=1e-3, extra={"pooling": "cls"})
    m = classify.train(cfg, tmp_path / "run")
    assert m["fit"].startswith("at chance"), m["fit"]


# --- remote code that transformers does not need ----------------------------------------------------------------------

def test_check_model_accepts_a_native_architecture_whose_config_names_remote_code(hub_root, tmp_path):
    "falcon-rw-1b's config.json still has an auto_map; transformers loads falcon natively, so no --trust-remote-code is needed."
    falcon = testing.revision_dir(hub_root, FALCON, "refs/pr/1")  # its safetensors copy: main's pickle would be refused here
    assert "auto_map" in json.loads((falcon / "config.json").read_text())
    assert cli.check_model(str(falcon)) == str(falcon)
    unknown = tmp_path / "custom"; unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({"model_type": "my-own-arch", "auto_map": {"AutoModel": "modeling_x.X"}}))
    (unknown / "model.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="--trust-remote-code"): cli.check_model(str(unknown))


@pytest.mark.parametrize("profile", ("smoke", "cpu") + GPU_PROFILES)
def test_every_profile_fits_its_models_context(profile):
    "The a100 profile's 1024 tokens reached BERT, which has 512 positions: its classifier failed on the first long review."
    for task in ("qa", "classify", "summarize"):
        cfg = make_config(task, profile, rehearsal=False)
        assert cfg.max_length <= models.REGISTRY[cfg.model].context, (profile, task, cfg.max_length)
