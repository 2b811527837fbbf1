"""`python -m sr_cli.bench` (the same as `srx bench`)."""

from . import main

main()
