"""``python -m sr_cli.bench``: the same as ``srx bench``."""

from ..cli.bench import main

main()
