"""The GPU profiles rehearsed on this CPU: every task through the `domaintune` command under t4, l4 and a100 (p100 trains
exactly what t4 trains, which a test here holds to), and every lesson under t4, with tiny models of the profiles'
architectures and the hub's data sets served by a loopback stand-in for the hub (`testing.MockHub`) in the hub's layouts
(falcon-rw-1b's main branch holds pickle weights only), the budgets capped by `DOMAINTUNE_REHEARSAL=1`. And a GPU the installed PyTorch build has no kernels for (Kaggle's
P100 under a CUDA 12.8 build), faked in the rehearsal's process: refused with the fix, and the course run on the CPU.

Each case runs in a process of its own: `HF_HUB_OFFLINE` and `HF_ENDPOINT` are read once per process by huggingface_hub
and datasets, and the test session itself runs offline (conftest)."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest

from domaintune_course.config import make_config
from domaintune_course.models import REGISTRY
from domaintune_course.testing import MockHub, hub_env, tiny_hub

pytestmark = pytest.mark.slow  # every case runs whole commands or lessons
ROOT = Path(__file__).resolve().parents[1]
GPU_PROFILES = ("t4", "p100", "l4", "a100")
# The profiles rehearsed through the command line: p100 is left out, its configuration for every task being t4's
# (test_p100_trains_what_t4_trains), so its rehearsal would repeat t4's work; a p100 setting of its own brings it back.
CLI_PROFILES = ("t4", "l4", "a100")
# The lessons are rehearsed under one GPU profile: the CLI rehearsals above run every task under every GPU profile (bf16 and the
# larger encoder included), and the smoke run (tests/test_notebooks.py) runs every lesson again on the real small models.
LESSON_PROFILE, SHARDS = "t4", 2  # two processes, every other lesson each: both cores busy
from nbpaths import LESSONS as NOTEBOOKS, with_solutions  # the lessons (the reference notebooks hold no profile-dependent run)
RUNNER = """
import sys, nbdev.test as t
for nb in sys.argv[1:]:
    ok, secs = t.test_nb(nb, skip_flags=['slow'])
    print(f"LESSON {nb} {'ok' if ok else 'FAILED'} {secs:.0f}s", flush=True)
"""  # one process for all lessons of a profile: torch, transformers and the rest are imported once, not twelve times
DRIVER = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n" + """
import json
from clirunner import dt
def run(*argv):
    r = dt(*argv)
    return dict(code=r.returncode, out=r.stdout, err=r.stderr[-4000:])
texts = dict(qa="How often should I check my blood pressure?", classify="A wonderful, moving film.",
             summarize="#Person1#: Is the bus late?\\n#Person2#: Yes, by ten minutes.")
result = {}
for task in sys.argv[1:] or ("qa", "classify", "summarize"):
    train = run("train", "--task", task, "--out", f"{task}-run", *globals().get("TRAIN_ARGS", ()))
    done = train["code"] == 0
    result[task] = dict(train=train, evaluate=run("evaluate", "--run", f"{task}-run") if done else None,
                        generate=run("generate", "--run", f"{task}-run", texts[task]) if done else None)
    if task == "qa" and globals().get("ADVISE"):  # should I fine-tune? the whole advise job with the profile's models
        from domaintune_course.data import bundled_path
        result[task]["advise"] = run("advise", str(bundled_path("qa")), "--task", "qa", "--out", "qa-advice")
print("REHEARSAL " + json.dumps(result))
"""
P100 = "p100-without-kernels"
FAKE_P100 = """
import types, torch
import accelerate, bitsandbytes, peft, transformers.trainer  # first: their CUDA backends load only under a CUDA build of torch
_props = types.SimpleNamespace(name="Tesla P100-PCIE-16GB", major=6, minor=0, total_memory=16 * 2**30)
def _no_kernel(*a, **k): raise RuntimeError("CUDA error: no kernel image is available for execution on the device")
for _name, _fn in dict(is_available=lambda: True, device_count=lambda: 1, get_device_properties=lambda i=0: _props,
                       get_arch_list=lambda: ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"],
                       is_bf16_supported=_no_kernel, current_device=_no_kernel, synchronize=_no_kernel).items():
    setattr(torch.cuda, _name, _fn)
for _mod in (torch.cuda, torch.cuda.random):  # host-side state a CUDA build reads without a kernel (the Trainer saves it)
    _mod.get_rng_state, _mod.set_rng_state = lambda device="cuda": torch.zeros(16, dtype=torch.uint8), lambda state, device="cuda": None
"""  # what a CUDA build of torch shows on a GPU it has no kernels for; anything computing there fails (this build has no CUDA)
ENV_DRIVER = """
print("ENV " + json.dumps(dict(text=run("env"), json=run("env", "--json"))))
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    "The tiny hub repositories, served on a loopback port, and a download cache shared by every rehearsal of this module."
    root = tiny_hub(tmp_path_factory.mktemp("hub"))
    home = tmp_path_factory.mktemp("hf-home")
    with MockHub(root) as h:
        h.home = home
        yield h


def rehearsal_env(hub, profile: str, runs: Path) -> dict:
    "The environment of a rehearsal of `profile`: online to the stand-in hub, budgets capped."
    return {**os.environ, **hub_env(hub.endpoint, hub.home), "DOMAINTUNE_REHEARSAL": "1", "DOMAINTUNE_PROFILE": profile,
            "DOMAINTUNE_RUNS": str(runs), "DOMAINTUNE_CACHE": str(runs.parent / "cache"),  # models converted from pickle go here
            "MPLBACKEND": "Agg", "TOKENIZERS_PARALLELISM": "false"}


def _start(cmd: list, env: dict, cwd: Path, logs: Path) -> tuple:
    "Start a rehearsal in its own process, on one torch thread (two run at once on two cores), its output going to files."
    out, err = open(logs / "stdout", "w"), open(logs / "stderr", "w")
    env = env | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, text=True), logs


def _finish(started: tuple, timeout: float) -> subprocess.CompletedProcess:
    "Wait for a started rehearsal; its exit status and output, as `subprocess.run` gives them."
    proc, logs = started
    try: proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired: proc.kill(); proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, (logs / "stdout").read_text(), (logs / "stderr").read_text())


def _all_started(started: dict):
    "Yield `started` (name -> `_start`'s result); afterwards kill whichever rehearsal is still running."
    try: yield started
    finally:
        for proc, _ in started.values():
            if proc.poll() is None: proc.kill()


@pytest.fixture(scope="module")
def cli_rehearsals(hub, tmp_path_factory):
    "Every GPU profile's CLI rehearsal, and the faked P100's, started at once (they share nothing but the read-only stand-in hub and its cache)."
    started = {}
    for profile in CLI_PROFILES:
        work = tmp_path_factory.mktemp(f"cli-{profile}")
        started[profile] = _start([sys.executable, "-c", "ADVISE = True\n" + DRIVER], rehearsal_env(hub, profile, work / "runs"), work, work)
    work = tmp_path_factory.mktemp(f"cli-{P100}")  # no profile set: detected; the session's cache, where SmolLM2 is kept converted
    env = {k: v for k, v in rehearsal_env(hub, "", work / "runs").items() if k not in ("DOMAINTUNE_PROFILE", "DOMAINTUNE_CACHE")}
    env |= {k: os.environ[k] for k in ("DOMAINTUNE_CACHE",) if k in os.environ}
    # One update a task: what is checked is that nothing calls the GPU (a second update calls nothing the first did not), and
    # the cpu profile's models (SmolLM2 in 4-bit, MiniLM) are the slowest of all the rehearsals' at two updates.
    one_update = 'TRAIN_ARGS = ("--max-steps", "1")\n'
    started[P100] = _start([sys.executable, "-c", FAKE_P100 + one_update + DRIVER + ENV_DRIVER, "qa", "classify"], env, work, work)
    yield from _all_started(started)


def test_p100_trains_what_t4_trains():
    "Every task's p100 configuration, full and rehearsed, is t4's but for its name: the t4 rehearsal below runs it."
    from dataclasses import replace
    for task in ("qa", "classify", "summarize"):
        for rehearsal in (False, True):
            p100, t4 = make_config(task, "p100", rehearsal=rehearsal), make_config(task, "t4", rehearsal=rehearsal)
            assert replace(p100, profile="t4") == t4, f"{task}: p100 differs from t4: put p100 back in CLI_PROFILES"
    assert set(GPU_PROFILES) == set(CLI_PROFILES) | {"p100"}


@pytest.mark.parametrize("profile", CLI_PROFILES)
def test_every_task_rehearses_through_the_command_line(profile, hub, cli_rehearsals):
    "train, evaluate and generate for qa, classify and summarize, with the profile's models, precision, optimizer and data."
    started = cli_rehearsals[profile]
    tmp_path = started[1]  # the rehearsal's working directory holds its logs and its runs
    r = _finish(started, timeout=1500)
    line = next((l for l in r.stdout.splitlines() if l.startswith("REHEARSAL ")), None)
    assert line, f"rc {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    result = json.loads(line[len("REHEARSAL "):])
    for task, steps in result.items():
        for step, out in steps.items(): assert out and out["code"] == 0, f"{profile} {task} {step}: {out and out['err']}"
        cfg = make_config(task, profile, rehearsal=False)
        saved = json.loads((tmp_path / "runs" / f"{task}-run" / "config.json").read_text())["config"]
        assert (saved["model"], saved["precision"], saved["optimizer"], saved["batch_size"], saved["grad_accum"], saved["max_length"]) == \
               (cfg.model, cfg.precision, cfg.optimizer, cfg.batch_size, cfg.grad_accum, cfg.max_length)
        assert saved["extra"]["rehearsal"]["records"] > 0
        metrics = json.loads(steps["train"]["out"].strip().splitlines()[-1])["metrics"]
        assert metrics["substitutions"]["precision"] == dict(asked=cfg.precision, used="fp32", why="no CUDA GPU")
        assert metrics["substitutions"]["optimizer"]["used"] == "adamw_torch" and "On this machine:" in steps["train"]["out"]
        if task == "qa": assert metrics["fit"].startswith("at chance")  # random weights: no better than guessing over the vocabulary
        if task == "summarize": assert metrics["data_source"] == "knkarthick/dialogsum"
        if task == "qa":  # advise compared every system with the profile's model, fine-tuned at its precision and optimizer
            advice = json.loads((tmp_path / "runs" / "qa-advice" / "advice.json").read_text())
            assert (advice["model"], advice["profile"], advice["recommended"] in advice["systems"]) == (cfg.model, profile, True)
            assert len(advice["systems"]) == 6 and advice["key_facts"] is not None
    assert any(f"/{REGISTRY[make_config('summarize', profile).model].hub_id}/resolve/" in q for q in hub.requests)
    assert any("/datasets/knkarthick/dialogsum/resolve/" in q for q in hub.requests)
    if make_config("qa", profile).model == "falcon-rw-1b":  # main holds pickle weights only: downloaded, converted, loaded from the copy
        assert any(q.startswith("GET /tiiuae/falcon-rw-1b/resolve/") and "/pytorch_model.bin 200" in q for q in hub.requests)
        assert (tmp_path / "cache" / "models" / "falcon-rw-1b" / "model.safetensors").is_file()


def test_a_gpu_the_pytorch_build_cannot_run_is_refused_with_the_fix(cli_rehearsals):
    """Kaggle's P100 under a torch build without sm_60 kernels, no profile set: `env` says what happened and what to do, and qa
    and classify train, evaluate and generate on the cpu profile without a traceback (a CUDA call would fail: no CUDA here)."""
    started = cli_rehearsals[P100]
    r = _finish(started, timeout=1500)
    out = {l.split(" ", 1)[0]: json.loads(l.split(" ", 1)[1]) for l in r.stdout.splitlines() if l.startswith(("REHEARSAL ", "ENV "))}
    assert set(out) == {"REHEARSAL", "ENV"}, f"rc {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    text, info = out["ENV"]["text"]["out"], json.loads(out["ENV"]["json"]["out"])
    assert "profile: cpu" in text and "1 x Tesla P100-PCIE-16GB" in text
    assert "no kernels for the Tesla P100-PCIE-16GB (compute capability 6.0; the build carries sm_75, sm_80" in text
    assert "On Kaggle: Settings > Accelerator > GPU T4 x2" in text and "(DOMAINTUNE_PROFILE=cpu)" in text
    assert (info["profile"], info["hardware"]["cuda"], info["hardware"]["cuda_usable"]) == ("cpu", True, False)
    assert info["gpu_advice"] in text
    for task, steps in out["REHEARSAL"].items():
        for step, o in steps.items(): assert o and o["code"] == 0 and "Traceback" not in o["err"], f"{task} {step}: {o and o['err']}"
        saved = json.loads((started[1] / "runs" / f"{task}-run" / "config.json").read_text())["config"]
        assert (saved["profile"], saved["precision"], saved["max_steps"]) == ("cpu", "fp32", 1)
    assert set(out["REHEARSAL"]) == {"qa", "classify"} and "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def lesson_rehearsals(hub, tmp_path_factory):
    """The lessons rehearsed under `LESSON_PROFILE`, in `SHARDS` processes started at once (every other lesson each), each on its
    own copy of the notebooks (their closing export cell then writes there)."""
    started = {}
    for shard in range(SHARDS):
        work = tmp_path_factory.mktemp(f"lessons-{LESSON_PROFILE}-{shard}")
        (work / "nbs").mkdir(); shutil.copy(ROOT / "pyproject.toml", work)
        mine = NOTEBOOKS[shard::SHARDS]
        for nb in mine: with_solutions(nb, work / "nbs" / nb.name)  # each lesson, then its exercise solutions in its kernel
        cmd = [sys.executable, "-c", RUNNER, *(str(work / "nbs" / nb.name) for nb in mine)]
        env = rehearsal_env(hub, LESSON_PROFILE, work / "runs") | {"DOMAINTUNE_LESSON_RUNS": str(work / "lesson-runs")}  # shards share no run
        started[shard] = _start(cmd, env, work / "nbs", work)
    yield from _all_started(started)


def test_every_lesson_rehearses(lesson_rehearsals):
    """Every lesson runs top to bottom under the profile, its `#| gpu` cells included (`#| slow` ones left out, as in the smoke
    run), and then its exercise solutions (`nbs/solutions/`), in the lesson's kernel, each asserting what the learner should see."""
    done, errors = {}, ""
    for shard in lesson_rehearsals:
        r = _finish(lesson_rehearsals[shard], timeout=2400)
        done |= dict(l.split()[1:3] for l in r.stdout.splitlines() if l.startswith("LESSON "))
        errors += r.stderr[-4000:]
    failed = [Path(nb).name for nb, status in done.items() if status != "ok"]
    assert len(done) == len(NOTEBOOKS) and not failed, f"under {LESSON_PROFILE}: failed {failed}, ran {len(done)} of {len(NOTEBOOKS)}\n{errors}"
