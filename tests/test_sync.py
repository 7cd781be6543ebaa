"""Notebooks and library stay in sync: nbdev-export and nbdev-clean change nothing."""
import filecmp, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _project_files() -> list[str]:
    "Files git tracks plus untracked files it does not ignore."
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [f for f in out.stdout.splitlines() if (ROOT / f).is_file()]


def test_export_and_clean_change_nothing(tmp_path):
    "A copy of the tree, exported and cleaned, is byte-for-byte the tree."
    files = _project_files()
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, tmp_path / f)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    for cmd in ("nbdev-export", "nbdev-clean"):
        r = subprocess.run([str(BIN / cmd)], cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0, f"{cmd} failed: {r.stderr[-2000:]}"
    changed = [f for f in files if not filecmp.cmp(ROOT / f, tmp_path / f, shallow=False)]
    lib = tmp_path / "domaintune_course"
    new = [str(p.relative_to(tmp_path)) for p in lib.rglob("*.py") if str(p.relative_to(tmp_path)) not in files]
    assert not changed, f"run `nbdev-export && nbdev-clean` and commit: these change: {changed}"
    assert not new, f"modules generated but not committed: {new}"


def test_packaged_settings_match_course_settings():
    "The package ships the same course defaults instructors edit."
    assert (ROOT / "settings.ini").read_text() == (ROOT / "domaintune_course" / "settings.ini").read_text(), \
        "copy settings.ini to domaintune_course/settings.ini (make sync-settings)"
