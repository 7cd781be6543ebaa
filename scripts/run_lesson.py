"""Run a lesson top to bottom followed by its exercise solutions (`nbs/solutions/<lesson>.ipynb`) in one kernel, under the
profile in DOMAINTUNE_PROFILE (default: smoke), as the test suite's lesson rehearsal does. Usage: python scripts/run_lesson.py nbs/02_qlora.ipynb"""
import os, sys, tempfile
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from nbpaths import with_solutions

if __name__ == "__main__":
    os.environ.setdefault("DOMAINTUNE_PROFILE", "smoke"); os.environ.setdefault("MPLBACKEND", "Agg")
    import nbdev.test as t
    lesson = Path(sys.argv[1]).resolve()
    with tempfile.TemporaryDirectory(dir=lesson.parent, prefix=".run-") as d:  # beside the lesson: its relative paths hold
        ok, secs = t.test_nb(str(with_solutions(lesson, Path(d) / lesson.name)), skip_flags=["slow"])
    print(f"{lesson.name}: {'ok' if ok else 'FAILED'} in {secs:.0f}s"); sys.exit(0 if ok else 1)
