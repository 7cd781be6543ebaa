"""Hallucination by remedy: on the held-out examples of the course's two generation tasks, how often each system states
content its sources do not back, measured with lesson 05b's checks (`domaintune_course.hallucination`).

- summarize: base, base with the better instruction, base with a few-shot prompt, fine-tuned (greedy) and fine-tuned
  sampling at temperature 1 summarize the run's held-out dialogues (`summarize.compare`); `faithfulness` gives the
  share of summaries with an unsupported number, name, either (unfaithful), and the mean share of unsupported content
  words, each with a 95% bootstrap interval. The reference summaries are scored the same way, as the yardstick.
- qa: base, few-shot, better instruction, retrieval, fine-tuned, fine-tuned + retrieval and fine-tuned sampling at
  temperature 1 answer the held-out questions (`qa.compare`); `fact_rates` gives the share of answers that state,
  contradict or miss their hand-labelled key fact (`data/chronic_care_key_facts.jsonl`), with 95% intervals.

Runs are trained at the profile's full budget (as bench/quality.py trains them), or given with --runs. Writes
`hallucination.json` (with `remedies`, the table lesson 05b draws) and `hallucination.png`.

    python bench/hallucination.py                                            # train both tasks at the cpu profile
    python bench/hallucination.py --runs summarize=DIR qa=DIR                # score finished runs (e.g. bench/quality.py --keep-runs)
    python bench/hallucination.py --quick --out /tmp/b                       # a tiny model at the smoke profile: checks the script
"""
import json, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib
import quality

TASKS = ("summarize", "qa")
SUMMARY_SYSTEMS = ("base", "base, few-shot", "base, better instruction", "fine-tuned", "fine-tuned, sampled")
QA_SYSTEMS = ("base", "base, few-shot", "base, better instruction", "base + retrieval", "fine-tuned", "fine-tuned + retrieval", "fine-tuned, sampled")
EXAMPLES = 3  # findings kept per system in the JSON, for reading


def quick_setup(task: str, work: Path) -> dict:
    "--quick: a tiny causal LM; the bundled data for qa (its key facts need the bundled ids), toy dialogues for summarize."
    from domaintune_course import testing
    model = str(testing.tiny_model_dir("causal", work / "tiny-causal"))
    if task == "qa": return dict(model=model)
    return dict(model=model, data=str(testing.write_jsonl(testing.toy_dialogues(24), work / "dialogues.jsonl")))


def summarize_task(run_dir: Path, args) -> dict:
    "Faithfulness of each system's summaries and of the references, on the run's held-out dialogues."
    from domaintune_course.hallucination import faithfulness
    from domaintune_course.training import run_config
    from domaintune_course.tasks import summarize as s
    cfg = run_config(run_dir)
    records, _ = s.held_out(run_dir, None, args.limit or cfg.eval_limit)
    table, out = s.compare(run_dir, records, systems=SUMMARY_SYSTEMS)
    texts = {name: list(v) for name, v in out.items()} | {"reference": [r["summary"] for r in records]}
    systems = {}
    for name, summaries in texts.items():
        f = faithfulness(summaries, [r["dialogue"] for r in records], cfg.seed)
        flagged = [dict(id=r["id"], summary=t, **x) for r, t, x in zip(records, summaries, f.pop("found")) if x["numbers"] or x["names"]]
        systems[name] = f | dict(rougeL=table.get(name, {}).get("rougeL"), examples=flagged[:EXAMPLES])
    return dict(n=len(records), systems=systems)


def qa_task(run_dir: Path, args) -> dict:
    "Key-fact verdicts of each system's answers on the run's held-out questions."
    from domaintune_course.hallucination import fact_rates, load_key_facts
    from domaintune_course.training import run_config
    from domaintune_course.tasks import qa
    cfg = run_config(run_dir)
    records = quality.read_jsonl(run_dir / "data" / "test.jsonl")[:args.limit or cfg.eval_limit]
    facts = load_key_facts()
    table, raw = qa.compare(run_dir, records, quality.read_jsonl(run_dir / "data" / "train.jsonl"), systems=QA_SYSTEMS)
    systems = {}
    for name in QA_SYSTEMS:
        r = fact_rates(list(raw[name]["answers"]), records, facts, cfg.seed)
        verdicts, kept = r.pop("verdicts"), [(x, a) for x, a in zip(records, raw[name]["answers"]) if x["id"] in facts]
        wrong = [dict(id=x["id"], question=x["prompt"], key_fact=facts[x["id"]]["fact"], verdict=v, answer=a)
                 for (x, a), v in zip(kept, verdicts) if v != "supported"]
        systems[name] = r | dict(token_f1=table[name]["token_f1"], examples=sorted(wrong, key=lambda w: w["verdict"] != "contradicted")[:EXAMPLES])
    return dict(n=len(records), with_key_fact=sum(x["id"] in facts for x in records), systems=systems)


def bench_task(task: str, args, work: Path) -> dict:
    "Train (or reuse) the task's run and measure it; one entry of `tasks`."
    try:
        module = quality.task_module(task)
        if args.quick and task not in args.runs:
            from domaintune_course.config import make_config
            run_dir = work / f"{task}-run"; run_dir.mkdir(parents=True, exist_ok=True)
            module.train(make_config(task, args.profile, strategy="lora", **quick_setup(task, work)), run_dir)
        else: run_dir, _ = quality.get_run(task, module, args, work)
        start = time.perf_counter(); result = (summarize_task if task == "summarize" else qa_task)(Path(run_dir), args)
    except Exception as e:  # one task failing must not lose the other's results
        import traceback
        return dict(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-3000:])
    train = json.loads((Path(run_dir) / "bench_train.json").read_text(encoding="utf-8")) if (Path(run_dir) / "bench_train.json").is_file() else None
    return dict(status="ok", run_dir=str(run_dir), trained_here=task not in args.runs, score_seconds=round(time.perf_counter() - start, 1),
                train={k: train.get(k) for k in ("global_step", "train_seconds", "profile", "model", "strategy", "date", "command")} if train else None, **result)


def main(argv=None):
    p = benchlib.parser(__doc__.split("\n\n")[0])
    benchlib.run_options(p, TASKS)
    p.add_argument("--limit", type=int, default=None, help="held-out examples per task (default: the run's eval_limit)")
    args = p.parse_args(argv)
    args.runs, args.profile, args.argv = benchlib.parse_runs(args.runs, TASKS, need_model=True), args.profile or ("smoke" if args.quick else "cpu"), argv
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.keep_runs or benchlib.temp_dir("bench-hallucination-")
    work.mkdir(parents=True, exist_ok=True)
    tasks = {t: bench_task(t, args, work) for t in args.tasks}
    result = dict(benchmark="hallucination", **benchlib.header(__file__, argv), quick=args.quick, profile=args.profile, tasks=tasks,
                  all_ok=all(t["status"] == "ok" for t in tasks.values()))
    if result["all_ok"] and set(tasks) == set(TASKS):
        from domaintune_course.hallucination import plot_remedies, remedy_table
        qa_rates, sum_rates = tasks["qa"]["systems"], tasks["summarize"]["systems"]
        result["remedies"] = json.loads(remedy_table(qa_rates, sum_rates).to_json(orient="index"))
        plot_remedies(qa_rates, sum_rates, title=f"Hallucination by remedy, {args.profile} profile").savefig(args.out / "hallucination.png", dpi=100)
        result["plot"] = "hallucination.png"
    print(benchlib.write_result(args.out, "hallucination.json", result))
    return result


if __name__ == "__main__": sys.exit(0 if main()["all_ok"] else 1)
