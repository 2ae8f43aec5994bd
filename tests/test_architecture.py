"""The house rules of docs/architecture.md, checked on the code: imports run one way (import-linter's contracts),
no function over about 60 lines outside true algorithms, one name one home (a module's ``__all__`` lists only what
it defines; re-exports live in package ``__init__`` files), and no citation of a document outside the repository."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 60
ALGORITHMS = {("hwr/ctc.py", "ctc_loss")}  # a recursion read best in one piece


def _python(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def test_imports_run_one_way():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(lint).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    done = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]


def test_no_long_functions():
    long = []
    for path in _python("hwr", "benchmarks", "studies"):
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (rel, node.name) not in ALGORITHMS:
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{rel}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def _exports(tree: ast.Module) -> tuple[list[str], set[str], set[str]]:
    defined, imported, exported = set(), set(), []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
            defined.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            defined |= names
            if "__all__" in names:
                exported = [e.value for e in node.value.elts]
        elif isinstance(node, ast.Import | ast.ImportFrom):
            imported |= {a.asname or a.name.split(".")[0] for a in node.names}
    return exported, defined, imported


def test_one_name_one_home():
    """A module (not a package ``__init__``) exports only names it defines."""
    reexports = []
    for path in _python("hwr"):
        if path.name == "__init__.py":
            continue
        exported, defined, imported = _exports(ast.parse(path.read_text()))
        reexports += [f"{path.relative_to(ROOT)}: {n}" for n in exported if n in imported and n not in defined]
    assert reexports == []


def test_the_code_cites_only_the_repository():
    cites = [
        str(p.relative_to(ROOT))
        for p in [*_python("hwr", "benchmarks", "studies", "tests"), ROOT / "README.md"]
        if "DESIGN" + ".md" in p.read_text()
    ]
    assert cites == [] and (ROOT / "docs" / "architecture.md").is_file()


def test_commands_import_matplotlib_only_to_draw():
    """Every command module loads without matplotlib (a second of each ``hwr`` start): figures import it when the
    first one is drawn (``hwr.report.figures.new_figure``), and drawing still works."""
    code = (
        "import sys\n"
        "import hwr.cli, hwr.cli.digits, hwr.cli.strings, hwr.cli.study, hwr.cli.data, hwr.cli.calibrate\n"
        "assert 'matplotlib' not in sys.modules, sorted(m for m in sys.modules if m.startswith('matplotlib'))[:5]\n"
        "from hwr.report import figures\n"
        "fig = figures.new_figure(figsize=(1, 1))\n"
        "assert type(fig).__name__ == 'Figure' and 'matplotlib.figure' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
