"""`fastconv bench` end to end on a tiny subset: exit status, the JSON rows, the PNG."""
import importlib.util
import json

import pytest

import fastconv
from fastconv import cli

HAS_MPL = importlib.util.find_spec("matplotlib") is not None


def test_bench_quick_subset(tmp_path, capsys):
    threads_before = fastconv.get_num_threads()
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    argv = ["bench", "--quick", "--ops", "conv2d,gemm", "--layers", "lenet5.conv1.b1,gemm 256",
            "--backends", "numpy,c", "--models", "", "--peers", "openblas", "--threads", "1",
            "--rounds", "2", "--seconds", "0.01", "--no-progress", "--json", str(out_json)]
    if HAS_MPL:
        argv += ["--plot", str(out_png)]
    assert cli.main(argv) == 0
    assert fastconv.get_num_threads() == threads_before  # --threads does not leak
    table = capsys.readouterr().out
    assert "naive (slice, scaled)" in table and "x best peer" in table

    data = json.loads(out_json.read_text())
    head, rows = data["header"], data["rows"]
    assert head["threads"] == 1 and head["isa"] and head["versions"]["numpy"]
    assert head["peak_gflops"] > 0
    assert {r["layer"] for r in rows} == {"lenet5.conv1.b1", "gemm 256"}
    assert {r["backend"] for r in rows} >= {"numpy", "c", "openblas"}
    for r in rows:
        assert r["unit"] == "GFLOP/s" and r["gflops"] > 0 and "2*" in r["counted"], r
        assert r["speedup_naive"] > 0 and r["speedup_numpy"] > 0, r
    gemm_c = next(r for r in rows if r["layer"] == "gemm 256" and r["backend"] == "c")
    assert gemm_c["best_peer"] == "openblas" and gemm_c["ratio_best_peer"] > 0
    if HAS_MPL:
        assert out_png.stat().st_size > 1000
        assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_rejects_unknown_op():
    with pytest.raises(SystemExit, match="unknown op"):
        cli.main(["bench", "--ops", "conv3d", "--models", "", "--no-progress"])
