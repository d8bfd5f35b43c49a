"""``fastmom train`` keeps its work (issue 15): ``--save``, ``--checkpoint-dir`` with
``--resume``, Ctrl-C, ``--json -``, ``--expand``; and what ``evaluate``/``summary`` show
of a saved model."""
import json
import os
import signal
import subprocess
import sys

import numpy as np

from runner import run_fastmom

FC = ("--net", "fc", "--eta", "0.5")
TIMING = ("seconds", "elapsed", "images_per_second")


def _history(path):
    """A JSON history without its timings (which differ run to run)."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in json.loads(path.read_text())["history"]]


def _params(path):
    from fastmom import Network
    return Network.load(path).backend.to_numpy(Network.load(path).flat.data)


def _uninterrupted(tmp_path, epochs=2):
    ref = tmp_path / "ref"
    ref.mkdir()
    run_fastmom("train", *FC, "--epochs", epochs, "--save", ref / "m.npz", "--json", ref / "h.json", "--quiet")
    return ref / "m.npz", ref / "h.json"


def test_save_is_read_by_network_load_and_evaluate(tmp_path):
    model = tmp_path / "m.npz"
    run_fastmom("train", *FC, "--epochs", 1, "--save", model, "--quiet")
    from fastmom import Network
    from fastmom.data import load_sample
    net = Network.load(model)
    _, _, (x, y) = load_sample()
    accuracy = net.accuracy(x, y)
    out = tmp_path / "e.json"
    proc = run_fastmom("evaluate", model, "--json", out)
    result = json.loads(out.read_text())
    assert result["accuracy"] == accuracy
    assert np.asarray(result["confusion"]).sum() == 500 and len(result["per_class_accuracy"]) == 10
    assert "confusion matrix" in proc.stdout and f"accuracy {accuracy:.2%}" in proc.stdout


def test_evaluate_plots_the_confusion_matrix(tmp_path):
    model = tmp_path / "m.npz"
    run_fastmom("train", *FC, "--epochs", 1, "--save", model, "--quiet")
    run_fastmom("evaluate", model, "--split", "validation", "--plot", tmp_path / "cm.png")
    assert (tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_continues_bit_identically(tmp_path):
    model, history = _uninterrupted(tmp_path)
    ck = tmp_path / "ck"
    run_fastmom("train", *FC, "--epochs", 1, "--checkpoint-dir", ck, "--quiet")
    proc = run_fastmom("train", *FC, "--epochs", 2, "--checkpoint-dir", ck, "--resume", "--save", tmp_path / "m.npz",
                       "--json", tmp_path / "h.json")
    assert "resuming from" in proc.stderr
    assert _history(tmp_path / "h.json") == _history(history)
    assert np.array_equal(_params(tmp_path / "m.npz"), _params(model))


def test_old_checkpoints_need_resume(tmp_path):
    ck = tmp_path / "ck"
    run_fastmom("train", *FC, "--epochs", 1, "--checkpoint-dir", ck, "--quiet")
    proc = run_fastmom("train", *FC, "--epochs", 1, "--checkpoint-dir", ck, check=False)
    assert proc.returncode == 2 and "add --resume" in proc.stderr


def _interrupt_after_first_epoch(*args):
    """Start ``fastmom train ARGS``, send SIGINT once its first epoch line is on
    stderr; return ``(exit status, stderr)``."""
    env = dict(os.environ, FASTMOM_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "fastmom", "train", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    err = []
    for line in proc.stderr:
        err.append(line)
        if line.startswith("epoch 0:"):
            proc.send_signal(signal.SIGINT)
            break
    _, rest = proc.communicate(timeout=120)
    return proc.returncode, "".join(err) + rest


def test_ctrl_c_writes_checkpoint_json_and_model_then_resumes_bit_identically(tmp_path):
    model, history = _uninterrupted(tmp_path)
    ck, out = tmp_path / "ck", tmp_path / "out"
    out.mkdir()
    status, err = _interrupt_after_first_epoch(*FC, "--epochs", 200, "--checkpoint-dir", ck,
                                               "--save", out / "m.npz", "--json", out / "h.json")
    assert status == 130, err
    assert "Traceback" not in err
    [line] = [x for x in err.splitlines() if x.startswith("fastmom: interrupted")]
    assert "checkpoint" in line and "m.npz" in line and "h.json" in line
    assert json.loads((out / "h.json").read_text())["interrupted"] is True
    from fastmom import Network
    Network.load(out / "m.npz")
    run_fastmom("train", *FC, "--epochs", 2, "--checkpoint-dir", ck, "--resume", "--save", tmp_path / "m.npz",
                "--json", tmp_path / "h.json", "--quiet")
    assert _history(tmp_path / "h.json") == _history(history)
    assert np.array_equal(_params(tmp_path / "m.npz"), _params(model))


def test_ctrl_c_without_checkpoints_saves_json_and_model(tmp_path):
    status, err = _interrupt_after_first_epoch(*FC, "--epochs", 200, "--save", tmp_path / "m.npz",
                                               "--json", tmp_path / "h.json")
    assert status == 130 and "Traceback" not in err, err
    assert "fastmom: interrupted" in err
    assert len(json.loads((tmp_path / "h.json").read_text())["history"]) >= 1
    assert (tmp_path / "m.npz").exists()


def test_json_to_stdout_is_only_json():
    proc = run_fastmom("train", *FC, "--epochs", 1, "--json", "-")
    payload = json.loads(proc.stdout)
    assert len(payload["history"]) == 1
    assert "Epoch 0: validation accuracy" in proc.stderr


def test_epoch_lines_appear_as_epochs_end():
    proc = run_fastmom("train", *FC, "--epochs", 2)
    lines = [x for x in proc.stderr.splitlines() if x.startswith("epoch ")]
    assert len(lines) == 2 and "cost" in lines[0] and "validation accuracy" in lines[0]
    assert not [x for x in run_fastmom("train", *FC, "--epochs", 1, "--quiet").stderr.splitlines()
                if x.startswith("epoch ")]


def test_expand_trains_on_five_times_the_images(tmp_path):
    out = tmp_path / "h.json"
    proc = run_fastmom("train", *FC, "--epochs", 1, "--expand", "--json", out)
    assert "(20000/500/500 images)" in proc.stdout
    assert json.loads(out.read_text())["config"]["expand"] is True


def test_threads_are_capped_at_the_usable_cores():
    proc = run_fastmom("train", *FC, "--epochs", 1, "--threads", 1000, "--quiet")
    cores = len(os.sched_getaffinity(0))
    assert f"--threads 1000 is more than the {cores} usable cores: using {cores}" in proc.stderr


def test_plot_draws_cost_and_numbers_epochs_as_printed(tmp_path):
    svg = tmp_path / "p.svg"
    run_fastmom("train", *FC, "--epochs", 1, "--plot", svg, "--quiet")
    text = svg.read_text()
    assert "training cost" in text
    assert "<!-- 1 -->" not in text.split("training cost")[0]  # the one epoch is epoch 0, not 1


def test_summary_describes_the_network(tmp_path):
    out = tmp_path / "s.json"
    proc = run_fastmom("summary", "--net", "conv", "--json", out)
    summary = json.loads(out.read_text())
    assert summary["params"] == 20 * 26 + 40 * 20 * 25 + 40 + 640 * 100 + 100 + 1010
    assert "FLOPs" in proc.stdout and "ConvPoolLayer" in proc.stdout


def test_divergence_is_one_line():
    proc = run_fastmom("train", "--eta", 1000, "--epochs", 1, check=False)
    assert proc.returncode == 2
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("fastmom: error:")]
    assert "diverged" in line


def test_collapse_warns_in_one_line_and_strict_stops():
    """eta 1.0 with momentum 0.9: no NaN, but accuracy sits at chance."""
    proc = run_fastmom("train", "--eta", 1.0, "--epochs", 2, "--quiet")
    [line] = [x for x in proc.stderr.splitlines() if "collapsed" in x]
    assert line.startswith("fastmom: warning: training collapsed")
    proc = run_fastmom("train", "--eta", 1.0, "--epochs", 2, "--quiet", "--strict", check=False)
    assert proc.returncode == 2 and "fastmom: error: training collapsed" in proc.stderr
