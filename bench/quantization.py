"""A full-precision, an 8-bit (LLM.int8) and a 4-bit (NF4) base under the same LoRA budget, and a LoRA rank sweep on the
NF4 base: model footprint, held-out loss before and after, trainable parameters and training time, plus the round-trip
error of each weight format on one layer. Lesson 01b runs the same functions (`domaintune_course.scratch`) at a third of
its lesson budget; this script runs them at the profile's lesson Q&A budget and writes `quantization.json`.

The data is the course's Q&A set: the training split to train on, the first `--held-out` questions of the test split to
score (no run trains or is tuned on them). Every run loads its base fresh, with the same seed, batches and learning rate.

    python bench/quantization.py                         # the cpu profile: 30 steps a run, 48 held-out questions
    python bench/quantization.py --steps 60 --ranks 4 16 64
    python bench/quantization.py --quick --out /tmp/b    # a tiny model, 2 steps a run: checks the script; figures mean nothing
"""
import sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib


def tiny_model() -> str:
    "A tiny Llama saved to a temporary directory, its layers 64 wide (bitsandbytes' CPU 4-bit path needs a 64-weight block per row)."
    from domaintune_course.testing import tiny_causal_lm, tiny_tokenizer
    path, tok = benchlib.temp_dir("bench-quant-"), tiny_tokenizer()
    tiny_causal_lm(tok, hidden_size=64).save_pretrained(path); tok.save_pretrained(path)
    return str(path)


def main(argv=None):
    p = benchlib.parser(__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu", help="hardware profile (settings.ini section); --quick uses smoke")
    p.add_argument("--steps", type=int, help="LoRA updates a run (default: the profile's lesson Q&A budget)")
    p.add_argument("--held-out", type=int, default=48, help="held-out test questions scored (default 48)")
    p.add_argument("--ranks", type=int, nargs="*", help="LoRA ranks of the sweep on the NF4 base (default: r/4, r, 4r of the profile's r)")
    args = p.parse_args(argv)
    import torch
    from domaintune_course.batching import ensure_pad_token
    from domaintune_course.config import make_config
    from domaintune_course.models import load_permissions, load_tokenizer
    from domaintune_course.scratch import budget_run, first_adapted_layer, qa_features, quantized_base, roundtrip_errors
    from domaintune_course.training import compute_dtype

    profile = "smoke" if args.quick else args.profile
    quick = dict(model=tiny_model(), eval_limit=4) if args.quick else dict(eval_limit=args.held_out)
    cfg = make_config("qa", profile, lesson=True, **quick)
    steps = args.steps or (2 if args.quick else cfg.max_steps)  # the first step warms up from a learning rate of 0
    ranks = sorted(set(args.ranks or [max(1, cfg.lora_r // 4), cfg.lora_r, 4 * cfg.lora_r]))
    tokenizer = ensure_pad_token(load_tokenizer(cfg.model, trust_remote_code=load_permissions(cfg.extra)["trust_remote_code"]))
    train, held_out = qa_features(cfg, tokenizer)
    result = benchlib.header(__file__, argv) | dict(profile=profile, model=cfg.model, quick=args.quick, steps=steps,
                                                   batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, max_length=cfg.max_length,
                                                   lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, train_examples=len(train), held_out=len(held_out))

    base = quantized_base(cfg, None)  # the round-trip errors of the first layer LoRA adapts
    name, layer = first_adapted_layer(base)
    result["roundtrip"] = dict(layer=name, shape=list(layer.weight.shape), formats=roundtrip_errors(layer.weight.float().cpu()).to_dict("index"))
    del base, layer

    full = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[compute_dtype(cfg)]
    result["precisions"], start = {}, time.perf_counter()
    for label, bits in ((full, None), ("int8", 8), ("nf4", 4)):
        result["precisions"][label] = budget_run(cfg, tokenizer, train, held_out, steps, bits)
        print(label, result["precisions"][label], flush=True)
    result["ranks"] = {}
    for r in ranks:
        result["ranks"][str(r)] = result["precisions"]["nf4"] if r == cfg.lora_r else budget_run(cfg, tokenizer, train, held_out, steps, 4, r=r)
        print("rank", r, result["ranks"][str(r)], flush=True)
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(benchlib.write_result(args.out, "quantization.json", result))
    return result


if __name__ == "__main__":
    main()
