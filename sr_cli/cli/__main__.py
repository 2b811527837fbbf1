"""`python -m sr_cli.cli` (used by `accelerate launch -m sr_cli.cli train ...`)."""

from . import main

main()
