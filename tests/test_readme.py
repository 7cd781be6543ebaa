"""README.md says what nbs/index.ipynb says, and every `domaintune` command it (or a lesson) shows works as written:
run in order in a scratch directory through the installed console script, as a new user would, at the smoke budget."""
import argparse, importlib.util, json, os, re, shlex, shutil, subprocess, sys
from pathlib import Path
import pytest

from domaintune_course import cli
from nbpaths import LESSONS, NOTEBOOKS, REFERENCE
from domaintune_course.data import bundled_path, load_task_data

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).with_name("domaintune")
SHELL_BLOCK = re.compile(r"^```(?:bash|sh|shell|console)?[ \t]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`(domaintune [^`]+)`")


def _render():
    spec = importlib.util.spec_from_file_location("render_readme", ROOT / "scripts" / "render_readme.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod.render()


def test_readme_matches_index():
    "The README is the landing page rendered (run `make readme` after editing nbs/index.ipynb)."
    assert (ROOT / "README.md").read_text(encoding="utf-8") == _render(), "README.md drifted from nbs/index.ipynb: run `make readme`"


def test_readme_names_setup_commands_and_every_lesson():
    "The README keeps `make demo` and `make test`, and links every lesson notebook."
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
    lessons, reference = text.split("\n## Reference\n")[0].split("\n## Lessons\n")[1], text.split("\n## Reference\n")[1]
    missing = [p.name for p in LESSONS if f"(nbs/{p.name})" not in lessons] + [p.name for p in REFERENCE if f"(nbs/reference/{p.name})" not in reference]
    assert not missing, f"notebooks missing from the README's lesson map (lessons) or its reference table: {missing}"


# ---- the documented commands ---------------------------------------------------------------------------------------

def markdown_of(path: Path) -> str:
    "The markdown a reader sees: the README, or a notebook's markdown cells."
    if path.suffix == ".md": return path.read_text(encoding="utf-8")
    return "\n\n".join("".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "markdown")


def shell_commands(markdown: str) -> list[list[str]]:
    "The `domaintune` command lines of the fenced shell blocks, in order, split as a shell splits them (comments dropped)."
    out = []
    for block in SHELL_BLOCK.findall(markdown):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("domaintune "): out.append(shlex.split(line, comments=True))
    return out


# the README and every lesson with a command-line section (index.ipynb is the README's source: its commands run once, as the README's)
DOCUMENTS = [ROOT / "README.md"] + [p for p in LESSONS + REFERENCE if shell_commands(markdown_of(p))]
README_LINES = {shlex.join(c) for c in shell_commands(markdown_of(ROOT / "README.md"))}


def test_the_readme_documents_every_task_end_to_end():
    "The quick start shows, for each task, the whole path a user takes: prepare, train, evaluate, generate; then the runs."
    cmds = shell_commands(markdown_of(ROOT / "README.md"))
    for task in ("qa", "classify", "summarize"):
        missing = {"prepare", "train", "evaluate", "generate"} - {c[1] for c in cmds if _task_of(c, cmds) == task}
        assert not missing, f"the README's quick start has no {sorted(missing)} command for the {task} task"
    assert {("env",), ("runs", "list"), ("runs", "show")} <= {tuple(c[1:3]) if c[1] == "runs" else (c[1],) for c in cmds}


def _subparsers(parser: argparse.ArgumentParser) -> dict:
    "The parser's subcommands and their parsers."
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def undocumented_parts(argv: list[str]) -> list[str]:
    "The subcommand or flags of a documented `domaintune ...` line that the CLI's parser does not have."
    parser = cli.build_parser()
    subs, top, args = _subparsers(parser), set(parser._option_string_actions), argv[1:]
    while args and args[0].startswith("-"): args = args[2:] if args[0] == "--runs-dir" else args[1:]
    if args and args[0] not in subs: return [f"subcommand {args[0]!r}"]
    known = top | (set(subs[args[0]]._option_string_actions) if args else set())
    return [f"flag {a.split('=')[0]!r}" for a in argv[1:] if a.startswith("-") and a.split("=")[0] not in known]


@pytest.mark.parametrize("doc", [ROOT / "README.md"] + NOTEBOOKS, ids=lambda p: p.name)
def test_documented_commands_and_flags_exist(doc):
    "Every `domaintune` command shown, in a shell block or inline, names a subcommand and flags the parser has, and parses."
    text = markdown_of(doc)
    lines = shell_commands(text) + [shlex.split(s) for s in INLINE.findall(text) if "..." not in s and "<" not in s]
    for argv in lines:
        assert not undocumented_parts(argv), f"{doc.name}: `{shlex.join(argv)}` uses {undocumented_parts(argv)}, which the CLI does not have"
    for argv in shell_commands(text):  # the runnable ones must also parse (required arguments, choices, types)
        try: cli.build_parser().parse_args(argv[1:])
        except SystemExit as e: pytest.fail(f"{doc.name}: `{shlex.join(argv)}` does not parse (exit {e.code})")


def _task_of(argv: list[str], cmds: list[list[str]]) -> str | None:
    "The task a command works on: its --task, or that of the run it names (the `train --out` that created it)."
    if "--task" in argv: return argv[argv.index("--task") + 1]
    run = argv[argv.index("--run") + 1] if "--run" in argv else (argv[3] if argv[1:3] == ["runs", "show"] and len(argv) > 3 else None)
    made = [c for c in cmds if c[1] == "train" and "--out" in c and c[c.index("--out") + 1] == run]
    return _task_of(made[0], cmds) if made else None


def data_files(cmds: list[list[str]]) -> dict[str, str]:
    "{data file named in the commands: its task}: `prepare FILE --task T`, `advise FILE --task T`, `train --task T --data FILE`, `evaluate --run R --data FILE`."
    files = {}
    for c in cmds:
        name = c[2] if c[1] in ("prepare", "advise") and len(c) > 2 and not c[2].startswith("-") else (c[c.index("--data") + 1] if "--data" in c else None)
        if name is not None: files[name] = _task_of(c, cmds)
    return files


def supply(path: Path, task: str) -> Path:
    "A user's data file for `task`: the task's bundled data set, copied, or converted to the format the name asks for."
    src = bundled_path(task)
    if path.suffix == src.suffix: return Path(shutil.copyfile(src, path))
    import pandas as pd
    df = pd.DataFrame(load_task_data(task)).drop(columns=["references"], errors="ignore")
    {".csv": lambda: df.to_csv(path, index=False), ".parquet": lambda: df.to_parquet(path),
     ".jsonl": lambda: df.to_json(path, orient="records", lines=True, force_ascii=False)}[path.suffix]()
    return path


def run_documented(argv: list[str], cwd: Path, threads: int | None = None) -> subprocess.CompletedProcess:
    "One documented command through the installed console script, as a user types it (the smoke budget; runs in ./runs)."
    env = {k: v for k, v in os.environ.items() if k != "DOMAINTUNE_RUNS"} | {"DOMAINTUNE_PROFILE": "smoke", "MPLBACKEND": "Agg"}
    if threads: env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}  # side by side, one core each
    return subprocess.run([str(EXE), *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=2400)


def run_documented_block(cmds: list[list[str]], cwd: Path, done: dict | None = None) -> list[tuple[list[str], subprocess.CompletedProcess]]:
    "A document's commands in `cwd` on its data files, in order; a command line `done` already holds (the README's, in the same folder) is not run again."
    files = data_files(cmds)
    unknown = [f for f, t in files.items() if t is None]
    assert not unknown, f"cannot tell which task the data file(s) {unknown} are for"
    for name, task in files.items():
        if not (cwd / name).exists(): supply(cwd / name, task)
    done = done or {}
    ran = dict((shlex.join(a), r) for a, r in run_in_order([c for c in cmds if shlex.join(c) not in done], cwd))
    return [(c, done.get(shlex.join(c)) or ran.get(shlex.join(c))) for c in cmds if shlex.join(c) in done or shlex.join(c) in ran]


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    "The README's commands, run once in one folder: the folder, and each command line's result."
    cwd = tmp_path_factory.mktemp("readme")
    return cwd, {shlex.join(a): r for a, r in run_documented_block(shell_commands(markdown_of(ROOT / "README.md")), cwd)}


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: p.name)
def test_documented_commands_run_as_written(doc, tmp_path, request):
    """The shell commands of the README (and of a lesson's command-line section) run in order on a user's data files and succeed.
    A lesson that shows a command the README shows goes on in the README's folder from there, as a reader of both would."""
    cmds = shell_commands(markdown_of(doc))
    shared = doc.name == "README.md" or any(shlex.join(c) in README_LINES and _task_of(c, cmds) for c in cmds)  # a task's command, not `runs list`
    cwd, done = request.getfixturevalue("readme_run") if shared else (tmp_path, {})
    files = data_files(cmds)
    for argv, r in run_documented_block(cmds, cwd, done):
        assert r.returncode == 0 and "Traceback" not in r.stderr, f"{doc.name}: `{shlex.join(argv)}` exited {r.returncode}:\n{r.stderr[-3000:]}"
        if argv[1:3] == ["runs", "show"]:
            shown = json.loads(r.stdout)
            source = Path(shown["data"]["source"]).name
            assert source in files and shown["data"]["read"]["records"] > 0, shown["data"]


def run_in_order(cmds: list[list[str]], cwd: Path) -> list[tuple[list[str], subprocess.CompletedProcess]]:
    """Each command's result, in the documented order. A task's commands run in order, the tasks side by side (one thread
    each: they share nothing but the runs directory, whose names they keep apart); a command of no task (`env`, `runs list`)
    runs after every command before it, and before every command after it."""
    from concurrent.futures import ThreadPoolExecutor
    results, pool = {}, ThreadPoolExecutor(3)
    def chain(idx: list[int], threads: int | None):
        for i in idx:
            results[i] = run_documented(cmds[i], cwd, threads)
            if results[i].returncode: return
    i = 0
    while i < len(cmds):
        if _task_of(cmds[i], cmds) is None: results[i] = run_documented(cmds[i], cwd); i += 1; continue
        j = next((k for k in range(i, len(cmds)) if _task_of(cmds[k], cmds) is None), len(cmds))
        by_task = {}
        for k in range(i, j): by_task.setdefault(_task_of(cmds[k], cmds), []).append(k)
        list(pool.map(chain, by_task.values(), [1 if len(by_task) > 1 else None] * len(by_task))); i = j
    pool.shutdown()
    return [(cmds[k], results[k]) for k in sorted(results)]


def test_the_flag_check_catches_what_the_cli_lacks():
    "The documentation check is not vacuous: a made-up flag or subcommand is caught, real ones pass."
    assert undocumented_parts(["domaintune", "train", "--task", "qa", "--epochz", "2"]) == ["flag '--epochz'"]
    assert undocumented_parts(["domaintune", "fine-tune", "--task", "qa"]) == ["subcommand 'fine-tune'"]
    assert undocumented_parts(["domaintune", "--runs-dir", "r", "runs", "list", "--json"]) == []
    assert shell_commands("text\n```bash\n$ domaintune env   # hi\nmake demo\n```\n") == [["domaintune", "env"]]


def test_readme_quotes_the_measured_course_time():
    "The README's lesson-cost paragraph quotes bench/results/lessons.json: its date, its total and whether the target was met."
    run = json.loads((ROOT / "bench" / "results" / "lessons.json").read_text(encoding="utf-8"))
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    para = next(p for p in text.split("\n\n") if p.startswith("Lesson cost (`make outputs`"))
    assert run["date"][:10] in para and f"**{run['total_minutes']} minutes**" in para, para[:400]
    assert ("met" if run["meets_target"] else "**missed**") in para.split("target under 30 minutes: ", 1)[1][:12]


def test_readme_is_a_newcomers_page():
    "The README stays a landing page: at most 14 KB, its figures' history and caveats in bench/README.md, which it links."
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) <= 14 * 1024, f"README.md is {len(text.encode('utf-8'))} bytes: move detail to bench/README.md"
    assert "(bench/README.md)" in text and "## Results, measured" in text
