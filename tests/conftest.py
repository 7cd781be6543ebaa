"""Shared pytest set-up: every test runs offline, with the smoke profile and its own runs directory."""
import os
import tempfile
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DOMAINTUNE_PROFILE", "smoke")
# The runs lessons share (course.lesson_run) live for this test session only, never in the user's course cache.
os.environ.setdefault("DOMAINTUNE_LESSON_RUNS", tempfile.mkdtemp(prefix="domaintune-lesson-runs-"))


@pytest.fixture(autouse=True)
def _runs_dir(tmp_path, monkeypatch):
    "Each test writes runs into its own temporary directory."
    monkeypatch.setenv("DOMAINTUNE_RUNS", str(tmp_path / "runs"))


@pytest.fixture(scope="session")
def hub_root(tmp_path_factory):
    "The tiny stand-ins of the hub repositories the GPU profiles download (read only), built once for the session."
    from domaintune_course.testing import tiny_hub
    return tiny_hub(tmp_path_factory.mktemp("hub"))


@pytest.fixture(scope="session")
def causal_dir(tmp_path_factory):
    "A tiny causal LM and its tokenizer in a folder (read only), built once for the session."
    from domaintune_course.testing import tiny_model_dir
    return tiny_model_dir("causal", tmp_path_factory.mktemp("tiny-causal") / "causal")

