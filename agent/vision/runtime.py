"""onnxruntime sessions for shipped models, created only from verified files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from agent.errors import ModelLoadError
from agent.vision.model_card import CARD_SUFFIX, ModelCard, load_card, verified_model_path


@dataclass(frozen=True)
class LoadedModel:
    """A verified model card with its ready inference session."""

    card: ModelCard
    path: Path
    session: ort.InferenceSession


def session_options(threads: int) -> ort.SessionOptions:
    """Options for a CPU session; ``threads`` 0 means every core."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads if threads > 0 else (os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def load_model(models_dir: Path, name: str, threads: int) -> LoadedModel:
    """Load ``<models_dir>/<name>.card.json`` and the model it names, checking its hash."""
    card_path = models_dir / f"{name}{CARD_SUFFIX}"
    card = load_card(card_path)
    path = verified_model_path(card_path, card)
    try:
        session = ort.InferenceSession(
            str(path), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime raises its own untyped errors for corrupt files
        raise ModelLoadError(f"{path}: onnxruntime cannot load the model: {e}") from e
    return LoadedModel(card=card, path=path, session=session)
