"""Where the notebooks are: the lessons (`nbs/NN_*.ipynb`, in course order), the reference notebooks (`nbs/reference/`,
the plumbing the lessons import), and the landing page (`nbs/index.ipynb`, rendered into the README)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "nbs").glob("[0-9]*.ipynb"))
REFERENCE = sorted((ROOT / "nbs" / "reference").glob("*.ipynb"))
INDEX = ROOT / "nbs" / "index.ipynb"
NOTEBOOKS = LESSONS + REFERENCE + [INDEX]
