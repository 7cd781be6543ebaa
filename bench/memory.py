"""Lesson 00's memory estimator against measurement: model footprint and peak training memory, fp32, bf16 and NF4.

Each configuration runs in a fresh Python process, so one measurement cannot inherit another's heap. Two measurements,
both sampled every 2 ms during training and taken relative to the moment just before the model was loaded (after imports,
data and tokenizer, with freed heap returned to the OS by glibc's `malloc_trim`):
- allocated: the bytes the C allocator has handed out and not had back (glibc `mallinfo2`), i.e. the live tensors, as
  `torch.cuda.max_memory_allocated` counts them on a GPU. This is what the estimator estimates and what the target is for.
- resident: the process's resident set size (RSS, /proc/self/statm), what the operating system has to provide. glibc's
  heap keeps memory that tensors freed, so it reads higher; it is reported beside, with its own error.
(tracemalloc sees only Python's allocator, not the tensors torch allocates in C++, and torch has no allocation counters
for the CPU.) The model footprint is reported as exact tensor bytes (`get_memory_footprint`: parameters and buffers).
The measurement is on the CPU, also on a machine with a GPU (the children see no CUDA device).

    python bench/memory.py                  # SmolLM2-135M and MiniLM-L6, fp32 / bf16 / NF4
    python bench/memory.py --quick --out /tmp/b
"""
import argparse, dataclasses, gc, json, os, subprocess, sys, tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

TARGET_PCT = 15.0
MODELS = {"smollm2-135m": "causal", "minilm-l6": "encoder"}
PRECISIONS = ("fp32", "bf16", "nf4")


def strategy_for(kind: str, precision: str) -> str:
    "The course's strategy for a model kind at a precision: LoRA (QLoRA on NF4) for the causal LM, full fine-tuning for the encoder (LoRA on an NF4 base)."
    if precision == "nf4": return "qlora" if kind == "causal" else "lora"
    return "lora" if kind == "causal" else "full"


# ---------------------------------------------------------------- one configuration, in a child process

def features(kind: str, tok, n: int, max_length: int) -> list[dict]:
    "Tokenized training examples: bundled dialogues for the causal LM, bundled (or toy) reviews for the encoder."
    from domaintune_course.data import build_example, load_task_data
    if kind == "causal":
        from domaintune_course.batching import tokenize_example
        return [tokenize_example(tok, *build_example("summarize", r), max_length=max_length) for r in load_task_data("summarize")[:n]]
    from domaintune_course.tasks import classify
    try: recs = classify.load_reviews()[:n]
    except Exception:
        from domaintune_course.testing import toy_reviews
        recs = toy_reviews(n)
    return [{k: v for k, v in f.items() if k in ("input_ids", "attention_mask", "labels")}
            for f in classify.encode([r["text"] for r in recs], tok, max_length, labels=[r["label"] for r in recs])]


def load(model: str, kind: str, precision: str, cfg):
    "The model set up for training at `precision`, through the course's loaders where they cover the case."
    import torch
    from domaintune_course import qlora
    from domaintune_course.models import load_model, lora_targets
    if kind == "causal" and precision != "bf16": return qlora.load_for_training(cfg)[0]
    from domaintune_course.tasks import classify
    if kind == "encoder" and precision == "fp32": return classify.build_classifier(cfg)
    if kind == "encoder" and precision == "bf16": return classify.build_classifier(cfg)  # fp32 master weights, bf16 autocast
    # bf16 weights for the LoRA base (the course's loader keeps fp32 on a CPU), or an NF4 encoder (the classify task refuses qlora)
    kw = dict(num_labels=2) if kind == "encoder" else {}
    if precision == "nf4":
        from peft import prepare_model_for_kbit_training
        quant = qlora.quantization_config(dataclasses.replace(cfg, strategy="qlora"))
        if kind == "encoder":  # the head and pooler are trained in full, so they stay in full precision
            from transformers import BitsAndBytesConfig
            quant = BitsAndBytesConfig(**{**quant.to_dict(), "llm_int8_skip_modules": ["classifier", "pooler.dense"]})
        m = prepare_model_for_kbit_training(load_model(model, kind=kind, quantization_config=quant, **kw), use_gradient_checkpointing=False)
    else: m = load_model(model, kind=kind, dtype=torch.bfloat16, **kw)
    if kind == "encoder": return classify.add_lora(m, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) if precision == "nf4" else classify.freeze(m, "full")
    from peft import LoraConfig, get_peft_model
    return get_peft_model(m, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, task_type="CAUSAL_LM",
                                        target_modules=lora_targets(m)))


def child(spec: dict) -> dict:
    "Load one configuration and train a few steps; the measured footprint and peak, in bytes."
    import torch
    from domaintune_course import qlora
    from domaintune_course.config import make_config
    from domaintune_course.models import load_tokenizer
    kind, precision = spec["kind"], spec["precision"]
    cfg = make_config("summarize" if kind == "causal" else "classify", "cpu", model=spec["model"], strategy=strategy_for(kind, precision),
                      precision="fp32" if precision == "nf4" else precision, batch_size=spec["batch_size"], max_length=spec["max_length"], seed=42)
    tok = load_tokenizer(spec["model"])
    if kind == "causal":
        from domaintune_course.batching import CompletionCollator, ensure_pad_token
        tok = ensure_pad_token(tok); collate = CompletionCollator(tok, pad_to_multiple_of=spec["max_length"])
    else:
        from transformers import DataCollatorWithPadding
        collate = DataCollatorWithPadding(tok, padding="max_length", max_length=spec["max_length"])
    feats = features(kind, tok, spec["batch_size"], spec["max_length"])
    batch = collate([dict(f) for f in feats])  # every step the same full-length batch: the worst case the estimate is for
    warm = load(spec["model"], kind, precision, cfg); benchlib.copy_mapped_tensors(warm)
    shape = model_shape(warm, kind)
    train(warm, batch, 1, precision); del warm  # warm-up: lazy imports and one-time set-up are not the model's memory
    gc.collect(); benchlib.trim_heap(); before, heap_before = benchlib.rss_bytes(), benchlib.heap_bytes()
    model = load(spec["model"], kind, precision, cfg)
    copied = benchlib.copy_mapped_tensors(model)  # weights mapped zero-copy from the checkpoint count once, in ordinary memory
    gc.collect(); benchlib.trim_heap(); loaded = benchlib.rss_bytes()
    with benchlib.PeakMemory(interval=0.002) as mem: params = train(model, batch, spec["steps"], precision)
    out = dict(footprint_tensor_bytes=int(model.get_memory_footprint()), footprint_rss_bytes=loaded - before,
               peak_training_rss_bytes=mem.peak_rss - before, parameters=sum(p.numel() for p in model.parameters()),
               trainable_parameters=sum(p.numel() for p in params), strategy=cfg.strategy, shape=shape,
               copied_from_mapped_file_mb=benchlib.mb(copied), measured_with="glibc mallinfo2 (allocated) and RSS, sampled every 2 ms")
    # the target is checked against allocated bytes where glibc reports them, otherwise against the RSS
    if mem.peak_heap is not None: out["peak_training_allocated_bytes"] = mem.peak_heap - heap_before
    out["peak_training_bytes"] = out.get("peak_training_allocated_bytes", out["peak_training_rss_bytes"])
    return out


def train(model, batch: dict, steps: int, precision: str) -> list:
    "Train `steps` AdamW steps on `batch` (bf16: under autocast, as `Trainer(bf16=True)` runs); returns the trainable parameters."
    import contextlib, torch
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    model.train()
    for _ in range(steps):
        with autocast: loss = model(**batch).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    return params


def model_shape(model, kind: str) -> dict:
    "The fields of lesson 00's `ModelShape`, read from a loaded model (4-bit tensors counted as the values they hold)."
    from domaintune_course.models import LORA_TARGETS
    c = model.config
    params = sum(p.numel() * (2 if type(p).__name__ == "Params4bit" else 1) for n, p in model.named_parameters() if "lora_" not in n
                 and "modules_to_save" not in n)
    targets = set(LORA_TARGETS.get(c.model_type, ()))
    adapted = [m for n, m in model.named_modules() if n.split(".")[-1] in targets and hasattr(m, "in_features")]
    width, width_in = sum(m.in_features + m.out_features for m in adapted), sum(m.in_features for m in adapted)
    tied = True if kind == "encoder" else bool(getattr(c, "tie_word_embeddings", False))  # an encoder has no output head
    per_block = c.hidden_size * c.num_hidden_layers
    return dict(params=float(params), layers=c.num_hidden_layers, hidden=c.hidden_size, vocab=c.vocab_size, tied=tied,
                intermediate=c.intermediate_size, lora_width=round(width / per_block, 3), lora_in=round(width_in / per_block, 3),
                heads=c.num_attention_heads, kv_heads=getattr(c, "num_key_value_heads", None) or c.num_attention_heads,
                gated=c.model_type in ("llama", "mistral", "qwen2", "gemma", "phi3"),
                attn_dropout=float(getattr(c, "attention_probs_dropout_prob", 0.0) or getattr(c, "attention_dropout", 0.0) or 0.0),
                hidden_dropout=float(getattr(c, "hidden_dropout_prob", 0.0) or 0.0), lm_head=kind == "causal")


def run_child(spec: dict, timeout: float = 1800) -> dict:
    "Run `child(spec)` in a fresh Python process and return its result (or the error)."
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # a CPU measurement, also on a machine with a GPU
        r = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec), "--child-out", out.name], capture_output=True,
                           text=True, timeout=timeout, cwd=benchlib.ROOT, env=env)
        if r.returncode != 0: return dict(error=r.stderr[-3000:])
        return json.loads(Path(out.name).read_text())


# ---------------------------------------------------------------- the estimator

def estimator_args(spec: dict, measured: dict) -> dict:
    "The arguments of lesson 00's `estimate_memory` that describe this configuration."
    from domaintune_course.costs import SHAPES, ModelShape
    shape = SHAPES.get(spec["name"]) or ModelShape(name=spec["name"], **measured["shape"])
    strategy = "qlora" if spec["precision"] == "nf4" else measured["strategy"]
    return dict(model=shape, strategy=strategy, precision="fp32" if spec["precision"] == "nf4" else spec["precision"],
                batch_size=spec["batch_size"], seq_len=spec["max_length"], optimizer="adamw", lora_r=16, lora_dropout=0.05,
                device="cpu", attention="sdpa")


def estimate(spec: dict, measured: dict) -> dict:
    "Lesson 00's estimate for the configuration: footprint and peak training bytes, and its parts."
    from domaintune_course.concepts import estimate_memory
    args = estimator_args(spec, measured)
    est = estimate_memory(**args)
    parts = {k: v for k, v in est.items() if k not in ("total", "trainable_params")}
    return dict(footprint_bytes=est["weights"] * 2**30, peak_training_bytes=est["total"] * 2**30,
                parts_mb={k: round(v * 1024, 1) for k, v in parts.items()}, strategy=args["strategy"], shape=args["model"].name,
                trainable_params=est.get("trainable_params"))


def compare(spec: dict, measured: dict, est: dict) -> dict:
    "Measured and estimated MB side by side, and the errors in percent."
    row = dict(spec, **{k: v for k, v in measured.items() if not k.endswith("_bytes") and k != "shape"},
               footprint_tensor_mb=benchlib.mb(measured["footprint_tensor_bytes"]), footprint_rss_mb=benchlib.mb(measured["footprint_rss_bytes"]),
               peak_training_mb=benchlib.mb(measured["peak_training_bytes"]), peak_training_rss_mb=benchlib.mb(measured["peak_training_rss_bytes"]),
               peak_measured_as="allocated" if "peak_training_allocated_bytes" in measured else "rss")
    return row | dict(estimated_footprint_mb=benchlib.mb(est["footprint_bytes"]), estimated_peak_training_mb=benchlib.mb(est["peak_training_bytes"]),
                      footprint_error_pct=benchlib.pct_error(est["footprint_bytes"], measured["footprint_tensor_bytes"]),
                      peak_training_error_pct=benchlib.pct_error(est["peak_training_bytes"], measured["peak_training_bytes"]),
                      peak_training_rss_error_pct=benchlib.pct_error(est["peak_training_bytes"], measured["peak_training_rss_bytes"]),
                      estimate_parts_mb=est["parts_mb"], estimator_strategy=est["strategy"], estimated_trainable_parameters=est["trainable_params"])


def main(argv=None):
    p = benchlib.parser(__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), help="which models (default: both)")
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    p.add_argument("--batch-size", type=int, default=None, help="examples per step (default: 4; --quick: 2)")
    p.add_argument("--max-length", type=int, default=None, help="tokens per example, every example padded to it (default: 256; --quick: 64)")
    p.add_argument("--steps", type=int, default=None, help="training steps measured (default: 3; --quick: 2)")
    p.add_argument("--child", help=argparse.SUPPRESS); p.add_argument("--child-out", help=argparse.SUPPRESS)  # one configuration, internal
    args = p.parse_args(argv)
    if args.child:
        Path(args.child_out).write_text(json.dumps(child(json.loads(args.child)))); return None
    bs, ml, steps = args.batch_size or (2 if args.quick else 4), args.max_length or (64 if args.quick else 256), args.steps or (2 if args.quick else 3)
    models = quick_models(args.models) if args.quick else {m: (m, MODELS[m]) for m in args.models}
    rows = []
    for label, (model, kind) in models.items():
        for precision in args.precisions:
            spec = dict(name=label, model=model, kind=kind, precision=precision, batch_size=bs, max_length=ml, steps=steps)
            measured = run_child(spec)
            if "error" in measured: rows.append(dict(spec, error=measured["error"])); continue
            rows.append(compare(spec, measured, estimate(spec, measured)))
            print(f"{label} {precision}: {rows[-1]['footprint_tensor_mb']} MB weights, {rows[-1]['peak_training_mb']} MB peak", flush=True)
    errs = [abs(r[k]) for r in rows for k in ("footprint_error_pct", "peak_training_error_pct") if r.get(k) is not None]
    rss_errs = [abs(r["peak_training_rss_error_pct"]) for r in rows if r.get("peak_training_rss_error_pct") is not None]
    result = dict(benchmark="memory", **benchlib.header(__file__, argv), quick=args.quick, target_pct=TARGET_PCT, rows=rows,
                  max_error_pct=max(errs) if errs else None, max_peak_rss_error_pct=max(rss_errs) if rss_errs else None,
                  meets_target=bool(errs) and max(errs) <= TARGET_PCT,
                  failed=[f"{r['name']} {r['precision']}" for r in rows if "error" in r])
    print(benchlib.write_result(args.out, "memory.json", result))
    return result


def quick_models(names: list[str]) -> dict:
    "Tiny stand-ins of `names`, saved to temporary directories (label -> (directory, kind))."
    from domaintune_course.testing import tiny_model_dir
    kinds = sorted({MODELS[n] for n in names})
    return {f"tiny-{k}": (str(tiny_model_dir(k, benchlib.temp_dir(f"bench-mem-{k}-"))), k) for k in kinds}


if __name__ == "__main__": sys.exit(0 if not (main() or {}).get("failed") else 1)  # a failed part fails `make bench`
