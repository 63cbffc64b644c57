"""The package's shape: imports run one way, from the base to the command line."""

from __future__ import annotations

import ast
from pathlib import Path

import flowspeech

PACKAGE = Path(flowspeech.__file__).parent

# Lower layers never import higher ones (docs/architecture.md, "Design rules"); modules of
# one layer may import each other, except training and inference, which are peers.
LAYERS = {
    "errors": 0, "utils": 0, "config": 0, "audio": 0, "text": 0, "flows": 0, "align": 0,
    "checkpoints": 0, "data": 0,
    "models": 1,
    "voices": 2,
    "training": 3, "inference": 3, "runtime": 3,
    "evaluation": 4,
    "server": 5,
    "cli": 6, "__init__": 6, "__main__": 6,
}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno


def test_imports_run_one_way_from_the_base_to_the_command_line():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        assert part in LAYERS, f"{path}: give {part!r} a layer in this test"
        for module, line in _imports(path):
            names = module.split(".")
            if names[0] != "flowspeech" or len(names) < 2 or names[1] not in LAYERS:
                continue
            target = names[1]
            if LAYERS[target] > LAYERS[part] or ({part, target} == {"training", "inference"}):
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    assert not upward, "\n".join(upward)


def test_imports_are_at_module_top_unless_a_comment_says_why_not():
    """Dependencies show at the top of each module. The exceptions (a slow import on the
    start-up path, an optional program) say so in a ``# lazy: ...`` comment; ``cli/`` and the
    package ``__init__`` defer imports as a rule, for start-up time."""
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "cli" or relative == Path("__init__.py"):
            continue
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)) and "# lazy:" not in lines[inner.lineno - 1]:
                        unexplained.append(f"{relative}:{inner.lineno}: {lines[inner.lineno - 1].strip()}")
    assert not unexplained, "\n".join(unexplained)
