"""Run every benchmark (throughput, memory, quality, hallucination, advise, quantization, generation, lessons; the GPU check where there is a GPU) and write
`SUMMARY.md`: a Markdown table per results file, each with the date, machine and command that produced it.

    python bench/run_all.py                      # everything (what `make bench` runs); expect a few hours on 2 CPU cores
    python bench/run_all.py --only throughput memory
    python bench/run_all.py --summary-only       # rewrite SUMMARY.md from the JSON files already in --out
    python bench/run_all.py --quick --out /tmp/b   # --quick: each script's quick mode (the GPU check's --dry-run)
"""
import json, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

BENCHMARKS = ("throughput", "memory", "quality", "hallucination", "advise", "quantization", "generation", "lessons", "gpu")
SCRIPTS = dict(gpu="gpu_check")  # benchmark name -> script, where they differ
INCOMPLETE = 3  # gpu_check's exit status when its budget ran out before every step finished (not a failure)


def cuda_available() -> bool:
    "Does torch see a CUDA GPU? (asked in a child process, so this one stays free of torch)"
    return subprocess.run([sys.executable, "-c", "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"],
                          capture_output=True).returncode == 0


def run(name: str, args) -> dict:
    "Run one benchmark script in its own process; its exit status and wall time (the GPU check is skipped without a GPU)."
    if name == "gpu" and not args.quick and not cuda_available():
        print("gpu: skipped, no CUDA GPU here. bench/gpu_check.py needs one (see bench/README.md); "
              "`python bench/gpu_check.py --dry-run` checks the script on a CPU.", flush=True)
        return dict(returncode=0, seconds=0.0, skipped="no CUDA GPU")
    quick = ["--dry-run"] if name == "gpu" else ["--quick"]
    cmd = [sys.executable, str(Path(__file__).with_name(f"{SCRIPTS.get(name, name)}.py")), "--out", str(args.out)] + (quick if args.quick else [])
    if name == "quality" and args.runs: cmd += ["--runs", *args.runs]
    causal = [r for r in args.runs if r.partition("=")[0] in ("summarize", "qa")]
    if name in ("generation", "hallucination") and causal: cmd += ["--runs", *causal]
    start = time.perf_counter()
    rc = subprocess.run(cmd, cwd=benchlib.ROOT).returncode
    return dict(returncode=rc, seconds=round(time.perf_counter() - start, 1))


# ---------------------------------------------------------------- Markdown

def table(header: list[str], rows: list[list]) -> str:
    "A Markdown table."
    num = lambda v: f"{v:.0f}" if abs(v) >= 1000 else f"{v + 0.0:.3g}"  # no exponents in a table people read
    cell = lambda v: "" if v is None else (num(v) if isinstance(v, float) else str(v)).replace("|", "\\|")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows])


def provenance(d: dict) -> str:
    "One line: when, where and how a results file was made."
    m, v = d.get("machine", {}), d.get("versions", {})
    gpu = m.get("gpu") or "no GPU"
    libs = ", ".join(f"{k} {v[k]}" for k in ("torch", "transformers", "peft", "bitsandbytes") if v.get(k))
    quick = " **(--quick: tiny models, the figures mean nothing)**" if d.get("quick") else \
            " **(--dry-run: tiny models on the CPU, the figures mean nothing)**" if d.get("dry_run") else ""
    return f"_{d.get('date', '?')} · {m.get('cores', '?')} cores, {m.get('cpu', '?')}, {m.get('memory_gb', '?')} GB, {gpu} · {libs} · `{d.get('command', '?')}`_{quick}"


def mark(ok) -> str: return "met" if ok else "**missed**"


def pct(x) -> str: return "" if x is None else f"{100 * x:.1f}%"


def throughput_md(d: dict) -> str:
    "Tokens per second, padding and speedups per path and strategy."
    out, t = [], d["targets"]
    for path in ("causal", "classify"):
        if path not in d: continue
        p = d[path]
        classic, dynamic = p["strategies"]["pad_to_max"]["tokens_per_second"], p["strategies"]["dynamic"]["tokens_per_second"]
        rows = [[n, pct(r["padding_fraction"]), r["tokens_per_second"], r["seconds"], r["steps"], f"{r['tokens_per_second'] / classic:.2f}x",
                 f"{r['tokens_per_second'] / dynamic:.2f}x"] for n, r in p["strategies"].items()]
        c, met = p["strategies"][p["course"]], p["meets_targets"]
        out += [f"**{path}**: {p['model']}, {p['strategy']} {p['precision']}, {p['data']}; {p['examples']} examples (mean {p['mean_length']} tokens, "
                f"longest {p['max_example_length']}), batch {p['batch_size']}, max_length {p['max_length']}.", "",
                table(["strategy", "padding", "tokens/s", "seconds", "steps", "vs classic", "vs dynamic"], rows), "",
                f"Course pipeline (`{p['course']}`): padding {pct(c['padding_fraction'])} (target <= {pct(t['padding_fraction_max'])}: "
                f"{mark(met['padding_fraction'])}), {p['speedup_vs_classic']:.2f}x classic (target >= {t['speedup_vs_classic_min']}x: "
                f"{mark(met['speedup_vs_classic'])}), {p['speedup_vs_dynamic']:.2f}x dynamic (target >= {t['speedup_vs_dynamic_min']}x: "
                f"{mark(met['speedup_vs_dynamic'])})."]
        if "speedup_vs_trl" in p:
            out.append(f"TRL's default configuration (`trl` above: trl {p['trl']['version']}, {p['trl']['config']}): the course pipeline is "
                       f"{p['speedup_vs_trl']:.2f}x its tokens per second.")
        elif path == "causal" and "trl_comparison" in d:
            c = d["trl_comparison"]; r = c["causal"]
            tps = ", ".join(f"`{n}` {s['tokens_per_second']}" for n, s in r["strategies"].items())
            out.append(f"TRL's default configuration, measured in a run of its own ({c['date'][:10]}, `{c['command']}`: trl {r['trl']['version']}, "
                       f"{r['trl']['config']}; {r['examples']} examples, batch {r['batch_size']}, max_length {r['max_length']}; tokens/s {tps}): "
                       f"the course pipeline is {d['speedup_vs_trl']:.2f}x its tokens per second (target >= {t.get('speedup_vs_trl_min', 1.2)}x: "
                       f"{mark(d['speedup_vs_trl'] >= t.get('speedup_vs_trl_min', 1.2))}).")
        elif p.get("trl") and not p["trl"]["ran"]: out.append(f"TRL's baseline did not run: {p['trl']['reason']}.")
        if p.get("packing_check"):
            pc = p["packing_check"]
            out.append(f"Packing check on this model (lesson 01a's `check_packing`, {pc['examples']} examples): "
                       f"{'losses match' if pc['ok'] else '**losses differ**'} (max difference {pc['max_diff']:.2g}).")
        out.append("")
    return "\n".join(out)


def memory_md(d: dict) -> str:
    "Estimated vs measured weights and peak training memory (allocated bytes; the process's RSS beside)."
    rows = [[r["name"], r["precision"], r.get("strategy"), r.get("footprint_tensor_mb"), r.get("estimated_footprint_mb"), r.get("footprint_error_pct"),
             r.get("peak_training_mb"), r.get("estimated_peak_training_mb"), r.get("peak_training_error_pct"),
             r.get("peak_training_rss_mb"), r.get("peak_training_rss_error_pct"), r.get("error", "")[-80:] or None]
            for r in d["rows"]]
    head = ["model", "precision", "strategy", "weights MB", "estimate", "error %", "peak training MB", "estimate", "error %",
            "peak RSS MB", "error % vs RSS", "failure"]
    r0 = d["rows"][0] if d["rows"] else {}
    lines = [f"Batch {r0.get('batch_size')} x {r0.get('max_length')} tokens (every example padded to it), {r0.get('steps')} AdamW steps; "
             f"measured with {r0.get('measured_with', '?')}, each minus its value before loading. The peak is allocated bytes "
             f"(`{r0.get('peak_measured_as', 'rss')}`), as a GPU's `max_memory_allocated` counts them; the RSS also holds heap the "
             "allocator kept after tensors were freed.", "", table(head, rows), ""]
    if d.get("max_error_pct") is not None:
        lines.append(f"Largest error: {d['max_error_pct']:.1f}% (target within {d['target_pct']:.0f}%: {mark(d['meets_target'])})"
                     + (f"; against the RSS peak: {d['max_peak_rss_error_pct']:.1f}%." if d.get("max_peak_rss_error_pct") is not None else "."))
    else: lines.append("No estimates: every configuration failed (see `failure`).")
    return "\n".join(lines) + "\n"


def quality_md(d: dict) -> str:
    "One table: every task's systems on held-out data, with intervals."
    rows = []
    for task, t in d["tasks"].items():
        if t["status"] != "ok":
            rows.append([task, t["status"], None, None, None, (t.get("reason") or t.get("error", ""))[:100], None, None]); continue
        m = t["metric"]
        for name, r in t["systems"].items():
            lo, hi = r.get("ci_low", r.get(f"{m}_low")), r.get("ci_high", r.get(f"{m}_high"))
            rows.append([task, name, m, r.get(m), f"[{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else None, r.get("n"),
                         r.get("prompt_tokens"), r.get("seconds_per_answer", r.get("seconds_per_summary"))])
    lines = [f"Profile `{d.get('profile')}`; held-out examples per task in column n ({'at most ' + str(d['limit']) if d.get('limit') else 'classify: the whole test split; summarize, qa: the profile eval_limit'}); plots: "
             + ", ".join(f"`{t['plot']}`" for t in d["tasks"].values() if t.get("plot")), "",
             table(["task", "system", "metric", "value", "95% interval", "n", "prompt tokens", "s per example"], rows), ""]
    for task, t in d["tasks"].items():
        g = t.get("targets")
        if g:
            secs = g.get("train_seconds")
            time_txt = "not measured" if secs is None else f"{secs / 60:.1f} min (target under {g['targets']['train_seconds_max'] // 60} min: {mark(g['train_time_met'])})"
            gain = (f"fine-tuned minus TF-IDF {100 * g['gain_vs_tfidf']:+.1f} points (target >= +{100 * g['targets']['gain_vs_tfidf_min']:.0f}: {mark(g['gain_met'])})"
                    if task == "classify" else
                    f"ROUGE-L gain {100 * g['rougeL_gain']:+.1f} points, interval low {100 * g['rougeL_gain_low']:+.1f} (target >= +{100 * g['targets']['rougeL_gain_min']:.0f} with low > 0: {mark(g['gain_met'])})")
            lines.append(f"- **{task}**: training {time_txt}; {gain}.")
        if t.get("date") and t.get("date") != d.get("date"): lines.append(f"- {task} measured {t['date']} by `{t.get('command', '?')}`.")
    return "\n".join(lines + [""])


def generation_md(d: dict) -> str:
    "Seconds, new tokens per second and speedup per task, path and model; how many answers the paths share."
    rows = []
    for task, t in d["tasks"].items():
        for path in ("today", "new"):
            p = t["paths"][path]
            for m in ("base", "finetuned"):
                rows.append([task, path, m, p["batch_size"], p[m]["seconds"], p[m].get("cpu_seconds"), p[m]["new_tokens"], p[m]["new_tokens_per_second"],
                             p[m]["examples_per_second"], f"{t['speedup'][m]:.2f}x" if path == "new" else None,
                             f"{t['speedup_cpu'][m]:.2f}x" if path == "new" and "speedup_cpu" in t else None,
                             f"{t['answers_identical'][m]['identical']}/{t['answers_identical'][m]['of']}" if path == "new" else None])
    head = d["tasks"].get("summarize")
    verdict = (f"Summarization, base + fine-tuned: {head['speedup']['both']:.2f}x today's path (target >= {d['targets']['summarize_speedup_min']}x: "
               f"{mark(d['meets_target'])})." if head and d.get("meets_target") is not None else "")
    info = "; ".join(f"{task}: {t['examples']} examples, {t['max_new_tokens']} new tokens at most, {t['model']} ({t['strategy']}) on {t['device']}"
                     for task, t in d["tasks"].items())
    return "\n".join([f"{info}. Median of {next(iter(d['tasks'].values()))['repeats'] if d['tasks'] else '?'} interleaved rounds.", "",
                      table(["task", "path", "model", "batch", "seconds", "CPU s", "new tokens", "new tokens/s", "examples/s", "speedup", "speedup (CPU)", "same answers"], rows), "",
                      verdict, ""])


def quantization_md(d: dict) -> str:
    "Footprint and held-out loss before and after one LoRA budget per base precision; the rank sweep; round-trip errors."
    info = (f"{d['model']}, {d['steps']} LoRA steps of {d['batch_size']} examples (learning rate {d['learning_rate']}, rank {d['lora_r']}, "
            f"alpha {d['lora_alpha']}) on {d['train_examples']} training questions; loss in nats per answer token on {d['held_out']} held-out test questions.")
    prec = [[k, v["footprint_mb"], v["loss_before"], v["loss_after"], v["trainable"], v["train_seconds"]] for k, v in d["precisions"].items()]
    ranks = [[int(k), v["trainable"], v["loss_before"], v["loss_after"], v["train_seconds"]] for k, v in d["ranks"].items()]
    trips = [[k, v["bits_per_weight"], v["relative_error"]] for k, v in d["roundtrip"]["formats"].items()]
    return "\n".join([info, "", table(["base", "footprint MB", "loss before", "loss after", "trainable", "train s"], prec), "",
                      "Rank sweep on the NF4 base (alpha / r fixed):", "", table(["rank", "trainable", "loss before", "loss after", "train s"], ranks), "",
                      f"Round trip of `{d['roundtrip']['layer']}` {d['roundtrip']['shape']}:", "", table(["format", "bits per weight", "relative error"], trips), ""])


def lessons_md(d: dict) -> str:
    "Minutes and peak memory per notebook, and the total."
    rows = [[nb, "ok" if r["ok"] else "**failed**", round(r["seconds"] / 60, 2), r["peak_rss_mb"]] for nb, r in d["notebooks"].items()]
    skipped = f"cells tagged {', '.join(d['skipped_cell_tags'])} skipped" if d["skipped_cell_tags"] else "every cell run"
    return "\n".join([f"Profile `{d['profile']}`, {skipped}.", "",
                      table(["notebook", "status", "minutes", "peak RSS MB"], rows), "",
                      f"Total: {d['total_minutes']} minutes (target under {d['target_seconds'] // 60} minutes: {mark(d['meets_target'])}).", ""])


def gpu_md(d: dict) -> str:
    "The GPU check: the device, then per profile and model the steps' status, speed and peak memory against the estimate."
    g, bnb = d.get("gpu") or {}, d.get("bitsandbytes", {})
    where = (f"{g.get('name')}, {g.get('memory_gb')} GiB, compute capability {g.get('compute_capability')}, CUDA {g.get('torch_cuda')}"
             + (f", driver {d['gpus'][0].get('driver_version')}" if d.get("gpus") else "")) if g else \
            "**no GPU: a dry run on the CPU (tiny configs; no GPU figure measured)**" if d.get("dry_run") else "no GPU reached"
    rows = [[r["profile"], r["model"], r.get("precision"), r["status"], ", ".join(r["failed_steps"]) or None, r.get("tokens_per_second"),
             r.get("peak_allocated_mb"), r.get("estimated_peak_mb"), r.get("estimate_error_pct"), r.get("final_loss")]
            for r in d.get("summary", [])]
    lines = [f"{where}; bitsandbytes {bnb.get('version')} ({bnb.get('source')}); {d.get('steps')} optimizer steps per pair; "
             f"{d.get('elapsed_seconds')} s of a {d.get('budget_seconds')} s budget.", "",
             table(["profile", "model", "precision", "status", "failed steps", "tokens/s", "peak allocated MB", "estimate MB",
                    "error %", "last loss"], rows), ""]
    if d.get("status"): lines.insert(0, f"Overall: **{d['status']}**.")
    if d.get("version_mismatches"): lines.insert(0, f"**Versions outside pyproject.toml's bounds:** {d['version_mismatches']}")
    if d.get("error"): lines.append(f"**Not run:** {d['error']}")
    return "\n".join(lines) + "\n"


def hallucination_md(d: dict) -> str:
    "The remedy table: key-fact verdicts of the Q&A systems, unsupported content in the summaries, per system."
    if not d.get("remedies"):
        return "\n".join(f"- {t}: {r['status']} {r.get('error', '')}" for t, r in d["tasks"].items()) + "\n"
    q, s = d["tasks"]["qa"], d["tasks"]["summarize"]
    rows = [[name, r["remedy"]] + [r.get(k) if r.get(k) != "-" else None for k in list(r)[1:]] for name, r in d["remedies"].items()]
    head = ["system", "remedy"] + list(next(iter(d["remedies"].values())))[1:]
    return "\n".join([f"Q&A: {q['with_key_fact']} held-out questions with a hand-labelled key fact; summaries: {s['n']} held-out dialogues "
                      "(the references scored as the yardstick). Intervals per row are in the JSON; plot: `hallucination.png`.", "",
                      table(head, rows), ""])


def advise_md(d: dict) -> str:
    "Per bundled set: what `domaintune advise` recommended, on how many held-out examples, in how long, and whether it agrees with quality.json."
    rows = [[t, r["status"], r.get("n"), r.get("steps"), round(r["wall_seconds"] / 60, 1), r.get("best"), r.get("recommended"),
             r.get("examples_for_power"), ("yes" if all(a["agrees"] for a in r["agreement"].values()) else "no") if r.get("agreement") else None]
            for t, r in d["tasks"].items() if r["status"] == "ok"]
    budget = f"--minutes {d['minutes']:g} (must end within {1.2 * d['minutes']:g})" if d.get("minutes") else "the profile's full budget"
    return "\n".join([f"Each bundled set through `domaintune advise` at {budget}; every system's interval and cost are in the JSON and the reports.", "",
                      table(["set", "status", "held out", "steps", "minutes", "best", "recommended", "examples for 80% power", "agrees with quality.json"], rows), ""])


SECTIONS = dict(throughput=("Training throughput", throughput_md), memory=("Memory: estimator vs measurement", memory_md),
                quality=("Held-out quality", quality_md), hallucination=("Hallucination by remedy", hallucination_md), advise=("Should I fine-tune? (advise)", advise_md), quantization=("Quantization: fp32, 8-bit and NF4 under one LoRA budget", quantization_md), generation=("Generation speed", generation_md), lessons=("Lesson cost", lessons_md),
                gpu=("GPU check", gpu_md))


def summary(out: Path, ran: dict | None = None, argv: list[str] | None = None) -> Path:
    "Write `out/SUMMARY.md` from the results files in `out`."
    parts = ["# Benchmark results", "", f"Written by `{benchlib.command(__file__, argv)}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
             "Each section comes from its JSON file in this directory and names the machine and command that produced it.", ""]
    for name, (title, render) in SECTIONS.items():
        path = out / f"{name}.json"
        parts += [f"## {title} (`{name}.json`)", ""]
        if not path.is_file():
            parts += ["Not run yet." + (" It needs a CUDA GPU: `python bench/gpu_check.py` (see `README.md`)." if name == "gpu" else ""), ""]; continue
        d = json.loads(path.read_text(encoding="utf-8"))
        parts += [provenance(d), "", render(d)]
        if ran and name in ran and name == "gpu" and ran[name]["returncode"] == INCOMPLETE:
            parts += ["**The last GPU check ran out of its time budget: the steps it did not finish are marked incomplete.**", ""]
        elif ran and name in ran and ran[name]["returncode"] != 0: parts += [f"**The last run of {SCRIPTS.get(name, name)}.py failed (exit {ran[name]['returncode']}); this file may be older.**", ""]
    return write_text(out / "SUMMARY.md", "\n".join(parts))


def write_text(path: Path, text: str) -> Path:
    "Write text atomically."
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp"); tmp.write_text(text, encoding="utf-8")
    return tmp.replace(path)


def main(argv=None):
    p = benchlib.parser(__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", default=list(BENCHMARKS), choices=list(BENCHMARKS), help="which benchmarks to run (default: all)")
    p.add_argument("--runs", nargs="+", default=[], metavar="TASK=DIR", help="passed to quality.py (and the summarize/qa ones to generation.py): use these runs instead of training")
    p.add_argument("--summary-only", action="store_true", help="run nothing; rewrite SUMMARY.md from the JSON files in --out")
    args = p.parse_args(argv)
    ran = {} if args.summary_only else {name: run(name, args) for name in args.only}
    path = summary(args.out, ran, argv)
    print(path)
    failed = [n for n, r in ran.items() if r["returncode"] != 0 and not (n == "gpu" and r["returncode"] == INCOMPLETE)]
    if failed: print(f"Failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__": sys.exit(main())
