"""The CUDA emulation's memory statistics (``cuda_emulation.build(memstats=True)``):
exact sector and bank-conflict counts on planted kernels whose answers are known
(``data/planted_memory.cu``), and the grouping of accesses into warp instructions.

The statistics build is separate (``-DFM_EMU_MEMSTATS -g``), so the checking build the
other tests use is not slowed down; these tests build it once for the planted file only.
"""
import pathlib

import numpy as np
import pytest

from fastmom.backends import cuda_emulation as ce

pytestmark = pytest.mark.skipif(ce.compiler() is None, reason="no C++ compiler for the CUDA emulation")

PLANTED = pathlib.Path(__file__).resolve().parent / "data" / "planted_memory.cu"
NAMES = [f"fm_test_{k}<{t}>" for k in ("strided", "tile", "broadcast") for t in ("float", "double")]


@pytest.fixture(scope="module")
def emu():
    return ce.build(sources=[PLANTED], names=NAMES, memstats=True)


def _run(emu, expr, grid, block, args):
    emu.memory_log.clear()
    emu.launch(expr, grid, block, args)
    (launch,) = emu.memory_log
    return launch


def _site(launch, kind, line):
    (s,) = [s for s in launch.sites if s.kind == kind and s.where == f"planted_memory.cu:{line}" and
            (kind == "shared" or s.sectors)]
    return s


def _global_sites(launch):
    return sorted((s for s in launch.sites if s.kind == "global"), key=lambda s: s.sectors)


def test_coalesced_control_is_100_percent(emu):
    x, y = np.arange(1024, dtype=np.float32), np.zeros(32, np.float32)
    launch = _run(emu, "fm_test_strided<float>", (1,), (32,), (x, y, np.int32(1)))
    for s in _global_sites(launch):  # the load and the store: one 128-byte request each
        assert (s.warp_accesses, s.lane_accesses, s.sectors, s.distinct_bytes) == (1, 32, 4, 128)
        assert s.efficiency == 1.0
    np.testing.assert_array_equal(y, x[:32])


def test_stride_32_read_touches_32_sectors(emu):
    x, y = np.arange(1024, dtype=np.float32), np.zeros(32, np.float32)
    launch = _run(emu, "fm_test_strided<float>", (1,), (32,), (x, y, np.int32(32)))
    store, load = _global_sites(launch)
    assert (load.sectors, load.distinct_bytes, load.efficiency) == (32, 128, 0.125)
    assert (store.sectors, store.efficiency) == (4, 1.0)
    assert launch.footprint_sectors == 36
    np.testing.assert_array_equal(y, x[::32])


def test_warps_are_grouped_by_consecutive_threads(emu):
    # 4 blocks of 64 threads: 8 warps, each one 128-byte request per access
    x, y = np.arange(256, dtype=np.float64), np.zeros(256)
    launch = _run(emu, "fm_test_strided<double>", (4,), (64,), (x, y, np.int32(1)))
    for s in _global_sites(launch):  # doubles: 256 bytes per warp access, 8 sectors
        assert (s.warp_accesses, s.lane_accesses, s.sectors) == (8, 256, 64)


def test_arrays_are_treated_as_device_aligned(emu):
    # a view 4 bytes into a (256-byte aligned) allocation straddles one more sector
    base = np.arange(2048, dtype=np.float32)
    y = np.zeros(32, np.float32)
    launch = _run(emu, "fm_test_strided<float>", (1,), (32,), (base[1:], y, np.int32(1)))
    _store, load = _global_sites(launch)
    assert (load.sectors, load.efficiency) == (5, 0.8)


@pytest.mark.parametrize("by_column, pad, ways", [(0, 0, 1), (1, 0, 32), (1, 1, 1)])
def test_shared_tile_bank_conflicts(emu, by_column, pad, ways):
    x, y = np.arange(1024, dtype=np.float32), np.zeros(32, np.float32)
    launch = _run(emu, "fm_test_tile<float>", (1,), (32,), (x, y, np.int32(by_column), np.int32(pad)))
    write, read = sorted((s for s in launch.sites if s.kind == "shared"), key=lambda s: s.where)
    assert (write.warp_accesses, write.wavefronts, write.replays) == (32, 32, 0)  # rows: conflict free
    assert read.warp_accesses == 32 and read.lane_accesses == 1024
    assert read.wavefronts == 32 * ways
    assert read.replays == 32 * (ways - 1)  # column read of a 32x32 tile: 31 replays per access
    tile = x.reshape(32, 32)
    np.testing.assert_allclose(y, tile.sum(1) if by_column else tile.sum(0))


def test_broadcast_is_one_wavefront_and_one_sector(emu):
    x, y = np.arange(4, dtype=np.float32) + 1, np.zeros(32, np.float32)
    launch = _run(emu, "fm_test_broadcast<float>", (1,), (32,), (x, y))
    read = max((s for s in launch.sites if s.kind == "shared"), key=lambda s: s.lane_accesses)
    assert (read.lane_accesses, read.wavefronts, read.replays) == (32, 1, 0)
    bcast = [s for s in launch.sites if s.kind == "global" and s.lane_accesses == 32 and s.distinct_bytes == 4]
    assert len(bcast) == 1 and bcast[0].sectors == 1
    np.testing.assert_array_equal(y, 2 * x[0])


def test_the_checking_build_has_no_statistics():
    plain = ce.build(sources=[PLANTED], names=NAMES, memstats=False)
    assert not plain.memstats
    x, y = np.arange(1024, dtype=np.float32), np.zeros(32, np.float32)
    plain.launch("fm_test_strided<float>", (1,), (32,), (x, y, np.int32(32)))
    assert plain.memory_log == [] and not hasattr(plain.lib, "fm_emu_mem_reset")


# -- the stored counts of network3's step and the model built on them (bench/gpu_model.py) ----

def test_counts_extrapolate_linearly_in_the_batch():
    """Batches 256 and 1024 are modeled from counts extrapolated from the two largest
    emulated batches: extrapolating the largest emulated batch from the two below it
    (132 and 148 to 164: the grid shapes of one regime) must reproduce each kernel's
    sectors and wavefronts (what the model charges) within 3%. (Warp-access counts of
    the grid-stride and one-block kernels step with the batch, by whole passes over the
    grid; their share of the modeled time is small.)"""
    gpu_model = pytest.importorskip("bench.gpu_model")
    import json

    counts = {int(n): c for n, c in json.loads(gpu_model.COUNTS_FILE.read_text())["counts"].items()}
    a, b, c = sorted(counts)[-3:]
    guess = gpu_model.extrapolate(counts[a], counts[b], a, b, c)
    for got, want in zip(guess, counts[c]):
        if want["kernel"].startswith("fm_conv"):  # one regime: grids that are the same or grow with the batch
            assert got["grid"] == want["grid"], (want["primitive"], want["kernel"], got["grid"], want["grid"])
        for field in ("sectors", "wavefronts"):
            g, w = (sum(s[field] for s in launch["sites"]) for launch in (got, want))
            assert abs(g - w) <= 0.03 * w + 2, (want["primitive"], want["kernel"], field, g, w)


def test_model_table_is_labelled_a_model():
    gpu_model = pytest.importorskip("bench.gpu_model")
    counts, extrapolated = gpu_model.load_counts()
    counts = {n: c for n, c in counts.items() if n in gpu_model.BATCHES}
    lines = gpu_model.model_table(counts, extrapolated, gpu_model.SASS_SNAPSHOT)
    assert lines[0].startswith("MODEL, not measurement") and extrapolated == [256, 1024]
    step = next(line for line in lines if "training step (modeled)" in line)
    times = [float(c.strip(" *")) for c in step.split("|")[2:-1]]
    assert len(times) == 4 and times == sorted(times)  # a larger batch never takes less time
    rows = gpu_model.memory_rows(counts[64])
    assert {r["kernel"] for r in rows} >= {"fm_conv_pool_fwd", "fm_conv_dgrad", "fm_conv_wgrad"}


def test_batch_10_step_has_no_cublas_and_coalesced_dense_kernels():
    """network3's step at batch 10 (the stored counts): the dense layers are the
    small-batch kernels (no cuBLAS call in the model), whose shared loads are conflict
    free and whose main global accesses on the 640 -> 100 layer are at least 80%
    coalesced (the 100 -> 10 softmax fills a third of a 32-lane tile: not held to it)."""
    gpu_model = pytest.importorskip("bench.gpu_model")
    counts, _ = gpu_model.load_counts()
    assert gpu_model.library_calls(10) == [] and len(gpu_model.library_calls(64)) == 6
    rows = [r for r in gpu_model.memory_rows(counts[10]) if r["kernel"].startswith("fm_dense")]
    assert {r["kernel"] for r in rows} == {"fm_dense_small", "fm_dense_wgrad_small"}
    assert all(r["worst_shared_ways"] == 1.0 for r in rows)
    fc = [r for r in rows if r["primitive"].startswith("fc")]
    assert len(fc) == 3 and all(r["main_worst_efficiency"] >= gpu_model.COALESCED_TARGET for r in fc)


def test_conv_kernels_meet_issue_13s_memory_target():
    """Issue 13's acceptance on the stored counts of network3's step at batches 10 and 64
    (the real launch shapes of a 132-SM device): every conv kernel launch's main global
    sites (10% of its sectors) at least 80% coalesced and its hot shared sites (10% of
    its shared warp accesses) at most 2 wavefronts per warp access."""
    gpu_model = pytest.importorskip("bench.gpu_model")
    assert (gpu_model.COALESCED_TARGET, gpu_model.WAYS_TARGET, gpu_model.MAIN_SHARE) == (0.80, 2.0, 0.10)
    counts, _ = gpu_model.load_counts()
    for n in (10, 64):
        rows = [r for r in gpu_model.memory_rows(counts[n]) if r["kernel"].startswith("fm_conv")]
        assert {r["kernel"] for r in rows} == {"fm_conv_pool_fwd", "fm_conv_wgrad", "fm_conv_wgrad_finalize",
                                               "fm_conv_dgrad"}
        missed = [(n, r["primitive"], r["kernel"], r["main_worst_site"], round(r["main_worst_efficiency"], 3),
                   r.get("hot_shared_site"), r.get("hot_shared_ways")) for r in rows
                  if r["main_worst_efficiency"] < 0.8 or r.get("hot_shared_ways", 1.0) > 2.0]
        assert not missed, missed
