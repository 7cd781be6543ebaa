"""The house's layering: DESIGN.md's table puts every module on one layer, and no import (inside a function or not) runs
from a lower layer to a higher one."""
import ast, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "domaintune_course"


def modules() -> dict[str, Path]:
    "The package's modules by dotted name (`tasks.qa`), nbdev's index left out."
    return {p.relative_to(PKG).with_suffix("").as_posix().replace("/", "."): p for p in PKG.rglob("*.py") if p.name != "_modidx.py"}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    "The package modules `name` imports anywhere in its source, absolute or relative."
    found, package = set(), name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level: base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "domaintune_course": base = node.module.partition(".")[2]
            else: continue
            found |= {c for c in [base] + [f"{base}.{a.name}".lstrip(".") for a in node.names] if c in known}
        elif isinstance(node, ast.Import):
            found |= {a.name.partition(".")[2] for a in node.names if a.name.partition(".")[2] in known}
    return found - {name}


def layers() -> dict[str, int]:
    "DESIGN.md's table: module -> layer number."
    text = (ROOT / "DESIGN.md").read_text(encoding="utf-8")
    return {m: int(n) for m, n in re.findall(r"^\| `([\w.]+)` \| (\d+) [a-z ]+\|$", text, flags=re.M)}


def test_every_module_has_a_layer():
    "No module is missing from DESIGN.md's table, and the table names no module that does not exist."
    table, mods = layers(), modules()
    assert set(mods) - set(table) == set(), f"modules without a layer in DESIGN.md: {sorted(set(mods) - set(table))}"
    assert set(table) - set(mods) == set(), f"DESIGN.md names modules that do not exist: {sorted(set(table) - set(mods))}"


def test_no_import_runs_up():
    "A module imports only modules on its own layer or below."
    table, mods = layers(), modules()
    up = [f"{m} (layer {table[m]}) imports {i} (layer {table[i]})" for m, p in mods.items() for i in sorted(imports(m, p, set(mods)))
          if table.get(i, -1) > table.get(m, 99)]
    assert not up, "imports that run up:\n" + "\n".join(up)


def test_the_check_sees_imports_inside_functions(tmp_path):
    "The parser finds absolute, relative and in-function imports, so an upward one cannot hide."
    src = tmp_path / "qa.py"
    src.write_text("def f():\n    from domaintune_course.cli import main\n    from ..runs import create_run\n    from . import classify\n", encoding="utf-8")
    assert imports("tasks.qa", src, {"cli", "runs", "tasks.classify", "tasks.qa"}) == {"cli", "runs", "tasks.classify"}
