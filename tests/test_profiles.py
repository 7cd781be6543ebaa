"""Hardware profiles and their budgets: lesson budgets smaller than the full ones, the Q&A budget fitting its data, every
profile within its models' context, the profile a GPU gets (bf16 without emulation, unknown GPUs), and a GPU the PyTorch
build has no kernels for."""
import importlib, types
import pytest
import torch

from domaintune_course import config, generation, models, qlora, training
from domaintune_course.config import make_config

GPU_PROFILES = ("t4", "p100", "l4", "a100")


# --- lesson budgets and the Q&A budget ---------------------------------------------------------------------------------

def _epochs(cfg, n_train: int) -> float:
    "Passes over `n_train` examples that `cfg`'s budget trains."
    return cfg.epochs if cfg.max_steps == -1 else cfg.max_steps * cfg.batch_size * cfg.grad_accum / n_train


@pytest.mark.parametrize("profile", GPU_PROFILES)
def test_every_gpu_profile_has_lesson_budgets_smaller_than_its_full_ones(profile):
    for task in ("qa", "summarize"):
        lesson, full = make_config(task, profile, lesson=True, rehearsal=False), make_config(task, profile, rehearsal=False)
        assert 0 < lesson.max_steps <= 100 and lesson.eval_limit <= min(24, full.eval_limit), (task, lesson)
        assert _epochs(lesson, 243) < _epochs(full, 243), (task, "the lesson budget trains less than the full one")
        assert lesson.eval_steps < lesson.max_steps
    lesson = make_config("classify", profile, lesson=True, rehearsal=False)
    assert _epochs(lesson, 600) <= 1


@pytest.mark.parametrize("profile", GPU_PROFILES)
def test_the_qa_budget_fits_the_data(profile):
    "A few passes over the ~240 training pairs, not the 17 to 33 a 1000-step budget meant."
    cfg = make_config("qa", profile, rehearsal=False)
    assert _epochs(cfg, 240) <= 4 and training.training_arguments(cfg, "/tmp/x").load_best_model_at_end


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
    assert config.detect_profile() == "cpu" and generation.inference_device() == "cpu"
    t4 = make_config("qa", "t4", rehearsal=False)
    assert training.compute_dtype(t4) == torch.float32 and training.training_arguments(t4, tmp_path).use_cpu
    assert training.substitutions(t4)["precision"]["why"] == "no kernels for this GPU in this PyTorch build"
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
    assert config.detect_profile() == "t4" and generation.inference_device() == "cuda" and config.gpu_advice() is None


def test_a_4bit_model_loads_on_the_cpu_beside_a_gpu_the_build_cannot_run(monkeypatch, causal_dir):
    "transformers puts a 4-bit model on `torch.cuda.current_device()` unless told where; the course names the CPU."
    for m in ("bitsandbytes", "peft", "transformers.trainer"): importlib.import_module(m)  # imported before the fake GPU: their CUDA backends need a CUDA build of torch
    _fake_gpu(monkeypatch, "Tesla P100-PCIE-16GB", 6, 15.9, archs=KAGGLE_ARCHS)
    monkeypatch.setattr(torch.cuda, "current_device", _no_kernel)
    model, _ = qlora.load_for_training(make_config("qa", "smoke", model=str(causal_dir), strategy="qlora", lora_r=4))
    assert qlora.quantized_layers(model) > 0 and {p.device.type for p in model.parameters()} == {"cpu"}


@pytest.mark.parametrize("profile", ("smoke", "cpu") + GPU_PROFILES)
def test_every_profile_fits_its_models_context(profile):
    "The a100 profile's 1024 tokens reached BERT, which has 512 positions: its classifier failed on the first long review."
    for task in ("qa", "classify", "summarize"):
        cfg = make_config(task, profile, rehearsal=False)
        assert cfg.max_length <= models.REGISTRY[cfg.model].context, (profile, task, cfg.max_length)
