"""What every data module shares: the error type, the split type, the label check."""
from __future__ import annotations

import os
from typing import Tuple, Union

import numpy as np

Split = Tuple[np.ndarray, np.ndarray]
PathLike = Union[str, "os.PathLike[str]"]

_GZIP_MAGIC = b"\x1f\x8b"


class DataError(ValueError):
    """A data file is missing, corrupt, or does not hold what it should.

    The message always names the file (or URL) and the problem.
    """


def _check_labels(labels: np.ndarray, source: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        bad = labels[(labels < 0) | (labels > 9)][0]
        raise DataError(f"{source}: label out of range 0..9 (found {bad})")
