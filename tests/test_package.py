"""The package stands on its own: a wheel carries the bundled data and settings, and imports and runs outside the repo."""
import json, os, subprocess, sys, zipfile
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    "A wheel built from the working tree."
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return next(out.glob("domaintune_course-*.whl"))


def test_wheel_carries_data_and_settings(wheel):
    "Bundled data sets, their data cards, and the default course settings are in the wheel."
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("settings.ini", "data/chronic_care_qa.jsonl", "data/dialogues.jsonl", "data/movie_reviews.csv",
              "data/chronic_care_qa.md", "data/dialogues.md", "data/movie_reviews.md"):
        assert f"domaintune_course/{f}" in names, f"{f} missing from the wheel"


def test_installed_wheel_runs_env_without_repo(wheel, tmp_path):
    "Installed on its own (no settings.ini around), the package imports and `domaintune env` answers."
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], check=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = "import domaintune_course.cli as c, sys; print(c.__file__, file=sys.stderr); sys.exit(c.main(['env', '--json']))"
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert str(target) in r.stderr, "the installed copy, not the repo's, must be the one that ran"
    info = json.loads(r.stdout)
    assert info["offline_models"]["smollm2-135m"] is True and info["offline_models"]["minilm-l6"] is True


NOISE_PROBE = """
import warnings
import domaintune_course, bitsandbytes
from domaintune_course.testing import tiny_causal_lm
from peft import LoraConfig, get_peft_model
get_peft_model(tiny_causal_lm(), LoraConfig(r=2, target_modules=["q_proj"]))
warnings.warn("a real warning stays visible", FutureWarning)
"""


def test_importing_the_package_stops_the_libraries_noise_and_nothing_else():
    "bitsandbytes' CPU kernel lookup and peft's deprecated-property read print nothing; another FutureWarning still shows."
    r = subprocess.run([sys.executable, "-c", NOISE_PROBE], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "gemm_4bit_forward" not in r.stderr and "is_gradient_checkpointing" not in r.stderr, r.stderr[-2000:]
    assert "a real warning stays visible" in r.stderr
