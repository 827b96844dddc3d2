"""`--executor ray` on a local Ray (2 CPUs, started once for the module): every result equals the local
executor's exactly; a failing task names its layer and worker; a killed worker is retried."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

ray = pytest.importorskip("ray", reason="needs the distributed extra: pip install 'qdq[distributed]'")

from converter.accuracy import Evaluator, Target, analyze, reach_target, table_quantizer  # noqa: E402
from converter.accuracy.sensitivity import TableQuantizer  # noqa: E402
from converter.calib.config import CalibConfig  # noqa: E402
from converter.calibrate import calibrate  # noqa: E402
from converter.cli import main  # noqa: E402
from converter.distributed import LocalExecutor, RayExecutor, TaskFailedError  # noqa: E402
from converter.quant.config import QuantConfig  # noqa: E402


@pytest.fixture(scope="module")
def ray_executor():
    import sys

    # the test's own task functions and classes travel by value (the workers cannot import test modules)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield RayExecutor(max_retries=2)
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def cnn(digits_cnn_onnx: Path, digits_split: dict):
    X, Xt = digits_split["X_train"], digits_split["X_test"]
    table = calibrate(digits_cnn_onnx, [{"image": X[i:i + 64]} for i in range(0, 256, 64)], progress=False)
    return table, Evaluator(digits_cnn_onnx, [{"image": Xt[:200]}]), Evaluator(digits_cnn_onnx, [{"image": Xt[200:]}])


def _table_dict(table) -> dict:  # noqa: ANN001
    d = copy.deepcopy(table.to_dict())
    for key in ("seconds", "created"):  # the only fields that differ between runs
        d["meta"].pop(key)
    return d


def test_sensitivity_on_ray_equals_local(ray_executor, cnn, digits_cnn_onnx: Path) -> None:
    table, sens, _ = cnn
    args = (table_quantizer(digits_cnn_onnx, table), sens, QuantConfig(), "snr")
    local = analyze(*args, modes=("without", "alone"), executor=LocalExecutor())
    distributed = analyze(*args, modes=("without", "alone"), executor=ray_executor)
    assert len(local.layers) == 4
    assert [(l.node, l.without, l.alone) for l in distributed.layers] == \
        [(l.node, l.without, l.alone) for l in local.layers]
    assert distributed.full == local.full
    assert all(l.without is not None and l.alone is not None for l in distributed.layers)


def test_mixed_precision_on_ray_equals_local(ray_executor, cnn, digits_cnn_onnx: Path) -> None:
    table, sens, held = cnn
    quantize_fn = table_quantizer(digits_cnn_onnx, table)
    target = Target("snr", held.score(quantize_fn(QuantConfig()), "snr") + 3.0)  # needs layers back in float
    local = reach_target(quantize_fn, sens, held, QuantConfig(), target)
    distributed = reach_target(quantize_fn, sens, held, QuantConfig(), target, executor=ray_executor)
    assert local.excluded and local.reached
    assert distributed.excluded == local.excluded
    assert [(d.node, d.score) for d in distributed.decisions] == [(d.node, d.score) for d in local.decisions]


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_calibration_shards_on_ray_equal_one_process(ray_executor, digits_cnn_onnx: Path, digits_split: dict,
                                                     method: str) -> None:
    X = digits_split["X_train"]
    # ragged batches of rising scale: the one-process histograms widen as they go
    batches = [{"image": X[i:i + 40] * (1 + i / 100)} for i in range(0, 300, 40)]
    config = CalibConfig(method=method, scope="all")
    local = calibrate(digits_cnn_onnx, batches, config, progress=False)
    distributed = calibrate(digits_cnn_onnx, batches, config, executor=ray_executor)
    assert _table_dict(distributed) == _table_dict(local)
    assert distributed.meta["num_batches"] == len(batches)


def test_cli_calibrate_executor_ray_writes_the_local_table(ray_executor, digits_cnn_onnx: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    outs = {}
    for executor in ("local", "ray"):
        outs[executor] = tmp_path / f"{executor}.json"
        res = runner.invoke(main, ["calibrate", str(digits_cnn_onnx), "--data", "builtin:digits", "-m", "entropy",
                                   "--no-progress", "--executor", executor, "-o", str(outs[executor])])
        assert res.exit_code == 0, res.output
    local, distributed = (json.loads(outs[k].read_text()) for k in ("local", "ray"))
    for d in (local, distributed):
        d["meta"].pop("seconds"), d["meta"].pop("created")
    assert distributed == local


class FailingQuantizer(TableQuantizer):
    """Quantizes like TableQuantizer but fails on the variant that keeps ``node`` in float."""

    def __init__(self, model, table, node: str) -> None:  # noqa: ANN001
        super().__init__(model, table)
        self.node = node

    def __call__(self, config: QuantConfig):  # noqa: ANN204
        if self.node in config.exclude_nodes and len(config.exclude_nodes) == 1:
            raise RuntimeError("weights of this layer are unreadable")
        return super().__call__(config)


def test_failing_task_names_layer_and_worker(ray_executor, cnn, digits_cnn_onnx: Path) -> None:
    table, sens, _ = cnn
    first = analyze(table_quantizer(digits_cnn_onnx, table), sens, QuantConfig(), "snr").layers[1].node
    with pytest.raises(TaskFailedError) as err:
        analyze(FailingQuantizer(str(digits_cnn_onnx), table, first), sens, QuantConfig(), "snr",
                executor=ray_executor)
    message = str(err.value)
    assert f"layer '{first}' (without)" in message
    assert "weights of this layer are unreadable" in message
    assert "pid" in message and "node" in message and str(os.getpid()) not in message.split("pid ")[1][:8]
    assert "\n" not in message


def _die_once(marker: str, item: int) -> int:
    """Kills its worker process the first time it runs item 1; the retry finds the marker and succeeds."""
    if item == 1 and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os._exit(1)
    return item * item


def test_killed_worker_is_retried(ray_executor, tmp_path: Path) -> None:
    marker = tmp_path / "died"
    assert ray_executor.map(_die_once, [0, 1, 2, 3], context=str(marker)) == [0, 1, 4, 9]
    assert marker.exists()  # the first attempt really died


def test_worker_that_keeps_dying_is_reported(tmp_path: Path, ray_executor) -> None:
    never = RayExecutor(max_retries=0)
    with pytest.raises(TaskFailedError, match=r"model bert was lost after 0 retries"):
        never.map(_die_once, [1], context=str(tmp_path / "x"), label=lambda i: "model bert")


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch, digits_cnn_onnx: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    res = CliRunner().invoke(main, ["calibrate", str(digits_cnn_onnx), "--data", "builtin:digits", "--executor", "ray",
                                    "-o", "unused.json"])
    assert res.exit_code == 1
    assert "pip install 'qdq[distributed]'" in res.output and len(res.output.strip().splitlines()) == 1
    assert not Path("unused.json").exists()


def test_zoo_sweep_on_ray_equals_local(ray_executor, tmp_path: Path) -> None:
    """tools/zoo.py --executor ray: one task per model, the same rows as the local sweep."""
    from tool_modules import load_tool

    zoo = load_tool("zoo")
    rows = {}
    for executor in ("local", "ray"):
        out = tmp_path / f"{executor}.json"
        zoo.main(["--only", "mobilenet-v3", "--size", "tiny", "--runs", "0", "--calib-batches", "2",
                  "--executor", executor, "--work", str(tmp_path / executor), "--json", str(out)])
        rows[executor] = json.loads(out.read_text())
    for r in rows["local"] + rows["ray"]:
        r.pop("seconds")
    assert rows["ray"] == rows["local"]
    assert rows["local"][0]["model"] == "mobilenet-v3" and not rows["local"][0]["errors"]


def test_cli_sensitivity_and_target_accuracy_on_ray_equal_local(ray_executor, digits_cnn_onnx: Path,
                                                               tmp_path: Path) -> None:
    runner = CliRunner()
    reports, models = {}, {}
    for executor in ("local", "ray"):
        out = tmp_path / f"{executor}.json"
        res = runner.invoke(main, ["sensitivity", str(digits_cnn_onnx), "--data", "builtin:digits", "--metric", "snr",
                                   "--mode", "without", "--executor", executor, "--json", str(out)])
        assert res.exit_code == 0, res.output
        reports[executor] = json.loads(out.read_text())
        models[executor] = tmp_path / f"{executor}.int8.onnx"
        res = runner.invoke(main, ["quantize", str(digits_cnn_onnx), "--data", "builtin:digits", "--target-accuracy",
                                   "snr=52", "--executor", executor, "-o", str(models[executor])])
        assert res.exit_code == 0, res.output
        assert " 1. float " in res.output  # the sensitivity search ran: at least one layer back in float
    for r in reports.values():
        r.pop("seconds")
    assert reports["ray"] == reports["local"] and len(reports["local"]["layers"]) == 4
    assert models["ray"].read_bytes() == models["local"].read_bytes()
