"""The labels a cell can carry, and which of them count as white cells.

One place so the counter, the report, the FHIR mapping and the pictures agree.
"""

from __future__ import annotations

from typing import Final, Literal

WbcClass = Literal["neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil", "ig"]

WBC_CLASSES: Final[tuple[WbcClass, ...]] = (
    "neutrophil",
    "lymphocyte",
    "monocyte",
    "eosinophil",
    "basophil",
    "ig",
)
"""The identified white cells: the denominator of every differential percentage."""

ERYTHROBLAST: Final = "erythroblast"
"""Nucleated red cell (NRBC): reported per 100 white cells, never counted among them."""

PLATELET: Final = "platelet"
"""A platelet (clump) the detector took for a white cell: not counted, noted as clumps."""

UNIDENTIFIED: Final = "unidentified"
"""A white-cell event the classifier could not name confidently: counted apart."""

ARTEFACT: Final = "artefact"
"""Set only by a reviewer: not a cell at all (debris, smudge, stain); excluded everywhere."""

CLASSIFIER_LABELS: Final[tuple[str, ...]] = (*WBC_CLASSES, ERYTHROBLAST, PLATELET, UNIDENTIFIED)
"""Every label the analyzer itself may give a cell."""

REVIEW_LABELS: Final[tuple[str, ...]] = (*CLASSIFIER_LABELS, ARTEFACT)
"""Every label a reviewer may give a cell."""

DISPLAY_NAMES: Final[dict[str, str]] = {
    "neutrophil": "Neutrophils",
    "lymphocyte": "Lymphocytes",
    "monocyte": "Monocytes",
    "eosinophil": "Eosinophils",
    "basophil": "Basophils",
    "ig": "Immature granulocytes",
    ERYTHROBLAST: "Nucleated red cells",
    PLATELET: "Platelet clumps",
    UNIDENTIFIED: "Unidentified",
    ARTEFACT: "Artefacts",
}

CLASS_COLOURS_BGR: Final[dict[str, tuple[int, int, int]]] = {
    "neutrophil": (180, 119, 31),
    "lymphocyte": (14, 127, 255),
    "monocyte": (44, 160, 44),
    "eosinophil": (40, 39, 214),
    "basophil": (189, 103, 148),
    "ig": (75, 86, 140),
    ERYTHROBLAST: (194, 119, 227),
    PLATELET: (34, 189, 188),
    UNIDENTIFIED: (127, 127, 127),
    ARTEFACT: (0, 0, 0),
}
"""Colours (OpenCV BGR, the matplotlib 'tab10' palette) used in the reviewer's pictures."""
