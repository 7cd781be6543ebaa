"""bench/gpu_check.py on this CPU: its dry run (tiny configs of phi-2 and falcon-rw-1b through the course's QLoRA path),
the plan and time budget of a real run, what a cut by the budget is called, where the work folder goes, the library
versions against pyproject.toml, and the bundle that travels to a GPU machine. Nothing here needs a GPU or the network."""
import contextlib, io, json, math, shlex, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path
import pytest

from benchscripts import HEADER, ROOT, script
GPU_STEPS = {"build", "config", "load", "train", "save_adapter", "reload", "generate", "merge"}


# ---------------------------------------------------------------- the dry run

@pytest.fixture(scope="module")
def gpu_dry(tmp_path_factory) -> tuple[dict, Path, str]:
    "One dry run of bench/gpu_check.py: tiny phi-2 and falcon-rw-1b configs through the t4 profile's path, on the CPU; and what it printed."
    out, printed = tmp_path_factory.mktemp("gpu-check"), io.StringIO()
    with contextlib.redirect_stdout(printed): returned = script("gpu_check").main(["--dry-run", "--profiles", "t4", "--out", str(out)])
    d = json.loads((out / "gpu.json").read_text(encoding="utf-8"))
    for k in HEADER: assert d[k], f"gpu.json lacks {k}"
    assert d["runs"] == returned["runs"]
    return d, out, printed.getvalue()


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_step_through_the_course(gpu_dry):
    d, _, _ = gpu_dry
    assert d["dry_run"] is True and d["command"].startswith("python bench/gpu_check.py --dry-run")
    assert d["bitsandbytes"]["source"] == "installed" and d["hidden_packages"] == ["datasets", "rouge_score"]
    assert d["source"]["package_version"] and d["gpu"] is None and d["steps"] == 3
    assert d["status"] == "ok" and d["ok"] is True and d["failed"] == d["incomplete"] == d["skipped"] == []
    assert d["plan"]["mode"] == "full" and d["plan"]["pairs"] == [["t4", "phi-2"], ["t4", "falcon-rw-1b"]] and "estimate" not in d["plan"]
    assert [(r["profile"], r["model"], r["precision"]) for r in d["runs"]] == [("t4", "phi-2", "fp16"), ("t4", "falcon-rw-1b", "fp16")]
    for r in d["runs"]:
        assert r["process"]["returncode"] == 0 and r["device"] == {"cuda": False}
        assert r["imported"] == [], "the check must run without datasets and rouge_score"
        assert set(r["steps"]) == GPU_STEPS, "the first pair of each model builds it"
        for name, s in r["steps"].items():
            assert "traceback" not in s and s["seconds"] >= 0 and s["status"] == "ok", (r["model"], name, s.get("error"))
            failed = {k for k, v in s.get("checks", {}).items() if v is False}
            assert failed == set(), (r["model"], name, failed)
        t = r["steps"]["train"]
        assert t["global_step"] == 3 and len(t["losses"]) == 3 and all(math.isfinite(x) for x in t["losses"])
        assert t["tokens"] == 3 * 32 and t["tokens_seen_by_trainer"] == t["tokens"], "every example is max_length long: no padding"
        # the CPU substitutions are the course's own (qlora.training_arguments, compute_dtype), and reported
        assert t["substitutions"] == {"optim": ["paged_adamw_8bit", "adamw_torch"], "compute_dtype": ["fp16", "torch.float32"]}
        assert t["optimizer_class"] == "AdamW" and t["gradient_checkpointing"] is True
        assert t["estimate"]["arguments"]["batch_size"] == 1 and t["estimate"]["parts_mb"]["total"] > 0
        assert "peak_allocated_mb" not in t and "estimate_error_pct" not in t, "no GPU figure without a GPU"
        assert r["steps"]["load"]["gradient_checkpointing"] is True and r["steps"]["load"]["unquantized_param_dtypes"] == ["torch.float32"]
        assert r["steps"]["save_adapter"]["checks"] == {"adapter_saved": True, "base_not_saved": True}
        assert r["steps"]["reload"]["model_class"] == "PeftModelForCausalLM" and r["steps"]["reload"]["adapter_max_abs_diff"] == 0.0
        g = r["steps"]["generate"]
        assert g["prompts"] == 3 and g["one_by_one_prompts"] == 2 and r["steps"]["merge"]["checks"]["plain_model"] is True
    phi = d["runs"][0]
    assert phi["ok"] and phi["steps"]["load"]["linear4bit_layers"] == 2 * 6 and phi["steps"]["load"]["quant_type"] == "nf4"
    assert phi["steps"]["build"]["architecture"] == "PhiForCausalLM" and d["runs"][1]["steps"]["build"]["architecture"] == "FalconForCausalLM"
    assert [row["model"] for row in d["summary"]] == ["phi-2", "falcon-rw-1b"]


@pytest.mark.slow
def test_gpu_check_dry_run_prints_the_versions_first_and_works_on_a_disk(gpu_dry):
    "The library versions against pyproject.toml come first; the work folder is in the repository, on a filesystem that runs code."
    d, _, printed = gpu_dry
    lines = printed.splitlines()
    assert lines[0].startswith("versions against pyproject.toml: torch ") and lines[1] == "versions: no mismatch"
    assert lines[2].startswith("work folder: ") and lines[3].startswith("plan: full, t4/phi-2, t4/falcon-rw-1b, 3 steps per pair")
    assert lines.index("t4 / phi-2") == 4 and lines[-1] == "gpu_check: ok"
    tf = d["requirements"]["transformers"]
    assert tf["required"].startswith(">=5.") and tf["found"] == d["versions"]["transformers"] and tf["ok"] is True
    assert tf["group"] == "dependencies" and tf["used_by_check"] is True and d["version_mismatches"] == []
    w = d["work_placement"]
    assert Path(d["work_dir"]).parent == ROOT / "bench" / "gpu_work" and w["path"] == d["work_dir"]
    assert w["ok"] and w["exec"] and not w["tmpfs"] and not w["dev_shm"] and w["fstype"] not in ("tmpfs", "ramfs")


def test_gpu_check_real_configs_have_the_course_shapes():
    "The configs written in the script build phi-2 and falcon-rw-1b at the size lesson 00's SHAPES gives (on the meta device)."
    import torch
    from transformers import AutoModelForCausalLM
    from domaintune_course.costs import SHAPES
    gc = script("gpu_check")
    for name in gc.CONFIGS:
        with torch.device("meta"): m = AutoModelForCausalLM.from_config(gc.model_config(name, dry_run=False))
        assert gc.unique_params(m) == pytest.approx(SHAPES[name].params, rel=1e-4), name
        assert (m.config.hidden_size, m.config.num_hidden_layers, m.config.vocab_size) == (SHAPES[name].hidden, SHAPES[name].layers, SHAPES[name].vocab)


@pytest.mark.slow
def test_gpu_check_summary_says_no_gpu_figure_was_measured(gpu_dry):
    d = gpu_dry[0]
    text = script("run_all").gpu_md(d)
    assert "no GPU figure measured" in text and "phi-2" in text and "falcon-rw-1b" in text
    assert f"Overall: **{d['status']}**" in text


def test_gpu_check_without_a_gpu_says_how_to_check_the_script(tmp_path):
    "Run for real on a machine without CUDA, it writes why and the fix, and trains nothing."
    import torch
    if torch.cuda.is_available(): pytest.skip("this machine has a GPU")
    d = script("gpu_check").main(["--out", str(tmp_path)])
    assert d["ok"] is False and d["status"] == "failed" and "--dry-run" in d["error"] and d["runs"] == []
    assert json.loads((tmp_path / "gpu.json").read_text())["error"] == d["error"]


# ---------------------------------------------------------------- the plans and the time budget

def test_gpu_check_plans_end_within_their_limits():
    "--quick: one pair, 10 steps, stopped before 4 minutes; the full run: four pairs, stopped before 8; both estimated well inside."
    from domaintune_course.costs import SHAPES
    gc = script("gpu_check")
    quick, full = gc.plan(quick=True, dry_run=False), gc.plan(quick=False, dry_run=False)
    assert quick["mode"] == "quick" and quick["pairs"] == [["t4", "falcon-rw-1b"]] and quick["steps"] == 10 < full["steps"] == 20
    assert full["pairs"] == [["t4", "phi-2"], ["t4", "falcon-rw-1b"], ["l4", "phi-2"], ["l4", "falcon-rw-1b"]]
    assert quick["hard_stop_seconds"] == quick["budget_seconds"] + gc.GRACE <= 4 * 60 - 20
    assert full["hard_stop_seconds"] == full["budget_seconds"] + gc.GRACE <= 8 * 60 - 40
    for p in (quick, full):
        assert p["estimate"]["total_seconds"] < 0.8 * p["budget_seconds"], p["mode"]
    rows = full["estimate"]["pairs"]
    assert [r["pair"] for r in rows] == ["t4/phi-2", "t4/falcon-rw-1b", "l4/phi-2", "l4/falcon-rw-1b"]
    assert [r["build"] > 0 for r in rows] == [True, True, False, False], "each model is built once"
    assert rows[0]["tflop_per_step"] == round(6 * SHAPES["phi-2"].params * 512 / 1e12, 1), "6 x params x tokens (t4: 1 x 512)"
    assert rows[2]["tflop_per_step"] == round(6 * SHAPES["phi-2"].params * 1024 / 1e12, 1), "l4: 2 x 512 tokens a step"
    assert gc.plan(quick=True, dry_run=True)["steps"] == 3 and "estimate" not in gc.plan(quick=True, dry_run=True)


def test_gpu_check_quick_dry_run_without_time_for_a_pair_is_incomplete(tmp_path, capsys):
    "--quick plans one pair; a budget too short to start it skips it with the reason, and the check is incomplete, not failed."
    d = script("gpu_check").main(["--dry-run", "--quick", "--budget", "1", "--out", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("versions against pyproject.toml:") and lines[3].startswith("plan: quick, t4/falcon-rw-1b, 3 steps")
    assert d["quick"] is True and d["plan"]["pairs"] == [["t4", "falcon-rw-1b"]] and len(d["runs"]) == 1
    r = d["runs"][0]
    assert r["skipped_for"] == "time" and r["skipped"].startswith("not started: ") and "of the 1 s budget left" in r["skipped"]
    assert d["status"] == "incomplete" and d["ok"] is False and d["failed"] == [] and d["incomplete"] == ["t4/falcon-rw-1b"]
    assert json.loads((tmp_path / "gpu.json").read_text())["status"] == "incomplete" and lines[-1].startswith("gpu_check: incomplete")


def test_gpu_check_steps_record_each_failure_on_its_own():
    gc = script("gpu_check")
    rec = {}
    s = gc.Steps(rec, deadline=time.time() + 60, log=lambda line: None)
    s.run("raises", lambda: 1 / 0)
    s.run("check_fails", lambda: (2, dict(checks=dict(fine=True, broken=False))))
    s.run("after_raise", lambda: (3, {}), needs=("raises",))
    assert s.run("after_check", lambda: (4, {}), needs=("check_fails",)) == 4, "a failed check still hands its value on"
    assert rec["raises"]["ok"] is False and rec["raises"]["status"] == "failed" and rec["raises"]["error"].startswith("ZeroDivisionError")
    assert rec["check_fails"]["ok"] is False and rec["check_fails"]["error"] == "check(s) failed: broken"
    assert rec["after_raise"] == {"ok": None, "status": "skipped", "skipped": "needs raises"} and rec["after_check"]["status"] == "ok"
    late = {}
    gc.Steps(late, deadline=time.time() - 1, log=lambda line: None).run("x", lambda: (1, {}))
    assert late["x"] == {"ok": None, "status": "skipped", "skipped": "time budget spent"}


def test_gpu_check_a_step_cut_by_the_deadline_is_incomplete_not_failed():
    "The deadline's alarm stops the running step: it is incomplete and the next is skipped; a library's timeout past it is a cut too."
    gc = script("gpu_check")
    rec, previous = {}, signal.getsignal(signal.SIGALRM)

    def slow():
        for _ in range(400): time.sleep(0.05)  # 20 s, unless the alarm cuts it
        return 1, {}
    try:
        s = gc.Steps(rec, deadline=time.time() + 0.3, log=lambda line: None)
        gc.arm_deadline(s.deadline)
        assert s.run("train", slow) is None
        s.run("save_adapter", lambda: (2, {}), needs=("train",))
    finally: signal.setitimer(signal.ITIMER_REAL, 0); signal.signal(signal.SIGALRM, previous)
    assert rec["train"]["ok"] is None and rec["train"]["status"] == "incomplete" and rec["train"]["seconds"] < 15
    assert rec["train"]["skipped"].startswith("cut at the time budget's end") and "error" not in rec["train"]
    assert rec["save_adapter"] == {"ok": None, "status": "skipped", "skipped": "time budget spent"}

    def times_out():
        time.sleep(0.2); raise TimeoutError("waited too long")
    cut, early = {}, {}
    gc.Steps(cut, deadline=time.time() + 0.05, log=lambda line: None).run("generate", times_out)
    gc.Steps(early, deadline=time.time() + 60, log=lambda line: None).run("generate", times_out)
    assert cut["generate"]["status"] == "incomplete" and "TimeoutError" in cut["generate"]["skipped"]
    assert early["generate"]["status"] == "failed" and early["generate"]["ok"] is False, "a timeout well inside the budget is a failure"


def test_gpu_check_keeps_what_a_stopped_pair_finished(tmp_path):
    "A pair still running at the budget's end is stopped: incomplete, what it finished kept; a process that crashed is failed."
    gc = script("gpu_check")
    spec = dict(profile="t4", model="phi-2", dry_run=True, steps=3, max_length=32, deadline=time.time() + 60, prompts=3, new_tokens=8,
                one_by_one=2, work=str(tmp_path / "w"), model_dir=str(tmp_path / "phi-2"), hide=["datasets"], built_params=None)
    r = gc.run_pair(spec, tmp_path, timeout=2, env=gc.child_env(True, "0", tmp_path))
    assert r["process"]["returncode"] == "timed out" and r["ok"] is False and gc.status(r) == "incomplete"
    assert not any(s.get("ok") is False for s in r["steps"].values())
    # a record the child wrote before it was stopped: the step it was in is cut (incomplete), the finished ones are kept
    record = lambda: dict(profile="t4", model="phi-2", steps=dict(build=dict(ok=True, status="ok", seconds=1.0), load=dict(running=True)))
    stopped = gc.finish(record(), "timed out", 30.0, "log")
    assert stopped["steps"]["build"] == dict(ok=True, status="ok", seconds=1.0) and stopped["steps"]["load"]["status"] == "incomplete"
    assert stopped["steps"]["load"]["ok"] is None and "time budget" in stopped["steps"]["load"]["skipped"]
    assert stopped["stderr_tail"] == "log" and gc.status(stopped) == "incomplete"
    assert gc.status(gc.finish(record(), "stopped", 30.0, "log")) == "incomplete"
    crashed = gc.finish(record(), -9, 30.0, "log")
    assert crashed["steps"]["load"]["status"] == "failed" and "(-9)" in crashed["steps"]["load"]["error"] and gc.status(crashed) == "failed"
    assert gc.status(dict(steps=dict(load=dict(ok=True), train=dict(ok=None, status="skipped", skipped="time budget spent")))) == "incomplete"
    assert gc.status(dict(skipped="no bf16")) == "skipped" and gc.status(dict(ok=True, steps={})) == "ok"
    ok, failed = dict(ok=True, steps={}), dict(ok=False, steps=dict(load=dict(ok=False)), process=dict(returncode=0))
    assert gc.overall([ok, dict(skipped="no bf16", not_for_this_gpu=True)]) == "ok"
    assert gc.overall([ok, dict(skipped="not started", skipped_for="time")]) == "incomplete"
    assert gc.overall([failed, stopped]) == "failed" and gc.overall([]) == "failed"


# ---------------------------------------------------------------- the work folder

MOUNTS = """/dev/vda / ext4 rw,relatime 0 0
tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0
tmpfs /mnt/fake-tmp tmpfs rw,nosuid,noexec 0 0
/dev/vdb /mnt/fake-noexec ext4 rw,noexec,relatime 0 0
"""


def test_gpu_check_work_folder_is_on_a_disk_that_runs_code(monkeypatch):
    "Never /dev/shm, a tmpfs or a noexec mount (bitsandbytes' CUDA library is loaded from there), even where TMPDIR points to /dev/shm."
    gc = script("gpu_check")
    assert gc.placement(Path("/dev/shm/w"), MOUNTS)["problems"] == ["under /dev/shm", "on a tmpfs (memory)"]
    assert gc.placement(Path("/mnt/fake-tmp/w"), MOUNTS)["problems"] == ["on a tmpfs (memory)", "mounted noexec"]
    noexec = gc.placement(Path("/mnt/fake-noexec/w/site-packages"), MOUNTS)
    assert noexec["mount"] == "/mnt/fake-noexec" and noexec["exec"] is False and noexec["problems"] == ["mounted noexec"]
    disk = gc.placement(Path("/mnt/elsewhere/w"), MOUNTS)
    assert disk["ok"] and disk["mount"] == "/" and disk["fstype"] == "ext4"
    monkeypatch.setenv("TMPDIR", "/dev/shm"); monkeypatch.setattr(tempfile, "tempdir", None)
    d, place = gc.work_dir(None)
    try:
        assert d.parent == ROOT / "bench" / "gpu_work" and d.name.startswith("run-") and (d / ".lock").is_file()
        assert place["ok"] and place["exec"] and not place["dev_shm"] and not place["tmpfs"] and place["free_gib"] > 0
    finally: shutil.rmtree(d)
    with pytest.raises(SystemExit) as e: gc.work_dir(Path("/dev/shm/gpu-check-test"))
    assert "under /dev/shm" in str(e.value) and "Fix:" in str(e.value) and not Path("/dev/shm/gpu-check-test").exists()


def test_gpu_check_removes_run_folders_no_process_holds():
    "A run stopped from outside leaves its checkpoints: the next run removes them, but not a live run's folder."
    gc = script("gpu_check")
    base = ROOT / "bench" / "gpu_work"; base.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="test-", dir=base))
    try:
        stale = root / "run-stale"; (stale / "models").mkdir(parents=True); (stale / ".lock").touch()
        live, _ = gc.work_dir(root)
        other, _ = gc.work_dir(root)
        assert not stale.exists() and live.is_dir() and other.is_dir(), "a folder whose lock is held stays"
    finally: shutil.rmtree(root)


# ---------------------------------------------------------------- versions against pyproject.toml

def test_gpu_check_reports_versions_outside_pyproject(tmp_path):
    "Every package pyproject.toml names is checked against its specifier as written; mismatches are listed."
    gc = script("gpu_check")
    pp = tmp_path / "pyproject.toml"
    pp.write_text('[project]\nname = "x"\ndependencies = ["torch>=99", "transformers>=5.0,<99", "dtcheck-absent>=1", "domaintune-course[dev]"]\n'
                  '[project.optional-dependencies]\nx = ["peft<0.1", "pytest>=1; python_version < \'3\'"]\n', encoding="utf-8")
    reqs = gc.requirements(pp)
    torch = reqs["torch"]
    assert torch["required"] == ">=99" and torch["found"] and torch["ok"] is False and torch["used_by_check"] is True
    assert reqs["transformers"]["ok"] is True and reqs["transformers"]["required"] == ">=5.0,<99"
    assert reqs["peft"]["group"] == "extra:x" and reqs["peft"]["ok"] is False
    assert reqs["dtcheck-absent"] == dict(required=">=1", group="dependencies", found=None, ok=None, used_by_check=False)
    assert "pytest" not in reqs and "domaintune-course" not in reqs, "a marker that does not hold; the project itself"
    assert reqs["tokenizers"]["required"] == "any" and reqs["tokenizers"]["group"].startswith("used by the check")
    problems = gc.mismatches(reqs)
    assert problems == [f"torch {torch['found']} found, pyproject.toml (dependencies) requires >=99",
                        f"peft {reqs['peft']['found']} found, pyproject.toml (extra:x) requires <0.1"]
    lines = gc.version_report(reqs, problems).splitlines()
    assert lines[0].startswith(f"versions against pyproject.toml: torch {torch['found']} (>=99) MISMATCH; transformers ")
    assert lines[1:] == [f"VERSION MISMATCH: {p}" for p in problems]


def test_gpu_check_flags_the_gpu_machines_transformers(monkeypatch):
    "The GPU machine's transformers 5.17 is below the project's bound: reported, torch 2.11's CUDA build is not; a missing bitsandbytes is."
    gc = script("gpu_check")
    there = {"torch": "2.11.0+cu130", "transformers": "5.17.0", "peft": "0.21.0", "accelerate": "1.15.0", "safetensors": "0.8.0",
             "tokenizers": "0.23.2"}
    monkeypatch.setattr(gc, "installed_version", there.get)
    reqs = gc.requirements()
    assert reqs["torch"]["ok"] is True and reqs["transformers"]["ok"] is False and reqs["datasets"]["ok"] is None
    problems = gc.mismatches(reqs)
    assert f"transformers 5.17.0 found, pyproject.toml (dependencies) requires {reqs['transformers']['required']}" in problems
    assert f"bitsandbytes not installed (required {reqs['bitsandbytes']['required']})" in problems
    assert not any(p.startswith(("torch ", "datasets ", "rouge-score ")) for p in problems), "only the check's own packages count when missing"


# ---------------------------------------------------------------- the bundle that travels, and the prepared command

def wheel(path: Path, name: str, version: str, code: str) -> Path:
    "A minimal pure-Python wheel of package `name`."
    import zipfile
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": code, f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for f, text in files.items(): z.writestr(f, text)
    return path


def test_gpu_check_installs_a_missing_package_from_its_bundle(tmp_path, monkeypatch):
    "Without a package index: a wheel in the bundle folder is installed into the work folder, which the runs then import from."
    import importlib, os
    gc = script("gpu_check")
    monkeypatch.setattr(sys, "path", list(sys.path)); monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    bundle = tmp_path / "bundle"; bundle.mkdir()
    wheel(bundle / "dtcheck_probe-1.2-py3-none-any.whl", "dtcheck_probe", "1.2", "VALUE = 7\n")
    info = gc.ensure_package("dtcheck_probe", bundle, tmp_path / "work")
    try:
        assert info["source"] == "bundle" and info["version"] == "1.2" and info["installed_with"].startswith("pip install --no-deps")
        assert info["path"] == str(tmp_path / "work" / "site-packages") and info["placement"]["path"] == str(Path(info["path"]).resolve())
        assert importlib.import_module("dtcheck_probe").VALUE == 7
        assert os.environ["PYTHONPATH"] == os.pathsep.join([info["path"], "/elsewhere"]), "the runs' processes see it too"
        assert gc.ensure_package("dtcheck_probe", bundle, tmp_path / "again")["source"] == "installed"
    finally: sys.modules.pop("dtcheck_probe", None)
    missing = gc.ensure_package("dtcheck_absent", bundle, tmp_path / "work")
    assert missing["source"] == "missing" and "make gpu-check-bundle" in missing["error"]


def test_gpu_check_bundle_over_60_mib_is_refused(tmp_path, capsys):
    "`make gpu-check-bundle`'s last step: the download becomes the bundle only at 60 MiB or less, and says its size."
    gc = script("gpu_check")
    dest, new = tmp_path / "gpu_bundle", tmp_path / "gpu_bundle.partial"
    dest.mkdir(); (dest / "old.whl").write_bytes(b"old"); new.mkdir()
    with open(new / "huge.whl", "wb") as f: f.truncate(61 * 2**20)  # sparse: 61 MiB by its size, no disk used
    with pytest.raises(SystemExit) as e: gc.main(["--seal-bundle", str(new), str(dest)])
    assert "refused" in str(e.value) and "61.0 MiB" in str(e.value) and "60 MiB limit" in str(e.value)
    assert not new.exists() and [p.name for p in dest.iterdir()] == ["old.whl"], "the old bundle is left as it was"
    new.mkdir(); (new / "bitsandbytes-0-py3-none-any.whl").write_bytes(b"x" * 2**20)
    info = gc.main(["--seal-bundle", str(new), str(dest)])
    assert info["mib"] == 1.0 and info["files"] == ["bitsandbytes-0-py3-none-any.whl"] and not new.exists()
    assert [p.name for p in dest.iterdir()] == ["bitsandbytes-0-py3-none-any.whl"]
    assert f"{dest}: 1.0 MiB in 1 file(s) (limit 60 MiB)" in capsys.readouterr().out


def test_make_gpu_check_bundle_keeps_the_old_bundle_when_the_download_fails(tmp_path):
    "`make gpu-check-bundle` downloads into a folder aside and replaces the bundle only once sealed: a failed download leaves the old one."
    bundle = tmp_path / "gpu_bundle"; bundle.mkdir(); (bundle / "old.whl").write_bytes(b"old")
    r = subprocess.run(["make", "--no-print-directory", "gpu-check-bundle", f"GPU_BUNDLE={bundle}", "BNB_VERSION=0.0.0.dev999999",
                        f"PYTHON={sys.executable}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "bitsandbytes==0.0.0.dev999999" in r.stdout + r.stderr, r.stdout + r.stderr  # the download step ran, and failed
    assert [p.name for p in bundle.iterdir()] == ["old.whl"] and (bundle / "old.whl").read_bytes() == b"old", "the old bundle is left as it was"


def test_the_readmes_give_the_prepared_gpu_command():
    "One command for a GPU machine without network, the same in the script, README.md and bench/README.md, with room for a rerun."
    gc = script("gpu_check")
    cmd = next(line.strip() for line in gc.__doc__.splitlines() if line.strip().startswith("timeout "))
    for readme in (ROOT / "README.md", ROOT / "bench" / "README.md"):
        text = readme.read_text(encoding="utf-8")
        assert cmd in text and "make gpu-check-bundle" in text and "not run on a GPU yet" in text, readme
    argv = shlex.split(cmd)
    assert argv[0] == "timeout" and argv[2:4] == ["python3", "bench/gpu_check.py"]
    args = gc.parse(argv[4:])
    assert args.quick and args.bundle == Path("bench/gpu_bundle") and not args.dry_run
    assert gc.plan(args.quick, False)["hard_stop_seconds"] + 60 <= int(argv[1]) <= 5 * 60
