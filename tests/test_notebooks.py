"""Every notebook runs top to bottom, each once in the suite: the reference notebooks and the landing page here (smoke profile,
`#| slow` and `#| gpu` cells skipped), the lessons in `test_rehearsal.py` (every cell but `#| slow` ones, under the t4 profile
on tiny stand-ins of its models). At the cpu profile on the real small models every lesson ran in full for its committed
outputs (`make outputs`), and `test_outputs.py` fails when a lesson or a module it imports changed since that run."""
import json, os, re, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
from nbpaths import INDEX, LESSONS, NOTEBOOKS, REFERENCE
RUNNER = "import sys, nbdev.test as t; ok, secs = t.test_nb(sys.argv[1], skip_flags=['slow', 'gpu']); sys.exit(0 if ok else 1)"
MAX_NOTEBOOK_BYTES = 1_500_000


WORKERS = 2  # notebook runs side by side, each on one torch thread: both cores of a 2-core machine busy


def _run(nb: Path, runs: Path) -> subprocess.CompletedProcess:
    "Run `nb` top to bottom under the smoke profile in a process of its own, with its own runs directory."
    env = {**os.environ, "DOMAINTUNE_PROFILE": "smoke", "DOMAINTUNE_RUNS": str(runs), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", RUNNER, str(nb)], cwd=nb.parent, env=env, capture_output=True, text=True, timeout=900)


SMOKE_RUN = REFERENCE + [INDEX]  # the lessons run once, in the lesson rehearsal (see the docstring)


@pytest.fixture(scope="module")
def notebook_runs(request, tmp_path_factory):
    "The selected notebooks' runs, started `WORKERS` at a time when the first is asked for; notebook -> its future."
    chosen = [item.callspec.params["nb"] for item in request.session.items if getattr(item, "originalname", "") == "test_notebook_runs"]
    pool = ThreadPoolExecutor(WORKERS)
    futures = {nb: pool.submit(_run, nb, tmp_path_factory.mktemp(f"runs-{nb.stem}")) for nb in chosen}
    yield futures
    pool.shutdown(wait=False, cancel_futures=True)


@pytest.mark.slow
@pytest.mark.parametrize("nb", SMOKE_RUN, ids=[p.relative_to(p.parents[1] if p.parent.name == "reference" else p.parent).with_suffix("").as_posix() for p in SMOKE_RUN])
def test_notebook_runs(nb, notebook_runs):
    "The notebook executes without error under the smoke profile."
    r = notebook_runs[nb].result()
    assert r.returncode == 0, f"{nb.name} failed:\n{r.stderr[-6000:]}"


def test_every_notebook_runs_in_the_suite():
    "No notebook is left out: the smoke run here takes what the lesson rehearsal (every lesson) does not, and nothing twice."
    from test_rehearsal import NOTEBOOKS as REHEARSED
    assert sorted(SMOKE_RUN + REHEARSED) == sorted(NOTEBOOKS) and not set(SMOKE_RUN) & set(REHEARSED)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.relative_to(p.parents[1] if p.parent.name == "reference" else p.parent).with_suffix("").as_posix() for p in NOTEBOOKS])
def test_notebook_is_small_and_clean(nb):
    "Committed notebooks stay small and carry no widget state."
    assert nb.stat().st_size < MAX_NOTEBOOK_BYTES, f"{nb.name} is {nb.stat().st_size:,} bytes: clear large outputs"
    meta = json.loads(nb.read_text(encoding="utf-8"))["metadata"]
    assert "widgets" not in meta, f"{nb.name} stores widget state: run nbdev-clean"


def test_lessons_open_the_same_way():
    "Every lesson has an H1 title, a one-line summary, a Colab badge and the setup cell before its code."
    for nb in LESSONS:
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        head = "".join("".join(c["source"]) for c in cells[:4])
        assert head.lstrip().startswith("# "), f"{nb.name}: first cell must be an H1 title"
        assert "\n> " in head or head.count(">") >= 1, f"{nb.name}: needs a `>` one-line summary"
        assert "colab.research.google.com" in head, f"{nb.name}: needs an Open in Colab badge"
        assert "setup_report()" in head, f"{nb.name}: needs the setup cell that shows versions and hardware"


# ---- the shape of a lesson: objectives, costs, short cells, recap, exercises with checked solutions -------------------

LESSON_MAX_LINES = 25
ASSERTS = re.compile(r"\b(test_eq|test_ne|test_close|test_fail|test_warns)\(|\bassert\b")


def _cells(nb: Path) -> list[dict]: return json.loads(nb.read_text(encoding="utf-8"))["cells"]
def _src(cell: dict) -> str: return "".join(cell["source"])


def test_no_lesson_cell_is_long():
    "A lesson teaches in short cells: none over 25 lines (plumbing lives in the reference notebooks)."
    long = {nb.name: [len(_src(c).splitlines()) for c in _cells(nb) if c["cell_type"] == "code" and len(_src(c).splitlines()) > LESSON_MAX_LINES]
            for nb in LESSONS}
    assert not any(long.values()), f"code cells over {LESSON_MAX_LINES} lines (their lengths): { {k: v for k, v in long.items() if v} }"


@pytest.mark.parametrize("nb", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_opens_with_objectives_and_costs(nb):
    "What you will learn (3 to 5 points), what it assumes (earlier lessons only), and a table of what it costs per profile."
    cells = _cells(nb)
    learn = next((_src(c) for c in cells if c["cell_type"] == "markdown" and "## What you will learn" in _src(c)), None)
    assert learn, f"{nb.name}: no '## What you will learn' cell"
    bullets = re.findall(r"^- ", learn.split("## What you will learn")[1].split("**Assumes:**")[0], re.M)
    assert 3 <= len(bullets) <= 5, f"{nb.name}: {len(bullets)} learning points (3 to 5)"
    assert "**Assumes:**" in learn, f"{nb.name}: say what the lesson assumes (**Assumes:**)"
    earlier = {p.name for p in LESSONS if p.name < nb.name}
    later = [l for l in re.findall(r"\((\d\d\w*\.ipynb)\)", learn.split("**Assumes:**")[1]) if l not in earlier]
    assert not later, f"{nb.name} assumes lessons that come after it (or do not exist): {later}"
    assert any(f'lesson_costs("{nb.stem}")' in _src(c) for c in cells if c["cell_type"] == "code"), f"{nb.name}: show lesson_costs(\"{nb.stem}\")"


@pytest.mark.parametrize("nb", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_closes_with_recap_and_checked_exercises(nb):
    "A recap, then 3 to 5 exercises, each followed by its collapsed solution cell, which asserts what the learner should see."
    cells = _cells(nb)
    heads = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and re.search(r"^## (Recap|Exercises)", _src(c), re.M)]
    assert any("## Recap" in _src(cells[i]) for i in heads), f"{nb.name}: no '## Recap'"
    exercises = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and re.search(r"\*\*Exercise \d+\.\*\*", _src(c))]
    assert 3 <= len(exercises) <= 5, f"{nb.name}: {len(exercises)} exercises (3 to 5)"
    for n, i in enumerate(exercises, 1):
        assert f"**Exercise {n}.**" in _src(cells[i]), f"{nb.name}: exercises are numbered 1, 2, ... in order"
        sol = cells[i + 1] if i + 1 < len(cells) else None
        assert sol and sol["cell_type"] == "code" and _src(sol).startswith(f"# @title Solution {n}\n"), f"{nb.name}: exercise {n} needs its solution cell right after it"
        assert ASSERTS.search(_src(sol)), f"{nb.name}: solution {n} must assert what the learner should observe"
        assert sol["metadata"].get("jupyter", {}).get("source_hidden") and sol["metadata"].get("cellView") == "form", \
            f"{nb.name}: solution {n} is not collapsed (course.hide_solutions, which make outputs runs)"
        assert not ({"export", "exports", "slow", "gpu"} & {w for l in _src(sol).splitlines() if l.startswith("#|") for w in l[2:].split()}), \
            f"{nb.name}: solution {n} must run in the test suite and export nothing"
