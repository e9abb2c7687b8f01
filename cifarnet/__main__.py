"""``python -m cifarnet ...``: see :mod:`cifarnet.cli.app`."""
import sys

try:
    from .cli.app import main
except KeyboardInterrupt:              # Ctrl-C while the libraries load: no traceback
    print("cifarnet: interrupted (SIGINT)", file=sys.stderr)
    sys.exit(130)

main()
