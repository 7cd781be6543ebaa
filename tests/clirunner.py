"""The `domaintune` command as the tests run it: in-process (or through the installed console script), with its exit
code, stdout and stderr. One runner for the CLI, layout, bad-input and rehearsal tests."""
import contextlib, io, os, subprocess, sys
from functools import partial
from pathlib import Path

from domaintune_course import cli

EXE = Path(sys.executable).with_name("domaintune")  # the console script pip installed


def dt(*argv, runs_dir: Path | str | None = None, check: bool = False, timeout: float = 600,
       subprocess_: bool = False) -> subprocess.CompletedProcess:
    "Run `domaintune argv` (with `--runs-dir runs_dir` first when given); `check`: assert it exited 0."
    args = (["--runs-dir", str(runs_dir)] if runs_dir else []) + [str(a) for a in argv]
    if subprocess_:
        r = subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, "DOMAINTUNE_PROFILE": "smoke"})
    else:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): code = cli.main(args)
        r = subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
    if check: assert r.returncode == 0, f"{args} -> {r.returncode}\n{r.stderr[-4000:]}"
    return r


dt_ok = partial(dt, check=True)  # a command that must succeed
