"""Run every lesson notebook in the environment `make test-latest` builds, and record how it went.

`make test-latest` makes a second virtual environment (.venv-latest) the way `make setup` makes .venv, upgrades the
libraries whose renames break lessons (transformers, peft, trl, accelerate, datasets, bitsandbytes) to their newest
releases while pinning torch to the build already there, then runs this script with that environment's Python. It runs
tests/test_notebooks.py (every notebook under the smoke profile) and records the date, the versions and the outcome in the
`latest` section of domaintune_course/tested_versions.json, which the README quotes.

    make test-latest
    .venv-latest/bin/python scripts/test_latest.py --no-record   # run again without touching the record
"""
import argparse, platform, re, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))


def run_notebooks() -> tuple[subprocess.CompletedProcess, float]:
    "pytest on every lesson notebook, in this Python; the result and the minutes it took."
    start = time.time()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_notebooks.py", "-k", "test_notebook_runs"],
                       cwd=ROOT, capture_output=True, text=True)
    return r, (time.time() - start) / 60


def outcome(stdout: str) -> dict:
    "Passed and failed counts, and the failing notebooks, from pytest's output."
    count = lambda word: int(m.group(1)) if (m := re.search(rf"(\d+) {word}", stdout.strip().splitlines()[-1] if stdout.strip() else "")) else 0
    return dict(passed=count("passed"), failed=count("failed") + count("error"), failures=sorted(set(re.findall(r"test_notebook_runs\[([^\]]+)\]", stdout))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--no-record", action="store_true", help="run, but leave tested_versions.json as it is")
    args = p.parse_args(argv)
    from domaintune_course.compat import installed_versions, record_versions
    r, minutes = run_notebooks()
    result = outcome(r.stdout) | dict(minutes=round(minutes, 1))
    print(r.stdout[-3000:])
    if not args.no_record:
        record_versions("latest", installed_versions(), command="make test-latest", tests="tests/test_notebooks.py: every notebook, smoke profile",
                        python=platform.python_version(), **result)
    print(f"test-latest: {result['passed']} passed, {result['failed']} failed in {result['minutes']} min with {installed_versions()}")
    return 0 if r.returncode == 0 else 1


if __name__ == "__main__": sys.exit(main())
