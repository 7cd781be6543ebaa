"""Generation throughput of the base-vs-fine-tuned comparisons: the course's earlier path against its current one, side by side.

For each causal task (summarize: the bundled dialogues; qa: the bundled chronic-care questions), a fine-tuned run (trained
here at the profile's lesson budget, or given with --runs) answers its held-out examples with the base model and with the
fine-tuned one, by two paths:

- `today`: the path the course had until this benchmark was written, kept here as `today_models` and `generate_today`:
  the adapter loaded beside the base as a `PeftModel` (a full-precision base on a CPU, the 4-bit one on a GPU), the base
  answered with the adapter switched off, prompts in the caller's order in batches of the training batch size, and
  transformers' stop-string matching at every step;
- `new`: what `evaluate` runs now, `qlora.base_then_finetuned` and `generation.generate`: on a CPU the plain base, then the
  adapter merged into it (the merge is timed with the fine-tuned model); prompts sorted by length in batches of the
  profile's `eval_batch_size`; the exact end-marker check where the tokenizer allows it.

Both paths see the same prompts, the same answer budget and greedy decoding, so they must give the same answers: the
results record how many are identical. Model loading is not timed (both paths load the same weights). Rounds are
interleaved (today, then new; new first in every other round), so a change in machine load touches both paths alike;
each figure is the median over rounds. `speedup` = today's seconds / the new path's seconds for the same examples;
new tokens per second (tokens generated, each sequence counted up to its end) are reported beside it, and the CPU time of
the process (`cpu_seconds`, `speedup_cpu`), which other programs sharing the machine disturb less than the wall time.

Target: the summarization comparison (base + fine-tuned) at least 2x faster than today's path.

    python bench/generation.py                                   # train lesson-budget runs at the cpu profile, then measure
    python bench/generation.py --runs summarize=runs/summarize-... qa=runs/qa-...
    python bench/generation.py --quick --out /tmp/b              # tiny model and toy rows at the smoke profile
"""
import statistics, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

TASKS = ("summarize", "qa")
TARGETS = dict(summarize_speedup_min=2.0)


# ---------------------------------------------------------------- today's path, kept for the comparison

def today_models(run_dir: Path):
    "(model, tokenizer) as the earlier `qlora.load_finetuned` built them: the adapter beside the base (4-bit on a GPU for QLoRA)."
    import dataclasses, torch
    from peft import PeftModel
    from transformers import AutoTokenizer
    from domaintune_course import qlora, training
    cfg, model_dir = training.run_config(run_dir), Path(run_dir) / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    quantized = cfg.strategy == "qlora" and torch.cuda.is_available()
    base = qlora.load_base(dataclasses.replace(cfg, strategy="qlora" if quantized else "lora"), tokenizer)
    base.config.use_cache = True
    return PeftModel.from_pretrained(base, model_dir).eval(), tokenizer


def generate_today(model, tokenizer, prompts: list[str], max_new_tokens: int = 96, batch_size: int = 8, seed: int = 42) -> tuple[list[str], int]:
    "The earlier `generation.generate`, unchanged but for counting new tokens: (answers, tokens generated)."
    import torch
    from domaintune_course.batching import CompletionCollator, encode_prompt
    from domaintune_course.data import END_MARKER, cut_at_end
    from domaintune_course.generation import stop_ids
    torch.manual_seed(seed)
    collate, out, new_tokens = CompletionCollator(tokenizer, padding_side="left"), [], 0
    device = next(model.parameters()).device
    for i in range(0, len(prompts), batch_size):
        ids = [encode_prompt(tokenizer, p) for p in prompts[i:i + batch_size]]
        batch = {k: v.to(device) for k, v in collate([dict(input_ids=x, attention_mask=[1] * len(x)) for x in ids]).items()}
        with torch.no_grad():
            gen = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop_ids(tokenizer),
                                 pad_token_id=tokenizer.pad_token_id, stop_strings=[END_MARKER], tokenizer=tokenizer)
        new = gen[:, batch["input_ids"].shape[1]:]
        new_tokens += int((new != tokenizer.pad_token_id).sum())
        texts = tokenizer.batch_decode(new, skip_special_tokens=False)
        out += [cut_at_end(t.replace(tokenizer.pad_token or "\0", ""), tokenizer.eos_token) for t in texts]
    return out, new_tokens


def run_today(model, tokenizer, prompts: list[str], budget: int, batch_size: int) -> dict:
    "One round of today's path: base (adapter off), then fine-tuned; answers, seconds and new tokens of each."
    out = {}
    for name in ("base", "finetuned"):
        start, cpu = time.perf_counter(), time.process_time()
        if name == "base":
            with model.disable_adapter(): answers, n = generate_today(model, tokenizer, prompts, budget, batch_size)
        else: answers, n = generate_today(model, tokenizer, prompts, budget, batch_size)
        out[name] = dict(answers=answers, seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - cpu, new_tokens=n)
    return out


def run_new(run_dir: Path, prompts_of, budget: int, batch_size: int) -> dict:
    "One round of the new path: `base_then_finetuned` (the merge timed with the fine-tuned model) and `generation.generate`."
    from domaintune_course import generation, qlora
    tokenizer, models = qlora.base_then_finetuned(run_dir)
    prompts, out, start = prompts_of(tokenizer), {}, None
    for name, model in models:  # loading the base is not timed (today's path loads the same weights, untimed too)
        prepare, prepare_cpu = (0.0, 0.0) if start is None else (time.perf_counter() - start[0], time.process_time() - start[1])
        cpu = time.process_time()
        g = generation.generate(model, tokenizer, prompts, budget, batch_size, progress=False)
        out[name] = dict(answers=list(g), seconds=prepare + g.seconds, cpu_seconds=prepare_cpu + time.process_time() - cpu,
                         new_tokens=g.new_tokens, prepare_seconds=round(prepare, 3))
        start = (time.perf_counter(), time.process_time())
    return out


# ---------------------------------------------------------------- runs and prompts

def get_run(task: str, args, work: Path) -> Path:
    "The run to measure: given with --runs, or trained here at the profile's lesson budget (--quick: a tiny model, LoRA)."
    if task in args.runs: return Path(args.runs[task])
    from domaintune_course.config import make_config
    from domaintune_course.tasks import qa, summarize
    overrides = {}
    if args.quick:
        from domaintune_course import testing
        rows = testing.toy_dialogues(24) if task == "summarize" else testing.toy_qa_rows(24)
        overrides = dict(model=str(testing.tiny_model_dir("causal", work / "tiny-causal")), strategy="lora",
                         data=str(testing.write_jsonl(rows, work / f"{task}.jsonl")))
    cfg = make_config(task, args.profile, lesson=True, **overrides)
    run_dir = work / f"{task}-run"
    dict(summarize=summarize, qa=qa)[task].train(cfg, run_dir)
    return run_dir


def task_setup(task: str, run_dir: Path, args) -> tuple:
    "(prompts_of(tokenizer), answer budget, today's batch size, the new batch size, what was measured) for one run."
    from domaintune_course import qlora, training
    from domaintune_course.formats import read_jsonl
    from domaintune_course.tasks import qa, summarize
    cfg = training.run_config(run_dir)
    rows = read_jsonl(run_dir / "data" / "test.jsonl")[:args.examples]
    if task == "summarize":
        gen = training.run_file(run_dir, "generation")
        return ((lambda tok: [summarize.summary_prompt(r, tok, gen["style"]) for r in rows]), gen["max_new_tokens"], cfg.batch_size,
                cfg.eval_batch_size, dict(data="bundled dialogues, the run's test split", style=gen["style"]))
    return ((lambda tok: [qa.qa_example(r, tok)[0] for r in rows]), qa.answer_budget(cfg), cfg.batch_size, cfg.eval_batch_size,
            dict(data="bundled chronic-care questions, the run's test split", style=qa.PROMPT_STYLE))


# ---------------------------------------------------------------- measurement

def measure_task(task: str, args, work: Path) -> dict:
    "Interleaved rounds of both paths on one run; medians, speedups and how many answers agree."
    from domaintune_course import generation, qlora, training
    run_dir = get_run(task, args, work)
    prompts_of, budget, today_batch, new_batch, info = task_setup(task, run_dir, args)
    model, tok = today_models(run_dir)
    prompts = prompts_of(tok)
    rounds = {"today": [], "new": []}
    for r in range(args.repeats):
        order = ("today", "new") if r % 2 == 0 else ("new", "today")
        for path in order:
            rounds[path].append(run_today(model, tok, prompts, budget, today_batch) if path == "today" else run_new(run_dir, prompts_of, budget, new_batch))
            print(f"{task} round {r + 1} {path}: " + ", ".join(f"{m} {rounds[path][-1][m]['seconds']:.1f} s" for m in ("base", "finetuned")), flush=True)
    cfg = training.run_config(run_dir)
    out = dict(info, run_dir=str(run_dir) if task in args.runs else None, model=cfg.model, strategy=cfg.strategy, device=generation.inference_device(),
               examples=len(prompts), max_new_tokens=budget, repeats=args.repeats,
               paths=dict(today=summary(rounds["today"], today_batch), new=summary(rounds["new"], new_batch)))
    return out | speedups(out["paths"]) | dict(answers_identical=agreement(rounds))


def summary(rounds: list[dict], batch_size: int) -> dict:
    "Median seconds, new tokens and rates per model over the rounds."
    out = dict(batch_size=batch_size)
    for m in ("base", "finetuned"):
        secs, toks = statistics.median(r[m]["seconds"] for r in rounds), rounds[-1][m]["new_tokens"]
        out[m] = dict(seconds=round(secs, 3), seconds_per_round=[round(r[m]["seconds"], 3) for r in rounds],
                      cpu_seconds=round(statistics.median(r[m]["cpu_seconds"] for r in rounds), 3), new_tokens=toks,
                      new_tokens_per_second=round(toks / secs, 1), examples_per_second=round(len(rounds[-1][m]["answers"]) / secs, 3))
        if "prepare_seconds" in rounds[-1][m]: out[m]["prepare_seconds"] = rounds[-1][m]["prepare_seconds"]
    both = statistics.median(r["base"]["seconds"] + r["finetuned"]["seconds"] for r in rounds)
    out["both"] = dict(seconds=round(both, 3), cpu_seconds=round(statistics.median(r["base"]["cpu_seconds"] + r["finetuned"]["cpu_seconds"] for r in rounds), 3),
                       new_tokens_per_second=round((out["base"]["new_tokens"] + out["finetuned"]["new_tokens"]) / both, 1))
    return out


def speedups(paths: dict) -> dict:
    "Today's seconds / the new path's, per model and for the whole comparison (wall time; CPU time of this process beside)."
    t, n, models = paths["today"], paths["new"], ("base", "finetuned", "both")
    return dict(speedup={m: round(t[m]["seconds"] / n[m]["seconds"], 3) for m in models},
                speedup_cpu={m: round(t[m]["cpu_seconds"] / n[m]["cpu_seconds"], 3) for m in models})


def agreement(rounds: dict) -> dict:
    "Per model: how many answers the two paths share, and the first example where they differ (None if none)."
    out = {}
    for m in ("base", "finetuned"):
        a, b = rounds["today"][-1][m]["answers"], rounds["new"][-1][m]["answers"]
        diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        out[m] = dict(identical=len(a) - len(diff), of=len(a), first_difference=diff[0] if diff else None)
    return out


def main(argv=None):
    p = benchlib.parser(__doc__.split("\n")[0])
    benchlib.run_options(p, TASKS)
    p.add_argument("--examples", type=int, default=None, help="held-out examples per task (default: the whole test split; --quick: 6)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds per path (default: 2; --quick: 1)")
    args = p.parse_args(argv)
    args.profile = args.profile or ("smoke" if args.quick else "cpu")
    args.examples = args.examples or (6 if args.quick else None)
    args.repeats = args.repeats or (1 if args.quick else 2)
    args.runs = parse_runs(args.runs)
    work = args.keep_runs or benchlib.temp_dir("bench-generation-")
    work.mkdir(parents=True, exist_ok=True)
    result = dict(benchmark="generation", **benchlib.header(__file__, argv), quick=args.quick, profile=args.profile, targets=TARGETS,
                  tasks={task: measure_task(task, args, work) for task in args.tasks})
    head = result["tasks"].get("summarize")
    result["speedup"] = head["speedup"]["both"] if head else None
    result["meets_target"] = None if head is None or args.quick else head["speedup"]["both"] >= TARGETS["summarize_speedup_min"]
    print(benchlib.write_result(args.out, "generation.json", result))
    return result


def parse_runs(items: list[str]) -> dict:
    "task=DIR pairs from --runs: finished runs with a trained model."
    return benchlib.parse_runs(items, TASKS, need_model=True)


if __name__ == "__main__": main()
