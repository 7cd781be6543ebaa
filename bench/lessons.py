"""Wall time and peak memory of each lesson notebook at a hardware profile, so instructors can plan a class.

Each notebook runs top to bottom in its own Python process with nbdev's `test_nb`, as a learner clicking through would:
every cell, including those tagged `#| slow` (the test suite skips them; --skip-slow does too), except `#| gpu` cells on
a machine without CUDA. DOMAINTUNE_PROFILE is set, the runs directory is temporary. Peak memory is the
child's maximum resident set size as the kernel reports it for a waited-for child (`os.wait4`, the per-child form of
`resource.getrusage(RUSAGE_CHILDREN)`), which includes the processes the notebook itself starts.

Lessons share fine-tuned runs (`course.lesson_run`): a lesson that needs a run an earlier lesson trained from the same
configuration, data and code reuses it, as it does in a learner's session. The runs are kept in bench/lesson_runs/ (emptied
first when every lesson runs, kept for `--only`, where a run's key still changes with the code). Each lesson's row gives
its cost after the earlier lessons (`seconds`, `peak_rss_mb`: what "Run all" of the course costs) and which runs it reused;
a lesson that reused one is then run once more alone, with nothing kept (`alone_seconds`, `alone_peak_rss_mb`: what it
costs opened from its Colab badge). A lesson that reused nothing costs the same both ways.

    python bench/lessons.py                       # every lesson at the cpu profile
    python bench/lessons.py --only 01a_batching   # one lesson
    python bench/lessons.py --quick --out /tmp/b  # one small notebook at the smoke profile: checks the script
    python bench/lessons.py --profile t4 --record # on a T4: keep the figures as the lessons' t4 costs (`lesson_costs`)
    python bench/lessons.py --write-outputs       # `make outputs`: run each lesson in a Jupyter kernel and commit it with its outputs

--write-outputs runs each notebook with `course.execute_lesson` instead of nbdev's test runner: the notebook is written
back with its outputs and their fingerprint (`course.stale` tells when they no longer match the code), and the figures
are recorded as the lessons' costs (as --record does), and each lesson's cost table is redrawn from them
(`course.refresh_cost_table`), so it shows the run that made the outputs. With --only, the rows of the other lessons already in the
results file are kept.
"""
import json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

NBS = benchlib.ROOT / "nbs"
TARGET_SECONDS = 30 * 60  # the whole course at the cpu lesson budgets on 2 cores
LESSON_TARGET_SECONDS, LESSON_TARGET_RSS_MB = 5 * 60, 6 * 1024  # each lesson, after the earlier ones
LESSON_RUNS = benchlib.ROOT / "bench" / "lesson_runs"  # the runs lessons share (ignored by git)
QUICK = ("00c_compat",)
RUNNER = ("import os, sys, json, nbdev.test as t; ok, secs = t.test_nb(sys.argv[1], skip_flags=sys.argv[2].split(',') if sys.argv[2] else []); "
          "c = sys.modules.get('domaintune_course.course'); "
          "open(os.environ['BENCH_REUSED'], 'w').write(json.dumps(getattr(c, 'USED_RUNS', {}))); sys.exit(0 if ok else 1)")
OUTPUTS_RUNNER = "import sys; from domaintune_course.course import execute_lesson; execute_lesson(sys.argv[1], sys.argv[3])"


def lessons(only: list[str] | None = None) -> list[Path]:
    "The lessons in course order (`nbs/NN_*.ipynb`), or the notebooks named in `only` (a reference one as `reference/cli`)."
    nbs = sorted(NBS.glob("[0-9]*.ipynb"))
    if not only: return nbs
    path = lambda n: NBS / Path(n).with_suffix(".ipynb")
    missing = [n for n in only if not path(n).is_file()]
    known = [p.stem for p in nbs] + [f"reference/{p.stem}" for p in sorted((NBS / "reference").glob("*.ipynb"))]
    if missing: raise SystemExit(f"No such notebook(s) in nbs/: {', '.join(missing)}. Known: {', '.join(known)}")
    return [path(n) for n in only]


def run_notebook(nb: Path, profile: str, skip: list[str], timeout: float, outputs: bool = False, lesson_runs: Path = LESSON_RUNS) -> dict:
    "Run one notebook in a fresh process; its wall time, peak RSS, the shared runs it reused, and the end of its error output when it failed."
    reused = benchlib.temp_dir(f"bench-{nb.stem}-reused-") / "reused.json"
    env = {**os.environ, "DOMAINTUNE_PROFILE": profile, "MPLBACKEND": "Agg", "TOKENIZERS_PARALLELISM": "false",
           "DOMAINTUNE_RUNS": str(benchlib.temp_dir(f"bench-{nb.stem}-runs-")), "DOMAINTUNE_LESSON_RUNS": str(lesson_runs),
           "BENCH_REUSED": str(reused)}
    if outputs: env.pop("MPLBACKEND")  # the kernel's inline backend, so plots become PNG outputs
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", OUTPUTS_RUNNER if outputs else RUNNER, str(nb), ",".join(skip), profile], cwd=nb.parent, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
        status, usage = wait(proc, timeout)
        seconds = time.perf_counter() - start
        err.seek(0); tail = err.read()[-2000:].decode("utf-8", "replace")
    ok = status == 0
    row = dict(ok=ok, seconds=round(seconds, 1), peak_rss_mb=round(usage.ru_maxrss / 1024, 1) if usage else None)
    if not ok: row["error"] = "timed out" if status is None else tail
    if outputs and ok: used = json.loads(nb.read_text(encoding="utf-8"))["metadata"].get("domaintune", {}).get("runs", {})
    else: used = json.loads(reused.read_text(encoding="utf-8")) if reused.is_file() else {}
    if used: row["reused"] = used  # run name -> the lesson that trained it
    return row


def alone(nb: Path, row: dict, profile: str, skip: list[str], timeout: float) -> dict:
    "`row` with what the lesson costs alone: run again with no shared runs kept when it reused some, else its own figures."
    if not row.get("reused") or not row["ok"]: return row | dict(alone_seconds=row["seconds"], alone_peak_rss_mb=row["peak_rss_mb"])
    solo = run_notebook(nb, profile, skip, timeout, lesson_runs=benchlib.temp_dir(f"bench-{nb.stem}-alone-"))
    if solo.get("reused"): raise RuntimeError(f"{nb.stem} reused {solo['reused']} with no runs kept")
    out = row | dict(alone_seconds=solo["seconds"], alone_peak_rss_mb=solo["peak_rss_mb"])
    if not solo["ok"]: out |= dict(ok=False, error="alone: " + solo.get("error", ""))
    return out


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
    p.add_argument("--record", action="store_true", help="keep the figures as the lessons' costs at this profile (the package's lesson_costs.json)")
    p.add_argument("--write-outputs", action="store_true", help="run each notebook in a Jupyter kernel and write it back with its outputs (make outputs)")
    args = p.parse_args(argv)
    if args.write_outputs and (args.quick or args.skip_slow): p.error("--write-outputs runs every cell at a real profile: drop --quick/--skip-slow")
    profile = args.profile or ("smoke" if args.quick else "cpu")
    skip = ([] if _cuda() else ["gpu"]) + (["slow"] if args.skip_slow else [])
    rows, shared = {}, benchlib.temp_dir("bench-lesson-runs-") if args.quick else LESSON_RUNS  # a quick check keeps nothing
    if not args.only: shutil.rmtree(shared, ignore_errors=True)  # the whole course: every run is trained by the lesson that needs it first
    shared.mkdir(parents=True, exist_ok=True)
    for nb in lessons(args.only or (list(QUICK) if args.quick else None)):
        rows[nb.stem] = run_notebook(nb, profile, skip, args.timeout, args.write_outputs, shared)
        r = rows[nb.stem]
        print(f"{nb.stem}: {r['seconds']} s, {r['peak_rss_mb']} MB, {'ok' if r['ok'] else 'FAILED'}"
              + (f", reused {', '.join(r['reused'])}" if r.get("reused") else ""), flush=True)
    for nb in lessons(args.only or (list(QUICK) if args.quick else None)):
        rows[nb.stem] = alone(nb, rows[nb.stem], profile, skip, args.timeout)
        if rows[nb.stem].get("reused"): print(f"{nb.stem} alone: {rows[nb.stem]['alone_seconds']} s, {rows[nb.stem]['alone_peak_rss_mb']} MB", flush=True)
    old = args.out / "lessons.json"
    if args.only and not args.quick and old.is_file() and json.loads(old.read_text(encoding="utf-8")).get("profile") == profile:
        rows = {**json.loads(old.read_text(encoding="utf-8"))["notebooks"], **rows}  # the other lessons' rows stay
    total = round(sum(r["seconds"] for r in rows.values()), 1)
    result = dict(benchmark="lessons", **benchlib.header(__file__, argv), quick=args.quick, profile=profile, skipped_cell_tags=skip,
                  notebooks=rows, total_seconds=total, total_minutes=round(total / 60, 1),
                  max_peak_rss_mb=max((r["peak_rss_mb"] or 0) for r in rows.values()) if rows else None,
                  all_ok=all(r["ok"] for r in rows.values()), target_seconds=TARGET_SECONDS,
                  lesson_target_seconds=LESSON_TARGET_SECONDS, lesson_target_rss_mb=LESSON_TARGET_RSS_MB,
                  over_lesson_targets=sorted(k for k, r in rows.items() if r["seconds"] > LESSON_TARGET_SECONDS or (r["peak_rss_mb"] or 0) > LESSON_TARGET_RSS_MB),
                  meets_target=total <= TARGET_SECONDS and all(r["ok"] for r in rows.values())
                               and all(r["seconds"] <= LESSON_TARGET_SECONDS and (r["peak_rss_mb"] or 0) <= LESSON_TARGET_RSS_MB for r in rows.values()))
    print(benchlib.write_result(args.out, "lessons.json", result))
    if (args.record or args.write_outputs) and not args.quick:
        from domaintune_course.course import COSTS_FILE, record_costs, refresh_cost_table
        record_costs(result); print(f"costs recorded in {COSTS_FILE}")
        if args.write_outputs:  # each lesson's cost table, drawn during its run, now shows that run
            for nb in lessons(args.only):
                if rows.get(nb.stem, {}).get("ok"): refresh_cost_table(nb)
    return result


if __name__ == "__main__": sys.exit(0 if main()["all_ok"] else 1)  # a failed part fails `make bench`
