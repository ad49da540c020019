"""Turn a trained torch model into a shipped model: ONNX, INT8, sha256 and model card.

Shared by every training script (classifier, detector), so each shipped model is made
the same way and its card is validated by the same ``ModelCard`` the agent loads with.
Training-time only: imports torch and onnx, which the agent never does.

Stable API (keyword arguments keep their names):

``export_onnx(model, example, path, *, input_name="input", output_names=("output",),
dynamic_batch=True, opset=17) -> Path``
    Export an ``eval()``-mode module to a single self-contained ONNX file (weights
    inline), batch dimension dynamic when ``dynamic_batch``. Returns ``path``.

``ArrayCalibrationReader(input_name, batches)``
    An onnxruntime ``CalibrationDataReader`` over an iterable of float32 NCHW arrays
    (already pre-processed exactly as at inference). ``batches`` may be a list or a
    re-iterable; the reader is consumed once.

``quantize_int8(fp32_path, int8_path, calibration, *, per_channel=True,
calibrate_method="minmax", exclude_nodes=(), preprocess=True) -> Path``
    Static INT8 quantization in QDQ format (QInt8 symmetric weights, per-channel when
    ``per_channel``; QUInt8 asymmetric activations), calibrated on ``calibration``
    (a ``CalibrationDataReader``, e.g. ``ArrayCalibrationReader``). ``calibrate_method``
    is "minmax", "entropy" or "percentile". ``preprocess`` runs onnxruntime's
    ``quant_pre_process`` (shape inference, graph optimisation) first.

``session(path, threads=2) -> onnxruntime.InferenceSession``
    A CPU session, for evaluating exported models with the runtime the agent uses.

``run_batched(sess, inputs, batch=64) -> np.ndarray``
    The first output of ``sess`` over ``inputs`` (N x ...), in batches.

``latency_ms(path, example, threads=1, repeats=50, warmup=5) -> dict[str, float]``
    Median and p90 wall time (ms) of one ``sess.run`` on ``example`` (e.g. 1 x C x H x W).

``onnx_opset(path) -> int``; ``file_sha256(path) -> str`` (hex).

``write_card(card_path, *, name, version, task, model_path, labels, input, training,
metrics, thresholds, **extra) -> ModelCard``
    Fill ``sha256``, ``file`` (relative to the card's directory) and ``opset`` from the
    model file, validate with ``agent.vision.model_card.ModelCard`` and write the JSON
    (sorted keys, indent 2). Raises ``ModelLoadError`` if the card would not load.

``write_card_markdown(md_path, card, *, summary, sections=()) -> None``
    A short human-readable card: header, ``summary`` paragraph, identity table (file,
    sha256, input, labels, thresholds), then each ``(title, markdown_body)`` section.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

from agent.vision.model_card import ModelCard, file_sha256

__all__ = [
    "ArrayCalibrationReader",
    "export_onnx",
    "file_sha256",
    "latency_ms",
    "onnx_opset",
    "quantize_int8",
    "run_batched",
    "session",
    "write_card",
    "write_card_markdown",
]

_CALIBRATE_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


def export_onnx(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    input_name: str = "input",
    output_names: Sequence[str] = ("output",),
    dynamic_batch: bool = True,
    opset: int = 17,
) -> Path:
    """Export with the TorchScript exporter: one file, weights inline, stable op set."""
    model = model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic_axes: dict[str, dict[int, str]] | None = None
    if dynamic_batch:
        dynamic_axes = {input_name: {0: "batch"}}
        dynamic_axes.update({name: {0: "batch"} for name in output_names})
    with torch.no_grad():
        torch.onnx.export(
            model,
            (example.contiguous(),),
            str(path),
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))
    return path


class ArrayCalibrationReader(CalibrationDataReader):  # type: ignore[misc]
    """Feeds pre-processed float32 batches to the calibrator, once."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]) -> None:
        self._input_name = input_name
        self._iter = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        if batch is None:
            return None
        return {self._input_name: np.ascontiguousarray(batch, dtype=np.float32)}


def quantize_int8(
    fp32_path: Path,
    int8_path: Path,
    calibration: CalibrationDataReader,
    *,
    per_channel: bool = True,
    calibrate_method: str = "minmax",
    exclude_nodes: Sequence[str] = (),
    preprocess: bool = True,
) -> Path:
    """Static QDQ INT8: signed symmetric per-channel weights, unsigned activations."""
    if calibrate_method not in _CALIBRATE_METHODS:
        raise ValueError(f"calibrate_method must be one of {sorted(_CALIBRATE_METHODS)}")
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        source = fp32_path
        if preprocess:
            source = Path(tmp) / "preprocessed.onnx"
            quant_pre_process(str(fp32_path), str(source), skip_symbolic_shape=True)
        quantize_static(
            str(source),
            str(int8_path),
            calibration,
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=_CALIBRATE_METHODS[calibrate_method],
            nodes_to_exclude=list(exclude_nodes),
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )
    onnx.checker.check_model(str(int8_path))
    return int8_path


def session(path: Path, threads: int = 2) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_batched(sess: ort.InferenceSession, inputs: np.ndarray, batch: int = 64) -> np.ndarray:
    name = sess.get_inputs()[0].name
    outs = [
        sess.run(None, {name: np.ascontiguousarray(inputs[i : i + batch], dtype=np.float32)})[0]
        for i in range(0, len(inputs), batch)
    ]
    return np.concatenate(outs, axis=0)


def latency_ms(
    path: Path, example: np.ndarray, threads: int = 1, repeats: int = 50, warmup: int = 5
) -> dict[str, float]:
    """Wall time of single inferences; the device runs one crop batch at a time."""
    sess = session(path, threads)
    feed = {sess.get_inputs()[0].name: np.ascontiguousarray(example, dtype=np.float32)}
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - start) * 1000.0)
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 3),
        "p90_ms": round(times[int(0.9 * (len(times) - 1))], 3),
        "threads": threads,
        "batch": int(example.shape[0]),
    }


def onnx_opset(path: Path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ValueError(f"{path}: no default-domain opset")


def write_card(
    card_path: Path,
    *,
    name: str,
    version: str,
    task: str,
    model_path: Path,
    labels: Sequence[str],
    input: dict[str, Any],
    training: dict[str, Any],
    metrics: dict[str, Any],
    thresholds: dict[str, float],
    **extra: Any,
) -> ModelCard:
    """Write a card that the agent will accept for ``model_path``, or raise."""
    data: dict[str, Any] = {
        "name": name,
        "version": version,
        "task": task,
        "file": str(model_path.resolve().relative_to(card_path.parent.resolve())),
        "sha256": file_sha256(model_path),
        "labels": list(labels),
        "input": input,
        "opset": onnx_opset(model_path),
        "training": training,
        "metrics": metrics,
        "thresholds": thresholds,
        **extra,
    }
    card = ModelCard.model_validate(data)
    card_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return card


def write_card_markdown(
    md_path: Path,
    card: ModelCard,
    *,
    summary: str,
    sections: Sequence[tuple[str, str]] = (),
) -> None:
    model_file = md_path.parent / card.file
    size_mb = model_file.stat().st_size / 1e6 if model_file.exists() else float("nan")
    lines = [
        f"# {card.name} {card.version} ({card.task})",
        "",
        summary.strip(),
        "",
        "| | |",
        "|---|---|",
        f"| file | `{card.file}` ({size_mb:.2f} MB) |",
        f"| sha256 | `{card.sha256}` |",
        f"| input | `{card.input.name}` {card.input.shape} {card.input.color}, "
        f"{card.input.pixel_size_um} um/px |",
        f"| labels | {', '.join(card.labels)} |",
        f"| opset | {card.opset} |",
    ]
    for key, value in sorted(card.thresholds.items()):
        lines.append(f"| threshold `{key}` | {value} |")
    lines.append("")
    for title, body in sections:
        lines += [f"## {title}", "", body.strip(), ""]
    md_path.write_text("\n".join(lines), encoding="utf-8")
