"""Held-out quality of each task against its baselines, in one table, with 95% bootstrap intervals and a plot per task.

Each task is trained at the hardware profile through its own module (`tasks/<task>.train`) and scored on its held-out
test split (`tasks/<task>.evaluate`), which no model trained or was tuned on. Or pass finished run directories with
--runs and nothing is trained.

- classify: the fine-tuned encoder vs TF-IDF + logistic regression (fitted on the run's training split) vs zero-shot
  prompting of an instruct LM, all on the same test reviews (`classify.compare_systems`).
- summarize: the base model with the task's prompt, with a few-shot prompt and with a better instruction, vs the fine-tuned
  model (the task's `compare`): ROUGE with 95% intervals, prompt tokens and seconds per summary, and the paired
  interval of each difference.
- qa: the base model with the task's prompt, few-shot, a better instruction and retrieval, vs the fine-tuned model (the
  task's `compare`): token F1 with intervals, perplexity, prompt tokens and seconds per answer, paired F1 gains.

Targets (the lessons' issues), checked at the cpu profile and recorded per task under `targets`:
- classify: `train` finishes in under 10 minutes and the fine-tuned encoder beats TF-IDF + logistic regression (trained on
  the same split) by at least 3 points of accuracy on the held-out reviews.
- summarize: `train` finishes in under 20 minutes and fine-tuning raises ROUGE-L over the base model by at least 5 points
  with the 95% interval of the difference above zero.
Training time is the wall time of the task's `train` (data preparation, model loading, the training loop, saving), timed
here; a run given with --runs keeps the time recorded when this script trained it (`bench_train.json`), if any.

    python bench/quality.py                                    # train and score all three at the cpu profile
    python bench/quality.py --tasks classify --update          # one task; the others' entries in quality.json are kept
    python bench/quality.py --runs classify=runs/classify-... summarize=runs/summarize-...
    python bench/quality.py --quick --out /tmp/b               # tiny models and toy rows at the smoke profile
"""
import importlib, json, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

TASKS = ("classify", "summarize", "qa")
HEADLINE = dict(classify="accuracy", summarize="rougeL", qa="token_f1")
TARGETS = dict(classify=dict(train_seconds_max=600, gain_vs_tfidf_min=0.03),
               summarize=dict(train_seconds_max=1200, rougeL_gain_min=0.05))


def task_module(task: str):
    "The task's module (the task contract: train, evaluate, ...)."
    return importlib.import_module(f"domaintune_course.tasks.{task}")


# ---------------------------------------------------------------- training (or reusing) a run

def quick_setup(task: str, work: Path) -> dict:
    "TrainConfig overrides for --quick: a tiny model and toy rows written to a file."
    from domaintune_course import testing
    kind = "encoder" if task == "classify" else "causal"
    rows = dict(classify=testing.toy_reviews(40), summarize=testing.toy_dialogues(24), qa=testing.toy_qa_rows(24))[task]
    return dict(model=str(testing.tiny_model_dir(kind, work / f"tiny-{kind}")), data=str(testing.write_jsonl(rows, work / f"{task}.jsonl")))


def get_run(task: str, module, args, work: Path) -> tuple[Path, dict | None]:
    "The run directory to score (the one given with --runs, or a new run trained at the profile) and its training record."
    if task in args.runs:
        rec = Path(args.runs[task]) / "bench_train.json"
        return Path(args.runs[task]), (json.loads(rec.read_text(encoding="utf-8")) | dict(reused=True)) if rec.is_file() else None
    from domaintune_course.config import make_config
    overrides = quick_setup(task, work) if args.quick else {}
    if args.quick and task != "classify": overrides["strategy"] = "lora"  # NF4 needs layers wider than the tiny model's
    cfg = make_config(task, args.profile, **overrides)
    run_dir = work / f"{task}-run"; run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter(); train_metrics = module.train(cfg, run_dir); seconds = time.perf_counter() - start
    rec = {k: v for k, v in train_metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}
    rec |= dict(train_seconds=round(seconds, 1), profile=cfg.profile, model=cfg.model, strategy=cfg.strategy, **benchlib.header(__file__, args.argv))
    (run_dir / "bench_train.json").write_text(json.dumps(rec, indent=1, default=str), encoding="utf-8")
    return run_dir, rec


def check_targets(task: str, systems: dict, train: dict | None) -> dict | None:
    "The task's targets, the measured values and whether each is met (None where a value was not measured)."
    if task not in TARGETS: return None
    t, secs = TARGETS[task], (train or {}).get("train_seconds")
    out = dict(targets=t, train_seconds=secs, train_time_met=None if secs is None else secs <= t["train_seconds_max"])
    if task == "classify":
        gain = systems["fine-tuned encoder"]["accuracy"] - systems["tf-idf + logistic regression"]["accuracy"]
        out |= dict(gain_vs_tfidf=round(gain, 4), gain_met=gain >= t["gain_vs_tfidf_min"])
    else:
        d = systems["fine-tuned - base"]
        out |= dict(rougeL_gain=d["rougeL"], rougeL_gain_low=d["rougeL_low"], gain_met=d["rougeL"] >= t["rougeL_gain_min"] and d["rougeL_low"] > 0)
    out["met"] = None if out["train_time_met"] is None else bool(out["gain_met"] and out["train_time_met"])  # None: time not measured
    return out


# ---------------------------------------------------------------- the systems compared, per task

def classify_systems(run_dir: Path, args, work: Path) -> tuple[dict, object]:
    "Fine-tuned encoder, TF-IDF + LR and zero-shot prompting on the same held-out reviews, with intervals; and the plot."
    from domaintune_course.metrics import plot_metric_comparison
    from domaintune_course.tasks import classify as c
    c.evaluate(run_dir, None, args.limit)  # the task's own scoring: eval.json, confusion matrix and curves in the run
    info = json.loads((run_dir / "classify.json").read_text(encoding="utf-8"))
    split = {k: read_jsonl(run_dir / "data" / f"{k}.jsonl") for k in ("train", "validation", "test")}
    test = c.take_balanced(split["test"], args.limit, info["seed"])
    texts, y = [r["text"] for r in test], [r["label"] for r in test]
    model, tok = c.load_classifier(run_dir)
    scores = {"fine-tuned encoder": c.predict_proba(model, tok, texts, info["max_length"], info["truncation"]),
              "tf-idf + logistic regression": c.tfidf_scores(c.tfidf_baseline(split["train"], split["validation"], info["seed"]), texts),
              "zero-shot prompting": c.zero_shot_scores(texts, args.zero_shot_model or quick_zero_shot(work))}
    table = c.compare_systems(y, scores, seed=info["seed"])
    systems = {name: {k: (int(v) if k == "n" else float(v)) for k, v in row.items()} for name, row in table.iterrows()}
    fig = plot_metric_comparison(systems, "accuracy", {n: (r["ci_low"], r["ci_high"]) for n, r in systems.items()},
                                 title=f"Held-out reviews (n={len(y)}): accuracy, 95% intervals")
    return systems, fig


def summarize_systems(run_dir: Path, args, work: Path) -> tuple[dict, object]:
    "Base, few-shot, better-instruction and fine-tuned summaries of the same held-out dialogues (the task's `compare`), ROUGE-L with intervals, cost and the fine-tuned model's paired gain; all four ROUGE types for base and fine-tuned with the paired interval of each difference; and the plot."
    from domaintune_course.metrics import plot_metric_comparison
    from domaintune_course.training import run_config
    from domaintune_course.tasks import summarize as s
    cfg = run_config(run_dir)
    records, _ = s.held_out(run_dir, None, args.limit or cfg.eval_limit)
    table, raw = s.compare(run_dir, records)
    ev = s.compare_summaries(list(raw["base"]), list(raw["fine-tuned"]), [r["references"] for r in records], seed=cfg.seed)
    systems = {name: dict(row, n=len(records)) for name, row in table.items()}
    systems["base"] |= ev["base"]; systems["fine-tuned"] |= ev["finetuned"]
    systems["fine-tuned - base"] = ({"n": ev["n"]} | {t: d["delta"] for t, d in ev["delta"].items()}
                                   | {f"{t}_low": d["low"] for t, d in ev["delta"].items()} | {f"{t}_high": d["high"] for t, d in ev["delta"].items()})
    fig = plot_metric_comparison(table, "rougeL", {n: (r["rougeL_low"], r["rougeL_high"]) for n, r in table.items()},
                                 title=f"Held-out dialogues (n={len(records)}): ROUGE-L, 95% intervals")
    return systems, fig


def qa_systems(run_dir: Path, args, work: Path) -> tuple[dict, object]:
    "Base, few-shot, better-instruction, retrieval and fine-tuned on the same held-out questions (the task's `compare`), each with the fine-tuned model's paired F1 gain over it; and the plot."
    from domaintune_course import metrics
    from domaintune_course.tasks import qa
    cfg = json.loads((run_dir / "config.json").read_text(encoding="utf-8")) if (run_dir / "config.json").is_file() else {}
    limit = args.limit or cfg.get("config", {}).get("eval_limit")
    records = read_jsonl(run_dir / "data" / "test.jsonl")[:limit]
    table, raw = qa.compare(run_dir, records, read_jsonl(run_dir / "data" / "train.jsonl"))
    systems = {n: dict(r, n=len(records)) for n, r in table.items()}
    for n in systems:
        if n == "fine-tuned": continue
        d = metrics.paired_bootstrap(raw[n]["f1"], raw["fine-tuned"]["f1"], seed=cfg.get("seed", 42))
        systems[n] |= dict(finetuned_gain=round(d["delta"], 4), finetuned_gain_low=round(d["low"], 4), finetuned_gain_high=round(d["high"], 4))
    return systems, qa.plot_systems(table)


SYSTEMS = dict(classify=classify_systems, summarize=summarize_systems, qa=qa_systems)


def read_jsonl(path: Path) -> list[dict]:
    "Rows of a JSON Lines file (a run's data split)."
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def bench_task(task: str, args, work: Path) -> dict:
    "Train (or reuse) the task's run, score it against its baselines, save the plot; one row of the quality table."
    try:
        module = task_module(task)
        run_dir, train_metrics = get_run(task, module, args, work)
        start = time.perf_counter(); systems, fig = SYSTEMS[task](run_dir, args, work); score_seconds = time.perf_counter() - start
    except Exception as e:  # one task failing must not lose the others' results
        import traceback
        return dict(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-3000:], **benchlib.header(__file__, args.argv))
    fig.savefig(args.out / f"quality_{task}.png", dpi=100)
    return dict(status="ok", metric=HEADLINE[task], systems=systems, plot=f"quality_{task}.png",
                trained_here=task not in args.runs, run_dir=str(run_dir) if task in args.runs or args.keep_runs else None,
                train_metrics=train_metrics, score_seconds=round(score_seconds, 1),
                targets=None if args.quick else check_targets(task, systems, train_metrics), **benchlib.header(__file__, args.argv))


def quick_zero_shot(work: Path) -> str:
    "The zero-shot model: SmolLM2 normally, a tiny causal LM for --quick."
    d = work / "tiny-causal"
    if not (d / "config.json").is_file():
        from domaintune_course.testing import tiny_model_dir
        tiny_model_dir("causal", d)
    return str(d)


def parse_runs(items: list[str]) -> dict:
    "task=DIR pairs from --runs: run directories to score."
    return benchlib.parse_runs(items, TASKS)


def kept_tasks(path: Path) -> dict:
    "The task entries of an earlier quality.json, each stamped with the date, machine and command of the run that made it."
    if not path.is_file(): return {}
    d = json.loads(path.read_text(encoding="utf-8"))
    stamp = {k: d.get(k) for k in ("date", "machine", "versions", "command", "load_average") if k in d}
    kept = {t: stamp | r for t, r in d.get("tasks", {}).items()}
    for t, r in kept.items():  # entries written before targets were recorded: check what they measured
        if r.get("status") == "ok" and "targets" not in r and not d.get("quick"): r["targets"] = check_targets(t, r["systems"], r.get("train_metrics"))
    return kept


def main(argv=None):
    p = benchlib.parser(__doc__.split("\n")[0])
    benchlib.run_options(p, TASKS)
    p.add_argument("--limit", type=int, default=None, help="held-out examples scored per task (default: every test review for classify; the profile's eval_limit for summarize and qa)")
    p.add_argument("--zero-shot-model", default=None, help="instruct LM for zero-shot classification (default: smollm2-135m)")
    p.add_argument("--update", action="store_true", help="keep the entries of tasks not run now from the existing quality.json in --out")
    args = p.parse_args(argv)
    args.runs, args.profile = parse_runs(args.runs), args.profile or ("smoke" if args.quick else "cpu")
    args.argv = argv
    if args.zero_shot_model is None and not args.quick: args.zero_shot_model = "smollm2-135m"
    if args.limit is None and args.quick:  # otherwise None: every test review, and the profile's eval_limit for the generation tasks
        from domaintune_course.config import make_config
        args.limit = make_config("qa", args.profile).eval_limit  # the plain key (classify has its own, larger cap)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.keep_runs or benchlib.temp_dir("bench-quality-")
    work.mkdir(parents=True, exist_ok=True)
    tasks = {task: bench_task(task, args, work) for task in args.tasks}
    result = dict(benchmark="quality", **benchlib.header(__file__, argv), quick=args.quick, profile=args.profile, limit=args.limit,
                  tasks=(kept_tasks(args.out / "quality.json") if args.update else {}) | tasks)
    result["all_ok"] = all(t["status"] == "ok" for t in tasks.values())
    result["targets_met"] = {t: r["targets"]["met"] for t, r in result["tasks"].items() if r.get("targets")}
    print(benchlib.write_result(args.out, "quality.json", result))
    return result


if __name__ == "__main__": sys.exit(0 if main()["all_ok"] else 1)  # a failed part fails `make bench`
