"""Where the repository's files are, for tests in any folder under ``tests/``."""

from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS_DIR.parent
FIXTURES_DIR = TESTS_DIR / "fixtures"
PACKAGE_DIR = REPO_ROOT / "sr_cli"


def fixture_script(name: str):
    """A script of ``tests/fixtures/authors_parity`` (which records the authors' outputs) loaded as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, FIXTURES_DIR / "authors_parity" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
