"""`domaintune advise` on the course's three bundled sets, run as a user runs it (the console command, one process per
set): the wall time of the whole job against its budget (`--minutes N` must end within 1.2 x N), its peak memory, the
budget it planned and why, its recommendation, and every system's score with its 95% interval. At the profile's full
budget (no --minutes) each system's score is also set beside the same system's in bench/results/quality.json (and
the answers' hallucination rates beside hallucination.json): `agrees` says whether each falls inside the other's interval.

Writes `advise.json` (with --minutes N: `advise_Nmin.json`) and, per set, the job's report as `advise_<task>.md` and
`advise_<task>.png` (`advise_<task>_Nmin.*`).

    python bench/advise.py --minutes 10                     # the target: each bundled set within 12 minutes, cpu profile
    python bench/advise.py                                  # the cpu profile's full budget, compared with quality.json
    python bench/advise.py --quick --out /tmp/b             # the smoke profile, 4 held-out examples: checks the script
"""
import json, os, shutil, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

TASKS = ("qa", "summarize", "classify")
DATA = {"qa": "chronic_care_qa.jsonl", "summarize": "dialogues.jsonl", "classify": "movie_reviews.csv"}
RUNNER = ("import resource, sys\nfrom domaintune_course.cli import main\ncode = main(sys.argv[1:])\n"
          "print('peak_rss_mb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, flush=True)\nsys.exit(code)")


def run_job(task: str, args, work: Path) -> dict:
    "Run `domaintune advise` on the task's bundled set in its own process; its wall time, peak memory and report."
    from domaintune_course import advise
    data = Path(advise.__file__).parent / "data" / DATA[task]
    argv = ["--runs-dir", str(work), "advise", str(data), "--task", task, "--profile", args.profile, "--out", f"advise-{task}"]
    argv += ["--minutes", str(args.minutes)] if args.minutes else []
    argv += ["--limit", "4"] if args.quick else []
    shutil.rmtree(work / f"advise-{task}", ignore_errors=True)
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", RUNNER, *argv], capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    wall = time.perf_counter() - start
    job = work / f"advise-{task}"
    if r.returncode != 0: return dict(status="failed", returncode=r.returncode, wall_seconds=round(wall, 1), stderr=r.stderr[-3000:])
    peak = next((float(l.split()[1]) for l in r.stdout.splitlines() if l.startswith("peak_rss_mb")), None)
    result = json.loads((job / "advice.json").read_text(encoding="utf-8"))
    stem = f"advise_{task}{suffix(args)}"
    for name in ("advice.md", "advice.png"):  # the report, committed beside the numbers
        shutil.copyfile(job / name, args.out / f"{stem}{Path(name).suffix}")
    md = args.out / f"{stem}.md"
    md.write_text(md.read_text(encoding="utf-8").replace("(advice.png)", f"({stem}.png)"), encoding="utf-8")
    out = dict(status="ok", command="domaintune " + " ".join(argv[2:]), wall_seconds=round(wall, 1), peak_rss_mb=peak,
               progress=[l for l in r.stdout.splitlines() if l.startswith("advise [")],
               **{k: result[k] for k in ("recommended", "best", "cheapest", "n", "answers", "margin", "examples_for_power", "too_few_examples",
                                          "reasons", "plan", "steps", "full_steps", "calibration", "key_facts")},
               systems={k: {x: v[x] for x in ("mean", "low", "high", "cost_seconds", "train_seconds", "seconds_per_answer", "not_worse", "hallucination") if x in v}
                        for k, v in result["systems"].items()})
    if args.minutes: out |= dict(limit_seconds=round(1.2 * args.minutes * 60, 1), within_limit=wall <= 1.2 * args.minutes * 60)
    else: out["agreement"] = agreement(task, out["systems"])
    return out


def suffix(args) -> str: return f"_{args.minutes:g}min" if args.minutes else ""


def agreement(task: str, systems: dict) -> dict:
    "Each system's score beside quality.json's (and the answers' hallucination rate beside hallucination.json's): inside each other's interval?"
    quality = json.loads((benchlib.RESULTS / "quality.json").read_text(encoding="utf-8"))["tasks"].get(task, {}).get("systems", {})
    key = {"qa": "token_f1", "summarize": "rougeL", "classify": "accuracy"}[task]
    out = {}
    for name, s in systems.items():
        q = quality.get(name)  # advise names its systems as quality.json does
        if not q: continue
        low, high = (q.get(f"{key}_low"), q.get(f"{key}_high")) if key != "accuracy" else (q.get("ci_low"), q.get("ci_high"))
        out[name] = dict(advise=s["mean"], quality=round(q[key], 4), quality_low=low, quality_high=high,
                         agrees=low <= s["mean"] <= high or s["low"] <= q[key] <= s["high"])
    return out


def main(argv=None):
    p = benchlib.parser(__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--minutes", type=float, default=None, help="the budget each job is given (default: the profile's full budget)")
    p.add_argument("--profile", default=None, help="hardware profile (default: cpu; --quick: smoke)")
    p.add_argument("--keep-runs", type=Path, default=None, help="keep the job folders here (default: a temporary directory)")
    args = p.parse_args(argv)
    args.profile = args.profile or ("smoke" if args.quick else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.keep_runs or benchlib.temp_dir("bench-advise-")
    work.mkdir(parents=True, exist_ok=True)
    tasks = {t: run_job(t, args, work) for t in args.tasks}
    result = dict(benchmark="advise", **benchlib.header(__file__, argv), quick=args.quick, profile=args.profile, minutes=args.minutes,
                  tasks=tasks, all_ok=all(t["status"] == "ok" for t in tasks.values()))
    if args.minutes: result["targets_met"] = all(t.get("within_limit") for t in tasks.values())
    print(benchlib.write_result(args.out, f"advise{suffix(args)}.json", result))
    return result


if __name__ == "__main__": sys.exit(0 if main()["all_ok"] else 1)
