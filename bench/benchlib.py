"""Shared pieces of the benchmark scripts: the command line, the results header (date, machine, versions, command),
writing results, and reading a process's memory."""
import argparse, ctypes, datetime, functools, json, os, platform, shlex, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))  # run from a clone without `pip install -e .`


def parser(description: str) -> argparse.ArgumentParser:
    "An argument parser with the options every benchmark has: --quick and --out."
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny models and data: checks the script works in seconds; the figures mean nothing")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"directory for the results (default: {RESULTS.relative_to(ROOT)})")
    return p


def run_options(p: argparse.ArgumentParser, tasks: tuple[str, ...]) -> argparse.ArgumentParser:
    "The options of a benchmark that trains a run per task or takes finished ones: --tasks, --runs, --profile, --keep-runs."
    p.add_argument("--tasks", nargs="+", default=list(tasks), choices=list(tasks))
    p.add_argument("--runs", nargs="+", default=[], metavar="TASK=DIR", help="use these finished run directories instead of training")
    p.add_argument("--profile", default=None, help="hardware profile the runs are trained with (default: cpu; --quick: smoke)")
    p.add_argument("--keep-runs", type=Path, default=None, help="train new runs here and keep them (default: a temporary directory)")
    return p


def parse_runs(items: list[str] | None, tasks: tuple[str, ...], need_model: bool = False) -> dict:
    "`task=DIR` pairs from a --runs option: each task one of `tasks`, each DIR a run directory (with `model/` if `need_model`)."
    runs = {}
    for item in items or []:
        task, _, path = item.partition("=")
        if task not in tasks or not path: raise SystemExit(f"--runs {item!r}: give task=DIR with task one of {', '.join(tasks)}.")
        if not Path(path).is_dir(): raise SystemExit(f"--runs {item!r}: {path} is not a directory.")
        if need_model and not (Path(path) / "model").is_dir(): raise SystemExit(f"--runs {item!r}: {path} holds no trained model (no model/ directory).")
        runs[task] = path
    return runs


def cpu_model() -> str:
    "The CPU model name from /proc/cpuinfo (or the platform's name for it)."
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"): return line.split(":", 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    "The GPU(s) of this machine, from nvidia-smi (seen even where a benchmark hides CUDA from torch), or None."
    import shutil, subprocess
    if not shutil.which("nvidia-smi"): return None
    try: names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError): return None
    return ", ".join(n.strip() for n in names.splitlines() if n.strip()) or None


def machine() -> dict:
    "Cores, CPU model, memory and GPU of this machine."
    import torch
    gpu = gpu_name()
    try: mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError): mem_gb = None
    return dict(cores=os.cpu_count(), cpu=cpu_model(), memory_gb=mem_gb, gpu=gpu, torch_threads=torch.get_num_threads(),
                platform=platform.platform())


def command(script: str, argv: list[str] | None = None) -> str:
    "The command line that runs `script` with `argv` (default: this process's own arguments), from the repository root."
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    return " ".join(shlex.quote(a) for a in ["python", os.path.relpath(script, ROOT), *args])


def header(script: str, argv: list[str] | None = None) -> dict:
    "What every results file records: the date, the machine, the library versions and the exact command."
    from domaintune_course.models import versions
    cmd = command(script, argv)
    return dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), machine=machine(),
                versions=versions(), command=cmd, load_average=list(os.getloadavg()) if hasattr(os, "getloadavg") else None)


def write_result(out: Path, name: str, result: dict) -> Path:
    "Write `result` as `out/name` (indented JSON, atomically) and return the path."
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    path, tmp = out / name, out / f".{name}.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def temp_dir(prefix: str) -> Path:
    "A new temporary directory, removed when this process exits."
    import atexit, shutil, tempfile
    d = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


def rss_bytes() -> int:
    "Resident set size of this process now, from /proc/self/statm."
    with open("/proc/self/statm") as f: return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _MallInfo2(ctypes.Structure):
    "glibc's `struct mallinfo2`."
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                                               "fordblks", "keepcost")]


@functools.cache
def _libc():
    "glibc (with `mallinfo2`, 2.33+), or None where the C library is another (macOS, musl) or older."
    try: lib = ctypes.CDLL("libc.so.6"); lib.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError): return None
    return lib


def trim_heap():
    "Give freed heap memory back to the OS (glibc `malloc_trim`), so the RSS reflects live memory."
    if _libc() is not None: _libc().malloc_trim(0)


def heap_bytes() -> int | None:
    "Bytes the C allocator has handed out and not had back (glibc `mallinfo2`: in-use heap + mmapped blocks); None without glibc."
    if _libc() is None: return None
    m = _libc().mallinfo2()
    return m.uordblks + m.hblkhd


class PeakMemory:
    "A context manager that samples this process's RSS and live heap bytes in a thread and keeps the peaks."
    def __init__(self, interval: float = 0.002): self.interval, self.peak_rss, self.peak_heap = interval, 0, None

    def _sample(self):
        self.peak_rss = max(self.peak_rss, rss_bytes())
        h = heap_bytes()
        if h is not None: self.peak_heap = max(self.peak_heap or 0, h)

    def __enter__(self):
        import threading
        self._stop = threading.Event(); self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True); self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval): self._sample()

    def __exit__(self, *exc):
        self._stop.set(); self._thread.join(); self._sample()


def file_mapped_ranges(suffix: str = ".safetensors") -> list[tuple[int, int]]:
    "Address ranges of this process's memory maps of files ending in `suffix` (from /proc/self/maps)."
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[-1].endswith(suffix):
                lo, hi = parts[0].split("-"); out.append((int(lo, 16), int(hi, 16)))
    return out


def copy_mapped_tensors(model) -> int:
    "Copy every parameter and buffer that still points into a mapped checkpoint file into ordinary memory; returns the bytes copied."
    ranges, copied = file_mapped_ranges(), 0
    if not ranges: return 0
    for t in [*model.parameters(), *model.buffers()]:
        ptr = t.data_ptr()
        if t.is_floating_point() and any(lo <= ptr < hi for lo, hi in ranges):
            t.data = t.data.clone(); copied += t.numel() * t.element_size()
    return copied


def mb(n: float) -> float: return round(n / 2**20, 1)


def pct_error(estimate: float, measured: float) -> float | None:
    "Signed error of an estimate against a measurement, in percent of the measurement."
    return round(100 * (estimate - measured) / measured, 1) if measured else None
