"""The benchmark script runs on CPU and reports what it promises (its timings are not asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the benchmark runs real training steps in subprocesses

ROOT = Path(__file__).resolve().parent.parent


def test_bench_command_and_script_are_one_program():
    for cmd in ([sys.executable, "-m", "taylorat", "bench", "--help"],
                [sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--help"]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "--max-overhead" in r.stdout


def test_step_time_script_reports_cases_and_overhead(tmp_path):
    out = tmp_path / "bench.jsonl"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--device", "cpu", "--quick",
                        "--methods", "trades,trades+1st,trades+1st+2nd", "--rounds", "1", "--iters", "1",
                        "--warmup", "0", "--steps", "1", "--batch", "8", "--out", str(out), "--epoch",
                        "--epoch-steps", "2", "--check-images", "16", "--table6"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["method"] for x in rows] == ["trades", "trades+1st", "trades+1st+2nd"]
    assert all(x["ms_per_iter"] > 0 and x["device"].startswith("cpu") for x in rows)
    assert "time_ratio_to_trades" in rows[1] and "time_ratio_to_trades" in rows[2]
    assert "Taylor overhead small_cnn fp32 defaults trades+1st+2nd / trades" in r.stdout
    assert "| small_cnn | trades | fp32 | defaults |" in r.stdout and "time/epoch (min)" in r.stdout  # + Table 6
    assert all(x["epoch_steps"] == 2 and x["epoch_s"] > 0 and x["epoch_check_images"] == 16 for x in rows)
    assert "2 steps + PGD-20 check on 16 images" in r.stdout and "(2 steps + check on 16)" in r.stdout
    assert not any(line.startswith("{") for line in r.stdout.splitlines())  # JSON only with --json / --out
    # progress on stderr, so a bench stopped at a time limit says how far it got
    assert "warmed up small_cnn trades+1st+2nd fp32 defaults: 1 steps in " in r.stderr
    assert "round 1/1 of small_cnn fp32" in r.stderr


def test_defaults_mode_times_what_train_runs_beside_the_forced_layouts():
    r = subprocess.run([sys.executable, "-m", "taylorat", "bench", "--device", "cpu", "--models", "wrn_16_1",
                        "--methods", "trades", "--rounds", "1", "--iters", "1", "--warmup", "0", "--steps", "1",
                        "--batch", "4", "--defaults", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [x["variant"] for x in rows] == ["defaults", "channels_last on", "channels_last off"]
    assert rows[0]["channels_last"] is True and "time_ratio_to_defaults" in rows[2]
    assert "wrn_16_1: on (auto: convolutional network (" in r.stdout


def test_cudnn_benchmark_variants_interleave_and_leave_the_flag_as_found(tmp_path):
    import torch

    from taylorat.bench.bench import main

    out = tmp_path / "bench.jsonl"
    before = torch.backends.cudnn.benchmark
    assert main(["--device", "cpu", "--models", "small_cnn", "--methods", "trades", "--rounds", "2", "--iters", "1",
                 "--warmup", "0", "--steps", "1", "--batch", "4", "--channels-last", "--cudnn-benchmark",
                 "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(x["variant"], x["cudnn_benchmark"]) for x in rows] == [("channels_last on", False),
                                                                    ("channels_last on + cudnn.benchmark", True)]
    assert "time_ratio_to_cudnn_benchmark_off" in rows[1] and "time_ratio_to_cudnn_benchmark_off" not in rows[0]
    assert torch.backends.cudnn.benchmark is before


def test_profile_counts_the_operators_of_each_step(tmp_path, capsys):
    from taylorat.bench.bench import main

    out = tmp_path / "bench.jsonl"
    assert main(["--device", "cpu", "--models", "small_cnn", "--methods", "trades,trades+1st+2nd", "--rounds", "1",
                 "--iters", "1", "--warmup", "1", "--steps", "1", "--batch", "4", "--profile", "2",
                 "--out", str(out)]) == 0
    trades, taylor = (json.loads(line)["profile"] for line in out.read_text().splitlines())
    assert trades["steps"] == 2 and trades["launches_per_step"] is None and trades["clock"] == "cpu"
    assert trades["top"] and all(t["self_ms_per_step"] >= 0 and t["op"] for t in trades["top"])
    # the randomized weights (a copy, a draw and an add per convolution, then the restore) and the Taylor
    # statistics are operators TRADES does not run
    assert taylor["aten_calls_per_step"] > trades["aten_calls_per_step"] > 0
    printed = capsys.readouterr().out
    assert "profile small_cnn trades+1st+2nd fp32 defaults: per step" in printed and "ATen calls" in printed
    with pytest.raises(SystemExit):
        main(["--device", "cpu", "--profile", "-1"])


def test_compile_takes_the_taylor_loss_into_the_compiled_code(tmp_path):
    """Eager, the Taylor step runs ~600 more ATen operators than TRADES' (statistics, soft targets, KL
    terms, weight noise); with ``compile`` the loss is compiled too and only the weight noise stays."""
    from taylorat.bench.bench import main

    extra = {}
    for mode in ("none", "default"):
        out = tmp_path / f"{mode}.jsonl"
        assert main(["--device", "cpu", "--quick", "--rounds", "1", "--iters", "1", "--warmup", "1", "--steps", "1",
                     "--batch", "8", "--profile", "1", "--compile", mode, "--out", str(out)]) == 0
        trades, taylor = (json.loads(line)["profile"]["aten_calls_per_step"] for line in out.read_text().splitlines())
        extra[mode] = taylor - trades
    assert extra["none"] > 300 and extra["default"] < extra["none"] / 5, extra


def test_epoch_mode_times_an_extra_pool_on_the_device_and_streamed(tmp_path, capsys):
    """``--extra-pool N``: each case's epoch trained with an N-image pool, both ways, and their ratio."""
    from taylorat.bench.bench import main
    from taylorat.bench.epoch import POOL_ROUNDS
    from taylorat.common import InputError

    out = tmp_path / "bench.jsonl"
    assert main(["--device", "cpu", "--models", "small_cnn", "--methods", "trades", "--rounds", "1", "--iters", "1",
                 "--warmup", "0", "--steps", "1", "--batch", "8", "--epoch", "--epoch-steps", "2",
                 "--check-images", "16", "--extra-pool", "300", "--extra-fraction", "0.25", "--extra-rounds", "2",
                 "--out", str(out)]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["extra_pool_images"] == 300 and row["extra_fraction"] == 0.25 and row["extra_epoch_steps"] == 2
    assert row["pool_on_device_train_s"] > 0 and row["pool_streamed_train_s"] > 0 and row["pool_streamed_ratio"] > 0
    printed = capsys.readouterr().out
    assert row["pool_rounds"] == 2 and POOL_ROUNDS == 3  # the default
    assert f"streamed / on device = {row['pool_streamed_ratio']:.3f}, median of 2 rounds" in printed
    for bad in (["--extra-pool", "300"], ["--epoch", "--extra-pool", "0"],
                ["--epoch", "--extra-pool", "9", "--extra-fraction", "1"],
                ["--epoch", "--extra-pool", "9", "--extra-rounds", "0"]):
        with pytest.raises(InputError, match="--extra-"):
            main(["--device", "cpu", *bad])
