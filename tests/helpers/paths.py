"""Where the repository's files are, for tests in any folder under ``tests/``."""

from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS_DIR.parent
FIXTURES_DIR = TESTS_DIR / "fixtures"
PACKAGE_DIR = REPO_ROOT / "sr_cli"
