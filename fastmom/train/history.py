"""``History``: the per-epoch records of a training run and its best-validation summary."""
from __future__ import annotations

__all__ = ["History"]


class History(list):
    """Per-epoch records (dicts) plus the best-validation summary.

    Each record holds ``epoch``, ``iteration`` (the last mini-batch's index),
    ``cost`` (mean training NLL over the epoch plus network3's L2 term at its end),
    ``validation_accuracy``, ``test_accuracy`` (None without data), ``eta``,
    ``seconds`` (training time of the epoch), ``elapsed`` (cumulative training
    seconds) and ``images_per_second``.
    """

    SUMMARY = ("best_validation_accuracy", "best_epoch", "best_iteration", "test_accuracy_at_best")
    best_validation_accuracy = None
    best_epoch = None
    best_iteration = None
    test_accuracy_at_best = None

    def column(self, key):
        return [r[key] for r in self]

    def summary(self):
        return {key: getattr(self, key) for key in self.SUMMARY}

    def add(self, record):
        """Append ``record``; it becomes the best when its validation accuracy is at least
        the best so far (network3's ``>=``: a tie moves the best to the later epoch)."""
        acc = record["validation_accuracy"]
        if acc is not None and (self.best_validation_accuracy is None or acc >= self.best_validation_accuracy):
            self.best_validation_accuracy, self.best_epoch = acc, record["epoch"]
            self.best_iteration, self.test_accuracy_at_best = record["iteration"], record["test_accuracy"]
        self.append(record)

    def is_best(self, record):
        """Whether ``record`` (already added) set the best validation accuracy."""
        return self.best_epoch is not None and self.best_epoch == record["epoch"]

    @classmethod
    def restore(cls, records, summary):
        """The inverse of ``(list(history), history.summary())``."""
        history = cls(records)
        for key, value in summary.items():
            if key not in cls.SUMMARY:
                raise KeyError(f"unknown history summary field {key!r}")
            setattr(history, key, value)
        return history
