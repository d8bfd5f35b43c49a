"""Number formatting shared by the verdicts (:mod:`.metrics`), the Markdown report
(:mod:`.report`) and the suite's progress lines."""
from __future__ import annotations

__all__ = ["pct", "fmt_mean_std", "grid_text", "hms"]


def pct(x, nd=1):
    """``0.9`` as ``"90.0%"``; None as ``"n/a"``."""
    return "n/a" if x is None else f"{100 * x:.{nd}f}%"


def fmt_mean_std(d, pct=True, nd=2, one=" (1 seed)"):
    """A ``{"mean", "std"}`` as ``"m ± s"`` (in % when ``pct``); a std of None (one
    seed: no spread measured) as the mean followed by ``one``."""
    if d is None or d.get("mean") is None:
        return "n/a"
    k = 100 if pct else 1
    if d.get("std") is None:
        return f"{k * d['mean']:.{nd}f}{one}"
    return f"{k * d['mean']:.{nd}f} ± {k * d['std']:.{nd}f}"


def grid_text(etas):
    """An eta grid (one list, or ``{optimizer: list}``) as text."""
    if isinstance(etas, dict):
        return "; ".join(f"{k}: {', '.join(f'{e:g}' for e in v)}" for k, v in etas.items())
    return ", ".join(f"{e:g}" for e in etas)


def hms(seconds):
    """Seconds as ``1h02m03s`` or ``2m03s``."""
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
