"""Effective training throughput (non-padding tokens per second) of the course's batching against the classic recipes.

Every strategy trains the same model on the same tokenized examples, in the same number of optimizer steps of the same
batch size; only the order of the examples and the collator differ. Steps of all strategies are interleaved in one run,
so a change in machine load touches every strategy alike. Only the training step (forward, backward, optimizer) is
timed; the batches are collated beforehand.

    python bench/throughput.py                 # SmolLM2-135M + LoRA on the bundled dialogues, MiniLM on the bundled reviews
    python bench/throughput.py --quick --out /tmp/b   # tiny models and toy rows: checks the script in seconds
    python bench/throughput.py --paths causal --strategies dynamic group_by_length trl --examples 96 --merge
        # the course against TRL's default configuration only, merged into results/throughput.json as `trl_comparison`

On the causal path TRL's `SFTTrainer` with its default configuration runs beside them as a baseline (`speedup_vs_trl`).
"""
import importlib.util, os, random, statistics, sys, time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

# None: the whole training split (246 dialogues). Reviews: 400 of the 602, where length grouping's padding has reached its
# floor (lesson 01a's padding_fraction on the training split: 3.3% at 256 reviews, 2.2% at 400, 2.3% at 602).
DEFAULT_EXAMPLES = dict(causal=None, classify=400)
TARGETS = dict(padding_fraction_max=0.03, speedup_vs_classic_min=1.8, speedup_vs_dynamic_min=1.3, speedup_vs_trl_min=1.2)


# ---------------------------------------------------------------- data and models (all built by the package)

def vary(rows: list[dict], key: str) -> list[dict]:
    "Toy rows made 1 to 4 times longer, so that --quick has lengths to group and padding to waste."
    return [dict(r, **{key: " ".join([r[key]] * (1 + i % 4))}) for i, r in enumerate(rows)]


def causal_setup(args) -> tuple:
    "SmolLM2 with LoRA and the bundled dialogues in the instruction format, tokenized by the course (or tiny stand-ins)."
    from domaintune_course.batching import tokenize_example
    from domaintune_course.config import make_config
    from domaintune_course.data import build_example, load_task_data, split_records
    from domaintune_course.qlora import load_for_training
    if args.quick:
        from domaintune_course.testing import tiny_model_dir, toy_dialogues
        name = str(tiny_model_dir("causal", benchlib.temp_dir("bench-causal-")))
        records = vary(toy_dialogues(24), "dialogue")
    else: name, records = "smollm2-135m", split_records(load_task_data("summarize"), "summarize", args.seed)[0]["train"]
    cfg = make_config("summarize", "smoke" if args.quick else "cpu", model=name, strategy="lora", precision="fp32",
                      max_length=args.max_length, batch_size=args.batch_size, seed=args.seed)
    model, tok = load_for_training(cfg)  # lesson 02's loader: LoRA on the fp32 base, pad token distinct from eos, use_cache off
    feats = [tokenize_example(tok, *build_example("summarize", r), max_length=args.max_length) for r in records]
    return model, tok, feats, dict(model=name, data="bundled dialogues, training split, instruction format" if not args.quick else "toy dialogues",
                                                 strategy="lora", precision="fp32")


def classify_setup(args) -> tuple:
    "MiniLM, fully fine-tuned as the course's classify path does, on the bundled reviews tokenized by the task's `encode`."
    from domaintune_course.config import make_config
    from domaintune_course.data import split_records
    from domaintune_course.models import load_tokenizer
    from domaintune_course.tasks import classify
    if args.quick:
        from domaintune_course.testing import tiny_model_dir, toy_reviews
        name = str(tiny_model_dir("encoder", benchlib.temp_dir("bench-encoder-")))
        records = vary(toy_reviews(24), "text")
    else: name, records = "minilm-l6", split_records(classify.load_reviews(), "classify", args.seed)[0]["train"]
    cfg = make_config("classify", "smoke" if args.quick else "cpu", model=name, max_length=args.max_length, batch_size=args.batch_size, seed=args.seed)
    tok = load_tokenizer(name)
    feats = classify.encode([r["text"] for r in records], tok, args.max_length, labels=[r["label"] for r in records])
    feats = [{k: v for k, v in f.items() if k in ("input_ids", "attention_mask", "labels")} for f in feats]
    return classify.build_classifier(cfg), tok, feats, dict(model=name, data="bundled reviews, training split" if not args.quick else "toy reviews",
                                                            strategy=cfg.strategy, precision="fp32")


# ---------------------------------------------------------------- strategies: batches of example indices and a collator

STRATEGIES = {  # name (as lesson 01a calls it): (the order lesson 01a's `batch_order` forms, collator, what it is)
    "pad_to_max": ("dynamic", "max_length", "classic recipe: padding='max_length' at max_length, random batches"),
    "dynamic": ("dynamic", "longest", "dynamic padding to the batch's longest example, random batches (DataCollatorWithPadding's default)"),
    "group_by_length": ("group_by_length", "longest", "length-grouped batches (the course's trainer: 50-batch megabatches sorted by length, batches shuffled) with dynamic padding"),
    "packed": ("dynamic", "flatten", "padding-free packing: each batch flattened into one row, position_ids restart per example"),
    "trl": ("dynamic", "trl", "TRL's SFTTrainer as SFTConfig() sets it up: random batches padded to the longest by its DataCollatorForLanguageModeling, "
                              "activation checkpointing on (its default), the loss of its compute_loss; fp32 like every strategy here "
                              "(SFTConfig's bf16 default is held equal)"),
}
BASELINES = dict(classic="pad_to_max", dynamic="dynamic", trl="trl")


def batches(lengths: list[int], batch_size: int, order: str, seed: int) -> list[list[int]]:
    "Batches of example indices, shuffled ('dynamic') or grouped by length as the course's trainer does (lesson 01a's `batch_order`)."
    from domaintune_course.batching import batch_order
    return batch_order(lengths, batch_size, order, seed)


def collators(path: str, tok, max_length: int) -> dict:
    "kind -> collator: pad to max_length (classic), to the batch's longest (dynamic), flatten with no padding (packed), or TRL's (trl)."
    if path == "causal":
        from transformers import DataCollatorWithFlattening
        from domaintune_course.batching import CompletionCollator
        cols = dict(max_length=CompletionCollator(tok, pad_to_multiple_of=max_length), longest=CompletionCollator(tok),
                    flatten=DataCollatorWithFlattening(return_position_ids=True, separator_id=-100))
        if importlib.util.find_spec("trl"): cols["trl"] = trl_collator(tok)
        return cols
    from transformers import DataCollatorWithPadding  # what the classify task's Trainer uses
    return dict(max_length=DataCollatorWithPadding(tok, padding="max_length", max_length=max_length), longest=DataCollatorWithPadding(tok))


def plan(feats: list[dict], names: list[str], cols: dict, batch_size: int, seed: int) -> dict:
    "name -> list of collated batches, every strategy over the same examples with the same batch size."
    lengths = [len(f["input_ids"]) for f in feats]
    return {name: [cols[STRATEGIES[name][1]]([dict(feats[i]) for i in b]) for b in batches(lengths, batch_size, STRATEGIES[name][0], seed)]
            for name in names}


def positions(batch) -> tuple[int, int]:
    "(real tokens, positions computed) of a collated batch."
    total = batch["input_ids"].numel()
    real = int(batch["attention_mask"].sum()) if "attention_mask" in batch else total
    return real, total


# ---------------------------------------------------------------- TRL's default configuration, as a baseline

def trl_collator(tok):
    "TRL's SFT collator with its defaults: pads input ids and labels to the batch's longest example (on the course's tokens, which lesson 02b proves are TRL's)."
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling
    return lambda feats: DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)([dict(input_ids=f["input_ids"], labels=f["labels"]) for f in feats])


def trl_trainer(model, tok, feats: list[dict], seed: int):
    "An `SFTTrainer` around the benchmark's model with `SFTConfig()`'s defaults (fp32 held equal), for its loss and its checkpointing setting."
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
    args = SFTConfig(output_dir=str(benchlib.temp_dir("bench-trl-")), use_cpu=not torch.cuda.is_available(), bf16=False, report_to=[], seed=seed)
    one = Dataset.from_dict(dict(input_ids=[feats[0]["input_ids"]], labels=[feats[0]["labels"]]))
    trainer = SFTTrainer(model=model, args=args, train_dataset=one, processing_class=tok)
    if hasattr(model, "disable_input_require_grads"): model.disable_input_require_grads()  # SFTTrainer enables it for checkpointing: only TRL's steps get it
    return trainer


@contextmanager
def trl_mode(model, trainer):
    "Around TRL's steps: activation checkpointing as its Trainer turns it on (the method's name depends on the transformers release)."
    args = trainer.args
    on = getattr(args, "activation_checkpointing", getattr(args, "gradient_checkpointing", False))
    kind = "activation_checkpointing" if hasattr(model, "activation_checkpointing_enable") else "gradient_checkpointing"
    if on:
        kwargs = getattr(args, "activation_checkpointing_kwargs", getattr(args, "gradient_checkpointing_kwargs", None))
        getattr(model, f"{kind}_enable")(**{f"{kind}_kwargs": kwargs or None})
        if hasattr(model, "enable_input_require_grads"): model.enable_input_require_grads()
    try: yield
    finally:
        if on:
            getattr(model, f"{kind}_disable")()
            if hasattr(model, "disable_input_require_grads"): model.disable_input_require_grads()


# ---------------------------------------------------------------- the timed, interleaved run

def schedule(plans: dict) -> list[tuple[str, int]]:
    "Interleave the strategies' steps so each advances through its batches at the same pace."
    steps = [(name, i) for name, bs in plans.items() for i in range(len(bs))]
    order = list(plans)
    return sorted(steps, key=lambda s: ((s[1] + 0.5) / len(plans[s[0]]), order.index(s[0])))


def train_step(model, optimizer, batch, loss_fn=None) -> float:
    "One forward, backward and optimizer step (the loss from `loss_fn(model, batch)` when given); returns the seconds it took."
    t0 = time.perf_counter()
    loss = loss_fn(model, batch) if loss_fn else model(**batch).loss
    loss.backward(); optimizer.step(); optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def measure(model, plans: dict, lr: float = 1e-5, warmup: int = 1, trainer=None) -> dict:
    "Seconds per step for every strategy, after `warmup` untimed steps each ('trl' steps through `trainer`, TRL's SFTTrainer)."
    import torch
    from contextlib import nullcontext
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    mode = lambda name: trl_mode(model, trainer) if name == "trl" else nullcontext()
    loss_fn = lambda name: (lambda m, b: trainer.compute_loss(m, b)) if name == "trl" else None
    for name, bs in plans.items():
        with mode(name):
            for b in bs[:warmup]: train_step(model, optimizer, b, loss_fn(name))
    times = {name: [] for name in plans}
    for name, i in schedule(plans):
        with mode(name): times[name].append(train_step(model, optimizer, plans[name][i], loss_fn(name)))
    return times


def summarize(plans: dict, times: dict, course: str) -> dict:
    "Tokens per second, padding fraction and the speedups of the course pipeline over each baseline."
    rows = {}
    for name, bs in plans.items():
        real, total = map(sum, zip(*(positions(b) for b in bs)))
        secs = sum(times[name])
        rows[name] = dict(description=STRATEGIES[name][2], steps=len(bs), real_tokens=real, computed_positions=total,
                          padding_fraction=round(1 - real / total, 4), seconds=round(secs, 3), tokens_per_second=round(real / secs, 1),
                          step_seconds_median=round(statistics.median(times[name]), 4))
    tps = {n: r["tokens_per_second"] for n, r in rows.items()}
    out = dict(strategies=rows, course=course, padding_fraction={n: r["padding_fraction"] for n, r in rows.items()},
               **{f"speedup_vs_{k}": round(tps[course] / tps[v], 3) for k, v in BASELINES.items() if v in tps})
    for other in set(rows) - {course, *BASELINES.values()}:
        out[f"{other}_speedup"] = {k: round(tps[other] / tps[v], 3) for k, v in BASELINES.items() if v in tps}
    out["meets_targets"] = dict(padding_fraction=rows[course]["padding_fraction"] <= TARGETS["padding_fraction_max"],
                                **{f"speedup_vs_{k}": out[f"speedup_vs_{k}"] >= TARGETS[f"speedup_vs_{k}_min"]
                                   for k in BASELINES if f"speedup_vs_{k}" in out and f"speedup_vs_{k}_min" in TARGETS})
    return out


def packing_check(model, feats: list[dict], n: int = 3) -> dict:
    "Lesson 01a's proof, on this model and data: do packed and one-by-one per-example losses agree?"
    from domaintune_course.batching import check_packing
    res = check_packing(model, feats[:n], atol=1e-3)
    return dict(ok=bool(res["ok"]), max_diff=float(res["max_diff"]), examples=n)


def pick_course(requested: str, names: list[str], check: dict | None) -> str:
    "The strategy that stands for the course pipeline: length grouping (what `qlora.fine_tune` trains with by default), or as requested."
    # 'auto' (packing wherever it is exact) was the default until the 2026-11-22 run measured packing slower than grouping on a CPU
    if requested == "auto": return "packed" if "packed" in names and check and check["ok"] else "group_by_length"
    return requested if requested in names else "group_by_length"


def trl_info(names: list[str], args) -> dict:
    "Whether TRL's baseline ran, with its version, or why not."
    if "trl" in names:
        from importlib.metadata import version
        return dict(ran=True, version=version("trl"), config="SFTConfig() defaults; use_cpu where there is no GPU; bf16=False (fp32, as every strategy here)")
    return dict(ran=False, reason="--no-trl" if args.no_trl else "trl is not installed (pip install 'domaintune-course[trl]')")


def bench_path(path: str, args) -> dict:
    "Build the model and data of one path, plan every strategy, time them interleaved, summarize."
    import torch
    torch.manual_seed(args.seed)
    model, tok, feats, info = (causal_setup if path == "causal" else classify_setup)(args)
    n = args.examples or DEFAULT_EXAMPLES[path]
    if n and n < len(feats): feats = [feats[i] for i in random.Random(args.seed).sample(range(len(feats)), n)]
    names = ["pad_to_max", "dynamic", "group_by_length"] + (["packed"] if path == "causal" and not args.no_packing else []) \
            + (["trl"] if path == "causal" and not args.no_trl and importlib.util.find_spec("trl") else [])
    if args.strategies: names = [n for n in names if n in args.strategies]
    out = dict(info, examples=len(feats), batch_size=args.batch_size, max_length=args.max_length,
               mean_length=round(statistics.mean(len(f["input_ids"]) for f in feats), 1), max_example_length=max(len(f["input_ids"]) for f in feats))
    if "packed" in names: out["packing_check"] = packing_check(model, feats)
    course = pick_course(args.course, names, out.get("packing_check"))
    plans = plan(feats, names, collators(path, tok, args.max_length), args.batch_size, args.seed)
    print(f"{path}: {len(feats)} examples, {sum(map(len, plans.values()))} timed steps, course pipeline = {course}", flush=True)
    if path == "causal": out["trl"] = trl_info(names, args)
    trainer = trl_trainer(model, tok, feats, args.seed) if "trl" in names else None
    res = summarize(plans, measure(model, plans, trainer=trainer), course)
    print(f"{path}: " + ", ".join(f"{n} {r['tokens_per_second']} tokens/s" for n, r in res["strategies"].items()), flush=True)
    return out | res


def main(argv=None):
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # a CPU benchmark, also on a machine with a GPU (effective before torch loads)
    p = benchlib.parser(__doc__.split("\n")[0])
    p.add_argument("--paths", nargs="+", default=["causal", "classify"], choices=["causal", "classify"], help="which training paths to measure")
    p.add_argument("--examples", type=int, default=None, help="examples per strategy, the same for all (default: causal the whole training split, classify 400; --quick: 12)")
    p.add_argument("--batch-size", type=int, default=None, help="examples per step (default: 8; --quick: 4)")
    p.add_argument("--max-length", type=int, default=None, help="truncation length, and the classic recipe's padded length (default: 512; --quick: 320)")
    p.add_argument("--course", default="group_by_length", choices=["auto", "group_by_length", "packed"],
                   help="the strategy the speedups and targets are for (default: group_by_length, what the course's Trainer uses "
                        "unless cfg.extra['packing']); auto: packed where lesson 01a's packing check passes on this model")
    p.add_argument("--no-packing", action="store_true", help="leave out the packed strategy")
    p.add_argument("--no-trl", action="store_true", help="leave out TRL's default configuration (the speedup_vs_trl baseline)")
    p.add_argument("--strategies", nargs="+", default=None, choices=list(STRATEGIES),
                   help="measure only these strategies (default: all); the course's strategy must be among them")
    p.add_argument("--merge", action="store_true", help="merge this run into OUT/throughput.json as `trl_comparison` (with its own "
                   "date and command) and set its `speedup_vs_trl`, keeping the full run's other figures")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    if args.strategies and args.course not in args.strategies: p.error(f"--strategies must include the course's strategy ({args.course})")
    if args.merge and not (args.strategies and "trl" in args.strategies): p.error("--merge is for a run of a few strategies that includes trl")
    args.examples = args.examples or (12 if args.quick else None)  # None: DEFAULT_EXAMPLES per path
    args.batch_size = args.batch_size or (4 if args.quick else 8)
    args.max_length = args.max_length or (320 if args.quick else 512)
    if args.course == "packed" and args.no_packing: p.error("--course packed needs the packed strategy: drop --no-packing")
    result = dict(benchmark="throughput", **benchlib.header(__file__, argv), quick=args.quick, targets=TARGETS)
    for path in args.paths: result[path] = bench_path(path, args)
    head = result[args.paths[0]]
    result.update(headline=args.paths[0], padding_fraction=head["padding_fraction"],
                  **{f"speedup_vs_{k}": head[f"speedup_vs_{k}"] for k in BASELINES if f"speedup_vs_{k}" in head})
    if args.merge: result = merge_trl(args.out / "throughput.json", result)
    print(benchlib.write_result(args.out, "throughput.json", result))
    return result


def merge_trl(path: Path, run: dict) -> dict:
    "The full run in `path` with `run` (a few strategies, TRL's among them) added as `trl_comparison` and its `speedup_vs_trl`."
    import json
    full = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else dict(benchmark="throughput")
    full["trl_comparison"] = run
    full["speedup_vs_trl"] = run["speedup_vs_trl"]
    full.setdefault("targets", {}).update(speedup_vs_trl_min=TARGETS["speedup_vs_trl_min"])
    return full


if __name__ == "__main__": main()
