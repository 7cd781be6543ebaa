"""Where the notebooks are: the lessons (`nbs/NN_*.ipynb`, in course order), the reference notebooks (`nbs/reference/`,
the plumbing the lessons import), and the landing page (`nbs/index.ipynb`, rendered into the README)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "nbs").glob("[0-9]*.ipynb"))
REFERENCE = sorted((ROOT / "nbs" / "reference").glob("*.ipynb"))
INDEX = ROOT / "nbs" / "index.ipynb"
NOTEBOOKS = LESSONS + REFERENCE + [INDEX]
SOLUTIONS = ROOT / "nbs" / "solutions"  # one notebook per lesson with exercises: `solutions/<lesson>.ipynb`


def solutions_for(lesson: Path) -> Path:
    "The notebook holding `lesson`'s exercise solutions."
    return SOLUTIONS / lesson.name


def with_solutions(lesson: Path, dest: Path) -> Path:
    """Write to `dest` the lesson followed by its solutions' cells: run top to bottom, the solutions run once, in the lesson's
    own kernel after the lesson, as a learner who worked through it would run them (the lesson is not executed twice)."""
    import json
    nb = json.loads(lesson.read_text(encoding="utf-8"))
    sol = solutions_for(lesson)
    if sol.is_file(): nb["cells"] += json.loads(sol.read_text(encoding="utf-8"))["cells"]
    dest.write_text(json.dumps(nb), encoding="utf-8")
    return dest
