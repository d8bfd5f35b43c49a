"""Tests for the convergence benchmark suite (fastmom.convergence).

Everything here runs on the reference backend in a few seconds: the suite's
--quick mode end to end, and the protocol's pure functions on hand-made run
records.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from fastmom import convergence as cv
from fastmom.convergence import suite
from fastmom.convergence._text import fmt_mean_std
from fastmom.convergence.report import _sessions_text


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """The reference backend's small matrix products gain nothing from BLAS threads,
    and on a shared, loaded machine spinning BLAS threads slow them down many times."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1):
        yield


def _run(optimizer, eta, seed, val, test=None, diverged=False, budget=None, elapsed=1.0):
    """A hand-made run record with the given per-epoch accuracies."""
    test = test if test is not None else val
    history = [{"epoch": i, "cost": 1.0, "validation_accuracy": v, "test_accuracy": t, "eta": eta,
                "seconds": elapsed, "elapsed": elapsed * (i + 1), "wall": 1.5 * elapsed * (i + 1)}
               for i, (v, t) in enumerate(zip(val, test))]
    return {"problem": "planted", "batch_size": 10, "optimizer": optimizer, "eta": eta,
            "seed": seed, "epochs_budget": budget or len(val), "diverged": diverged,
            "init_fingerprint": f"seed{seed}", "history": history}


# -- epochs to target ------------------------------------------------------------------


def test_epochs_to_target_on_a_synthetic_history():
    r = _run("sgd", 0.1, 0, [0.50, 0.94, 0.95, 0.93, 0.97], elapsed=2.0)
    h = r["history"]
    assert cv.epochs_to_target(h, 0.95) == 3  # reached exactly at the third epoch
    assert cv.epochs_to_target(h, 0.949) == 3
    assert cv.epochs_to_target(h, 0.5) == 1
    assert cv.epochs_to_target(h, 0.96) == 5
    assert cv.epochs_to_target(h, 0.98) is None
    assert cv.epochs_to_target([], 0.5) is None
    assert cv.seconds_to_target(h, 0.95) == pytest.approx(6.0)  # cumulative training seconds
    assert cv.seconds_to_target(h, 0.95, clock="wall") == pytest.approx(9.0)
    assert cv.seconds_to_target(h, 0.98) is None
    # a missing measurement is skipped, not counted as reaching the target
    h2 = [{"validation_accuracy": None}, {"validation_accuracy": 0.99}]
    assert cv.epochs_to_target(h2, 0.9) == 2


# -- eta selection: validation, never test ---------------------------------------------


def _planted():
    """eta 0.01 is best on validation, eta 0.1 is best on test (by far)."""
    runs = []
    for seed in (0, 1, 2):
        runs.append(_run("momentum-0.9", 0.01, seed, [0.90, 0.93 + 0.01 * seed],
                         test=[0.60, 0.61]))
        runs.append(_run("momentum-0.9", 0.1, seed, [0.85, 0.88], test=[0.98, 0.99]))
        runs.append(_run("momentum-0.9", 0.3, seed, [0.99, 0.99], test=[0.99, 0.99],
                         diverged=seed == 2))  # best of all, but one seed blew up
    return runs


@pytest.mark.parametrize("criterion", ["final", "best", "target"])
def test_eta_selection_uses_validation_not_test_accuracy(criterion):
    chosen = cv.select_eta(_planted(), criterion, target=0.92)
    assert chosen["momentum-0.9"]["eta"] == 0.01


def test_summary_reports_the_test_figures_of_the_validation_choice():
    s = cv.summarize_setting(_planted(), target=0.92)
    e = s["optimizers"]["momentum-0.9"]
    assert e["chosen_eta"] == 0.01
    a = e["at_chosen"]
    assert a["final_test"]["mean"] == pytest.approx(0.61)  # not the 0.99 of eta 0.1
    assert a["final_validation"]["mean"] == pytest.approx(0.94)
    assert a["final_validation"]["std"] == pytest.approx(0.01)  # sample std over 3 seeds
    assert a["n_seeds"] == 3 and a["reached_target"] == 3
    sens = {row["eta"]: row for row in e["sensitivity"]}
    assert sens[0.3]["diverged"] == 1
    assert sens[0.1]["final_test"]["mean"] == pytest.approx(0.99)


def test_selection_ties_go_to_the_other_accuracy_then_the_smaller_eta():
    runs = [_run("sgd", 0.03, 0, [0.80, 0.90]), _run("sgd", 0.1, 0, [0.95, 0.90]),
            _run("sgd", 0.3, 0, [0.95, 0.90])]
    assert cv.select_eta(runs, "final")["sgd"]["eta"] == 0.1
    assert cv.select_eta([_run("sgd", 0.1, 0, [0.1], diverged=True)])["sgd"]["eta"] is None


def test_verdict_says_plainly_whether_momentum_is_faster():
    runs = []
    for seed in (0, 1, 2):
        runs.append(_run("sgd", 0.1, seed, [0.80, 0.90, 0.93, 0.96]))
        runs.append(_run("momentum-0.9", 0.01, seed, [0.90, 0.96, 0.97, 0.97]))
    s = cv.summarize_setting(runs, target=0.95)
    v = [x for x in s["verdicts"] if x["at"] == "chosen"][0]
    assert v["result"] == 1 and v["text"].startswith("YES")
    assert "2.00 ± 0.00 epochs (3/3 seeds)" in v["text"]
    assert "4.00 ± 0.00 epochs (3/3 seeds)" in v["text"]
    # momentum reaching it in fewer seeds loses, whatever its mean
    runs = [_run("sgd", 0.1, 0, [0.96, 0.96]), _run("sgd", 0.1, 1, [0.80, 0.96]),
            _run("momentum-0.9", 0.01, 0, [0.96, 0.96]), _run("momentum-0.9", 0.01, 1, [0.5, 0.9])]
    v = cv.summarize_setting(runs, target=0.95)["verdicts"][0]
    assert v["result"] == -1 and v["text"].startswith("NO")
    # ... and the verdict says it was the reach, not the speed, that decided
    assert "reaches it in fewer seeds than sgd" in v["text"]
    assert "took fewer epochs (1.00 against 1.50)" in v["text"]
    assert "Weak evidence" in v["text"]


# -- runs ------------------------------------------------------------------------------


def test_optimizer_specs():
    assert cv.OptimizerSpec.parse("sgd").label == "sgd"
    assert cv.OptimizerSpec.parse("momentum").label == "momentum-0.9"
    assert cv.OptimizerSpec.parse("momentum:0.5").label == "momentum-0.5"
    spec = cv.OptimizerSpec.parse("Nesterov-0.99+plateau")
    assert (spec.kind, spec.momentum, spec.schedule) == ("nesterov", 0.99, "plateau")
    assert spec.label == "nesterov-0.99+plateau"
    for bad in ("adam", "sgd-0.9", "momentum-1.5", "momentum-x"):
        with pytest.raises(ValueError):
            cv.OptimizerSpec.parse(bad)
    assert cv.resolve_problems(["1,3"]) == ["conv-sample", "fc-sample", "fc-fashion"]
    with pytest.raises(ValueError):
        cv.resolve_problems(["9"])


def test_same_initial_weights_and_data_subset_across_optimizers():
    problem = cv.PROBLEMS["conv-sample"]
    data = cv.load_problem_data(problem, max_batches=2, batch_size=10, max_eval=20)
    assert [len(d[1]) for d in data] == [20, 20, 20]
    runs = {(opt, seed): cv.run_one(problem, data, opt, 0.01, seed, 10, 1, device="reference")
            for opt in ("sgd", "momentum-0.9", "nesterov-0.9+plateau") for seed in (0, 1)}
    opts = ("sgd", "momentum-0.9", "nesterov-0.9+plateau")
    for key in ("init_fingerprint", "data_order_fingerprint"):
        for seed in (0, 1):
            assert len({runs[opt, seed][key] for opt in opts}) == 1, key
        assert runs["sgd", 0][key] != runs["sgd", 1][key], key
    # and directly: the same seed builds the same parameters for any optimizer's run
    a = cv.build_network("conv", 10, device="reference", seed=3)
    b = cv.build_network("conv", 10, device="reference", seed=3)
    np.testing.assert_array_equal(a.flat.data, b.flat.data)
    # momentum changed the trajectory (so the runs are not accidentally identical)
    assert runs["sgd", 0]["history"][0]["cost"] != runs["momentum-0.9", 0]["history"][0]["cost"]


def test_fraction_subsets_the_training_data():
    problem = cv.PROBLEMS["conv-sample"]
    training, validation, test = cv.load_problem_data(problem, fraction=0.1, batch_size=10)
    assert len(training[1]) == 400 and len(validation[1]) == 500 and len(test[1]) == 500


def test_diverging_run_is_recorded_not_raised():
    problem = cv.PROBLEMS["fc-sample"]
    data = cv.load_problem_data(problem, max_batches=30, batch_size=10, max_eval=20)
    run = cv.run_one(problem, data, "momentum-0.99", 1e30, 0, 10, 2, device="reference")
    assert run["diverged"] and "diverged" in run["divergence"]
    assert len(run["history"]) < 2


# -- the --quick suite end to end ------------------------------------------------------


def test_quick_suite_writes_json_markdown_and_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rc = cv.main(["--quick", "--device", "reference", "--out", str(tmp_path)])
    assert rc == 0
    doc = json.loads((tmp_path / "convergence-conv-sample.json").read_text())
    assert doc["complete"] is True
    meta = doc["meta"]
    for key in ("fastmom_version", "backend", "threads", "cpu_model", "cpu_cores", "date",
                "suite_seconds", "command"):
        assert meta[key] is not None, key
    assert meta["backend"] == "reference"
    cfg = doc["config"]
    assert cfg["reduced"] is True and cfg["seeds"] == [0] and cfg["etas"] == [0.01, 0.1]
    assert cfg["optimizers"] == ["sgd", "momentum-0.9", "momentum-0.9+plateau"]
    assert len(doc["runs"]) == 3 * 2 * 1
    for run in doc["runs"]:
        assert len(run["history"]) == cv.QUICK["epochs"]
        for rec in run["history"]:
            for key in ("cost", "validation_accuracy", "test_accuracy", "seconds", "elapsed", "wall", "cpu"):
                assert isinstance(rec[key], float), key
    assert len({r["init_fingerprint"] for r in doc["runs"]}) == 1  # one seed, one start
    summary = doc["summary"]["conv-sample"]
    assert set(summary["optimizers"]) == set(cfg["optimizers"])
    for entry in summary["optimizers"].values():
        assert entry["chosen_eta"] in (0.01, 0.1)
        assert {"final_test", "test_at_best_validation", "epochs_to_target",
                "seconds_to_target"} <= set(entry["at_chosen"])
        assert [row["eta"] for row in entry["sensitivity"]] == [0.01, 0.1]
    assert {v["at"] for v in summary["verdicts"]} == {"chosen", "fastest"}

    md = (tmp_path / "convergence-conv-sample.md").read_text()
    assert "| optimizer | chosen eta | final validation % | final test %" in md
    assert "Does momentum beat plain SGD in epochs to target?" in md
    assert "VALIDATION accuracy only" in md and "REDUCED" in md
    for name in ("convergence-conv-sample-curves.png", "convergence-conv-sample-eta.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert f"]({name})" in md

    # the report can be rebuilt from the JSON alone
    (tmp_path / "convergence-conv-sample.md").unlink()
    assert cv.main(["--report", str(tmp_path / "convergence-conv-sample.json"), "--no-plots"]) == 0
    assert (tmp_path / "convergence-conv-sample.md").read_text() == md


def test_resume_reuses_finished_runs(tmp_path):
    args = ["--quick", "--device", "reference", "--out", str(tmp_path), "--no-plots",
            "--optimizers", "sgd", "--etas", "0.1", "--epochs", "1", "--max-batches", "2"]
    assert cv.main(args) == 0
    first = json.loads((tmp_path / "convergence-conv-sample.json").read_text())
    assert cv.main(args + ["--resume", "--etas", "0.1,0.03"]) == 0
    second = json.loads((tmp_path / "convergence-conv-sample.json").read_text())
    assert len(second["runs"]) == 2
    assert second["runs"][0] == first["runs"][0]  # reused, not re-run
    assert second["meta"]["earlier_sessions"][0]["date"] == first["meta"]["date"]
    # an interrupted resumed suite keeps the earlier runs it had not reached yet
    calls = []

    def interrupt(*a, **k):
        calls.append(1)
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(suite, "run_one", interrupt)
        with pytest.raises(KeyboardInterrupt):
            cv.main(args + ["--resume", "--etas", "0.1,0.01,0.03"])
    third = json.loads((tmp_path / "convergence-conv-sample.json").read_text())
    assert calls and sorted(r["eta"] for r in third["runs"]) == [0.03, 0.1]
    # the second session's report: its own run and the first session's
    assert "trained in 2 sessions (processes)" in (tmp_path / "convergence-conv-sample.md").read_text()


def test_a_narrower_resume_keeps_the_other_runs(tmp_path):
    """Resuming with a smaller grid must not drop the finished runs outside it."""
    args = ["--quick", "--device", "reference", "--out", str(tmp_path), "--no-plots",
            "--optimizers", "sgd", "--epochs", "1", "--max-batches", "2"]
    assert cv.main(args + ["--etas", "0.1,0.03"]) == 0
    assert cv.main(args + ["--etas", "0.1", "--resume"]) == 0
    doc = json.loads((tmp_path / "convergence-conv-sample.json").read_text())
    assert [r["eta"] for r in doc["runs"]] == [0.1]
    assert [r["eta"] for r in doc["other_runs"]] == [0.03]

    def must_not_run(*a, **k):
        raise AssertionError("a finished run was trained again")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(suite, "run_one", must_not_run)
        assert cv.main(args + ["--etas", "0.1,0.03", "--resume"]) == 0
    doc = json.loads((tmp_path / "convergence-conv-sample.json").read_text())
    assert sorted(r["eta"] for r in doc["runs"]) == [0.03, 0.1] and "other_runs" not in doc


def test_resume_from_combines_a_split_grid(tmp_path, capsys):
    """A grid split over two processes (two output directories) is combined without
    re-running anything; a file of another configuration is refused."""
    base = ["--quick", "--device", "reference", "--no-plots", "--etas", "0.1",
            "--epochs", "1", "--max-batches", "2"]
    parts = {}
    for opt in ("sgd", "momentum-0.9"):
        d = tmp_path / opt
        assert cv.main(base + ["--out", str(d), "--optimizers", opt]) == 0
        parts[opt] = json.loads((d / "convergence-conv-sample.json").read_text())

    def must_not_run(*a, **k):
        raise AssertionError("a finished run was trained again")

    both = ["--out", str(tmp_path / "both"), "--optimizers", "sgd,momentum-0.9"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(suite, "run_one", must_not_run)
        assert cv.main(base + both + [
            "--resume-from", str(tmp_path / "sgd" / "convergence-conv-sample.json"),
            "--resume-from", str(tmp_path / "momentum-0.9" / "convergence-conv-sample.json")]) == 0
    doc = json.loads((tmp_path / "both" / "convergence-conv-sample.json").read_text())
    assert doc["complete"] is True
    assert doc["runs"] == [parts["sgd"]["runs"][0], parts["momentum-0.9"]["runs"][0]]
    assert len(doc["meta"]["earlier_sessions"]) == 2
    # the combining session trained nothing: its thread count and load are not the runs'
    md = (tmp_path / "both" / "convergence-conv-sample.md").read_text()
    assert "trained in 2 sessions (processes)" in md and "without training" in md
    # combining again with a file derived from the same sessions lists each session once
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(suite, "run_one", must_not_run)
        assert cv.main(base + both + ["--resume", "--resume-from",
                                      str(tmp_path / "sgd" / "convergence-conv-sample.json")]) == 0
    again = json.loads((tmp_path / "both" / "convergence-conv-sample.json").read_text())
    sessions = [json.dumps(e, sort_keys=True) for e in again["meta"]["earlier_sessions"]]
    assert len(sessions) == len(set(sessions)) == 3  # sgd, momentum-0.9, the combination
    # --no-train reports a partial grid as incomplete and trains nothing
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(suite, "run_one", must_not_run)
        assert cv.main(base + ["--out", str(tmp_path / "partial"), "--no-train",
                               "--optimizers", "sgd,nesterov-0.9", "--resume-from",
                               str(tmp_path / "sgd" / "convergence-conv-sample.json")]) == 0
    partial = json.loads((tmp_path / "partial" / "convergence-conv-sample.json").read_text())
    assert partial["complete"] is False and partial["runs"] == parts["sgd"]["runs"]
    assert "INCOMPLETE" in (tmp_path / "partial" / "convergence-conv-sample.md").read_text()
    # another configuration (2 epochs, not 1): an error, not a silent re-run
    capsys.readouterr()
    assert cv.main(base[:-4] + ["--epochs", "2", "--max-batches", "2"] + both + [
        "--resume-from", str(tmp_path / "sgd" / "convergence-conv-sample.json")]) == 2
    assert "another problem or configuration" in capsys.readouterr().err


def test_cli_errors_are_reported_not_raised(capsys):
    assert cv.main(["--problem", "nope", "--no-plots"]) == 2
    assert "unknown problem" in capsys.readouterr().err


def test_per_optimizer_eta_grids(tmp_path):
    args = ["--quick", "--device", "reference", "--out", str(tmp_path), "--no-plots", "--epochs", "1",
            "--max-batches", "2", "--optimizers", "sgd,momentum-0.9",
            "--etas", "sgd=0.1,0.3;momentum-0.9=0.01"]
    assert cv.main(args) == 0
    doc = json.loads((tmp_path / "convergence-conv-sample.json").read_text())
    assert doc["config"]["etas"] == {"sgd": [0.1, 0.3], "momentum-0.9": [0.01]}
    assert sorted((r["optimizer"], r["eta"]) for r in doc["runs"]) == [
        ("momentum-0.9", 0.01), ("sgd", 0.1), ("sgd", 0.3)]
    md = (tmp_path / "convergence-conv-sample.md").read_text()
    assert "sgd: 0.1, 0.3; momentum-0.9: 0.01" in md
    assert cv.main(args[:-1] + ["nesterov=0.1"]) == 2  # a grid for an optimizer not in the run


def test_markdown_compares_below_the_target_when_neither_reaches_it():
    runs = []
    for seed in (0, 1):
        runs.append(_run("sgd", 0.1, seed, [0.80, 0.86, 0.87]))
        runs.append(_run("momentum-0.9", 0.01, seed, [0.86, 0.87, 0.88]))
    doc = {"config": {"problem": "planted", "number": 0, "description": "planted", "lmbda": 0.0,
                      "epochs": 3, "target_validation_accuracy": 0.90, "optimizers": ["sgd", "momentum-0.9"],
                      "etas": [0.01, 0.1], "seeds": [0, 1], "batch_sizes": [10], "selection": "final",
                      "device": "reference"},
           "meta": {k: "x" for k in ("cpu_model", "cpu_cores", "platform", "fastmom_version",
                                     "backend", "threads", "date")},
           "runs": runs, "summary": {}, "complete": True}
    doc["summary"] = cv.summarize_document(doc)
    md = cv.markdown_report(doc)
    assert "NEITHER momentum-0.9 nor sgd reaches 90.0% validation" in md
    assert ("to 85.0% validation, momentum-0.9 is faster: 1.00 epochs against 2.00 for sgd" in md)


def test_verdict_flags_a_difference_within_seed_noise():
    runs = []
    for seed, (e_sgd, e_mom) in enumerate([(3, 2), (3, 6), (3, 2)]):
        runs.append(_run("sgd", 0.1, seed, [0.5] * (e_sgd - 1) + [0.96] * (7 - e_sgd)))
        runs.append(_run("momentum-0.9", 0.01, seed, [0.5] * (e_mom - 1) + [0.96] * (7 - e_mom)))
    v = cv.summarize_setting(runs, target=0.95)["verdicts"][0]
    assert v["result"] == -1  # 3.33 against 3.00 epochs
    assert "within the seed-to-seed noise" in v["text"]


def test_quick_never_writes_into_the_committed_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cv.main(["--quick", "--device", "reference", "--no-plots", "--optimizers", "sgd",
                    "--etas", "0.1", "--epochs", "1", "--max-batches", "2"]) == 0
    assert (tmp_path / "convergence-quick" / "convergence-conv-sample.json").exists()
    assert not (tmp_path / "bench").exists()


def test_report_counts_only_the_sessions_that_trained():
    """A file combined over many sessions names how many trained and under what
    load; sessions that only combined files (older files: a --no-train command)
    are not counted, and their thread count is not reported as the runs'."""
    def session(date, threads, load, **extra):
        return dict(date=date, threads=threads, load_average_at_start=[load, 0, 0], **extra)

    meta = session("2026-01-03", 2, 0.5, runs_trained=0, earlier_sessions=[
        session("2026-01-01", 1, 1.5, command="fastmom bench-convergence --problem 2"),
        session("2026-01-02", 1, 3.0, runs_trained=4),
        session("2026-01-02b", 2, 9.0, command="fastmom bench-convergence --no-train"),
    ])
    text = _sessions_text(meta)
    assert "trained in 2 sessions" in text and "from 2026-01-01 to 2026-01-02," in text
    assert "1 threads each" in text and "at start 1.5 to 3" in text
    assert "combined on 2026-01-03 without training" in text
    meta["runs_trained"] = 3  # the latest session trained too
    text = _sessions_text(meta)
    assert "trained in 3 sessions" in text and "1/2 threads" in text and "without" not in text


def test_report_names_every_cpu_that_trained_runs():
    """A grid resumed on another machine says which CPU trained how many sessions; a
    file trained on one CPU prints its machine as before."""
    from fastmom.convergence.report import _machine_text

    def session(model, **extra):
        return dict(cpu_model=model, cpu_cores=2, platform="Linux", **extra)

    meta = session("Intel Xeon", runs_trained=0, earlier_sessions=[
        session("AMD EPYC", runs_trained=4), session("AMD EPYC", runs_trained=2),
        session("Intel Xeon", runs_trained=1), session("Intel Xeon", runs_trained=0)])
    assert _machine_text(meta) == ("runs trained on AMD EPYC (2 sessions), Intel Xeon (1 session); "
                                   "this file written on Intel Xeon, 2 cores, Linux")
    meta["earlier_sessions"] = meta["earlier_sessions"][2:]
    assert _machine_text(meta) == "Intel Xeon, 2 cores, Linux"


def test_one_seed_is_reported_as_one_seed_not_as_zero_spread():
    """A setting run with a single seed has no measured spread: the report must not
    print "± 0.00", and a verdict on it says the noise is unknown."""
    runs = [_run("sgd", 0.1, 0, [0.80, 0.96]), _run("momentum-0.9", 0.01, 0, [0.96, 0.97])]
    s = cv.summarize_setting(runs, target=0.95)
    at = s["optimizers"]["sgd"]["at_chosen"]
    assert at["final_test"]["std"] is None and at["epochs_to_target"]["std"] is None
    assert fmt_mean_std(at["final_validation"]) == "96.00 (1 seed)"
    v = s["verdicts"][0]
    assert v["result"] == 1 and "±" not in v["text"] and "a single seed" in v["text"]
    # two seeds: a spread again
    runs.append(_run("sgd", 0.1, 1, [0.90, 0.96]))
    at = cv.summarize_setting(runs, target=0.95)["optimizers"]["sgd"]["at_chosen"]
    assert fmt_mean_std(at["final_validation"]) == "96.00 ± 0.00"


# -- the expanded training set (--expand) ----------------------------------------------


def _five_versions(images, labels):
    """``(bytes, label)`` of each image and its four one-pixel shifts (network3's
    expand_mnist.py: roll by one pixel, the wrapped-in row or column zeroed)."""
    out = []
    for img, label in zip(images.reshape(-1, 28, 28), labels):
        versions = [img]
        for axis, d in ((0, 1), (0, -1), (1, 1), (1, -1)):
            s = np.roll(img, d, axis=axis)
            edge = 0 if d > 0 else -1
            if axis == 0:
                s[edge, :] = 0
            else:
                s[:, edge] = 0
            versions.append(s)
        out += [(v.astype(np.float32).tobytes(), int(label)) for v in versions]
    return out


def test_expand_builds_five_times_the_training_images_with_their_labels():
    from collections import Counter

    problem = cv.PROBLEMS["conv-sample"]
    plain = cv.load_problem_data(problem, max_batches=3, batch_size=10, max_eval=20)
    data = cv.load_problem_data(problem, max_batches=3, batch_size=10, max_eval=20, expand=True)
    (x, y), (x0, y0) = data[0], plain[0]
    assert x.shape == (150, 784) and y.shape == (150,) and x.dtype == x0.dtype
    for split in (1, 2):  # validation and test are not expanded
        for a, b in zip(data[split], plain[split]):
            np.testing.assert_array_equal(a, b)
    # the same multiset of (image, label) as the five versions of each original
    got = Counter((img.astype(np.float32).tobytes(), int(label)) for img, label in zip(x, y))
    assert got == Counter(_five_versions(x0, y0))
    assert not np.array_equal(y[:30], np.tile(y0, 5)[:30])  # shuffled, not in block order
    # built once per process: the same arrays again, not a copy
    again = cv.load_problem_data(problem, max_batches=3, batch_size=10, max_eval=20, expand=True)
    assert again[0][0] is x and again[0][1] is y
    # the fraction option subsets before expanding too
    frac = cv.load_problem_data(problem, fraction=0.01, batch_size=10, max_eval=20, expand=True)
    assert len(frac[0][1]) == 5 * 40


def test_expand_setting_is_recorded_and_kept_apart_from_the_plain_one(tmp_path, monkeypatch, capsys):
    base = ["--device", "reference", "--no-plots", "--optimizers", "sgd", "--etas", "0.1",
            "--seeds", "0", "--epochs", "1", "--max-batches", "2", "--max-eval", "20"]
    # without --out, in a checkout: its own directory, never beside the plain results
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench" / "results").mkdir(parents=True)
    assert cv.main(base + ["--expand"]) == 0
    out = tmp_path / "bench" / "results" / "convergence-conv-sample-expand"
    doc = json.loads((out / "convergence-conv-sample.json").read_text())
    cfg = doc["config"]
    assert cfg["expand"] is True and cfg["expand_seed"] == cv.EXPAND_SEED
    assert cfg["sizes"] == {"10": [5 * 20, 20, 20]}
    assert [r["expand"] for r in doc["runs"]] == [True]
    md = (out / "convergence-conv-sample.md").read_text()
    assert md.startswith("## Convergence: problem 1, `conv-sample`, expanded training set")
    assert "`expand: true`" in md and "seed=0" in md
    # the plain setting records no expand key (its files print as before)
    assert cv.main(base + ["--out", "plain"]) == 0
    plain = json.loads((tmp_path / "plain" / "convergence-conv-sample.json").read_text())
    assert "expand" not in plain["config"] and "expand" not in plain["runs"][0]
    assert "expand" not in (tmp_path / "plain" / "convergence-conv-sample.md").read_text()
    # neither setting resumes the other's runs
    capsys.readouterr()
    assert cv.main(base + ["--expand", "--out", "x", "--resume-from",
                           "plain/convergence-conv-sample.json"]) == 2
    assert "another problem or configuration" in capsys.readouterr().err
    assert cv.main(base + ["--out", "y", "--resume-from",
                           str(out / "convergence-conv-sample.json")]) == 2
    assert "expanded training set" in capsys.readouterr().err
    # and the report rebuilds from the JSON alone
    (out / "convergence-conv-sample.md").unlink()
    assert cv.main(["--report", str(out / "convergence-conv-sample.json"), "--no-plots"]) == 0
    assert (out / "convergence-conv-sample.md").read_text() == md


# -- runs that outlive a session: per-epoch checkpoints ---------------------------------


def _history_without_times(doc):
    return [[{k: v for k, v in rec.items() if k not in ("seconds", "elapsed", "wall", "cpu")}
             for rec in run["history"]] for run in doc["runs"]]


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path):
    """Ctrl-C inside a run keeps its checkpoint; --resume continues it where it stopped
    and ends bit-identically to an uninterrupted run; the checkpoints go once it is done."""
    import os
    import signal

    from fastmom.convergence.resumable import RunClock

    args = ["--quick", "--device", "reference", "--no-plots", "--optimizers", "momentum-0.9",
            "--etas", "0.01", "--epochs", "3", "--max-batches", "3"]
    assert cv.main(args + ["--out", str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "convergence-conv-sample.json").read_text())
    assert not (tmp_path / "whole" / "checkpoints").exists()

    out = tmp_path / "split"

    def sigint_at(at):
        def on_batch_begin(self, trainer, iteration):
            if iteration == at:
                os.kill(os.getpid(), signal.SIGINT)
        return on_batch_begin

    # stopped in the second mini-batch of epoch 1, then of epoch 2 (3 a epoch)
    for at, resume in ((4, []), (7, ["--resume"])):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(RunClock, "on_batch_begin", sigint_at(at), raising=False)
            with pytest.raises(KeyboardInterrupt):
                cv.main(args + ["--out", str(out)] + resume)
        saved = list((out / "checkpoints").rglob("ckpt-*.npz"))
        assert len(saved) == 1 and (saved[0].parent / "run.json").exists()

    assert cv.main(args + ["--out", str(out), "--resume"]) == 0
    split = json.loads((out / "convergence-conv-sample.json").read_text())
    assert split["runs"][0]["resumed_at_epochs"] == [1, 2]  # every session's, carried
    assert "resumed_at_epochs" not in whole["runs"][0]
    assert _history_without_times(split) == _history_without_times(whole)
    assert [r["init_fingerprint"] for r in split["runs"]] == [r["init_fingerprint"] for r in whole["runs"]]
    walls = [rec["wall"] for rec in split["runs"][0]["history"]]
    assert walls == sorted(walls) and split["runs"][0]["wall_seconds"] >= walls[-1]
    assert not (out / "checkpoints").exists()  # nothing left behind


def test_resume_refuses_another_runs_checkpoint_and_a_fresh_suite_discards_it(tmp_path, capsys):
    import os
    import signal

    from fastmom.convergence.resumable import RunClock

    args = ["--quick", "--device", "reference", "--no-plots", "--optimizers", "sgd",
            "--etas", "0.1", "--epochs", "2", "--max-batches", "2", "--out", str(tmp_path)]

    def sigint(self, trainer, iteration):
        if iteration == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RunClock, "on_batch_begin", sigint, raising=False)
        with pytest.raises(KeyboardInterrupt):
            cv.main(args)
    (marker,) = (tmp_path / "checkpoints").rglob("run.json")
    marker.write_text(json.dumps({"init_fingerprint": "0" * 16, "data_order_fingerprint": "1" * 16}))
    assert cv.main(args + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert str(marker.parent) in err and "other initial weights or data order" in err
    # without --resume the stale checkpoint is discarded and the run trained afresh
    assert cv.main(args) == 0
    doc = json.loads((tmp_path / "convergence-conv-sample.json").read_text())
    assert len(doc["runs"][0]["history"]) == 2 and "resumed_at_epochs" not in doc["runs"][0]
