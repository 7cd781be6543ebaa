"""Wall time and peak memory of each lesson notebook at a hardware profile, so instructors can plan a class.

Each notebook runs top to bottom in its own Python process with nbdev's `test_nb`, as a learner clicking through would:
every cell, including those tagged `#| slow` (the test suite skips them; --skip-slow does too), except `#| gpu` cells on
a machine without CUDA. DOMAINTUNE_PROFILE is set, the runs directory is temporary. Peak memory is the
child's maximum resident set size as the kernel reports it for a waited-for child (`os.wait4`, the per-child form of
`resource.getrusage(RUSAGE_CHILDREN)`), which includes the processes the notebook itself starts.

    python bench/lessons.py                       # every lesson at the cpu profile
    python bench/lessons.py --only 01a_batching   # one lesson
    python bench/lessons.py --quick --out /tmp/b  # one small notebook at the smoke profile: checks the script
"""
import os, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

NBS = benchlib.ROOT / "nbs"
TARGET_SECONDS = 45 * 60  # the whole course at the cpu profile on 2 cores
QUICK = ("00a_config",)
RUNNER = ("import sys, nbdev.test as t; ok, secs = t.test_nb(sys.argv[1], skip_flags=sys.argv[2].split(',') if sys.argv[2] else []); "
          "sys.exit(0 if ok else 1)")


def lessons(only: list[str] | None = None) -> list[Path]:
    "The lesson notebooks in course order (scratch notebooks starting with `_` left out), or the ones named in `only`."
    nbs = sorted(p for p in NBS.glob("*.ipynb") if not p.name.startswith("_"))
    if not only: return nbs
    missing = [n for n in only if not (NBS / f"{Path(n).stem}.ipynb").is_file()]
    if missing: raise SystemExit(f"No such notebook(s) in nbs/: {', '.join(missing)}. Known: {', '.join(p.stem for p in nbs)}")
    return [NBS / f"{Path(n).stem}.ipynb" for n in only]


def run_notebook(nb: Path, profile: str, skip: list[str], timeout: float) -> dict:
    "Run one notebook in a fresh process; its wall time, peak RSS, and the end of its error output when it failed."
    env = {**os.environ, "DOMAINTUNE_PROFILE": profile, "MPLBACKEND": "Agg", "TOKENIZERS_PARALLELISM": "false",
           "DOMAINTUNE_RUNS": str(benchlib.temp_dir(f"bench-{nb.stem}-runs-"))}
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(nb), ",".join(skip)], cwd=nb.parent, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
        status, usage = wait(proc, timeout)
        seconds = time.perf_counter() - start
        err.seek(0); tail = err.read()[-2000:].decode("utf-8", "replace")
    ok = status == 0
    row = dict(ok=ok, seconds=round(seconds, 1), peak_rss_mb=round(usage.ru_maxrss / 1024, 1) if usage else None)
    if not ok: row["error"] = "timed out" if status is None else tail
    return row


def wait(proc, timeout: float):
    "Wait for `proc` (killing it after `timeout` seconds); its exit status (None if killed) and resource usage."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid: proc.returncode = os.waitstatus_to_exitcode(status); return proc.returncode, usage
        time.sleep(0.2)
    proc.kill()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = -9
    return None, usage


def _cuda() -> bool:
    "Is there a CUDA device for the `#| gpu` cells?"
    import torch
    return torch.cuda.is_available()


def main(argv=None):
    p = benchlib.parser(__doc__.split("\n")[0])
    p.add_argument("--profile", default=None, help="hardware profile the lessons run with (default: cpu; --quick: smoke)")
    p.add_argument("--only", nargs="+", default=None, help="notebook names (e.g. 01a_batching) instead of every lesson")
    p.add_argument("--skip-slow", action="store_true", help="skip cells tagged #| slow, as the test suite does (default: run them, as a learner would)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds before one notebook is stopped (default: 3600)")
    args = p.parse_args(argv)
    profile = args.profile or ("smoke" if args.quick else "cpu")
    skip = ([] if _cuda() else ["gpu"]) + (["slow"] if args.skip_slow else [])
    rows = {}
    for nb in lessons(args.only or (list(QUICK) if args.quick else None)):
        rows[nb.stem] = run_notebook(nb, profile, skip, args.timeout)
        print(f"{nb.stem}: {rows[nb.stem]['seconds']} s, {rows[nb.stem]['peak_rss_mb']} MB, {'ok' if rows[nb.stem]['ok'] else 'FAILED'}", flush=True)
    total = round(sum(r["seconds"] for r in rows.values()), 1)
    result = dict(benchmark="lessons", **benchlib.header(__file__, argv), quick=args.quick, profile=profile, skipped_cell_tags=skip,
                  notebooks=rows, total_seconds=total, total_minutes=round(total / 60, 1),
                  max_peak_rss_mb=max((r["peak_rss_mb"] or 0) for r in rows.values()) if rows else None,
                  all_ok=all(r["ok"] for r in rows.values()), target_seconds=TARGET_SECONDS,
                  meets_target=total <= TARGET_SECONDS and all(r["ok"] for r in rows.values()))
    print(benchlib.write_result(args.out, "lessons.json", result))
    return result


if __name__ == "__main__": sys.exit(0 if main()["all_ok"] else 1)  # a failed part fails `make bench`
