"""The command line, run as a real subprocess (``python -m fastmom``)."""
import json

import pytest


def test_train_writes_history_json(fastmom, tmp_path):
    out = tmp_path / "h.json"
    proc = fastmom("train", "--net", "fc", "--epochs", "2", "--eta", "0.5", "--momentum", "0.5",
                   "--json", str(out))
    assert "Epoch 1: validation accuracy" in proc.stdout
    assert "Finished training network." in proc.stdout
    payload = json.loads(out.read_text())
    assert [r["epoch"] for r in payload["history"]] == [0, 1]
    assert payload["summary"]["best_validation_accuracy"] > 0.8
    assert not list(tmp_path.glob("*.tmp*"))


def test_compare_momentum_ahead_after_first_epoch(fastmom, tmp_path):
    """issue 2: eta 0.01 for both, same initial weights: momentum 0.9 leads plain SGD
    in validation accuracy after the first epoch on the bundled sample."""
    out = tmp_path / "c.json"
    proc = fastmom("compare", "--epochs", "1", "--eta", "0.01", "--json", str(out))
    assert "| optimizer |" in proc.stdout
    sgd, mom = json.loads(out.read_text())["results"]
    assert sgd["momentum"] == 0 and mom["momentum"] == 0.9
    assert mom["validation_by_epoch"][0] > sgd["validation_by_epoch"][0] + 0.03, (sgd, mom)


def test_plot(fastmom, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "acc.png"
    fastmom("train", "--net", "fc", "--epochs", "1", "--eta", "0.5", "--plot", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args,message", [
    (["train", "--device", "tpu"], "unknown device 'tpu'"),
    (["train", "--dataset", "/nonexistent/dir"], "nonexistent"),
    (["train", "--eta", "-1"], "must be a finite number > 0"),
    (["train", "--momentum", "1.2"], "must be in [0, 1)"),
])
def test_bad_arguments_fail_clearly(fastmom, args, message):
    proc = fastmom(*args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_version(fastmom):
    from fastmom._version import __version__
    assert fastmom("--version").stdout.strip() == f"fastmom {__version__}"


@pytest.mark.parametrize("command", ["train", "compare", "evaluate", "summary", "bench-convergence"])
def test_help_shows_defaults_and_no_rest_markup(fastmom, command):
    text = fastmom(command, "--help").stdout
    assert "`" not in text
    if command in ("train", "compare"):
        assert "(default: 0.01)" in text and "(default: sample)" in text


def test_bench_convergence_help_lists_each_problem_number_once(fastmom):
    import re
    epilog = fastmom("bench-convergence", "--help").stdout.split("problems:")[1]
    numbers = re.findall(r"(?:^|; )(\d): ", " ".join(epilog.split()))
    assert numbers == ["1", "2", "3", "4"]


def test_pool_ties_all_reaches_the_conv_layers(fastmom, tmp_path):
    """--pool-ties all (network3's Theano rule) is passed to every ConvPoolLayer."""
    out = tmp_path / "h.json"
    fastmom("train", "--epochs", "1", "--pool-ties", "all", "--json", str(out), "--save", str(tmp_path / "m.npz"))
    assert json.loads(out.read_text())["config"]["pool_ties"] == "all"
    from fastmom import ConvPoolLayer, Network
    net = Network.load(tmp_path / "m.npz", device="reference")
    ties = [layer.pool_ties for layer in net.layers if isinstance(layer, ConvPoolLayer)]
    assert ties == ["all", "all"]
