"""What the daemon calls: one object that counts, reports, stores and serves results.

Typical use::

    service = ReportService(config, model_cards)
    for report in service.recover_incomplete():      # after a crash: aborted reports
        publish(report)
    run = service.begin_sample("S-0001", accession="A123")
    for field, findings in scan():                     # FieldImage + list[FieldCell]
        run.add_field(field, findings)
        if run.wbc_counted >= run.target_wbc:
            break
    report = run.finish(timings)                       # or run.abort("reason")
    publish(report, service.fhir_bundle(report))

Reviewer commands: ``reclassify``, ``finalize``; queries: ``get_result``,
``latest_result``, ``get_cell_image``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.acquisition.field import FieldImage
from agent.config import AgentConfig
from agent.errors import AnalyzerError, InputError
from agent.report.builder import (
    SampleSummary,
    amend_report,
    build_aborted_report,
    build_report,
    make_provenance,
)
from agent.report.classes import REVIEW_LABELS, WBC_CLASSES
from agent.report.dedup import (
    CellMerger,
    FieldCell,
    FieldFindings,
    FieldGeometry,
    VisionFindingLike,
    as_field_cell,
)
from agent.report.fhir import to_fhir_bundle
from agent.report.model import AuditEntry, Report, Timings
from agent.report.pictures import (
    GalleryCell,
    MapCell,
    crop_cell,
    encode_png,
    gallery,
    read_image,
    scan_map,
)
from agent.report.store import CELLS_DIR, SampleStore, utc_now
from agent.vision.model_card import ModelCard
from drivers.camera.base import BgrImage

_log = logging.getLogger(__name__)

RESTART_REASON = "the analyzer stopped during the scan (power loss or software restart)"
SCAN_MAP_FILE = "scan-map.png"
GALLERY_PREFIX = "gallery-"


def _valid_reviewer(reviewer: object) -> str:
    if not isinstance(reviewer, str) or not reviewer.strip():
        raise InputError("a reviewer name is required")
    name = reviewer.strip()
    if len(name) > 128 or not name.isprintable():
        raise InputError("reviewer name must be at most 128 printable characters")
    return name


class SampleRun:
    """One sample being scanned: fields go in, a report comes out."""

    def __init__(
        self, service: ReportService, sample_id: str, accession: str | None, target_wbc: int
    ) -> None:
        self._service = service
        self.sample_id = sample_id
        self.accession = accession
        self.target_wbc = target_wbc
        counting = service.config.storage.counting
        self._merger = CellMerger(
            edge_margin_px=counting.edge_margin_px, same_cell_overlap=counting.same_cell_overlap
        )
        self._started_at = service.now()
        self._t0 = time.monotonic()
        self._identified = 0
        self._closed = False

    @property
    def started_at(self) -> datetime:
        return self._started_at

    @property
    def wbc_counted(self) -> int:
        """Identified white cells counted so far: compare with ``target_wbc`` to stop."""
        return self._identified

    @property
    def cells_counted(self) -> int:
        """Every unique whole cell kept so far, whatever its class."""
        return len(self._merger.cells)

    @property
    def fields(self) -> int:
        return len(self._merger.fields)

    def _check_open(self) -> None:
        if self._closed:
            raise AnalyzerError(f"sample {self.sample_id!r} is already closed")

    def add_field(
        self, field: FieldImage, cells: Sequence[FieldCell | VisionFindingLike]
    ) -> list[int]:
        """Merge one analysed field; keeps new cells and their crops. Returns new cell ids.

        ``cells`` may be ``FieldAnalyzer.analyze``'s findings as they come.
        """
        return self.add_findings(
            FieldFindings(FieldGeometry.of(field), [as_field_cell(c) for c in cells]),
            field.image,
        )

    @property
    def field_geometries(self) -> tuple[FieldGeometry, ...]:
        """The fields merged so far (e.g. for ``dedup.truth_in_fields`` in the simulator)."""
        return self._merger.fields

    def add_findings(self, findings: FieldFindings, image: BgrImage | None = None) -> list[int]:
        """Like ``add_field`` for callers holding geometry and image apart.

        A cell's crop is its ``FieldCell.crop`` when given, else cut from ``image``
        (the field's BGR image); a cell with neither is kept without a picture.
        """
        self._check_open()
        store = self._service.store
        margin = self._service.config.storage.counting.crop_margin
        accepted = self._merger.add_field(findings)
        crops: list[bytes | None] = []
        for cell in accepted:
            crop = cell.finding.crop
            if crop is None and image is not None:
                crop = crop_cell(image, cell.finding.box_px, margin)
            crops.append(encode_png(crop) if crop is not None else None)
        store.add_fields(self.sample_id, [findings.field])
        ids = store.add_cells(self.sample_id, accepted, crops)
        self._identified += sum(1 for c in accepted if c.finding.label in WBC_CLASSES)
        return ids

    def finish(
        self,
        timings: Timings | None = None,
        hardware_faults: Sequence[str] = (),
        truth: Mapping[str, int] | None = None,
    ) -> Report:
        """Close the sample and issue its preliminary report (stored, pictures written).

        ``timings`` default to the elapsed time as total; ``truth`` is the simulator's
        ground truth (see ``dedup.truth_in_fields``).
        """
        self._check_open()
        service = self._service
        store = service.store
        result = self._merger.result()
        finished_at = service.now()
        timings = timings or Timings(
            total_s=round(time.monotonic() - self._t0, 3),
            acquisition_s=0.0,
            analysis_s=0.0,
            waiting_s=0.0,
        )
        summary = SampleSummary(
            sample_id=self.sample_id,
            accession=self.accession,
            target_wbc=self.target_wbc,
            fields=len(self._merger.fields),
            fields_out_of_focus=sum(1 for f in self._merger.fields if not f.focus_ok),
            edge_cells_skipped=result.edge_cells_skipped,
            duplicates_merged=result.duplicates_merged,
            timings=timings,
            hardware_faults=tuple(hardware_faults),
            truth=truth,
        )
        labels = [c.effective_label for c in store.cells(self.sample_id)]
        provenance = make_provenance(
            service.config, service.models, self._started_at, finished_at, finished_at
        )
        report = store.finish_sample(
            self.sample_id,
            finished_at,
            lambda seq: build_report(
                summary, labels, provenance, service.config.storage.flags, seq
            ),
        )
        self._closed = True
        service.after_report(self.sample_id)
        return report

    def abort(
        self,
        reason: str,
        timings: Timings | None = None,
        hardware_faults: Sequence[str] = (),
    ) -> Report:
        """Close the sample without a result; the aborted report says why."""
        self._check_open()
        self._closed = True
        return self._service.abort_sample(
            self.sample_id,
            reason,
            timings=timings,
            hardware_faults=hardware_faults,
            fields=len(self._merger.fields),
            fields_out_of_focus=sum(1 for f in self._merger.fields if not f.focus_ok),
            cells_seen=self._identified,
            started_at=self._started_at,
        )


class ReportService:
    """Counting, reports, the sample store and the reviewer's pictures, for the daemon."""

    def __init__(
        self,
        config: AgentConfig,
        models: Sequence[ModelCard] = (),
        store: SampleStore | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.config = config
        self.models = tuple(models)
        self.store = store or SampleStore(config.storage.state_dir, config.device_id)
        self.now = clock

    def close(self) -> None:
        self.store.close()

    # -- the scan ----------------------------------------------------------------------

    def begin_sample(
        self, sample_id: str, accession: str | None = None, target_wbc: int | None = None
    ) -> SampleRun:
        """Record the sample as running (before the scan starts) and return its run."""
        target = target_wbc if target_wbc is not None else self.config.acquisition.target_wbc
        run = SampleRun(self, sample_id, accession, target)
        self.store.begin_sample(sample_id, accession, target, run.started_at)
        _log.info("sample %s started (target %d white cells)", sample_id, target)
        return run

    def abort_sample(
        self,
        sample_id: str,
        reason: str,
        *,
        timings: Timings | None = None,
        hardware_faults: Sequence[str] = (),
        fields: int = 0,
        fields_out_of_focus: int = 0,
        cells_seen: int = 0,
        started_at: datetime | None = None,
        finished_at_known: bool = True,
    ) -> Report:
        """Store and return the aborted report of a running sample."""
        record = self.store.sample(sample_id)
        now = self.now()
        provenance = make_provenance(
            self.config,
            self.models,
            started_at or record.started_at,
            now if finished_at_known else None,
            now,
        )
        report = self.store.abort_sample(
            sample_id,
            reason,
            now,
            lambda seq: build_aborted_report(
                sample_id,
                record.accession,
                reason,
                provenance,
                seq,
                target_wbc=record.target_wbc,
                fields=fields,
                fields_out_of_focus=fields_out_of_focus,
                cells_seen=cells_seen,
                timings=timings,
                hardware_faults=hardware_faults,
            ),
        )
        _log.warning("sample %s aborted: %s", sample_id, reason)
        self.after_report(sample_id)
        return report

    def recover_incomplete(self, reason: str = RESTART_REASON) -> list[Report]:
        """Aborted reports for the samples a previous daemon left running."""
        reports = []
        for record in self.store.incomplete_samples():
            fields = self.store.fields(record.sample_id)
            cells = self.store.cells(record.sample_id)
            reports.append(
                self.abort_sample(
                    record.sample_id,
                    reason,
                    fields=len(fields),
                    fields_out_of_focus=sum(1 for f in fields if not f.focus_ok),
                    cells_seen=sum(1 for c in cells if c.effective_label in WBC_CLASSES),
                    finished_at_known=False,
                )
            )
        return reports

    # -- review ------------------------------------------------------------------------

    def reclassify(self, sample_id: str, cell_id: int, label: str, reviewer: str) -> Report:
        """Relabel one cell; issues an amended report (the previous one is kept)."""
        name = _valid_reviewer(reviewer)
        if label not in REVIEW_LABELS:
            raise InputError(
                f"unknown label {label!r}; expected one of: {', '.join(REVIEW_LABELS)}"
            )
        if isinstance(cell_id, bool) or not isinstance(cell_id, int):
            raise InputError(f"cell id must be an integer, got {cell_id!r}")
        now = self.now()

        def build(previous: Report, seq: int, result_id: str, trail: list[AuditEntry]) -> Report:
            labels = [c.effective_label for c in self.store.cells(sample_id)]
            return amend_report(
                previous,
                labels,
                self.config.storage.flags,
                seq,
                "amended",
                trail,
                now,
                result_id,
            )

        report = self.store.review(sample_id, name, now, "reclassify", build, (cell_id, label))
        _log.info("sample %s cell %d relabelled %s by %s", sample_id, cell_id, label, name)
        self.write_pictures(sample_id)
        return report

    def finalize(self, sample_id: str, reviewer: str) -> Report:
        """A reviewer signs the result off: issues it again with status ``final``."""
        name = _valid_reviewer(reviewer)
        now = self.now()

        def build(previous: Report, seq: int, result_id: str, trail: list[AuditEntry]) -> Report:
            if previous.status == "final":
                raise InputError(f"the result of sample {sample_id!r} is already final")
            return previous.model_copy(
                update={
                    "result_id": result_id,
                    "sequence": seq,
                    "status": "final",
                    "supersedes": previous.result_id,
                    "replayed": False,
                    "audit": trail,
                    "provenance": previous.provenance.model_copy(update={"issued_at": now}),
                }
            )

        report = self.store.review(sample_id, name, now, "finalize", build)
        _log.info("sample %s finalised by %s", sample_id, name)
        return report

    # -- queries -----------------------------------------------------------------------

    def get_result(self, result_id: str) -> Report:
        return self.store.get_report(result_id)

    def latest_result(self, sample_id: str) -> Report:
        return self.store.latest_report(sample_id)

    def get_cell_image(self, sample_id: str, cell_id: int) -> bytes:
        return self.store.cell_image(sample_id, cell_id)

    def fhir_bundle(self, report: Report) -> dict[str, Any]:
        return to_fhir_bundle(report, self.config.storage.fhir)

    # -- housekeeping ------------------------------------------------------------------

    def after_report(self, sample_id: str) -> None:
        """Pictures, then the disk budget; neither may cost the result, so errors are logged."""
        try:
            self.write_pictures(sample_id)
        except (AnalyzerError, OSError) as e:
            _log.error("could not draw the pictures of sample %s: %s", sample_id, e)
        try:
            self.store.prune(self.config.storage.disk_budget_mb * 1024 * 1024)
        except (AnalyzerError, OSError) as e:
            _log.error("could not prune old samples: %s", e)

    def write_pictures(self, sample_id: str) -> list[Path]:
        """(Re)draw the class galleries and the scan map in the sample folder."""
        record = self.store.sample(sample_id)
        if record.pruned:
            return []
        cells = self.store.cells(sample_id)
        fields = self.store.fields(sample_id)
        folder = self.store.sample_dir(sample_id)
        written: list[Path] = []
        by_label: dict[str, list[Any]] = {}
        for c in cells:
            by_label.setdefault(c.effective_label, []).append(c)
        limit = self.config.storage.gallery_max_cells
        for label, members in by_label.items():
            members.sort(key=lambda c: (c.confidence, c.cell_id))
            tiles: list[GalleryCell] = []
            for c in members:
                if len(tiles) >= limit:
                    break
                if not c.has_crop:
                    continue
                crop = read_image(folder / CELLS_DIR / f"{c.cell_id}.png")
                if crop is None:
                    continue
                tiles.append(
                    GalleryCell(
                        c.cell_id, c.confidence, crop, reviewed=c.reviewer_label is not None
                    )
                )
            if tiles:
                picture = gallery(label, tiles, total=len(members))
                written.append(
                    self.store.write_file(
                        sample_id, f"{GALLERY_PREFIX}{label}.png", encode_png(picture)
                    )
                )
        for name in self.store.files(sample_id):
            label = name.removeprefix(GALLERY_PREFIX).removesuffix(".png")
            if name.startswith(GALLERY_PREFIX) and label not in by_label:
                self.store.delete_file(sample_id, name)
        if fields:
            picture = scan_map(
                fields,
                [MapCell(c.x_um, c.y_um, c.effective_label) for c in cells],
                f"Sample {sample_id}: {len(fields)} fields, {len(cells)} cells",
            )
            written.append(self.store.write_file(sample_id, SCAN_MAP_FILE, encode_png(picture)))
        return written
