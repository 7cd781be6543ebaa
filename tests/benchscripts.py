"""The benchmark scripts as modules, for the tests of bench/ (they are scripts, not a package)."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = ("date", "machine", "versions", "command")  # what every results file records


def script(name: str):
    "Import bench/<name>.py as a module."
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod
