"""Every lesson notebook runs top to bottom (smoke profile, `#| slow` and `#| gpu` cells skipped), one case per notebook."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "nbs").glob("*.ipynb") if not p.name.startswith("_"))
RUNNER = "import sys, nbdev.test as t; ok, secs = t.test_nb(sys.argv[1], skip_flags=['slow', 'gpu']); sys.exit(0 if ok else 1)"
MAX_NOTEBOOK_BYTES = 1_500_000


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(nb, tmp_path):
    "The notebook executes without error under the smoke profile."
    env = {**os.environ, "DOMAINTUNE_PROFILE": "smoke", "DOMAINTUNE_RUNS": str(tmp_path / "runs"), "MPLBACKEND": "Agg"}
    r = subprocess.run([sys.executable, "-c", RUNNER, str(nb)], cwd=nb.parent, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{nb.name} failed:\n{r.stderr[-6000:]}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_small_and_clean(nb):
    "Committed notebooks stay small and carry no widget state."
    assert nb.stat().st_size < MAX_NOTEBOOK_BYTES, f"{nb.name} is {nb.stat().st_size:,} bytes: clear large outputs"
    meta = json.loads(nb.read_text(encoding="utf-8"))["metadata"]
    assert "widgets" not in meta, f"{nb.name} stores widget state: run nbdev-clean"


def test_lessons_open_the_same_way():
    "Every lesson has an H1 title, a one-line summary, a Colab badge and the setup cell before its code."
    for nb in NOTEBOOKS:
        if nb.name in ("index.ipynb", "90_testing.ipynb"): continue
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        head = "".join("".join(c["source"]) for c in cells[:4])
        assert head.lstrip().startswith("# "), f"{nb.name}: first cell must be an H1 title"
        assert "\n> " in head or head.count(">") >= 1, f"{nb.name}: needs a `>` one-line summary"
        assert "colab.research.google.com" in head, f"{nb.name}: needs an Open in Colab badge"
        assert "environment()" in head, f"{nb.name}: needs the setup cell that shows versions and hardware"
