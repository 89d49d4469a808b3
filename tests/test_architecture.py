"""The architecture's rules, checked on the source: layers hold, private modules stay private, techniques
neither export nor benchmark, and no two parts of the package import each other."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "modelpress"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Module -> the modelpress modules it imports (top level or inside functions)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    out: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = (package[:len(package) - node.level + 1] if node.level else [])
                target = ".".join(base + ([node.module] if node.module else []))
                found = [f"{target}.{a.name}" for a in node.names] + [target]
            elif isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            else:
                continue
            for t in found:
                while t and t not in modules:  # an imported name resolves to its module
                    t = t.rpartition(".")[0]
                if t.startswith("modelpress") and t != name:
                    out[name].add(t)
    return out


def unit(module: str) -> str:
    """A subpackage (``modelpress.search``) or a root module (``modelpress.pipeline``)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else module


def test_no_package_imports_another_packages_private_modules():
    wrong = []
    for source, targets in imports().items():
        for target in targets:
            parts = target.split(".")
            for k in range(2, len(parts)):
                if parts[k].startswith("_") and not parts[k].startswith("__"):
                    owner = ".".join(parts[:k])
                    if not (source + ".").startswith(owner + "."):
                        wrong.append(f"{source} imports {target}")
                    break
    assert not wrong, "make the shared piece a public module:\n" + "\n".join(sorted(wrong))


def test_techniques_never_export_run_or_benchmark():
    """A technique receives what it must measure with (``Tools``); it does not reach for exporters,
    runtimes or the benchmark itself."""
    banned = ("modelpress.export", "modelpress.runtime", "modelpress.bench", "modelpress.pipeline")
    wrong = [f"{s} imports {t}" for s, targets in imports().items() if s.startswith("modelpress.compress")
             for t in targets if t.startswith(banned)]
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycle_between_parts_of_the_package():
    graph: dict[str, set[str]] = defaultdict(set)
    for source, targets in imports().items():
        for target in targets:
            if unit(source) != unit(target) and unit(target) != "modelpress":
                graph[unit(source)].add(unit(target))

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo += graph.get(node, ())
        return False

    cycles = sorted({" <-> ".join(sorted((a, b))) for a in graph for b in graph[a] if reaches(b, a)})
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_package_root_exports_the_public_api_lazily():
    import subprocess
    import sys

    code = ("import sys, modelpress; heavy = [m for m in ('torch', 'onnxruntime', 'rich') if m in sys.modules]; "
            "print(heavy, sorted(modelpress.__all__), modelpress.__version__, callable(modelpress.run), "
            "callable(modelpress.analyze))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split("]")[0] == "["  # nothing heavy was imported by `import modelpress`
    for name in ("run", "auto", "analyze", "Task", "Batches", "load_recipe", "__version__"):
        assert f"'{name}'" in out
    assert out.strip().endswith("True True")
