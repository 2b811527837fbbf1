"""Limits shared by the CLI and the library (kept free of heavy imports: `srx --help` reads them)."""

DEFAULT_MAX_PIXELS = 50_000_000  # input pixels (about 7000x7000): larger inputs are refused as likely bombs
