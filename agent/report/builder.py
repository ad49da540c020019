"""Turning counted cells into a report: counts, percentages, intervals, flags, provenance.

Pure functions of their arguments (the caller supplies the clock, the sequence
number and the result id), so a report can be rebuilt exactly, e.g. after a
reviewer relabels a cell.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from agent import __version__
from agent.config import AgentConfig, config_hash
from agent.report.classes import (
    ARTEFACT,
    ERYTHROBLAST,
    PLATELET,
    UNIDENTIFIED,
    WBC_CLASSES,
    WbcClass,
)
from agent.report.config import FlagConfig
from agent.report.flags import (
    ABSOLUTE_COUNTS_NOTE,
    FlagInputs,
    aborted_flag,
    evaluate_flags,
    hardware_fault_flag,
)
from agent.report.model import (
    AuditEntry,
    ClassResult,
    ModelInfo,
    Provenance,
    Report,
    ReportStatus,
    Timings,
)
from agent.report.statistics import PERCENT_DECIMALS, rounded_percentages, wilson_percent
from agent.vision.model_card import ModelCard

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tally:
    """How many cells of each kind a sample has."""

    wbc: dict[WbcClass, int]
    unidentified: int = 0
    nrbc: int = 0
    platelet_clumps: int = 0
    artefacts: int = 0

    @property
    def wbc_counted(self) -> int:
        return sum(self.wbc.values())


def tally(labels: Iterable[str]) -> Tally:
    """Count cell labels; a label the report does not know is counted as unidentified."""
    wbc: dict[WbcClass, int] = dict.fromkeys(WBC_CLASSES, 0)
    other = {UNIDENTIFIED: 0, ERYTHROBLAST: 0, PLATELET: 0, ARTEFACT: 0}
    for label in labels:
        if label in wbc:
            wbc[label] += 1
        elif label in other:
            other[label] += 1
        else:
            _log.warning("unknown cell label %r counted as unidentified", label)
            other[UNIDENTIFIED] += 1
    return Tally(
        wbc=wbc,
        unidentified=other[UNIDENTIFIED],
        nrbc=other[ERYTHROBLAST],
        platelet_clumps=other[PLATELET],
        artefacts=other[ARTEFACT],
    )


@dataclass(frozen=True)
class SampleSummary:
    """What is known of a scanned sample besides its cells' labels."""

    sample_id: str
    accession: str | None
    target_wbc: int
    fields: int
    fields_out_of_focus: int
    edge_cells_skipped: int
    duplicates_merged: int
    timings: Timings
    hardware_faults: tuple[str, ...] = ()
    truth: Mapping[str, int] | None = field(default=None)


def model_infos(cards: Sequence[ModelCard]) -> list[ModelInfo]:
    return [ModelInfo(name=c.name, version=c.version, task=c.task, sha256=c.sha256) for c in cards]


def make_provenance(
    config: AgentConfig,
    models: Sequence[ModelCard],
    started_at: datetime,
    finished_at: datetime | None,
    issued_at: datetime,
) -> Provenance:
    return Provenance(
        software_version=__version__,
        device_id=config.device_id,
        config_hash=config_hash(config),
        models=model_infos(models),
        started_at=started_at,
        finished_at=finished_at,
        issued_at=issued_at,
    )


def new_result_id() -> str:
    return str(uuid.uuid4())


def _differential(counts: Tally) -> dict[WbcClass, ClassResult]:
    n = counts.wbc_counted
    if n == 0:
        return {c: ClassResult(count=0, percent=None, ci95=None) for c in WBC_CLASSES}
    percents = rounded_percentages(counts.wbc)
    return {
        c: ClassResult(
            count=counts.wbc[c], percent=percents[c], ci95=wilson_percent(counts.wbc[c], n)
        )
        for c in WBC_CLASSES
    }


def build_report(
    summary: SampleSummary,
    labels: Iterable[str],
    provenance: Provenance,
    flag_config: FlagConfig,
    sequence: int,
    *,
    status: ReportStatus = "preliminary",
    result_id: str | None = None,
    supersedes: str | None = None,
    audit: Sequence[AuditEntry] = (),
) -> Report:
    """The report of a scanned sample from the labels of its unique cells."""
    counts = tally(labels)
    n = counts.wbc_counted
    events = n + counts.unidentified
    differential = _differential(counts)
    nrbc_per_100 = round(100.0 * counts.nrbc / n, PERCENT_DECIMALS) if n else None
    flags = evaluate_flags(
        FlagInputs(
            wbc_counted=n,
            target_wbc=summary.target_wbc,
            unidentified=counts.unidentified,
            ig_percent=differential["ig"].percent,
            nrbc_per_100_wbc=nrbc_per_100,
            nrbc=counts.nrbc,
            platelet_clumps=counts.platelet_clumps,
            fields=summary.fields,
            fields_out_of_focus=summary.fields_out_of_focus,
            hardware_faults=summary.hardware_faults,
        ),
        flag_config,
    )
    notes = [ABSOLUTE_COUNTS_NOTE]
    if summary.edge_cells_skipped:
        notes.append(
            f"{summary.edge_cells_skipped} cells were only seen cut by a field border and "
            "were not counted."
        )
    return Report(
        result_id=result_id or new_result_id(),
        sample_id=summary.sample_id,
        accession=summary.accession,
        sequence=sequence,
        status=status,
        supersedes=supersedes,
        differential=differential,
        wbc_counted=n,
        unidentified=counts.unidentified,
        unidentified_percent_of_events=(
            round(100.0 * counts.unidentified / events, PERCENT_DECIMALS) if events else None
        ),
        nrbc=counts.nrbc,
        nrbc_per_100_wbc=nrbc_per_100,
        platelet_clumps=counts.platelet_clumps,
        artefacts=counts.artefacts,
        target_wbc=summary.target_wbc,
        fields=summary.fields,
        fields_out_of_focus=summary.fields_out_of_focus,
        edge_cells_skipped=summary.edge_cells_skipped,
        duplicates_merged=summary.duplicates_merged,
        hardware_faults=list(summary.hardware_faults),
        flags=flags,
        notes=notes,
        timings=summary.timings,
        provenance=provenance,
        audit=list(audit),
        truth=dict(summary.truth) if summary.truth is not None else None,
    )


def summary_of(report: Report) -> SampleSummary:
    """The sample facts of an existing report, to rebuild it with changed labels."""
    return SampleSummary(
        sample_id=report.sample_id,
        accession=report.accession,
        target_wbc=report.target_wbc,
        fields=report.fields,
        fields_out_of_focus=report.fields_out_of_focus,
        edge_cells_skipped=report.edge_cells_skipped,
        duplicates_merged=report.duplicates_merged,
        timings=report.timings,
        hardware_faults=tuple(report.hardware_faults),
        truth=report.truth,
    )


def amend_report(
    previous: Report,
    labels: Iterable[str],
    flag_config: FlagConfig,
    sequence: int,
    status: ReportStatus,
    audit: Sequence[AuditEntry],
    issued_at: datetime,
    result_id: str,
) -> Report:
    """A new version of ``previous`` after review: counts from the reviewed labels.

    The analysis provenance (software, models, config, scan times) stays that of the
    scan that produced the cells; only the issue time changes. Who changed what is
    in ``audit``.
    """
    return build_report(
        summary_of(previous),
        labels,
        previous.provenance.model_copy(update={"issued_at": issued_at}),
        flag_config,
        sequence,
        status=status,
        result_id=result_id,
        supersedes=previous.result_id,
        audit=audit,
    )


def build_aborted_report(
    sample_id: str,
    accession: str | None,
    reason: str,
    provenance: Provenance,
    sequence: int,
    *,
    target_wbc: int = 0,
    fields: int = 0,
    fields_out_of_focus: int = 0,
    cells_seen: int = 0,
    timings: Timings | None = None,
    hardware_faults: Sequence[str] = (),
    result_id: str | None = None,
) -> Report:
    """The report of a sample that could not be completed: no differential, a reason.

    The partial count is deliberately not reported as a differential: a clinician
    must never mistake an interrupted count for a result. ``wbc_counted`` tells how
    far the scan got.
    """
    return Report(
        result_id=result_id or new_result_id(),
        sample_id=sample_id,
        accession=accession,
        sequence=sequence,
        status="aborted",
        reason=reason,
        differential={},
        wbc_counted=cells_seen,
        unidentified=0,
        unidentified_percent_of_events=None,
        nrbc=0,
        nrbc_per_100_wbc=None,
        platelet_clumps=0,
        artefacts=0,
        target_wbc=target_wbc,
        fields=fields,
        fields_out_of_focus=fields_out_of_focus,
        edge_cells_skipped=0,
        duplicates_merged=0,
        hardware_faults=list(hardware_faults),
        flags=[*(hardware_fault_flag(f) for f in hardware_faults), aborted_flag(reason)],
        notes=[],
        timings=timings or Timings(total_s=0.0, acquisition_s=0.0, analysis_s=0.0, waiting_s=0.0),
        provenance=provenance,
    )
