"""The course's GPU path, checked on one GPU: QLoRA on phi-2 and falcon-rw-1b, fp16 and bf16 (under 8 minutes; --quick under 4).

Prepared command for a machine with one GPU and no network (after `make gpu-check-bundle` where pip reaches PyPI, with
bench/gpu_bundle/ brought along; a 5-minute limit leaves room for a second try):

    timeout 300 python3 bench/gpu_check.py --quick --bundle bench/gpu_bundle --out "${OUT:-bench/results}"

Not run on a GPU yet: the times below are estimates, and only the CPU dry run has run (in tests/test_gpu_check.py).

Model weights cannot travel to an air-gapped GPU machine, so each model is built from its hub config at its real size
(random weights: memory and speed do not depend on the values; built on the GPU, where random init takes well under a
second, against 20-27 ns per parameter measured on 2 CPU cores, i.e. about a minute for phi-2), saved with a small
tokenizer to a work folder on disk, and from there goes through the course's own functions, as a run of `domaintune
train` would: `qlora.load_for_training` (NF4 with double quantization, `prepare_model_for_kbit_training`, gradient
checkpointing, LoRA), `training.training_arguments` (the profile's precision and `paged_adamw_8bit`) and
`batching.course_trainer` for a few optimizer steps, then `qlora.save_finetuned`, `qlora.load_finetuned` (the adapter
reloaded with `PeftModel`), `generation.generate` (batched greedy decoding) and `qlora.merge_adapter`. Peak
`torch.cuda.max_memory_allocated` during training is set beside lesson 00's `estimate_memory` for the same configuration.
Every (profile, model) pair runs in its own process and every step records its status (ok, failed, skipped, or
incomplete: cut at the time budget's end) and seconds on its own, so one failure hides nothing else; `gpu.json` is
rewritten after each pair.

    python bench/gpu_check.py                          # full: 4 pairs, 20 steps each, 420 s budget: bench/results/gpu.json
    python bench/gpu_check.py --quick --out DIR        # t4 / falcon-rw-1b only, 10 steps, 200 s budget
    python bench/gpu_check.py --dry-run [--quick]      # on a CPU: tiny configs, 3 steps, gpu.json into a temporary folder
    python bench/gpu_check.py --seal-bundle NEW DEST   # (make gpu-check-bundle) NEW becomes DEST if it is at most 60 MiB

The time budget bounds the run: a step that would start after it is skipped, a step running at its end is cut (the
child's alarm; the parent stops the process 15 s later), both marked incomplete, never failed; a pair that cannot start
is skipped with the reason. The command ends within budget + 15 s plus the interpreter's exit. How the budgets were
sized (`plan.estimate` in gpu.json, from `estimate_seconds`): per pair ~10 s to start a process (imports, CUDA context);
build = 3 s + the fp16 checkpoint (2 bytes x params: 5.6 GB phi-2, 2.6 GB falcon-rw-1b) written at 0.5 GB/s; load,
reload and each load in merge = 5 s + the checkpoint read at 1 GB/s (page cache); a training step = 6 x params x
tokens FLOPs (LoRA on a frozen base: forward, input gradients, and the recomputation that checkpointing adds; 8.5 TFLOP
for phi-2 at 512 tokens) at 10% of the H100's 989 TFLOP/s dense fp16/bf16 peak (batch 1-2, NF4 dequantization) + 0.3 s
of launches and logging; decoding 0.03 s per token step; merge also writes the merged checkpoint. That gives about 315 s
for the full run (budget 420 s) and 80 s for --quick (budget 200 s): the margins absorb a disk or a step several times
slower than assumed; what does not fit is cut and reported as incomplete.

Without network or package index: torch, transformers, peft and accelerate must be installed; their versions, and every
other package pyproject.toml names, are checked against its specifiers, and mismatches are printed first and recorded
(`requirements`, `version_mismatches`). bitsandbytes, when missing, is installed from the wheel in bench/gpu_bundle/
into the work folder. The work folder (checkpoints and that install) is bench/gpu_work/ in the repository (ignored by
git), or `--work-dir`: never /dev/shm, a tmpfs or a noexec mount (read from /proc/mounts), where bitsandbytes' CUDA
library could not be loaded. datasets and rouge_score are neither needed nor imported (`--hide`, the default). Exit
status: 0 ok, 1 failed, 2 bad arguments, 3 incomplete (nothing failed, but the budget cut something).
"""
import argparse, dataclasses, fcntl, importlib, importlib.util, json, math, os, re, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

BUNDLE = benchlib.ROOT / "bench" / "gpu_bundle"
BUNDLE_LIMIT_MIB = 60  # the bundle travels with the working tree, which may carry 64 MiB in all
WORK_ROOT = benchlib.ROOT / "bench" / "gpu_work"  # ignored by git; on the repository's disk
# (pairs, optimizer steps per pair, seconds for the whole check): the full run, and --quick (the T4's fp16 path on the
# smaller model, the one whose layers transformers 5 once left unquantized)
PROFILES = ("t4", "l4")  # t4: fp16 (Turing), l4: bf16 (Ada); both train with gradient checkpointing and paged_adamw_8bit
PLANS = {"full": dict(profiles=PROFILES, models=("phi-2", "falcon-rw-1b"), steps=20, budget=420),
         "quick": dict(profiles=("t4",), models=("falcon-rw-1b",), steps=10, budget=200)}
DRY_STEPS, DRY_BUDGET = 3, 300
GRACE = 15             # seconds a pair's process gets past the budget to write what it did, before it is stopped
MIN_PAIR_SECONDS = 30  # a pair starts only with this much of the budget left (--dry-run: 5)
PROMPTS, NEW_TOKENS, ONE_BY_ONE = 8, 32, 4  # greedy generation: prompts in one batch, tokens for each; prompts also decoded alone
HIDDEN = ("datasets", "rouge_score")  # the check must not need them: the runs treat them as not installed
CHECK_USES = ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "safetensors", "tokenizers")  # a mismatch here matters
# what `estimate_seconds` assumes of one H100-class GPU machine (see the docstring); estimates until a GPU run measures them
ASSUME = dict(process_start_s=10, parent_s=15, write_gb_s=0.5, read_gb_s=1.0, load_overhead_s=5, peak_tflops=989, mfu=0.10,
              step_overhead_s=0.3, decode_token_s=0.03)

# The hub's config.json of each model (the keys that set its shape and behaviour), built as `AutoConfig.for_model` reads it.
CONFIGS = {
    "phi-2": dict(model_type="phi", architectures=["PhiForCausalLM"], vocab_size=51200, hidden_size=2560, intermediate_size=10240,
                  num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, hidden_act="gelu_new",
                  max_position_embeddings=2048, initializer_range=0.02, layer_norm_eps=1e-5, tie_word_embeddings=False,
                  rope_theta=10000.0, partial_rotary_factor=0.4, qk_layernorm=False, resid_pdrop=0.1, embd_pdrop=0.0,
                  attention_dropout=0.0, bos_token_id=50256, eos_token_id=50256),
    "falcon-rw-1b": dict(model_type="falcon", architectures=["FalconForCausalLM"], vocab_size=50304, hidden_size=2048,
                         num_hidden_layers=24, num_attention_heads=32, alibi=True, bias=True, multi_query=False, parallel_attn=False,
                         new_decoder_architecture=False, apply_residual_connection_post_layernorm=False, hidden_dropout=0.0,
                         attention_dropout=0.0, layer_norm_epsilon=1e-5, initializer_range=0.02, bos_token_id=1, eos_token_id=2),
}
# --dry-run: the same architectures, tiny (a vocabulary larger than the tokenizer's, as the real models have)
TINY = {"phi-2": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=256),
        "falcon-rw-1b": dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4)}
TASK = {"phi-2": "summarize", "falcon-rw-1b": "qa"}  # the task each model serves in the GPU profiles (its budget keys)


# ---------------------------------------------------------------- steps that record themselves

class DeadlineReached(BaseException):
    "The time budget ran out while a step was running (a BaseException, so that no library's `except Exception` swallows it)."


class Steps:
    "Run named steps, each recording its status, seconds and error on its own; a step whose prerequisite raised is skipped."
    current = None  # the step running in this process, for the deadline alarm

    def __init__(self, record: dict, deadline: float, save=lambda: None, log=print):
        self.record, self.deadline, self.save, self.log, self.done = record, deadline, save, log, set()

    def run(self, name: str, fn, needs: tuple = ()):
        "Run `fn()` -> (value, info); record info, the `checks` that failed, the error and the time; return the value (None if it raised)."
        rec = self.record[name] = {}
        missing = [n for n in needs if n not in self.done]  # a step whose checks failed still hands its result on
        if time.time() > self.deadline: rec.update(ok=None, status="skipped", skipped="time budget spent"); self.save(); return None
        if missing: rec.update(ok=None, status="skipped", skipped=f"needs {', '.join(missing)}"); self.save(); return None
        self.log(f"{name} ...")
        rec["running"] = True; self.save()  # what a process stopped from outside was doing
        start, value = time.perf_counter(), None
        try:
            Steps.current = name
            try: value, info = fn()
            finally: Steps.current = None
            rec.update(info)
            failed = [k for k, v in info.get("checks", {}).items() if v is False]
            rec.update(ok=not failed, status="failed" if failed else "ok")
            if failed: rec["error"] = f"check(s) failed: {', '.join(failed)}"
            self.done.add(name)
        except DeadlineReached:
            rec.update(ok=None, status="incomplete", skipped=f"cut at the time budget's end, {time.perf_counter() - start:.1f} s into the step")
        except Exception as e:  # every failure is a result: recorded, and the next step runs
            import traceback
            if time.time() >= self.deadline and isinstance(e, (TimeoutError, subprocess.TimeoutExpired)):  # a wait cut by the budget
                rec.update(ok=None, status="incomplete", skipped=f"cut at the time budget's end ({type(e).__name__}: {e})"[:500])
            else: rec.update(ok=False, status="failed", error=f"{type(e).__name__}: {e}"[:2000], traceback=traceback.format_exc()[-3000:])
        rec["seconds"] = round(time.perf_counter() - start, 2)
        rec.pop("running")
        self.log(step_line(name, rec))
        self.save()
        return value


def arm_deadline(deadline: float) -> None:
    "Raise `DeadlineReached` in the step running when `deadline` (epoch seconds) passes; between steps, let the next one skip."
    def on_alarm(signum, frame):
        if Steps.current is not None: raise DeadlineReached()
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(deadline - time.time(), 0.001))


def step_line(name: str, rec: dict) -> str:
    "One line about a finished step."
    if rec.get("status") == "incomplete": return f"  {name}: incomplete ({rec.get('skipped')})"
    if rec.get("ok") is None: return f"  {name}: skipped ({rec.get('skipped')})"
    return f"  {name}: {'ok' if rec['ok'] else 'FAILED: ' + rec.get('error', '')[:300]} ({rec.get('seconds')} s)"


# ---------------------------------------------------------------- one (profile, model) pair, in its own process

def hide(names) -> None:
    "Make `names` look not installed to this process (import fails, `find_spec` returns None), as on the GPU machine."
    for n in names: sys.modules[n] = None


def device_info() -> dict:
    "The CUDA device this process sees (name, memory, compute capability, CUDA and cuDNN versions), or cuda False."
    import torch
    if not torch.cuda.is_available(): return dict(cuda=False)
    p = torch.cuda.get_device_properties(0)
    return dict(cuda=True, name=p.name, memory_gb=round(p.total_memory / 2**30, 1), compute_capability=f"{p.major}.{p.minor}",
                multiprocessors=p.multi_processor_count, bf16_native=p.major >= 8, torch_cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version(), devices_visible=torch.cuda.device_count())


def model_config(name: str, dry_run: bool):
    "The model's hub config (tiny in a dry run), read by `AutoConfig.for_model` as `from_pretrained` reads config.json."
    from transformers import AutoConfig
    kw = {**CONFIGS[name], **(TINY[name] if dry_run else {})}
    return AutoConfig.for_model(kw.pop("model_type"), **kw)


def is_4bit(module) -> bool:
    "Is `module` a bitsandbytes 4-bit linear layer (not peft's LoRA wrapper of one, which has the same class name)?"
    return type(module).__name__ == "Linear4bit" and type(module).__module__.startswith("bitsandbytes")


def unique_params(model) -> int:
    "Parameters of `model`, tied weights counted once."
    seen = {}
    for p in model.parameters(): seen[id(p)] = p.numel()
    return sum(seen.values())


def build(spec: dict):
    "Build the architecture from its config with random weights and save it with a small tokenizer (fp16, as phi-2 ships)."
    import torch
    from transformers import AutoModelForCausalLM
    from domaintune_course.costs import SHAPES
    from domaintune_course.testing import tiny_tokenizer
    dest, name = Path(spec["model_dir"]), spec["model"]
    config, tok = model_config(name, spec["dry_run"]), tiny_tokenizer()
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # initialised where it is fast
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float16)
    params, shape = unique_params(model), SHAPES[name]
    tmp = dest.with_name(f".{dest.name}-partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp); tok.save_pretrained(tmp)
    tmp.rename(dest)
    del model; _free()
    info = dict(architecture=config.architectures[0], params=params, course_shape_params=shape.params, tokenizer_vocab=len(tok),
                checkpoint_mb=round(dir_mb(dest), 1))
    if not spec["dry_run"]:  # the real size: what lesson 00's SHAPES table says the hub model has
        info["checks"] = dict(real_size=abs(params - shape.params) / shape.params < 1e-4,
                              shape_matches=(config.hidden_size, config.num_hidden_layers, config.vocab_size) == (shape.hidden, shape.layers, shape.vocab))
    return dest, info


def dir_mb(path: Path) -> float:
    "Size of the files under `path`, in MB."
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 2**20


def course_config(spec: dict):
    "The profile's `TrainConfig` for the model's task, pointed at the saved model, trained for `steps` optimizer steps."
    from domaintune_course.config import make_config
    over = dict(model=spec["model_dir"], max_steps=spec["steps"], grad_accum=1, logging_steps=1, eval_steps=spec["steps"])
    if spec.get("max_length"): over["max_length"] = spec["max_length"]
    cfg = make_config(TASK[spec["model"]], spec["profile"], **over)
    return cfg, dict(config={k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("extra", "data")})


def _free() -> None:
    "Release freed GPU memory, so the next measurement starts clean."
    import gc, torch
    gc.collect()
    if torch.cuda.is_available(): torch.cuda.empty_cache()


def shape_for(name: str, model, dry_run: bool):
    "Lesson 00's `ModelShape` for the model: its SHAPES entry, or that entry resized to the tiny config in a dry run."
    from domaintune_course.costs import SHAPES
    shape = SHAPES[name]
    if not dry_run: return shape
    c = model.config
    inter = getattr(c, "intermediate_size", None) or getattr(c, "ffn_hidden_size", None) or 4 * c.hidden_size
    return dataclasses.replace(shape, name=f"tiny-{name}", params=float(unique_params(model)), layers=c.num_hidden_layers,
                               hidden=c.hidden_size, vocab=c.vocab_size, intermediate=inter, heads=c.num_attention_heads)


def load(ctx: dict, cfg, spec: dict):
    "`qlora.load_for_training`: NF4 with double quantization, k-bit preparation, gradient checkpointing, LoRA."
    import torch
    from domaintune_course import qlora
    _free()
    if torch.cuda.is_available(): torch.cuda.reset_peak_memory_stats()
    model, tok = qlora.load_for_training(cfg)
    ctx.update(model=model, tok=tok)
    import torch.nn as nn
    base = model.get_base_model()
    q4 = [m for m in base.modules() if is_4bit(m)]
    head, plain = base.get_output_embeddings(), {}
    for n, m in base.named_modules():  # full-precision linear layers left in the base (the LoRA layers' own excepted)
        if isinstance(m, nn.Linear) and not is_4bit(m) and m is not head and "lora_" not in n:
            plain[type(m).__name__] = plain.get(type(m).__name__, 0) + 1
    qs = getattr(q4[0].weight, "quant_state", None) if q4 else None
    qc = getattr(base.config, "quantization_config", None)
    qc = qc.to_dict() if hasattr(qc, "to_dict") else (qc or {})
    others = {str(p.dtype) for n, p in base.named_parameters() if type(p).__name__ != "Params4bit" and "lora_" not in n}
    rep = qlora.trainable_report(model)
    info = dict(linear4bit_layers=len(q4), unquantized_linear_layers=plain, quant_type=getattr(qs, "quant_type", None), double_quant=bool(getattr(qs, "nested", False)),
                quantization_config={k: str(qc.get(k)) for k in ("load_in_4bit", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant",
                                                                   "bnb_4bit_compute_dtype")},
                unquantized_param_dtypes=sorted(others), gradient_checkpointing=bool(getattr(base, "is_gradient_checkpointing", False)),
                lora_targets=sorted(model.peft_config["default"].target_modules), trainable_params=rep["trainable"],
                total_params=rep["total"], device=str(next(model.parameters()).device),
                footprint_mb=benchlib.mb(model.get_memory_footprint()))
    if torch.cuda.is_available():
        info.update(allocated_after_load_mb=benchlib.mb(torch.cuda.memory_allocated()), peak_while_loading_mb=benchlib.mb(torch.cuda.max_memory_allocated()))
    info["checks"] = dict(nf4=bool(q4) and info["quant_type"] == "nf4", double_quant=info["double_quant"],
                          kbit_prepared=others == {"torch.float32"},  # prepare_model_for_kbit_training keeps the rest in fp32
                          gradient_checkpointing=info["gradient_checkpointing"] == cfg.gradient_checkpointing)
    return model, info


def features(tok, n: int, max_length: int) -> list[dict]:
    "`n` training examples of exactly `max_length` tokens: bundled dialogues in the instruction format, cut to fit (repeated if needed)."
    from domaintune_course import qlora
    from domaintune_course.data import build_example, load_task_data
    feats = qlora.featurize(tok, load_task_data("summarize"), lambda r, t: build_example("summarize", r), max_length)
    full = [f for f in feats if len(f["input_ids"]) == max_length] or feats
    return [full[i % len(full)] for i in range(n)]


def step_timer():
    "A `TrainerCallback` that notes the time at the end of every optimizer step."
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def __init__(self): self.times = []
        def on_step_end(self, args, state, control, **kw):
            import torch
            if torch.cuda.is_available(): torch.cuda.synchronize()
            self.times.append(time.perf_counter())
    return Timer()


def estimate(spec: dict, cfg, model, compute_dtype) -> dict:
    "Lesson 00's `estimate_memory` for this configuration, in MB by part."
    import torch
    from domaintune_course.concepts import estimate_memory
    cuda = torch.cuda.is_available()
    attn = getattr(model.config, "_attn_implementation", "sdpa") or "sdpa"
    precision = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(compute_dtype, "fp32")
    args = dict(strategy=cfg.strategy, precision=precision, batch_size=cfg.batch_size, seq_len=cfg.max_length,
                gradient_checkpointing=cfg.gradient_checkpointing, optimizer=cfg.optimizer if cuda else "adamw_torch", lora_r=cfg.lora_r,
                lora_dropout=cfg.lora_dropout, device="cuda" if cuda else "cpu", attention="eager" if attn == "eager" else "sdpa")
    est = estimate_memory(shape_for(spec["model"], model, spec["dry_run"]), **args)
    return dict(arguments=args, trainable_params=est["trainable_params"],
                parts_mb={k: round(v * 1024, 1) for k, v in est.items() if k not in ("trainable_params",)})


def train(ctx: dict, cfg, spec: dict):
    "A few optimizer steps through `training.training_arguments` and `batching.course_trainer`; losses, speed, peak memory."
    import torch
    from domaintune_course import batching, qlora, training
    model, tok = ctx["model"], ctx["tok"]
    feats = features(tok, cfg.max_steps * cfg.batch_size * cfg.grad_accum, cfg.max_length)
    args = training.training_arguments(cfg, Path(spec["work"]) / "checkpoints", eval_strategy="no", save_strategy="no",
                                    load_best_model_at_end=False, logging_steps=1, disable_tqdm=True)
    timer = step_timer()
    trainer = batching.course_trainer(model=model, args=args, train_dataset=feats, data_collator=batching.make_collator(tok),
                                      callbacks=[timer])
    ctx["trainer"] = trainer
    _free()
    start = time.perf_counter()
    with training.peak_memory() as mem: out = trainer.train()
    wall = time.perf_counter() - start
    logs = trainer.state.log_history
    losses = [h["loss"] for h in logs if "loss" in h]
    norms = [h.get("grad_norm") for h in logs if "loss" in h]
    tokens = sum(len(f["input_ids"]) for f in feats)  # every example is max_length long: no padding in any batch
    per_step = tokens / max(len(timer.times), 1)
    steady = (len(timer.times) - 1) * per_step / (timer.times[-1] - timer.times[0]) if len(timer.times) > 1 else None
    opt = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    dtype = training.compute_dtype(cfg)
    cuda = torch.cuda.is_available()
    info = dict(optim=args.optim, optimizer_class=type(opt).__name__, paged=bool(getattr(opt, "is_paged", False)), fp16=bool(args.fp16), bf16=bool(args.bf16), compute_dtype=str(dtype),
                gradient_checkpointing=bool(getattr(args, "activation_checkpointing", None) or getattr(args, "gradient_checkpointing", False)),
                global_step=trainer.state.global_step, losses=[round(x, 4) for x in losses], nonfinite_grad_norms=sum(
                    1 for g in norms if g is not None and not math.isfinite(g)), train_loss=round(out.training_loss, 4),
                tokens=tokens, tokens_seen_by_trainer=int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0),
                tokens_per_second=round(steady, 1) if steady else None, tokens_per_second_with_first_step=round(tokens / wall, 1),
                seconds_first_step=round(timer.times[0] - start, 2) if timer.times else None, wall_seconds=round(wall, 1))
    subs = {}  # what the course's functions changed from the profile on this machine (on a CPU: fp32, adamw_torch)
    if args.optim != cfg.optimizer: subs["optim"] = [cfg.optimizer, args.optim]
    if dtype != {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.precision, torch.float32): subs["compute_dtype"] = [cfg.precision, str(dtype)]
    info["substitutions"] = subs
    est = estimate(spec, cfg, model, dtype)
    info["estimate"] = est
    if cuda:
        info.update(peak_allocated_mb=round(mem["peak_mb"], 1), peak_reserved_mb=benchlib.mb(torch.cuda.max_memory_reserved()),
                    allocated_before_mb=round(mem["start_mb"], 1), estimated_peak_mb=est["parts_mb"]["total"],
                    estimate_error_pct=benchlib.pct_error(est["parts_mb"]["total"], mem["peak_mb"]),
                    estimated_weights_mb=est["parts_mb"]["weights"],
                    weights_error_pct=benchlib.pct_error(est["parts_mb"]["weights"], mem["start_mb"]),
                    measured_with="torch.cuda.max_memory_allocated during trainer.train() (training.peak_memory); "
                                  "the paged optimizer's state lives in CUDA unified memory, outside torch's allocator")
    else: info["peak_rss_mb"] = round(mem["peak_mb"], 1)
    info["checks"] = dict(steps=trainer.state.global_step == cfg.max_steps, finite_losses=len(losses) == cfg.max_steps and all(map(math.isfinite, losses)),
                          optimizer=(args.optim == cfg.optimizer and "8bit" in type(opt).__name__.lower() and info["paged"] == ("paged" in cfg.optimizer))
                          if cuda else args.optim == "adamw_torch",
                          estimator_counts_trainable=est["trainable_params"] == qlora.trainable_report(model)["trainable"])
    return trainer, info


def save(ctx: dict, cfg, spec: dict):
    "`qlora.save_finetuned`: the adapter (not the base), the tokenizer and finetune.json."
    from peft import get_peft_model_state_dict
    from domaintune_course import qlora, training
    out = qlora.save_finetuned(ctx["model"], ctx["tok"], cfg, Path(spec["work"]) / "run" / "model")
    ctx["adapter"] = {k: v.detach().float().cpu().clone() for k, v in get_peft_model_state_dict(ctx["model"]).items()}
    files = sorted(p.name for p in out.iterdir())
    return out, dict(files=files, adapter_mb=round(training.dir_size_mb(out), 2),
                     checks=dict(adapter_saved="adapter_model.safetensors" in files, base_not_saved="model.safetensors" not in files))


def reload(ctx: dict, spec: dict):
    "`qlora.load_finetuned`: the base loaded again (4-bit on a GPU) with the saved adapter in a `PeftModel`."
    import torch
    from peft import PeftModel, get_peft_model_state_dict
    from domaintune_course import qlora
    _free()
    model, tok = qlora.load_finetuned(Path(spec["work"]) / "run", merge=False)  # the adapter beside its base, as the check compares it
    ctx.update(reloaded=model, tok=tok)
    got = {k: v.detach().float().cpu() for k, v in get_peft_model_state_dict(model).items()}
    want = ctx.pop("adapter", {})
    diff = max((float((got[k] - v).abs().max()) for k, v in want.items() if k in got), default=None)
    q4 = sum(is_4bit(m) for m in model.modules())
    return model, dict(model_class=type(model).__name__, linear4bit_layers=q4, adapter_tensors=len(got), adapter_max_abs_diff=diff,
                       checks=dict(peft_model=isinstance(model, PeftModel), same_adapter=set(got) == set(want) and diff is not None and diff == 0.0,
                                   quantized_as_trained=(q4 > 0) == torch.cuda.is_available()))


def prompts(n: int) -> list[str]:
    "`n` bundled questions of different lengths, as inference prompts (so that left padding is exercised)."
    from domaintune_course.data import build_prompt, load_task_data
    recs = sorted(load_task_data("qa"), key=lambda r: len(r["prompt"]))
    return [build_prompt("qa", r) for r in recs[::max(1, len(recs) // n)][:n]]


def generate(ctx: dict, model_key: str, spec: dict, one_by_one: bool = True):
    "`generation.generate`: one batch of prompts decoded greedily, then the same prompts one by one (their agreement is information)."
    from domaintune_course import generation
    model, tok, ps, new = ctx[model_key], ctx["tok"], prompts(spec["prompts"]), spec["new_tokens"]
    start = time.perf_counter()
    batched = generation.generate(model, tok, ps, max_new_tokens=new, batch_size=len(ps))
    info = dict(prompts=len(ps), max_new_tokens=new, batch_seconds=round(time.perf_counter() - start, 2), example=batched[0][:200] if batched else None,
                checks=dict(one_answer_per_prompt=len(batched) == len(ps) and all(isinstance(t, str) for t in batched)))
    if one_by_one:  # the first few prompts again, one at a time
        alone = ps[:spec.get("one_by_one", len(ps))]
        single = generation.generate(model, tok, alone, max_new_tokens=new, batch_size=1)
        info.update(one_by_one_prompts=len(alone), one_by_one_agreement=round(sum(a == b for a, b in zip(batched, single)) / len(alone), 3))
    return batched, info


def merge(ctx: dict, cfg, spec: dict):
    "`qlora.merge_adapter`: the adapter merged into a full-precision base and saved; the merged model loaded and generating."
    import torch
    from domaintune_course import qlora, training
    from domaintune_course.models import load_model
    ctx.pop("reloaded", None); _free()
    out = qlora.merge_adapter(Path(spec["work"]) / "run", Path(spec["work"]) / "merged")
    _free()  # the full-precision base merge_adapter loaded
    files = sorted(p.name for p in out.iterdir())
    merged = load_model(str(out), dtype=training.compute_dtype(cfg))
    if torch.cuda.is_available(): merged.to("cuda")
    ctx["merged"] = merged
    lora_left = sum("lora_" in n for n, _ in merged.named_parameters())
    texts, gen = generate(ctx, "merged", spec, one_by_one=False)
    ctx.pop("merged", None); shutil.rmtree(out, ignore_errors=True); _free()
    return texts, dict(files=files, params=unique_params(merged), generate=gen, checks=dict(
        plain_model="adapter_config.json" not in files and lora_left == 0,
        full_size=unique_params(merged) == int(ctx["built_params"]) if ctx.get("built_params") else None,
        generates=gen["checks"]["one_answer_per_prompt"]))


def child(spec: dict, out_path: Path) -> dict:
    "One (profile, model) pair: build the model if needed, then load, train, save, reload, generate and merge, each on its own."
    hide(spec.get("hide", ()))
    arm_deadline(spec["deadline"])
    record = dict(profile=spec["profile"], model=spec["model"], steps={})
    save_rec = lambda: benchlib.write_result(out_path.parent, out_path.name, record)
    dev = device_info()
    record["device"] = dev
    from domaintune_course.config import make_config
    precision = make_config(TASK[spec["model"]], spec["profile"]).precision
    record["precision"] = precision
    if precision == "bf16" and dev["cuda"] and not dev["bf16_native"]:
        record.update(not_for_this_gpu=True,
                      skipped=f"{dev['name']} (compute capability {dev['compute_capability']}) has no native bf16: profile {spec['profile']} is not for it")
        save_rec(); return record
    s, ctx = Steps(record["steps"], spec["deadline"], save_rec, log=lambda line: print(line, file=sys.stderr, flush=True)), {}
    if not (Path(spec["model_dir"]) / "config.json").is_file(): s.run("build", lambda: build(spec))
    ctx["built_params"] = spec.get("built_params") or record["steps"].get("build", {}).get("params")
    cfg = s.run("config", lambda: course_config(spec))
    s.run("load", lambda: load(ctx, cfg, spec), needs=("config",))
    s.run("train", lambda: train(ctx, cfg, spec), needs=("load",))
    s.run("save_adapter", lambda: save(ctx, cfg, spec), needs=("train",))
    for k in ("trainer", "model"): ctx.pop(k, None)
    s.run("reload", lambda: reload(ctx, spec), needs=("save_adapter",))
    s.run("generate", lambda: generate(ctx, "reloaded", spec), needs=("reload",))
    s.run("merge", lambda: merge(ctx, cfg, spec), needs=("save_adapter",))
    signal.setitimer(signal.ITIMER_REAL, 0)
    record["imported"] = sorted(m for m in ("datasets", "rouge_score", "evaluate", "sklearn") if sys.modules.get(m) is not None)
    record["ok"] = all(r.get("ok") for r in record["steps"].values())
    save_rec()
    return record


# ---------------------------------------------------------------- the parent: environment, bundle, runs, gpu.json

def installed_version(name: str) -> str | None:
    "The installed distribution's version, or None."
    from importlib.metadata import PackageNotFoundError, version
    try: return version(name)
    except PackageNotFoundError: return None


def install_wheel(wheel: Path, target: Path) -> str:
    "Install `wheel` into folder `target` without network or dependencies (pip; a plain unzip where pip is missing)."
    target.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                        "--disable-pip-version-check", "--target", str(target), str(wheel)], capture_output=True, text=True)
    if r.returncode == 0: return "pip install --no-deps --target"
    import zipfile
    with zipfile.ZipFile(wheel) as z: z.extractall(target)  # a wheel is a zip of the installed layout
    return f"unzip (pip failed: {(r.stderr or r.stdout).strip()[-300:]})"


def ensure_package(name: str, bundle: Path, work: Path) -> dict:
    "`name` as installed, or installed from its wheel in `bundle` into a folder under `work` put on sys.path and PYTHONPATH."
    if importlib.util.find_spec(name) is not None:
        return dict(source="installed", version=installed_version(name))
    wheels = sorted(Path(bundle).glob(f"{name.replace('-', '_')}-*.whl"))
    if not wheels:
        return dict(source="missing", error=f"{name} is not installed and {bundle} holds no {name} wheel. Fix: run `make gpu-check-bundle` "
                                             f"where pip reaches PyPI, and bring {Path(bundle).name}/ along with the working tree.")
    target = Path(work) / "site-packages"
    how = install_wheel(wheels[-1], target)
    sys.path.insert(0, str(target)); importlib.invalidate_caches()
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH")) if p)
    return dict(source="bundle", wheel=wheels[-1].name, wheel_mib=round(wheels[-1].stat().st_size / 2**20, 1), installed_with=how,
                path=str(target), placement=placement(target), version=installed_version(name))


# ---------------------------------------------------------------- library versions against pyproject.toml

def declared(pyproject: Path) -> list[tuple[str, str]]:
    "(group, requirement string) for every entry of pyproject.toml's [project] dependencies and optional extras."
    try: import tomllib
    except ModuleNotFoundError: import tomli as tomllib  # Python 3.10
    project = tomllib.loads(Path(pyproject).read_text(encoding="utf-8"))["project"]
    out = [("dependencies", r) for r in project.get("dependencies", [])]
    for extra, reqs in project.get("optional-dependencies", {}).items(): out += [(f"extra:{extra}", r) for r in reqs]
    return out


def requirements(pyproject: Path = benchlib.ROOT / "pyproject.toml") -> dict:
    "Each package pyproject.toml names (and each the check uses): the version found, the specifier required, and whether it fits."
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    own, out = canonicalize_name("domaintune-course"), {}
    for group, text in declared(pyproject):
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if name == own or (req.marker is not None and not req.marker.evaluate()) or name in out: continue
        spec = re.sub(r"^[A-Za-z0-9_.-]+\s*(\[[^\]]*\])?", "", text.split(";")[0]).replace(" ", "")  # as written: >=5.24,<6
        out[name] = dict(required=spec or "any", group=group)
    for name in CHECK_USES: out.setdefault(name, dict(required="any", group="used by the check, not in pyproject.toml"))
    for name, r in out.items():
        found = installed_version(name)
        r.update(found=found, ok=None if found is None else _fits(found, r["required"]), used_by_check=name in CHECK_USES)
    return out


def _fits(found: str, spec: str) -> bool:
    "Does version `found` satisfy specifier `spec` ('any': anything)?"
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version
    if spec == "any": return True
    try: return SpecifierSet(spec).contains(Version(found), prereleases=True)
    except InvalidVersion: return False


def mismatches(reqs: dict) -> list[str]:
    "A line for each package outside its specifier, and each one the check uses that is missing."
    out = []
    for name, r in reqs.items():
        if r["ok"] is False: out.append(f"{name} {r['found']} found, pyproject.toml ({r['group']}) requires {r['required']}")
        elif r["found"] is None and r["used_by_check"]: out.append(f"{name} not installed (required {r['required']})")
    return out


def version_report(reqs: dict, problems: list[str]) -> str:
    "The lines printed first: the check's libraries against pyproject.toml, then every mismatch."
    used = "; ".join(f"{n} {r['found'] or '-'} ({r['required']}) {'ok' if r['ok'] else 'MISMATCH' if r['ok'] is False else 'missing'}"
                     for n, r in reqs.items() if r["used_by_check"])
    lines = [f"versions against pyproject.toml: {used}"]
    lines += [f"VERSION MISMATCH: {p}" for p in problems] or ["versions: no mismatch"]
    return "\n".join(lines)


# ---------------------------------------------------------------- where the work folder lives

def mount_of(path: Path, mounts: str | None = None) -> dict:
    "The mount holding `path` (the longest mount point above it in /proc/mounts): mount point, filesystem type, options."
    path, best = Path(path).resolve(), dict(mount="/", fstype=None, options=[])
    if mounts is None:
        try: mounts = Path("/proc/mounts").read_text()
        except OSError: return best
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 4: continue
        point = Path(parts[1].replace("\\040", " "))
        if (path == point or point in path.parents) and len(str(point)) >= len(best["mount"]):
            best = dict(mount=str(point), fstype=parts[2], options=parts[3].split(","))
    return best


def placement(path: Path, mounts: str | None = None) -> dict:
    "Is `path` on a disk where a shared library can be loaded: not under /dev/shm, not a tmpfs, not mounted noexec?"
    m = mount_of(path, mounts)
    resolved = Path(path).resolve()
    shm = resolved == Path("/dev/shm") or Path("/dev/shm") in resolved.parents
    memory = m["fstype"] in ("tmpfs", "ramfs")
    noexec = "noexec" in m["options"]
    problems = [p for p, bad in (("under /dev/shm", shm), (f"on a {m['fstype']} (memory)", memory), ("mounted noexec", noexec)) if bad]
    return dict(path=str(resolved), mount=m["mount"], fstype=m["fstype"], exec=not noexec, tmpfs=memory, dev_shm=shm,
                ok=not problems, problems=problems)


def work_dir(requested: Path | None) -> tuple[Path, dict]:
    "A new run folder under `requested` or the first of `work_roots` on a disk (locked while it lives; stale ones removed), and its placement."
    root = Path(requested or next((c for c in work_roots() if placement(c)["ok"]), WORK_ROOT))
    place = placement(root)
    if not place["ok"]: raise SystemExit(bad_work_dir(root, place))
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("run-*"): _remove_if_stale(old)
    new = Path(tempfile.mkdtemp(prefix=".new-", dir=root))  # locked before it is named run-*, where others look for stale ones
    lock = open(new / ".lock", "w")
    try: fcntl.flock(lock, fcntl.LOCK_EX)  # held until this process ends
    except OSError: pass  # a filesystem without locks: others leave this folder alone (see _remove_if_stale)
    _LOCKS.append(lock)
    d = new.with_name("run-" + new.name.removeprefix(".new-")); new.rename(d)
    import atexit; atexit.register(shutil.rmtree, d, ignore_errors=True)
    place.update(placement(d), free_gib=round(shutil.disk_usage(d).free / 2**30, 1))
    return d, place


def work_roots() -> list[Path]:
    "Where the work folder may go by default, best first: in the repository, then elsewhere on the disk."
    return [WORK_ROOT, Path.home() / ".cache" / "domaintune-gpu-check", Path("/var/tmp/domaintune-gpu-check")]


def bad_work_dir(root: Path, place: dict) -> str:
    "Why `root` cannot hold the work folder, and the fix."
    return (f"--work-dir {root}: {', '.join(place['problems'])} (mount {place['mount']}, {place['fstype']}): bitsandbytes' CUDA library "
            f"cannot be relied on there and the checkpoints would take memory. Fix: name a folder on a disk, or leave --work-dir "
            f"out to use {WORK_ROOT.relative_to(benchlib.ROOT)}/ in the repository.")


_LOCKS = []  # the open lock files of this process's run folders


def _remove_if_stale(d: Path) -> None:
    "Remove run folder `d` if no live process holds its lock (a run stopped from outside leaves its checkpoints behind)."
    try:
        with open(d / ".lock", "a") as f: fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError: return  # held by a live run (BlockingIOError), or locks do not work here: keep it
    shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- the bundle that travels

def folder_mib(path: Path) -> tuple[float, list[tuple[str, float]]]:
    "Total size of the files under `path` in MiB, and each file's."
    files = sorted((str(p.relative_to(path)), p.stat().st_size / 2**20) for p in Path(path).rglob("*") if p.is_file())
    return sum(s for _, s in files), files


def seal_bundle(new: Path, dest: Path, limit_mib: float = BUNDLE_LIMIT_MIB) -> dict:
    "Make freshly downloaded folder `new` the bundle `dest`, if it holds at most `limit_mib` MiB; else remove it and keep `dest`."
    new, dest = Path(new), Path(dest)
    if not new.is_dir(): raise SystemExit(f"--seal-bundle: {new} is not a folder (the download went elsewhere or failed).")
    total, files = folder_mib(new)
    listing = ", ".join(f"{n} {s:.1f} MiB" for n, s in files) or "no files"
    if total > limit_mib:
        shutil.rmtree(new)
        raise SystemExit(f"{dest}: refused, the bundle would be {total:.1f} MiB ({listing}), over the {limit_mib} MiB limit "
                         f"(it travels with the working tree, 64 MiB in all). {dest} is left as it was. Fix: bundle fewer or smaller "
                         f"wheels (BNB_VERSION, GPU_PYTHON in the Makefile).")
    if not files: shutil.rmtree(new); raise SystemExit(f"{dest}: refused, the download left no file in {new}.")
    shutil.rmtree(dest, ignore_errors=True); new.rename(dest)
    print(f"{dest}: {total:.1f} MiB in {len(files)} file(s) (limit {limit_mib} MiB): {listing}")
    return dict(path=str(dest), mib=round(total, 1), files=[n for n, _ in files])


# ---------------------------------------------------------------- the plan and its time estimate

def plan(quick: bool, dry_run: bool, profiles=None, models=None, steps=None, budget=None) -> dict:
    "What the check will run: the (profile, model) pairs in order, optimizer steps per pair, the budget, and the time estimate."
    base = PLANS["quick" if quick else "full"]
    pairs = [(p, m) for p in (profiles or base["profiles"]) for m in (models or base["models"])]
    steps = steps or (DRY_STEPS if dry_run else base["steps"])
    out = dict(mode="quick" if quick else "full", pairs=[list(x) for x in pairs], steps=steps,
               budget_seconds=budget or (DRY_BUDGET if dry_run else base["budget"]),
               prompts=3 if dry_run else PROMPTS, new_tokens=8 if dry_run else NEW_TOKENS, one_by_one=2 if dry_run else ONE_BY_ONE)
    out["hard_stop_seconds"] = out["budget_seconds"] + GRACE
    if not dry_run: out["estimate"] = estimate_seconds(pairs, steps, out["new_tokens"], out["one_by_one"])
    return out


def estimate_seconds(pairs: list, steps: int, new_tokens: int = NEW_TOKENS, one_by_one: int = ONE_BY_ONE, a: dict = ASSUME) -> dict:
    "Seconds each step of each pair should take on one H100-class GPU, by the assumptions in `ASSUME` (an estimate, not a measurement)."
    from domaintune_course.costs import SHAPES
    from domaintune_course.config import make_config
    built, rows = set(), []
    for profile, model in pairs:
        cfg, params = make_config(TASK[model], profile), SHAPES[model].params
        gb = 2 * params / 1e9  # the fp16 checkpoint
        read, write = a["load_overhead_s"] + gb / a["read_gb_s"], gb / a["write_gb_s"]
        tflop = 6 * params * cfg.batch_size * cfg.max_length / 1e12
        row = dict(pair=f"{profile}/{model}", start=a["process_start_s"], build=0 if model in built else 3 + write, load=read,
                   train=steps * (tflop / (a["peak_tflops"] * a["mfu"]) + a["step_overhead_s"]), save_adapter=1, reload=read,
                   generate=(new_tokens * (1 + one_by_one)) * a["decode_token_s"],
                   merge=read + write + read + new_tokens * a["decode_token_s"], tflop_per_step=round(tflop, 1))
        built.add(model)
        row["total"] = sum(v for k, v in row.items() if k not in ("pair", "tflop_per_step"))
        rows.append({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()})
    return dict(assumptions=a, pairs=rows, total_seconds=round(a["parent_s"] + sum(r["total"] for r in rows)))


# ---------------------------------------------------------------- the runs

def gpu_details() -> list[dict]:
    "Every GPU nvidia-smi lists: name, memory, driver, compute capability (an empty list where there is none)."
    if not shutil.which("nvidia-smi"): return []
    for fields in ("name,memory.total,driver_version,compute_cap", "name,memory.total,driver_version"):
        try: r = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError): return []
        if r.returncode == 0:
            keys = fields.split(",")
            return [dict(zip(keys, (v.strip() for v in line.split(",")))) for line in r.stdout.splitlines() if line.strip()]
    return []


def source() -> dict:
    "The package version and, where the tree is a git checkout, its commit (and whether it had uncommitted changes)."
    import domaintune_course
    out = dict(package_version=domaintune_course.__version__, git_commit=None)
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=benchlib.ROOT, capture_output=True, text=True, timeout=10)
        if r.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=benchlib.ROOT, capture_output=True, text=True, timeout=10)
            out.update(git_commit=r.stdout.strip(), git_dirty=bool(dirty.stdout.strip()))
    except (OSError, subprocess.SubprocessError): pass
    return out


def cuda_available(env: dict) -> bool:
    "Does torch see a CUDA device with `env`? (asked in a separate process, so this one holds no CUDA context)"
    r = subprocess.run([sys.executable, "-c", "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"], capture_output=True, env=env)
    return r.returncode == 0


def child_env(dry_run: bool, gpu: str, work: Path | None = None) -> dict:
    "The environment of the runs: offline, quiet, one GPU (the CPU alone for a dry run), temporary files in the work folder."
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    if work is not None: (Path(work) / "tmp").mkdir(parents=True, exist_ok=True); env["TMPDIR"] = str(Path(work) / "tmp")
    if dry_run: env["CUDA_VISIBLE_DEVICES"] = ""  # a dry run is the CPU's, also on a machine with a GPU
    else: env.setdefault("CUDA_VISIBLE_DEVICES", gpu)  # one GPU: the check measures what one device does
    return env


class Stopped(BaseException):
    "The check was told to stop from outside (SIGTERM, e.g. from `timeout`)."


def run_pair(spec: dict, work: Path, timeout: float, env: dict) -> dict:
    "Run `child(spec)` in its own process (stopped after `timeout` s); its record, with what it finished if it was stopped."
    out = work / f"{spec['profile']}-{spec['model']}.json"
    log = work / f"{spec['profile']}-{spec['model']}.log"
    start, stopped = time.perf_counter(), None
    with open(log, "w") as err:
        try: rc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec), "--child-out", str(out)], cwd=benchlib.ROOT,
                                 env=env, stdout=err, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired: rc = "timed out"
        except Stopped as e: rc, stopped = "stopped", e  # subprocess.run has killed the child
    record = json.loads(out.read_text()) if out.is_file() else dict(profile=spec["profile"], model=spec["model"], steps={})
    record = finish(record, rc, time.perf_counter() - start, log.read_text(errors="replace"))
    for name, rec in record["steps"].items(): print(step_line(name, rec), flush=True)
    if record.get("skipped"): print(f"  skipped: {record['skipped']}", flush=True)
    if stopped is not None: record["stopped_from_outside"] = True
    return record


CUT = ("timed out", "stopped")  # a pair's process stopped by the budget or from outside: what it was doing is incomplete


def finish(record: dict, rc, seconds: float, log: str) -> dict:
    "A pair's record once its process ended (`rc`: exit status, 'timed out' or 'stopped'): the step it was in marked incomplete or failed."
    record["process"] = dict(returncode=rc, seconds=round(seconds, 1))
    if rc != 0 or not record.get("ok", True): record["stderr_tail"] = log[-4000:]
    if rc != 0:
        record["ok"] = False
        for rec in record.get("steps", {}).values():
            if not rec.pop("running", False): continue
            if rc in CUT: rec.update(ok=None, status="incomplete", skipped=f"cut: the pair's process was {rc} at the time budget's end"
                                     if rc == "timed out" else "cut: the check was stopped from outside")
            else: rec.update(ok=False, status="failed", error=f"the process ended during this step ({rc})")
    record.setdefault("steps", {})
    return record


def status(r: dict) -> str:
    "ok; failed (a step failed, or the process did); incomplete (cut or skipped by the time budget); skipped (the whole pair)."
    if r.get("skipped"): return "skipped"
    if r.get("ok"): return "ok"
    steps, rc = r.get("steps", {}).values(), r.get("process", {}).get("returncode", 0)
    if any(s.get("ok") is False for s in steps) or rc not in (0, *CUT): return "failed"
    if rc in CUT or any(s.get("status") in ("incomplete", "skipped") for s in steps): return "incomplete"
    return "failed"  # ended cleanly without a step recorded


def overall(runs: list[dict]) -> str:
    "The check's status: failed if a pair failed, incomplete if the time budget cut or skipped something, else ok."
    states = [status(r) for r in runs]
    if not runs or "failed" in states: return "failed"
    if "incomplete" in states or any(r.get("skipped_for") == "time" for r in runs): return "incomplete"
    return "ok"


def summary_row(r: dict) -> dict:
    "One line per pair for a reader: status, speed, memory against the estimate, time per step."
    st, t = r.get("steps", {}), r.get("steps", {}).get("train", {})
    failed = [k for k, v in st.items() if v.get("ok") is False]
    incomplete = [k for k, v in st.items() if v.get("status") == "incomplete"]
    skipped = [k for k, v in st.items() if v.get("ok") is None and k not in incomplete]
    return dict(profile=r["profile"], model=r["model"], precision=r.get("precision"), status=status(r), failed_steps=failed,
                incomplete_steps=incomplete, skipped_steps=skipped, skipped=r.get("skipped"),
                tokens_per_second=t.get("tokens_per_second"), peak_allocated_mb=t.get("peak_allocated_mb"),
                estimated_peak_mb=t.get("estimated_peak_mb"), estimate_error_pct=t.get("estimate_error_pct"),
                final_loss=(t.get("losses") or [None])[-1], seconds={k: v.get("seconds") for k, v in st.items()})


def parse(argv: list[str] | None) -> argparse.Namespace:
    "The command line."
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="on a CPU: tiny configs of the same architectures, a few steps, gpu.json into a temporary folder")
    p.add_argument("--quick", action="store_true", help=f"one pair ({PLANS['quick']['profiles'][0]} / {PLANS['quick']['models'][0]}), "
                   f"{PLANS['quick']['steps']} steps, a {PLANS['quick']['budget']} s budget: under 4 minutes")
    p.add_argument("--out", type=Path, default=None, help="folder for gpu.json (default: bench/results; a temporary folder for --dry-run)")
    p.add_argument("--profiles", nargs="+", default=None, help=f"settings.ini profiles to run (default: {' '.join(PROFILES)}; --quick: t4)")
    p.add_argument("--models", nargs="+", default=None, choices=list(CONFIGS), help="(default: both; --quick: falcon-rw-1b)")
    p.add_argument("--steps", type=int, default=None, help=f"optimizer steps per pair (default: {PLANS['full']['steps']}; --quick: "
                   f"{PLANS['quick']['steps']}; --dry-run: {DRY_STEPS})")
    p.add_argument("--max-length", type=int, default=None, help="tokens per example (default: the profile's; --dry-run: 32)")
    p.add_argument("--budget", type=float, default=None, help=f"seconds for the whole check; steps past it are cut or skipped (default: "
                   f"{PLANS['full']['budget']}; --quick: {PLANS['quick']['budget']}; --dry-run: {DRY_BUDGET})")
    p.add_argument("--bundle", type=Path, default=BUNDLE, help="folder with wheels to install when missing (default: bench/gpu_bundle)")
    p.add_argument("--work-dir", type=Path, default=None, help="where the random-weight checkpoints and the bundle's install go, in a new "
                   "run-* folder (default: bench/gpu_work; never /dev/shm, a tmpfs or a noexec mount)")
    p.add_argument("--gpu", default="0", help="the GPU to use when several are visible and CUDA_VISIBLE_DEVICES is unset (default: 0)")
    p.add_argument("--hide", nargs="*", default=list(HIDDEN), help=f"packages the runs treat as not installed (default: {' '.join(HIDDEN)})")
    p.add_argument("--seal-bundle", nargs=2, type=Path, metavar=("NEW", "DEST"), help=f"make downloaded folder NEW the bundle DEST if it "
                   f"holds at most {BUNDLE_LIMIT_MIB} MiB, else remove NEW (what `make gpu-check-bundle` runs)")
    p.add_argument("--child", help=argparse.SUPPRESS); p.add_argument("--child-out", help=argparse.SUPPRESS)  # one pair, internal
    args = p.parse_args(argv)
    if args.child or args.seal_bundle: return args
    from domaintune_course.config import read_settings
    known = [x for x in read_settings().sections() if x != "course"]
    if set(args.profiles or ()) - set(known): p.error(f"unknown profile(s) {sorted(set(args.profiles) - set(known))}: settings.ini has {', '.join(known)}")
    if args.work_dir and not placement(args.work_dir)["ok"]: p.error(bad_work_dir(args.work_dir, placement(args.work_dir)))
    return args


def main(argv: list[str] | None = None) -> dict:
    "Run the check (or, with --child, one pair) and write gpu.json; the results."
    args = parse(argv)
    if args.child: return child(json.loads(args.child), Path(args.child_out))
    if args.seal_bundle: return seal_bundle(*args.seal_bundle)
    start = time.time()
    work, place = work_dir(args.work_dir)
    todo = plan(args.quick, args.dry_run, args.profiles, args.models, args.steps, args.budget)
    out = args.out or (benchlib.temp_dir("gpu-check-out-") if args.dry_run else benchlib.RESULTS)
    result = dict(benchmark="gpu_check", **benchlib.header(__file__, argv), dry_run=args.dry_run, quick=args.quick, plan=todo,
                  budget_seconds=todo["budget_seconds"], gpus=gpu_details(), hidden_packages=args.hide, work_dir=str(work),
                  work_placement=place, source=source())
    result["bitsandbytes"] = ensure_package("bitsandbytes", args.bundle, work)
    result["versions"] = {**result["versions"], "bitsandbytes": result["bitsandbytes"].get("version")}
    try: result["requirements"] = requirements()
    except Exception as e: result.update(requirements={}, requirements_error=f"{type(e).__name__}: {e}")  # e.g. Python 3.10 without tomli
    result["version_mismatches"] = mismatches(result["requirements"])
    print(version_report(result["requirements"], result["version_mismatches"]), flush=True)  # first, before anything runs
    print(f"work folder: {work} ({place['fstype']} at {place['mount']}, {place['free_gib']} GiB free)", flush=True)
    print(f"plan: {todo['mode']}, {', '.join('/'.join(x) for x in todo['pairs'])}, {todo['steps']} steps per pair, "
          f"{todo['budget_seconds']:.0f} s budget (stops by {todo['hard_stop_seconds']:.0f} s)"
          + (f", estimated {todo['estimate']['total_seconds']} s" if todo.get("estimate") else ""), flush=True)
    result["optional_packages"] = {n: installed_version(n) for n in HIDDEN}
    env = child_env(args.dry_run, args.gpu, work)  # after ensure_package: PYTHONPATH may name the bundle's folder
    result["cuda_visible_devices"] = env.get("CUDA_VISIBLE_DEVICES")
    write = lambda: benchlib.write_result(out, "gpu.json", result)
    if result["bitsandbytes"]["source"] == "missing" or (not args.dry_run and not cuda_available(env)):
        result.update(ok=False, status="failed", error=result["bitsandbytes"].get("error") or "No CUDA GPU is visible to torch here. "
                      "Fix: run on a machine with one, or pass --dry-run to check the script on a CPU.", runs=[])
        print(result["error"], file=sys.stderr); print(write())
        return result
    previous = signal.signal(signal.SIGTERM, _stop) if _main_thread() else None
    try: run_pairs(args, todo, work, env, start, result, write)
    finally:
        if previous is not None: signal.signal(signal.SIGTERM, previous)
    runs = result["runs"]
    first = next((r["device"] for r in runs if r.get("device", {}).get("cuda")), None)
    result.update(gpu=first, status=overall(runs), failed=[f"{r['profile']}/{r['model']}" for r in runs if status(r) == "failed"],
                  incomplete=[f"{r['profile']}/{r['model']}" for r in runs if status(r) == "incomplete" or r.get("skipped_for") == "time"],
                  skipped=[f"{r['profile']}/{r['model']}: {r['skipped']}" for r in runs if r.get("skipped")],
                  elapsed_seconds=round(time.time() - start, 1))
    result["ok"] = result["status"] == "ok"
    print(write())
    for row in result["summary"]: print(json.dumps(row))
    print(f"gpu_check: {result['status']}" + "".join(f"; {k}: {', '.join(result[k])}" for k in ("failed", "incomplete", "skipped") if result[k]))
    return result


def _main_thread() -> bool:
    "Is this the main thread (the only one that may set signal handlers)?"
    import threading
    return threading.current_thread() is threading.main_thread()


def _stop(signum, frame):
    "SIGTERM's handler: stop the pair in flight (subprocess.run kills it) and write what was done."
    raise Stopped()


def run_pairs(args, todo: dict, work: Path, env: dict, start: float, result: dict, write) -> None:
    "Run the plan's pairs one after another within the budget, rewriting gpu.json after each."
    deadline, runs, built = start + todo["budget_seconds"], [], {}
    max_length = args.max_length or (32 if args.dry_run else None)
    result.update(runs=runs, summary=[], steps=todo["steps"], models={m: dict(config=CONFIGS[m], tiny=TINY[m] if args.dry_run else None)
                                                                    for m in dict.fromkeys(m for _, m in todo["pairs"])})
    need, stopped = 5 if args.dry_run else MIN_PAIR_SECONDS, False
    for profile, model in todo["pairs"]:
        print(f"{profile} / {model}", flush=True)
        spec = dict(profile=profile, model=model, dry_run=args.dry_run, steps=todo["steps"], max_length=max_length, deadline=deadline,
                    prompts=todo["prompts"], new_tokens=todo["new_tokens"], one_by_one=todo["one_by_one"],
                    work=str(work / f"{profile}-{model}"), model_dir=str(work / "models" / model), hide=args.hide, built_params=built.get(model))
        left = deadline - time.time()
        if stopped: r = dict(profile=profile, model=model, ok=None, skipped="not started: the check was stopped from outside", skipped_for="time", steps={})
        elif left < need:
            r = dict(profile=profile, model=model, ok=None, skipped_for="time", steps={},
                     skipped=f"not started: {max(left, 0):.0f} s of the {todo['budget_seconds']:.0f} s budget left, under the {need} s a pair needs")
        else:
            Path(spec["work"]).mkdir(parents=True, exist_ok=True); (work / "models").mkdir(exist_ok=True)
            r = run_pair(spec, work, timeout=left + GRACE, env=env)
            stopped = bool(r.get("stopped_from_outside"))
        if r.get("skipped") and not r.get("steps"): print(f"  skipped: {r['skipped']}", flush=True)
        if r.get("steps", {}).get("build", {}).get("ok"): built[model] = r["steps"]["build"]["params"]
        runs.append(r)
        result.update(summary=[summary_row(x) for x in runs], elapsed_seconds=round(time.time() - start, 1))
        write()
        shutil.rmtree(spec["work"], ignore_errors=True)


if __name__ == "__main__":
    res = main()
    if "--child" in sys.argv or "--seal-bundle" in sys.argv: sys.exit(0)
    sys.exit({"ok": 0, "incomplete": 3}.get((res or {}).get("status"), 1))
