"""The report as a FHIR R4 Bundle: a DiagnosticReport, one Observation per value, a Device.

Bundle type: ``transaction``. A transaction can be POSTed unchanged to a FHIR
server's base URL and is applied atomically; each entry is a *conditional update*
keyed on a stable business identifier (device + sample, plus the LOINC code for an
Observation). That gives the two properties a result feed needs:

* redelivery is harmless: the transport guarantees at-least-once delivery and may
  replay a stored report; replaying the same bundle updates the same resources to
  the same content instead of creating duplicates;
* amendment is FHIR's own versioning: an amended or final report updates the same
  DiagnosticReport and Observations to a new version with status ``amended`` or
  ``final``, so the clinic's record shows one result with a history, not several.

A ``collection`` bundle has neither (every receiver would have to invent the keys);
a receiver that is not a FHIR server can still read the entries' resources and
ignore the ``request`` parts. All references are internal ``urn:uuid:`` fullUrls,
derived deterministically from the result id, so the same report always gives the
same bundle.

The 95% confidence interval of each percentage is carried with the HL7 extension
``quantity-confidenceInterval`` on ``valueQuantity`` (sub-extensions ``confidence``
= 95 and ``interval`` = Range), which exists precisely for "the device is 95%
confident the value lies in this range", keeps the value itself plain for receivers
that ignore extensions, and needs no invented codes. An Observation.component was
rejected: components are separate measurements, and LOINC has no code for "lower
bound of the confidence interval" (the value would be an uncoded number). The interval
is also written in the Observation's note for humans.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from agent.report.classes import DISPLAY_NAMES, WBC_CLASSES
from agent.report.config import FhirConfig
from agent.report.model import Report, ReportStatus

BUNDLE_TYPE = "transaction"

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RFC3986 = "urn:ietf:rfc:3986"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CI_EXTENSION = "http://hl7.org/fhir/StructureDefinition/quantity-confidenceInterval"

# The panel. LOINC 57023-4 "Auto Differential panel - Blood" is the classic code for
# an automated differential but LOINC marks it DISCOURAGED (implementation guides
# such as CH LAB-Report replace it); 57021-8 "CBC W Auto Differential panel" would
# claim a full blood count this analyzer does not measure. So the report carries the
# ACTIVE 69738-3 "Differential panel, method unspecified - Blood" first and 57023-4
# as a second coding for receivers still mapped to it.
PANEL_CODINGS: tuple[tuple[str, str], ...] = (
    ("69738-3", "Differential panel, method unspecified - Blood"),
    ("57023-4", "Auto Differential panel - Blood"),
)

# One Observation per class, LOINC "<cells>/100 leukocytes in Blood by Automated count"
# (all ACTIVE; 770-8, 736-9, 5905-5, 713-8, 706-2 as in the US Core CBC examples). For
# immature granulocytes the automated-count code 71695-1 is used, matching the others'
# method; 38518-7 is the same property without a method.
PERCENT_CODES: dict[str, tuple[str, str]] = {
    "neutrophil": ("770-8", "Neutrophils/100 leukocytes in Blood by Automated count"),
    "lymphocyte": ("736-9", "Lymphocytes/100 leukocytes in Blood by Automated count"),
    "monocyte": ("5905-5", "Monocytes/100 leukocytes in Blood by Automated count"),
    "eosinophil": ("713-8", "Eosinophils/100 leukocytes in Blood by Automated count"),
    "basophil": ("706-2", "Basophils/100 leukocytes in Blood by Automated count"),
    "ig": ("71695-1", "Immature granulocytes/100 leukocytes in Blood by Automated count"),
}

# Nucleated red cells per 100 white cells, UCUM unit /100{WBCs}.
NRBC_CODE = (
    "58413-6",
    "Nucleated erythrocytes/100 leukocytes [Ratio] in Blood by Automated count",
)
NRBC_UNIT = "/100{WBCs}"
PERCENT_UNIT = "%"

METHOD_TEXT = "Automated digital morphology: stained-smear images classified by a neural network"

_STATUS: dict[ReportStatus, str] = {
    "preliminary": "preliminary",
    "final": "final",
    "amended": "amended",
    "aborted": "cancelled",
}

_FLAG_OBSERVATIONS = {"ig_present": "ig"}
"""Flags that mark one Observation's value as abnormal."""


def _system(base: str, name: str) -> str:
    return f"{base}:{name}" if base.startswith("urn:") else f"{base.rstrip('/')}/{name}"


def _urn(result_id: str, what: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'algocyte:{result_id}:{what}')}"


def _conditional(resource_type: str, system: str, value: str) -> dict[str, str]:
    return {
        "method": "PUT",
        "url": f"{resource_type}?identifier={quote(system, safe='')}|{quote(value, safe='')}",
    }


def _instant(report: Report, which: str) -> str:
    t = getattr(report.provenance, which)
    return str(t.isoformat().replace("+00:00", "Z"))


def _quantity(value: float, unit: str, ci: tuple[float, float] | None) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    if ci is not None:
        bound = {"unit": unit, "system": UCUM, "code": unit}
        q["extension"] = [
            {
                "url": CI_EXTENSION,
                "extension": [
                    {"url": "confidence", "valueDecimal": 95},
                    {
                        "url": "interval",
                        "valueRange": {
                            "low": {"value": ci[0], **bound},
                            "high": {"value": ci[1], **bound},
                        },
                    },
                ],
            }
        ]
    return q


def to_fhir_bundle(report: Report, fhir: FhirConfig | None = None) -> dict[str, Any]:
    """The report as a FHIR R4 transaction Bundle (a JSON-ready dict)."""
    cfg = fhir or FhirConfig()
    base = cfg.identifier_base
    device_id = report.provenance.device_id
    key = f"{device_id}:{report.sample_id}"
    status = _STATUS[report.status]
    issued = _instant(report, "issued_at")
    effective = _instant(report, "started_at")

    device_url = _urn(report.result_id, "device")
    specimen_url = _urn(report.result_id, "specimen")
    report_url = _urn(report.result_id, "report")
    entries: list[dict[str, Any]] = []

    device_system = _system(base, "device-id")
    prov = report.provenance
    versions: list[dict[str, Any]] = [
        {"type": {"text": "software"}, "value": f"{prov.software} {prov.software_version}"},
        {"type": {"text": "configuration sha256"}, "value": prov.config_hash},
    ]
    versions += [
        {"type": {"text": f"{m.task} model {m.name}"}, "value": f"{m.version} sha256:{m.sha256}"}
        for m in prov.models
    ]
    entries.append(
        {
            "fullUrl": device_url,
            "resource": {
                "resourceType": "Device",
                "identifier": [{"system": device_system, "value": device_id}],
                "status": "active",
                "manufacturer": "algocyte",
                "deviceName": [{"name": device_id, "type": "user-friendly-name"}],
                "type": {"text": "Automated digital-morphology white-cell differential analyzer"},
                "version": versions,
            },
            "request": _conditional("Device", device_system, device_id),
        }
    )

    sample_system = _system(base, "sample-id")
    specimen: dict[str, Any] = {
        "resourceType": "Specimen",
        "identifier": [{"system": sample_system, "value": report.sample_id}],
        "type": {"text": "Peripheral blood smear, stained"},
    }
    if report.accession:
        specimen["accessionIdentifier"] = _accession(report.accession, cfg)
    entries.append(
        {
            "fullUrl": specimen_url,
            "resource": specimen,
            "request": _conditional("Specimen", sample_system, report.sample_id),
        }
    )

    obs_system = _system(base, "observation-id")
    result_refs: list[dict[str, str]] = []
    flagged = {
        _FLAG_OBSERVATIONS[f.code]: f.message for f in report.flags if f.code in _FLAG_OBSERVATIONS
    }

    def observation(what: str, code: tuple[str, str], quantity: dict[str, Any], note: str) -> None:
        url = _urn(report.result_id, f"obs:{code[0]}")
        obs_key = f"{key}:{code[0]}"
        resource: dict[str, Any] = {
            "resourceType": "Observation",
            "identifier": [{"system": obs_system, "value": obs_key}],
            "status": status,
            "category": [
                {
                    "coding": [
                        {"system": OBS_CATEGORY, "code": "laboratory", "display": "Laboratory"}
                    ]
                }
            ],
            "code": {"coding": [{"system": LOINC, "code": code[0], "display": code[1]}]},
            "specimen": {"reference": specimen_url},
            "device": {"reference": device_url},
            "effectiveDateTime": effective,
            "issued": issued,
            "valueQuantity": quantity,
            "method": {"text": METHOD_TEXT},
            "note": [{"text": note}],
        }
        if what in flagged:
            resource["interpretation"] = [
                {
                    "coding": [{"system": INTERPRETATION, "code": "A", "display": "Abnormal"}],
                    "text": flagged[what],
                }
            ]
        entries.append(
            {
                "fullUrl": url,
                "resource": resource,
                "request": _conditional("Observation", obs_system, obs_key),
            }
        )
        result_refs.append({"reference": url, "display": DISPLAY_NAMES.get(what, what)})

    n = report.wbc_counted
    for c in WBC_CLASSES:
        r = report.differential.get(c)
        if r is None or r.percent is None:
            continue
        ci_text = f"; 95% CI {r.ci95[0]:.1f}-{r.ci95[1]:.1f} % (Wilson score)" if r.ci95 else ""
        observation(
            c,
            PERCENT_CODES[c],
            _quantity(r.percent, PERCENT_UNIT, r.ci95),
            f"{r.count} of {n} identified white cells{ci_text}.",
        )
    if report.status != "aborted" and report.nrbc_per_100_wbc is not None:
        observation(
            "erythroblast",
            NRBC_CODE,
            _quantity(report.nrbc_per_100_wbc, NRBC_UNIT, None),
            f"{report.nrbc} nucleated red cells seen while counting {n} white cells.",
        )

    identifiers: list[dict[str, Any]] = [
        {"use": "usual", "system": _system(base, "report-id"), "value": key},
        {"system": RFC3986, "value": f"urn:uuid:{report.result_id}"},
    ]
    if report.accession:
        identifiers.append(_accession(report.accession, cfg))
    diagnostic: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": identifiers,
        "status": status,
        "category": [{"coding": [{"system": V2_0074, "code": "HM", "display": "Hematology"}]}],
        "code": {
            "coding": [{"system": LOINC, "code": c, "display": d} for c, d in PANEL_CODINGS],
            "text": "White-cell differential (automated digital morphology)",
        },
        "effectiveDateTime": effective,
        "issued": issued,
        "specimen": [{"reference": specimen_url}],
        "conclusion": _conclusion(report),
    }
    reviewers = sorted({a.reviewer for a in report.audit})
    if reviewers:
        diagnostic["resultsInterpreter"] = [{"display": r} for r in reviewers]
    if result_refs:
        diagnostic["result"] = result_refs
    entries.insert(
        2,
        {
            "fullUrl": report_url,
            "resource": diagnostic,
            "request": _conditional("DiagnosticReport", _system(base, "report-id"), key),
        },
    )
    return {
        "resourceType": "Bundle",
        "identifier": {"system": RFC3986, "value": f"urn:uuid:{report.result_id}"},
        "type": BUNDLE_TYPE,
        "timestamp": issued,
        "entry": entries,
    }


def _accession(accession: str, cfg: FhirConfig) -> dict[str, Any]:
    ident: dict[str, Any] = {
        "type": {"coding": [{"system": V2_0203, "code": "ACSN", "display": "Accession ID"}]},
        "value": accession,
    }
    if cfg.accession_system:
        ident["system"] = cfg.accession_system
    return ident


def _conclusion(report: Report) -> str:
    """The report's counts and flags in words, for systems that show only the text."""
    if report.status == "aborted":
        return f"No result: the analysis was stopped ({report.reason})."
    parts = [
        f"{report.wbc_counted} white cells identified (target {report.target_wbc}); "
        "percentages are per 100 identified white cells.",
        f"Unidentified: {report.unidentified}"
        + (
            f" ({report.unidentified_percent_of_events:.1f}% of white-cell events)."
            if report.unidentified_percent_of_events is not None
            else "."
        ),
    ]
    parts += [f"{f.message}" for f in report.flags]
    return " ".join(parts)
