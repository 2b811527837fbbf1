"""Test helpers shared by the test modules: tiny seeded models of the real architectures in the real published
formats (``tiny``, ``dape_tiny``), independent re-implementations of the authors' inference (``reference``) and
file-system helpers (``files``). Importable as ``helpers.*`` because pytest puts ``tests/`` on the path
(``pythonpath`` in pyproject.toml)."""
