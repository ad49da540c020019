"""The shipped white-cell classifier: integrity checks and real cells through the runtime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.errors import InputError, ModelLoadError
from agent.vision.classifier import UNIDENTIFIED, CellClassifier
from agent.vision.model_card import file_sha256, fp32_twin_path, load_card, shipped_models_dir

CELLS = Path(__file__).parent / "fixtures" / "cells"
CLASSES = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "ig",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
)


def fixture_cells() -> list[tuple[str, Path]]:
    return [(p.parent.name, p) for p in sorted(CELLS.glob("*/*.jpg"))]


def read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return image


@pytest.fixture(scope="module")
def classifier() -> CellClassifier:
    return CellClassifier.load(threads=1)


@pytest.fixture
def models_copy(tmp_path: Path) -> Path:
    """A private copy of the shipped classifier files, free to damage."""
    src = shipped_models_dir()
    for name in ("classifier.card.json", "classifier.int8.onnx"):
        shutil.copy(src / name, tmp_path / name)
    return tmp_path


def edit_card(models_dir: Path, **changes: object) -> None:
    path = models_dir / "classifier.card.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_shipped_model_matches_its_card(classifier: CellClassifier) -> None:
    models = shipped_models_dir()
    card = load_card(models / "classifier.card.json")
    assert card.task == "classification"
    assert file_sha256(models / card.file) == card.sha256
    assert classifier.labels == CLASSES
    assert classifier.crop_px == card.input.shape[-1]
    assert card.input.pixel_size_um == pytest.approx(0.2)
    assert 0.0 < classifier.threshold < 1.0
    assert classifier.temperature > 0
    assert (models / card.file).stat().st_size < 5_000_000


def test_corrupted_model_file_is_refused(models_copy: Path) -> None:
    model = models_copy / "classifier.int8.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"sha256 \w+ does not match its model card"):
        CellClassifier.load(models_copy)


def test_wrong_sha_on_the_card_is_refused(models_copy: Path) -> None:
    edit_card(models_copy, sha256="0" * 64)
    with pytest.raises(ModelLoadError, match="does not match its model card"):
        CellClassifier.load(models_copy)


def test_fp32_twin_is_optional_but_must_match_its_card(models_copy: Path) -> None:
    """The twin is a training output (not committed): absent is fine, different is not."""
    card = load_card(models_copy / "classifier.card.json")
    assert fp32_twin_path(models_copy, card) is None
    twin = models_copy / str((card.model_extra or {})["fp32_file"])
    twin.write_bytes(b"not the model the card describes")
    with pytest.raises(ModelLoadError, match="fp32_sha256"):
        fp32_twin_path(models_copy, card)
    edit_card(models_copy, fp32_sha256=file_sha256(twin))
    assert fp32_twin_path(models_copy, load_card(models_copy / "classifier.card.json")) == twin


def test_model_that_onnxruntime_cannot_parse_is_refused(models_copy: Path) -> None:
    model = models_copy / "classifier.int8.onnx"
    model.write_bytes(b"not an onnx model")
    edit_card(models_copy, sha256=file_sha256(model))
    with pytest.raises(ModelLoadError, match="onnxruntime cannot load"):
        CellClassifier.load(models_copy)


def test_card_without_the_input_recipe_is_refused(models_copy: Path) -> None:
    card = json.loads((models_copy / "classifier.card.json").read_text())
    del card["input"]["normalization"]["stain"]
    (models_copy / "classifier.card.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="input section is unusable"):
        CellClassifier.load(models_copy)


def test_missing_card_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="model card not found"):
        CellClassifier.load(tmp_path)


def test_fixture_cells_are_classified_correctly(classifier: CellClassifier) -> None:
    """24 cells picked by file-name hash (not by any model): a realistic accuracy floor."""
    cells = fixture_cells()
    assert len(cells) == 3 * len(CLASSES)
    assert {cls for cls, _ in cells} == set(CLASSES)
    calls = classifier.classify([read(p) for _, p in cells])
    right = [c.top_label == cls for (cls, _), c in zip(cells, calls, strict=True)]
    wrong = [
        (str(p), c.top_label)
        for (cls, p), c in zip(cells, calls, strict=True)
        if c.top_label != cls
    ]
    assert sum(right) >= 22, wrong
    for name in CLASSES:
        assert sum(r for (cls, _), r in zip(cells, right, strict=True) if cls == name) >= 2, wrong
    for call in calls:
        assert set(call.probabilities) == set(CLASSES)
        assert sum(call.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        assert call.confidence == pytest.approx(max(call.probabilities.values()))
        assert call.label in (call.top_label, UNIDENTIFIED)


def test_pixel_size_is_honoured(classifier: CellClassifier) -> None:
    """A cell photographed at twice the resolution is the same cell."""
    for _, path in fixture_cells():
        if path.parent.name != "neutrophil":
            continue
        image = read(path)
        big = cv2.resize(image, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC)
        (at_ref,) = classifier.classify([image], 0.2)
        (scaled,) = classifier.classify([big], 0.1)
        assert scaled.top_label == at_ref.top_label
        assert scaled.confidence == pytest.approx(at_ref.confidence, abs=0.1)
        (wrong_scale,) = classifier.classify([big], 0.2)  # told the wrong scale: a giant cell
        top = at_ref.top_label
        assert wrong_scale.probabilities[top] < scaled.probabilities[top]


def test_cells_in_a_field_are_classified_where_they_lie(classifier: CellClassifier) -> None:
    cells = fixture_cells()[::2]
    field = np.empty((400, 200 * len(cells), 3), np.uint8)
    field[:] = read(cells[0][1])[0, 0]
    centres = []
    for k, (_, path) in enumerate(cells):
        image = read(path)
        h, w = image.shape[:2]
        x0, y0 = 200 * k + 10, 100
        field[y0 : y0 + h, x0 : x0 + w] = image
        centres.append((x0 + w / 2.0, y0 + h / 2.0))
    calls = classifier.classify_at(field, centres, 0.2)
    alone = classifier.classify([read(p) for _, p in cells])
    assert [c.top_label for c in calls] == [c.top_label for c in alone]
    for in_field, single in zip(calls, alone, strict=True):
        assert in_field.confidence == pytest.approx(single.confidence, abs=0.05)
    assert sum(c.top_label == cls for c, (cls, _) in zip(calls, cells, strict=True)) >= 10
    # A cell cut by the field's edge still gets an answer (padded, not an error).
    (edge,) = classifier.classify_at(field, [(1.0, 1.0)], 0.2)
    assert edge.top_label in CLASSES
    assert classifier.classify_at(field, [], 0.2) == []


def test_test_time_augmentation_follows_the_card(models_copy: Path) -> None:
    """``inference.tta`` dihedral8 averages the 8 rotations/flips; unknown names refused."""
    images = [read(p) for _, p in fixture_cells()[:6]]
    card = json.loads((models_copy / "classifier.card.json").read_text())
    for tta in ("none", "dihedral8"):
        card["inference"] = {"tta": tta}
        (models_copy / "classifier.card.json").write_text(json.dumps(card))
        clf = CellClassifier.load(models_copy, threads=1)
        assert clf.tta == tta
        crops = [c.copy() for c in clf_crops(clf, images)]
        logits = clf.logits(crops)
        rotated = clf.logits([np.ascontiguousarray(np.rot90(c)) for c in crops])
        flipped = clf.logits([np.ascontiguousarray(c[:, ::-1]) for c in crops])
        if tta == "dihedral8":
            # The mean over the 8 views is invariant to any of them (up to the stain
            # statistics, which sample every 2nd pixel and so see a rotated crop anew).
            np.testing.assert_allclose(rotated, logits, atol=0.05)
            np.testing.assert_allclose(flipped, logits, atol=0.05)
        else:
            assert not np.allclose(rotated, logits, atol=1e-3)
    card["inference"] = {"tta": "mirror-ish"}
    (models_copy / "classifier.card.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match=r"inference\.tta"):
        CellClassifier.load(models_copy)


def clf_crops(clf: CellClassifier, images: list[np.ndarray]) -> list[np.ndarray]:
    from agent.vision.preprocess import centred_cell

    return [centred_cell(im, 0.2, clf.pixel_size_um, clf.crop_px) for im in images]


def test_threshold_from_the_card_makes_cells_unidentified(models_copy: Path) -> None:
    card = json.loads((models_copy / "classifier.card.json").read_text())
    card["thresholds"]["unidentified"] = 0.999999
    (models_copy / "classifier.card.json").write_text(json.dumps(card))
    strict = CellClassifier.load(models_copy, threads=1)
    calls = strict.classify([read(p) for _, p in fixture_cells()])
    assert any(c.label == UNIDENTIFIED for c in calls)
    for c in calls:
        assert (c.label == UNIDENTIFIED) == (c.confidence < 0.999999)


def test_bad_images_raise_input_errors(classifier: CellClassifier) -> None:
    with pytest.raises(InputError):
        classifier.classify([np.zeros((64, 64), np.uint8)])
    with pytest.raises(InputError):
        classifier.classify([read(fixture_cells()[0][1])], pixel_size_um=-1.0)
