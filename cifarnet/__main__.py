"""``python -m cifarnet ...``: see :mod:`cifarnet.cli.app`."""
from .cli.app import main

main()
