"""Run the convergence benchmark suite from a source checkout.

Same as ``fastmom bench-convergence ...`` or ``python -m fastmom.convergence ...``;
see README.md next to this file for the protocol and the commands.
"""
import sys
from pathlib import Path

# a checkout need not be installed: put the repository root first on the path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fastmom.convergence import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
