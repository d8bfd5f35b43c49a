"""Every command line the CLI refuses: exit status 2, one line on stderr naming the flag
as typed, no traceback, and (for the costly mistakes) before any training. Each case is
a row of the command-line section of ``docs/bad-inputs.md``; regenerate it with

    python tests/cli/test_bad_arguments.py
"""
import json
import pathlib
import sys

import pytest

from runner import run_fastmom

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "bad-inputs.md"

# (command line, what stderr must contain); {tmp} is a fresh directory, {train_json} a
# `fastmom train --json` file in it
CASES = [
    ("train --eta abc", "--eta must be a number, got 'abc'"),
    ("train --eta -1", "--eta must be a finite number > 0"),
    ("train --momentum 1.2", "--momentum must be in [0, 1)"),
    ("train --seed -1", "--seed must be an int >= 0, got -1"),
    ("train --lmbda -1", "--lmbda must be a finite number >= 0"),
    ("train --threads 0", "--threads must be a positive int"),
    ("train --epochs 2.5", "--epochs must be an integer"),
    ("compare --target 94", "--target must be a fraction in (0, 1], got 94.0 (for 94% give --target 0.94)"),
    ("compare --target 0", "--target must be a finite number > 0"),
    ("train --device tpu", "unknown device 'tpu'"),
    ("train --json /nonexistent/dir/a.json", "--json /nonexistent/dir/a.json: the directory /nonexistent/dir "
                                             "does not exist"),
    ("train --plot {tmp}/missing/p.png", "the directory {tmp}/missing does not exist"),
    ("train --plot {tmp}/p.txt", "--plot {tmp}/p.txt: matplotlib cannot write .txt"),
    ("train --save {tmp}/missing/m.npz", "--save {tmp}/missing/m.npz: the directory {tmp}/missing does not exist"),
    ("train --batch-size 501", "--batch-size 501 is larger than the validation set of --dataset sample "
                               "(500 images)"),
    ("train --dataset {tmp}/mnist.pkl.gz", "file not found (give --dataset sample for the bundled 5,000 digits "
                                           "or --dataset mnist to download MNIST)"),
    ("train --dataset {tmp}/nonexistent/", "--dataset {tmp}/nonexistent/: the directory does not exist"),
    ("train --dataset minst", "--dataset minst: unknown data set"),
    ("train --resume", "--resume needs --checkpoint-dir"),
    ("train --net fc --pool-ties all", "has no max-pooling"),
    ("evaluate {tmp}/missing.npz", "{tmp}/missing.npz: file not found"),
    ("bench-convergence --report {tmp}/missing.json", "--report {tmp}/missing.json: file not found"),
    ("bench-convergence --report {train_json}", "not a convergence suite result (no runs)"),
]


def _fill(text, tmp):
    return text.format(tmp=tmp, train_json=f"{tmp}/train.json")


@pytest.mark.parametrize("command,message", CASES, ids=[c for c, _ in CASES])
def test_refused_in_one_line(tmp_path, command, message):
    (tmp_path / "train.json").write_text(json.dumps({"config": {"command": "train"}, "history": []}))
    proc = run_fastmom(*_fill(command, tmp_path).split(), check=False)
    assert proc.returncode == 2, proc.stderr
    assert _fill(message, tmp_path) in proc.stderr
    assert "Training mini-batch" not in proc.stdout  # refused before any training


def test_without_matplotlib_plot_is_refused_up_front(tmp_path):
    shim = tmp_path / "shim" / "matplotlib"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    proc = run_fastmom("train", "--plot", tmp_path / "p.png", check=False, env={"PYTHONPATH": str(shim.parent)})
    assert proc.returncode == 2 and "--plot needs matplotlib" in proc.stderr


def _row(command, message):
    def shown(text):  # the placeholders as a reader would type them
        return text.format(tmp="DIR", train_json="train.json")
    return f"| `fastmom {shown(command)}` | `{shown(message)}` |"


def markdown():
    lines = ["| command line | message on stderr (exit status 2) |", "|---|---|"]
    return "\n".join(lines + [_row(c, m) for c, m in CASES])


def test_doc_lists_every_cli_case():
    doc = DOC.read_text(encoding="utf-8")
    missing = [c for c, m in CASES if _row(c, m) not in doc]
    assert not missing, f"docs/bad-inputs.md is out of date (python tests/cli/test_bad_arguments.py): {missing}"


if __name__ == "__main__":
    sys.stdout.write(markdown() + "\n")
