"""No import cycle among cxr_studio's modules (read from the source with ast), neither among the
module-level imports nor counting the imports inside functions too: those are how a cycle used to be
hidden (a lazy import that exists only to break a loop), so they are checked as well. Imports kept
inside functions are there for start-up time (torch, pydicom, skimage load on first use). The test
also proves it can find a cycle."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "cxr_studio"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(tree: ast.Module) -> list[ast.stmt]:
    out: list[ast.stmt] = []
    for node in tree.body:
        block = [node]
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks do not run
            test = ast.unparse(node.test)
            block = [] if "TYPE_CHECKING" in test else node.body + node.orelse
        elif isinstance(node, ast.Try):
            block = node.body + [s for h in node.handlers for s in h.body]
        out.extend(n for n in block if isinstance(n, (ast.Import, ast.ImportFrom)))
    return out


def import_graph(root: Path, inside_functions: bool = False) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        deps: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))] if inside_functions \
            else _top_level_imports(tree)
        for node in nodes:
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = package[: len(package) - (node.level - 1)] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                targets = [target] + [f"{target}.{a.name}" for a in node.names]
            deps.update(t for t in targets if t in files and t != mod)
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_the_checker_finds_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("from . import c\nx = 1\n")
    (pkg / "c.py").write_text("import pkg.a\ndef f():\n    from . import b\n")
    (pkg / "d.py").write_text("def g():\n    from . import a\n")  # inside a function: not counted
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.b", "pkg.c"]]
    (pkg / "e.py").write_text("from . import f\n")
    (pkg / "f.py").write_text("def h():\n    from . import e  # a lazy import hiding a cycle\n")
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert sorted(cycles(import_graph(pkg, inside_functions=True))) == [["pkg.a", "pkg.b", "pkg.c"], ["pkg.e", "pkg.f"]]


def test_cxr_studio_has_no_import_cycle() -> None:
    assert cycles(import_graph(PKG)) == []


def test_no_cycle_hides_behind_an_import_inside_a_function() -> None:
    assert cycles(import_graph(PKG, inside_functions=True)) == []


def part_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph seen at the level of core's parts: ``cxr_studio.core.<part>.*`` is one node."""
    parts = {p.name for p in (PKG / "core").iterdir() if (p / "__init__.py").is_file()}

    def part(mod: str) -> str:
        bits = mod.split(".")
        return ".".join(bits[:3]) if len(bits) > 2 and bits[1] == "core" and bits[2] in parts else mod

    out: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        out.setdefault(part(mod), set()).update(part(d) for d in deps)
    for node, deps in out.items():
        deps.discard(node)
        deps &= set(out)
    return out


def test_cores_parts_depend_one_way() -> None:
    """Data flows one way through core's parts (ARCHITECTURE.md): no two parts import each other, even
    through others or inside functions (imaging never imports lungs; the pipeline composes both)."""
    graph = part_graph(import_graph(PKG, inside_functions=True))
    assert "cxr_studio.core.imaging" in graph["cxr_studio.core.lungs"]  # the checker sees the parts' imports
    assert cycles(graph) == []
    assert cycles(part_graph({"cxr_studio.core.imaging.a": {"cxr_studio.core.lungs.b"},
                              "cxr_studio.core.lungs.b": {"cxr_studio.core.imaging.c"},
                              "cxr_studio.core.imaging.c": set()})) == [["cxr_studio.core.imaging",
                                                                         "cxr_studio.core.lungs"]]


def test_documented_entry_points_stay_importable() -> None:
    """Scripts outside the package use these names (DESIGN.md); the parts moved into sub-packages."""
    import importlib

    from cxr_studio.core.imaging.io import read_image
    from cxr_studio.core.inspect.views import compute_forward, compute_heatmap

    assert importlib.import_module("cxr_studio.core.io").read_image is read_image
    assert importlib.import_module("cxr_studio.core.lungs").segment_lungs
    assert importlib.import_module("cxr_studio.core.checkpoint").load_checkpoint
    assert importlib.import_module("cxr_studio.core.pipeline").preprocess
    views = importlib.import_module("cxr_studio.core.views")
    assert views.compute_forward is compute_forward and views.compute_heatmap is compute_heatmap


def test_core_is_parts_not_a_flat_room() -> None:
    top = sorted(p.stem for p in (PKG / "core").glob("*.py"))
    assert top == ["__init__", "atomic", "cancel", "checkpoint", "hashing", "io", "pipeline", "resources", "versions", "views"]
    parts = sorted(p.name for p in (PKG / "core").iterdir() if (p / "__init__.py").is_file())
    assert parts == ["imaging", "inspect", "lungs", "models", "phantoms", "render", "runtime"]
