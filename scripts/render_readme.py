"""Write README.md from nbs/index.ipynb (markdown cells as they are, code cells as fenced blocks).

nbdev's own `nbdev-readme` needs Quarto, which is not always installable; this keeps the two in step,
and tests/test_readme.py fails when they drift.
"""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = "<!-- Generated from nbs/index.ipynb by `make readme`: edit the notebook, not this file. -->\n\n"


def render(nb_path: Path = ROOT / "nbs" / "index.ipynb") -> str:
    "README text rendered from the landing-page notebook."
    parts = []
    for cell in json.loads(nb_path.read_text(encoding="utf-8"))["cells"]:
        src = "".join(cell["source"]).strip()
        if not src or src.startswith("#|"): continue
        parts.append(src if cell["cell_type"] == "markdown" else f"```python\n{src}\n```")
    return HEADER + "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    (ROOT / "README.md").write_text(render(), encoding="utf-8")
    sys.stdout.write("README.md written from nbs/index.ipynb\n")
