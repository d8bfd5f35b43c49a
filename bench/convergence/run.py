"""Run the convergence benchmark suite (fastmom must be installed, e.g. ``pip install -e .``).

Same as ``fastmom bench-convergence ...`` or ``python -m fastmom.convergence ...``;
see README.md next to this file for the protocol and the commands.
"""
import sys

from fastmom.convergence import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
