"""The package's layers import downward only, and no modules import each other in a circle."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cifarnet"

# Lowest first; a module may import modules of its own rank or below (docs/architecture.md).
RANKS = [
    {"backend", "counting", "registry", "files", "comm", "blas", "threads", "memory", "pretrained", "errors"},
    {"arrays", "kernels"},
    {"functional"},
    {"store", "checkpoint"},
    {"layers", "optim", "losses"},
    {"models", "schedules", "data"},
    {"parallel", "inference"},
    {"training", "tracking", "export", "predict", "run_dir", "sweeps", "plot"},
    {"experiment"},
    {"distributed"},
    {"cli", "bench"},
    {"__main__", "__init__"},
]
RANK = {name: i for i, names in enumerate(RANKS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The cifarnet modules ``path`` imports, wherever in the file (inside functions too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
            if target.split(".")[0] != "cifarnet":
                continue
            for alias in node.names:                  # `from . import checkpoint` names a module
                candidate = f"{target}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").is_file() or \
                    (PACKAGE.parent / Path(*candidate.split("."))).is_dir()
                found.add(candidate if is_module else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "cifarnet"}
    return found - {name}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_part_of_the_package_has_a_rank():
    assert {top(m) for m in graph()} <= set(RANK)


def test_no_module_imports_one_above_its_layer():
    upward = sorted(f"{m} -> {t}" for m, targets in graph().items() for t in targets
                    if top(t) != "__init__" and RANK[top(t)] > RANK[top(m)])
    assert upward == []


def test_no_import_circles_between_modules():
    edges = graph()
    cycles = []

    def visit(node, path, on_path, done):
        for nxt in sorted(edges.get(node, ())):
            if nxt in on_path:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in done and nxt in edges:
                on_path.add(nxt)
                visit(nxt, path + [nxt], on_path, done)
                on_path.discard(nxt)
        done.add(node)

    done: set[str] = set()
    for start in sorted(edges):
        if start not in done:
            visit(start, [start], {start}, done)
    assert cycles == []
