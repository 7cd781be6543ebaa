"""The house's layering: DESIGN.md's table puts every module on one layer, and no import (inside a function or not) runs
from a lower layer to a higher one."""
import ast, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "domaintune_course"


def modules() -> dict[str, Path]:
    "The package's modules by dotted name (`tasks.qa`), nbdev's index left out."
    return {p.relative_to(PKG).with_suffix("").as_posix().replace("/", "."): p for p in PKG.rglob("*.py") if p.name != "_modidx.py"}


def package_base(node: ast.ImportFrom, name: str) -> str | None:
    "The package module (dotted, `` for the package) a `from ... import` in module `name` reads from; None outside the package."
    package = name.split(".")[:-1]
    if node.level: return ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
    if node.module and node.module.split(".")[0] == "domaintune_course": return node.module.partition(".")[2]
    return None


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    "The package modules `name` imports anywhere in its source, absolute or relative."
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if (base := package_base(node, name)) is None: continue
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


def test_no_import_circle():
    "No module reaches itself through the modules it imports (inside functions included): the import graph has no cycle."
    mods = modules()
    graph = {m: sorted(imports(m, p, set(mods))) for m, p in mods.items()}
    state, circles = {}, []
    def visit(m: str, path: list[str]):
        state[m] = "open"
        for i in graph[m]:
            if state.get(i) == "open": circles.append(" -> ".join(path[path.index(i):] + [i]))
            elif i not in state: visit(i, path + [i])
        state[m] = "done"
    for m in sorted(graph):
        if m not in state: visit(m, [m])
    assert not circles, "import circles:\n" + "\n".join(circles)


def private_uses(path: Path, name: str, known: set[str]) -> list[str]:
    "Private names (`_x`, not dunders) of another package module that `path` imports or reads, and `_x` names in its `__all__`."
    tree, aliases, out = ast.parse(path.read_text(encoding="utf-8")), {}, []
    private = lambda n: n.startswith("_") and not n.startswith("__")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if (base := package_base(node, name)) is None: continue
            for a in node.names:
                full = f"{base}.{a.name}".lstrip(".")
                if full in known: aliases[a.asname or a.name] = full
                elif private(a.name) and base != name: out.append(f"{base}.{a.name}")
        elif isinstance(node, ast.Import):
            aliases |= {a.asname or a.name: a.name.partition(".")[2] for a in node.names if a.name.partition(".")[2] in known}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and aliases.get(node.value.id, name) != name and private(node.attr):
            out.append(f"{aliases[node.value.id]}.{node.attr}")
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            out += [f"__all__ holds {e.value}" for e in getattr(node.value, "elts", []) if isinstance(e, ast.Constant) and private(str(e.value))]
    return out


def test_no_private_names_across_modules():
    "A name another module (or a benchmark) needs is public: no module or bench script uses another module's `_name`."
    mods = modules()
    files = list(mods.items()) + [(f"bench/{p.name}", p) for p in sorted((ROOT / "bench").glob("*.py"))]
    found = [f"{n}: {u}" for n, p in files for u in private_uses(p, n if n in mods else "", set(mods))]
    assert not found, "private names used across modules:\n" + "\n".join(found)


def test_the_private_name_check_sees_each_form(tmp_path):
    "Imported, read as an attribute, or listed in `__all__`: each form of a private name is found."
    src = tmp_path / "server.py"
    src.write_text("from .qlora import _stop_ids\nfrom . import jobs\n__all__ = ['_x']\ndef f():\n    from domaintune_course.tasks import qa\n    return qa._answer_budget, jobs._alive\n", encoding="utf-8")
    assert sorted(private_uses(src, "server", {"qlora", "jobs", "tasks.qa", "server"})) == ["__all__ holds _x", "jobs._alive", "qlora._stop_ids", "tasks.qa._answer_budget"]
