"""Benchmark: dialogue summarization on the `cpu` profile with the bundled dialogues.

Targets (issue: lesson 05): training finishes in under 20 minutes on 2 cores, and on the held-out test split the
fine-tuned model's ROUGE-L beats its base model by at least 5 points with the 95% bootstrap interval above zero.

    .venv/bin/python bench/summarize_cpu.py [RUN_DIR]

Writes RUN_DIR/bench.json (and the run's eval.json, results.csv, rouge.png, loss.png) and prints the numbers.
Timings on a machine shared with other jobs are inflated: run it alone.
"""
import json, os, sys, time
from pathlib import Path

TRAIN_LIMIT_S, MIN_GAIN = 20 * 60, 0.05


def main(run_dir: str = "runs/bench-summarize-cpu") -> int:
    from domaintune_course.config import make_config
    from domaintune_course.tasks import summarize
    cfg = make_config("summarize", os.environ.get("DOMAINTUNE_PROFILE", "cpu"))
    run = Path(run_dir)
    start = time.time(); metrics = summarize.train(cfg, run); train_s = time.time() - start
    start = time.time(); result = summarize.evaluate(run); eval_s = time.time() - start
    d = result["delta"]["rougeL"]
    report = dict(profile=cfg.profile, model=cfg.model, strategy=cfg.strategy, max_steps=cfg.max_steps, batch_size=cfg.batch_size,
                  grad_accum=cfg.grad_accum, max_length=cfg.max_length, threads=__import__("torch").get_num_threads(),
                  cpu_count=os.cpu_count(), train_wall_s=round(train_s, 1), eval_wall_s=round(eval_s, 1),
                  tokens_per_second=metrics.get("tokens_per_second"), eval_loss=metrics.get("eval_loss"), n=result["n"],
                  base_rougeL=result["base"]["rougeL"], finetuned_rougeL=result["finetuned"]["rougeL"],
                  delta_rougeL=d["delta"], delta_low=d["low"], delta_high=d["high"],
                  train_under_limit=train_s < TRAIN_LIMIT_S, gain_met=d["delta"] >= MIN_GAIN and d["low"] > 0)
    (run / "bench.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0 if report["train_under_limit"] and report["gain_met"] else 1


if __name__ == "__main__": sys.exit(main(*sys.argv[1:2]))
