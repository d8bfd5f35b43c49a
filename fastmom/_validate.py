"""Validators for the public API's scalar arguments: the one place they are written.

Each takes the argument's ``name`` (as the caller spelled it: ``mini_batch_size``,
``--eta``) and the value, returns the value in its canonical type, and raises
``TypeError`` for a value of the wrong kind or ``ValueError`` for one out of range,
with a message naming the argument. The command line wraps them for ``argparse``
(:func:`arg_type`), so the CLI and the Python API refuse the same values with the same
words. Array arguments of the kernels are checked in :mod:`fastmom.backends._checks`.
"""
from __future__ import annotations

import math
import numbers

__all__ = ["positive_int", "non_negative_int", "positive_float", "non_negative_float",
           "unit_interval", "fraction_of_one", "int_tuple", "choice", "arg_type"]


def _is_bool(value):
    return isinstance(value, bool) or type(value).__name__ == "bool_"


def _integer(name, value, what):
    """``value`` as an int when it is an integral number (``3``, ``3.0``, ``np.int64(3)``)."""
    if _is_bool(value):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    try:
        v = int(value)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"{name} must be {what}, got {value!r}") from None
    try:
        exact = v == value
    except (TypeError, ValueError):
        exact = False
    if not exact:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return v


def positive_int(name, value):
    """An int >= 1 (``10.5`` and ``True`` are refused)."""
    v = _integer(name, value, "a positive int")
    if v < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return v


def non_negative_int(name, value):
    """An int >= 0."""
    v = _integer(name, value, "an int >= 0")
    if v < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return v


def _real(name, value, what):
    if _is_bool(value) or not isinstance(value, (numbers.Real, str)) and not hasattr(value, "__float__"):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {what}, got {value!r}") from None


def positive_float(name, value):
    """A finite float > 0."""
    v = _real(name, value, "a finite number > 0")
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def non_negative_float(name, value):
    """A finite float >= 0."""
    v = _real(name, value, "a finite number >= 0")
    if not (v >= 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def unit_interval(name, value):
    """A float in [0, 1)."""
    v = _real(name, value, "a number in [0, 1)")
    if not 0 <= v < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return v


def fraction_of_one(name, value):
    """A fraction in (0, 1] (an accuracy target). A percentage such as 94 is refused with
    the fraction it probably meant, rather than read silently."""
    v = positive_float(name, value)
    if v > 1:
        raise ValueError(f"{name} must be a fraction in (0, 1], got {value!r} (for {v:g}% give "
                         f"{name} {v / 100:g})")
    return v


def int_tuple(name, value, length):
    """A tuple of ``length`` positive ints."""
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be a tuple of {length} ints, got {value!r}") from None
    if len(items) != length:
        raise ValueError(f"{name} must be a tuple of {length} ints, got {value!r}")
    out = []
    for v in items:
        try:
            out.append(_integer(name, v, f"a tuple of {length} ints"))
        except TypeError:
            raise ValueError(f"{name} must be a tuple of {length} ints, got {value!r}") from None
    if any(v < 1 for v in out):
        raise ValueError(f"{name} must hold positive sizes, got {value!r}")
    return tuple(out)


def choice(name, value, options):
    """``value`` if it is one of ``options``."""
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(str, options))}; got {value!r}")
    return value


def arg_type(validator, flag, convert=float):
    """An ``argparse`` ``type=`` from a validator: the text is converted with ``convert``
    and checked, and a refusal names ``flag`` (``--eta must be ...``)."""
    import argparse

    def parse(text):
        try:
            value = convert(text)
        except (TypeError, ValueError):
            kind = "an integer" if convert is int else "a number"
            raise argparse.ArgumentTypeError(f"{flag} must be {kind}, got {text!r}") from None
        try:
            return validator(flag, value)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = flag.lstrip("-").replace("-", "_")
    return parse
