"""Every lesson is committed with the outputs of a real run at the cpu profile (`make outputs`), and they are fresh: the
fingerprint the run left in the notebook's metadata matches its code cells, the package modules it imported, and the
outputs themselves (`course.stale`)."""
import json
import pytest
from domaintune_course.course import META_KEY, stale
from nbpaths import LESSONS

MAX_NOTEBOOK_BYTES = 1_500_000


@pytest.mark.parametrize("nb", LESSONS, ids=[p.stem for p in LESSONS])
def test_committed_outputs_are_fresh(nb):
    "Changed code or modules since the run, or outputs edited by hand, fail here with the command that refreshes them."
    why = stale(nb)
    assert not why, f"{'; '.join(why)}. Fix: make outputs LESSONS={nb.stem} (runs it at the cpu profile), then commit {nb.relative_to(nb.parents[1])}"


@pytest.mark.parametrize("nb", LESSONS, ids=[p.stem for p in LESSONS])
def test_outputs_come_from_the_cpu_profile_and_show_something(nb):
    "The committed outputs are the cpu lesson budget's, and a reader sees results: text, tables or images in most cells."
    d = json.loads(nb.read_text(encoding="utf-8"))
    assert d["metadata"][META_KEY]["profile"] == "cpu", f"{nb.name}: outputs made at {d['metadata'][META_KEY]['profile']}: make outputs LESSONS={nb.stem}"
    code = [c for c in d["cells"] if c["cell_type"] == "code"]
    shown = [c for c in code if c.get("outputs")]
    assert len(shown) >= len(code) // 3, f"{nb.name}: only {len(shown)} of {len(code)} code cells show anything"
    errors = [o.get("ename") for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{nb.name}: committed outputs contain errors: {errors}"
    assert nb.stat().st_size < MAX_NOTEBOOK_BYTES


def test_every_lesson_has_a_measured_cpu_cost():
    "make outputs records each lesson's time and memory at the cpu profile: the cost table every lesson opens with shows it."
    from domaintune_course.course import COSTS_FILE
    measured = json.loads(COSTS_FILE.read_text(encoding="utf-8")).get("cpu", {}).get("lessons", {})
    assert not [nb.stem for nb in LESSONS if nb.stem not in measured], "run make outputs (it records the costs)"


NOISE = {  # what a learner cannot act on, each stopped at its source (domaintune_course/__init__.py, tasks.classify)
    "Failed to load CPU gemm_4bit_forward": "bitsandbytes' hub-kernel lookup for a CPU layout the course turns off",
    "`is_gradient_checkpointing` is deprecated": "peft reading transformers' deprecated property",
    "LOAD REPORT": "transformers' report of the new classifier head, which the course checks itself",
}


@pytest.mark.parametrize("nb", LESSONS, ids=[p.stem for p in LESSONS])
def test_committed_outputs_carry_no_noise(nb):
    "No committed output shows a library message a learner cannot act on; real warnings stay."
    d = json.loads(nb.read_text(encoding="utf-8"))
    texts = ["".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
             for c in d["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    found = sorted({f"{k} ({why})" for k, why in NOISE.items() for t in texts if k in t})
    assert not found, f"{nb.name} shows: {found}. Stop it at its source, then make outputs LESSONS={nb.stem}"


def _shown_time(seconds: float) -> str: return f"{int(seconds // 60)} min {int(seconds % 60)} s" if seconds >= 60 else f"{seconds:.0f} s"


@pytest.mark.parametrize("nb", LESSONS, ids=[p.stem for p in LESSONS])
def test_cost_table_shows_the_run_that_made_the_outputs(nb):
    "Each lesson's committed cost table, lesson_costs.json and bench/results/lessons.json give the same cpu time and memory."
    from domaintune_course.course import COSTS_FILE
    run = json.loads((nb.parents[1] / "bench" / "results" / "lessons.json").read_text(encoding="utf-8"))["notebooks"][nb.stem]
    recorded = json.loads(COSTS_FILE.read_text(encoding="utf-8"))["cpu"]["lessons"][nb.stem]
    kept = ("seconds", "peak_rss_mb", "alone_seconds", "alone_peak_rss_mb", "reused")
    assert recorded == {k: run[k] for k in kept if k in run}, f"{nb.stem}: lesson_costs.json and lessons.json differ"
    d = json.loads(nb.read_text(encoding="utf-8"))
    cell = next(c for c in d["cells"] if c["cell_type"] == "code" and "".join(c["source"]).rstrip().endswith(f'lesson_costs("{nb.stem}")'))
    shown = "".join("".join(o.get("data", {}).get("text/html", "")) for o in cell.get("outputs", []))
    cpu = shown.split("<th>cpu</th>", 1)[-1].split("</tr>", 1)[0] if "<th>cpu</th>" in shown else ""  # the cpu row of the table
    assert _shown_time(run["seconds"]) in cpu and f"{run['peak_rss_mb'] / 1024:.1f} GB" in cpu, \
        f"{nb.stem}: the cost table shows {cpu!r}, lessons.json {run['seconds']} s: make outputs LESSONS={nb.stem}"
    if run.get("reused"):  # a lesson that reused earlier lessons' runs also shows what it costs alone
        assert f"(alone: {_shown_time(run['alone_seconds'])})" in cpu and f"(alone: {run['alone_peak_rss_mb'] / 1024:.1f} GB)" in cpu, cpu
    assert set(d["metadata"]["domaintune"].get("runs", {})) == set(run.get("reused", {})), \
        f"{nb.stem}: its outputs and lessons.json disagree on the runs it reused: make outputs LESSONS={nb.stem}"


def test_lesson_05b_reuses_the_runs_of_lessons_03_and_05():
    "Run after them (as make outputs runs the course), lesson 05b trains nothing: it reuses the Q&A run (the whole game trains it, 03 reuses it) and the summarization run."
    nb = next(p for p in LESSONS if p.stem == "05b_hallucination")
    runs = json.loads(nb.read_text(encoding="utf-8"))["metadata"]["domaintune"].get("runs", {})
    trained = sorted(runs.values())
    assert len(trained) == 2 and trained[0] in ("00_whole_game", "03_domain_qa") and trained[1] == "05_dialogsum", \
        f"05b reused {runs}: make outputs LESSONS='00_whole_game 03_domain_qa 05_dialogsum 05b_hallucination'"
