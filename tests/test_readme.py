"""README.md says what nbs/index.ipynb says, and names the two set-up commands."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _render():
    spec = importlib.util.spec_from_file_location("render_readme", ROOT / "scripts" / "render_readme.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod.render()


def test_readme_matches_index():
    "The README is the landing page rendered (run `make readme` after editing nbs/index.ipynb)."
    assert (ROOT / "README.md").read_text(encoding="utf-8") == _render(), "README.md drifted from nbs/index.ipynb: run `make readme`"


def test_readme_names_setup_commands_and_every_lesson():
    "The README keeps `make demo` and `make test`, and links every lesson notebook."
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
    lessons = [p.name for p in (ROOT / "nbs").glob("[0-9]*.ipynb") if not p.name.startswith("90_")]
    missing = [n for n in lessons if n not in text]
    assert not missing, f"lessons missing from the README's lesson map: {missing}"
