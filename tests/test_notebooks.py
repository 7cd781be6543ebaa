"""Every notebook runs top to bottom, each once in the suite: the reference notebooks and the landing page here (smoke profile,
`#| slow` and `#| gpu` cells skipped), the lessons in `test_rehearsal.py` (every cell but `#| slow` ones, under the t4 profile
on tiny stand-ins of its models). At the cpu profile on the real small models every lesson ran in full for its committed
outputs (`make outputs`), and `test_outputs.py` fails when a lesson or a module it imports changed since that run."""
import json, os, re, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
from nbpaths import INDEX, LESSONS, NOTEBOOKS, REFERENCE, SOLUTIONS, solutions_for
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
def test_lesson_closes_with_recap_and_exercises_the_learner_does(nb):
    """A recap with questions to check one's understanding, then 2 to 4 exercises, each followed by an empty cell for the
    learner; the solutions live in `nbs/solutions/<lesson>.ipynb` (run after the lesson by the rehearsal), not in the lesson."""
    cells = _cells(nb)
    recap = next((_src(c) for c in cells if c["cell_type"] == "markdown" and "## Recap" in _src(c)), "")
    assert recap, f"{nb.name}: no '## Recap'"
    check = next((_src(c) for c in cells if c["cell_type"] == "markdown" and "Check your understanding" in _src(c)), "")
    questions = re.findall(r"^\s*(?:-|\d+\.) .*\?\s*$", check, re.M)
    assert len(questions) >= 2, f"{nb.name}: the recap needs a 'Check your understanding' list of questions ({len(questions)} found)"
    exercises = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and re.search(r"\*\*Exercise \d+\.\*\*", _src(c))]
    assert 2 <= len(exercises) <= 4, f"{nb.name}: {len(exercises)} exercises (2 to 4)"
    for n, i in enumerate(exercises, 1):
        assert f"**Exercise {n}.**" in _src(cells[i]), f"{nb.name}: exercises are numbered 1, 2, ... in order"
        mine = cells[i + 1] if i + 1 < len(cells) else None
        assert mine and mine["cell_type"] == "code", f"{nb.name}: exercise {n} needs a code cell for the learner right after it"
        assert all(not l.strip() or l.lstrip().startswith("#") for l in _src(mine).splitlines()) and not mine.get("outputs"), \
            f"{nb.name}: exercise {n}'s cell must be left for the learner (comments only, no output)"
    assert not any(c["cell_type"] == "code" and re.match(r"#\s*(@title )?Solution \d", _src(c)) for c in cells), f"{nb.name}: solutions belong in {SOLUTIONS.name}/"
    sol = solutions_for(nb)
    assert sol.is_file(), f"{nb.name}: its solutions go in {sol.relative_to(ROOT)}"
    assert f"solutions/{nb.name}" in "".join(_src(cells[i]) for i in exercises) + "".join(_src(c) for c in cells[exercises[0] - 1:exercises[0]]), \
        f"{nb.name}: say where the solutions are (solutions/{nb.name})"
    solved = [c for c in _cells(sol) if c["cell_type"] == "code" and not _src(c).startswith("#| hide")]
    numbers = [int(m.group(1)) for c in solved if (m := re.match(r"# Solution (\d+)\b", _src(c)))]
    assert numbers == list(range(1, len(exercises) + 1)), f"{sol.name}: one '# Solution n' cell per exercise, in order (found {numbers})"
    for c in solved:
        assert ASSERTS.search(_src(c)), f"{sol.name}: {_src(c).splitlines()[0]} must assert what the learner should observe"
        assert not c.get("outputs"), f"{sol.name}: solutions are committed without outputs"
        assert not ({"export", "exports", "slow", "gpu"} & {w for l in _src(c).splitlines() if l.startswith("#|") for w in l[2:].split()}), \
            f"{sol.name}: solutions run in the test suite and export nothing"


def test_every_solutions_notebook_belongs_to_a_lesson():
    "No solutions notebook is left behind by a renamed or removed lesson."
    assert {p.name for p in SOLUTIONS.glob("*.ipynb")} <= {p.name for p in LESSONS}


# ---- the library out of view --------------------------------------------------------------------------------------------

MAX_SHOWN_EXPORT_LINES = 150
from domaintune_course.course import TITLE  # the one-line summary a collapsed cell shows (make outputs collapses by it)


def _directives(src: str) -> set:
    return {w for l in src.splitlines() if l.startswith("#|") for w in l[2:].replace(":", " ").split()}


def _collapsed(cell: dict) -> bool:
    "Collapsed in Jupyter and in Colab, with a one-line summary (`# @title ...`) shown in its place."
    meta = cell["metadata"]
    return bool(meta.get("jupyter", {}).get("source_hidden")) and meta.get("cellView") == "form" and bool(TITLE.search(_src(cell)))


def shown_export_lines(nb: Path) -> int:
    "Non-blank lines of exported code a learner sees in full (directives and collapsed cells not counted)."
    return sum(1 for c in _cells(nb) if c["cell_type"] == "code" and {"export", "exports"} & _directives(_src(c)) and not _collapsed(c)
               for l in _src(c).splitlines() if l.strip() and not l.startswith("#|"))


def test_library_code_shown_in_a_lesson_is_short():
    f"At most {MAX_SHOWN_EXPORT_LINES} lines of exported code shown in full per lesson: the rest lives in reference notebooks or collapsed cells."
    shown = {nb.stem: shown_export_lines(nb) for nb in LESSONS}
    assert max(shown.values()) <= MAX_SHOWN_EXPORT_LINES, {k: v for k, v in shown.items() if v > MAX_SHOWN_EXPORT_LINES}


def test_collapsed_cells_say_what_they_hold():
    "A collapsed cell shows a one-line summary (`# @title ...`), and a cell with a summary is collapsed (Colab and Jupyter)."
    for nb in LESSONS:
        for c in _cells(nb):
            if c["cell_type"] != "code": continue
            hidden = c["metadata"].get("jupyter", {}).get("source_hidden") or c["metadata"].get("cellView") == "form"
            assert bool(hidden) == _collapsed(c) == bool(TITLE.search(_src(c))), f"{nb.name}: {_src(c)[:80]!r}: collapse it with a `# @title` summary, both ways"


def test_shown_cells_use_public_names_and_hidden_cells_change_nothing():
    "No lesson cell imports a private name or carries an `_all_` list; a `#| hide` cell only rebuilds the package or cleans up."
    for nb in LESSONS:
        private = [f"{m}.{n}" for m, n in _package_imports(nb) if n.startswith("_")]
        assert not private, f"{nb.name}: imports private names {private}"
        for c in _cells(nb):
            if c["cell_type"] != "code": continue
            src = _src(c)
            assert not re.search(r"^_all_\s*=", src, re.M), f"{nb.name}: an `_all_` list: import the names where they are defined"
            if "hide" in _directives(src):
                body = [l for l in src.splitlines() if l.strip() and not l.startswith("#|")]
                rebuild, cleanup = "nbdev_export()" in src, all("rmtree" in l or l.startswith("import shutil") for l in body)
                assert rebuild or cleanup, f"{nb.name}: a hidden cell changes state the lesson depends on: show it\n{src[:200]}"


def _defined_in() -> dict:
    "(module, name) -> the notebook that defines it, read from the generated modules' `# %% ../nbs/...` cell markers."
    found, pkg = {}, ROOT / "domaintune_course"
    for py in pkg.rglob("*.py"):
        mod, where = "domaintune_course." + ".".join(py.relative_to(pkg).with_suffix("").parts), None
        for line in py.read_text(encoding="utf-8").splitlines():
            if m := re.match(r"# %% \S*?nbs/(\S+\.ipynb)", line): where = m.group(1); continue
            if where and (m := re.match(r"(?:async def|def|class) (\w+)|(\w+)\s*(?::[^=]*)?=", line)):
                found.setdefault((mod, m.group(1) or m.group(2)), where)
    return found


def _package_imports(nb: Path) -> list[tuple[str, str]]:
    "(module, name) of every `from domaintune_course... import name` in the notebook's code cells (magics left out)."
    import ast
    found = []
    for c in _cells(nb):
        if c["cell_type"] != "code": continue
        code = "\n".join(l for l in _src(c).splitlines() if not l.lstrip().startswith(("%", "!")))
        found += [(node.module, a.name) for node in ast.walk(ast.parse(code))
                  if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("domaintune_course") for a in node.names]
    return found


def test_no_lesson_uses_what_a_later_lesson_defines():
    "After the whole game (the first lesson), a lesson imports only what it, an earlier lesson or a reference notebook defines."
    defined, order = _defined_in(), {p.name: i for i, p in enumerate(LESSONS)}
    later = []
    for nb in LESSONS[1:]:
        for mod, name in _package_imports(nb):  # a star import takes the module's whole notebook
            srcs = {v for (m, _), v in defined.items() if m == mod} if name == "*" else {defined.get((mod, name))}
            later += [f"{nb.name}: {mod}.{name} (defined in {s})" for s in srcs if s in order and order[s] > order[nb.name]]
    assert not later, "forward references:\n" + "\n".join(later)
    assert len(defined) > 300  # the index was read


def test_every_lesson_says_what_it_builds_on():
    "Each lesson after the first links, after **Assumes:**, every earlier lesson whose names it imports."
    defined, order = _defined_in(), {p.name: i for i, p in enumerate(LESSONS)}
    for nb in LESSONS[1:]:
        used = {defined.get(imp) for imp in _package_imports(nb)} & (set(order) - {nb.name})
        learn = next(_src(c) for c in _cells(nb) if c["cell_type"] == "markdown" and "## What you will learn" in _src(c))
        listed = set(re.findall(r"\((\d\d\w*\.ipynb)\)", learn.split("**Assumes:**")[1]))
        assert used <= listed, f"{nb.name}: its Assumes line does not link {sorted(used - listed)}, whose names it imports"


def test_every_lesson_after_the_first_says_which_box_of_the_game_it_opens():
    "The whole game comes first; each later lesson's opening links it and says which part of it the lesson opens."
    assert LESSONS[0].name == "00_whole_game.ipynb"
    for nb in LESSONS[1:]:
        learn = next((_src(c) for c in _cells(nb) if c["cell_type"] == "markdown" and "## What you will learn" in _src(c)), "")
        assert "(00_whole_game.ipynb)" in learn, f"{nb.name}: say which box of the whole game (00_whole_game.ipynb) it opens"


def test_the_whole_game_is_short_at_the_cpu_lesson_budget():
    "The first lesson ran in under 4 minutes and 6 GB at the cpu profile when its outputs were made (bench/results/lessons.json)."
    run = json.loads((ROOT / "bench" / "results" / "lessons.json").read_text(encoding="utf-8"))["notebooks"].get(LESSONS[0].stem)
    assert run and run["ok"], f"{LESSONS[0].stem} has no measured run: make outputs LESSONS={LESSONS[0].stem}"
    assert run["seconds"] < 240 and run["peak_rss_mb"] < 6144, run
