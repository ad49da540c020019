"""The FHIR R4 bundle: validated by the fhir.resources models, with the right codes and units."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from fhir.resources.R4B.bundle import Bundle

from agent.report.fhir import CI_EXTENSION, to_fhir_bundle
from agent.report.model import Report
from agent.report.service import ReportService
from tests.report_fixtures import Clock, differential_labels, make_config, model_cards, run_sample

COUNTS = {
    "neutrophil": 59,
    "lymphocyte": 26,
    "monocyte": 7,
    "eosinophil": 4,
    "basophil": 1,
    "ig": 3,
    "erythroblast": 2,
    "unidentified": 5,
}

EXPECTED_LOINC = {
    "770-8": "%",
    "736-9": "%",
    "5905-5": "%",
    "713-8": "%",
    "706-2": "%",
    "71695-1": "%",
    "58413-6": "/100{WBCs}",
}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ReportService]:
    extra = "  fhir:\n    accession_system: https://lab.example.org/accession\n"
    svc = ReportService(make_config(tmp_path, extra), model_cards(), clock=Clock())
    yield svc
    svc.close()


@pytest.fixture
def report(service: ReportService) -> Report:
    return run_sample(service, "S-1", differential_labels(COUNTS), accession="ACC-42")


# Required bindings of FHIR R4: fhir.resources checks structure (elements, types,
# cardinality, choice types) but not the codes of required value sets, so those are
# checked here.
REQUIRED_CODES = {
    "Bundle.type": {
        "document",
        "message",
        "transaction",
        "transaction-response",
        "batch",
        "batch-response",
        "history",
        "searchset",
        "collection",
    },
    "request.method": {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"},
    "DiagnosticReport.status": {
        "registered",
        "partial",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "appended",
        "cancelled",
        "entered-in-error",
        "unknown",
    },
    "Observation.status": {
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    },
    "Device.status": {"active", "inactive", "entered-in-error", "unknown"},
    "Device.deviceName.type": {
        "udi-label-name",
        "user-friendly-name",
        "patient-reported-name",
        "manufacturer-name",
        "model-name",
        "other",
    },
    "Identifier.use": {"usual", "official", "temp", "secondary", "old"},
}


def validate(bundle: dict[str, Any]) -> Bundle:
    """Structure check with the R4B models (R4B left these four resources as in R4),
    plus the required code bindings."""
    parsed = Bundle.model_validate(json.loads(json.dumps(bundle)))
    assert bundle["type"] in REQUIRED_CODES["Bundle.type"]
    for entry in bundle["entry"]:
        resource = entry["resource"]
        kind = resource["resourceType"]
        assert entry["request"]["method"] in REQUIRED_CODES["request.method"]
        if f"{kind}.status" in REQUIRED_CODES:
            assert resource["status"] in REQUIRED_CODES[f"{kind}.status"], resource["status"]
        for name in resource.get("deviceName", []):
            assert name["type"] in REQUIRED_CODES["Device.deviceName.type"]
        for ident in resource.get("identifier", []):
            assert ident.get("use", "usual") in REQUIRED_CODES["Identifier.use"]
    return parsed


def resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_bundle_validates_and_is_a_transaction(report: Report, service: ReportService) -> None:
    bundle = service.fhir_bundle(report)
    validate(bundle)
    assert bundle["type"] == "transaction"
    assert bundle["identifier"]["value"] == f"urn:uuid:{report.result_id}"
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds[:3] == ["Device", "Specimen", "DiagnosticReport"]
    assert kinds.count("Observation") == 7
    for entry in bundle["entry"]:
        assert entry["fullUrl"].startswith("urn:uuid:")
        request = entry["request"]
        assert request["method"] == "PUT"
        assert request["url"].startswith(entry["resource"]["resourceType"] + "?identifier=")
    # The same report always gives the same bundle (replays are identical).
    assert service.fhir_bundle(report) == bundle


def test_references_resolve_inside_the_bundle(report: Report) -> None:
    bundle = to_fhir_bundle(report)
    urls = {e["fullUrl"]: e["resource"]["resourceType"] for e in bundle["entry"]}
    (diagnostic,) = resources(bundle, "DiagnosticReport")
    assert [urls[r["reference"]] for r in diagnostic["result"]] == ["Observation"] * 7
    assert urls[diagnostic["specimen"][0]["reference"]] == "Specimen"
    for obs in resources(bundle, "Observation"):
        assert urls[obs["device"]["reference"]] == "Device"
        assert urls[obs["specimen"]["reference"]] == "Specimen"


def test_loinc_codes_ucum_units_and_values(report: Report) -> None:
    bundle = to_fhir_bundle(report)
    (diagnostic,) = resources(bundle, "DiagnosticReport")
    panel = [(c["system"], c["code"]) for c in diagnostic["code"]["coding"]]
    assert ("http://loinc.org", "57023-4") in panel and ("http://loinc.org", "69738-3") in panel
    assert diagnostic["status"] == "preliminary"
    seen: dict[str, dict[str, Any]] = {}
    for obs in resources(bundle, "Observation"):
        (coding,) = obs["code"]["coding"]
        assert coding["system"] == "http://loinc.org"
        seen[coding["code"]] = obs
        q = obs["valueQuantity"]
        assert q["system"] == "http://unitsofmeasure.org"
        assert q["code"] == q["unit"] == EXPECTED_LOINC[coding["code"]]
        assert obs["status"] == "preliminary"
        assert obs["category"][0]["coding"][0]["code"] == "laboratory"
    assert set(seen) == set(EXPECTED_LOINC)
    assert seen["770-8"]["valueQuantity"]["value"] == report.differential["neutrophil"].percent
    assert seen["71695-1"]["valueQuantity"]["value"] == report.differential["ig"].percent
    assert seen["58413-6"]["valueQuantity"]["value"] == report.nrbc_per_100_wbc == 2.0


def test_confidence_interval_extension(report: Report) -> None:
    bundle = to_fhir_bundle(report)
    neutrophils = next(
        o for o in resources(bundle, "Observation") if o["code"]["coding"][0]["code"] == "770-8"
    )
    (ext,) = neutrophils["valueQuantity"]["extension"]
    assert ext["url"] == CI_EXTENSION
    parts = {e["url"]: e for e in ext["extension"]}
    assert parts["confidence"]["valueDecimal"] == 95
    interval = parts["interval"]["valueRange"]
    low, high = report.differential["neutrophil"].ci95  # type: ignore[misc]
    assert (interval["low"]["value"], interval["high"]["value"]) == (low, high)
    assert interval["low"]["code"] == "%"
    assert f"{low:.1f}-{high:.1f}" in neutrophils["note"][0]["text"]


def test_identifiers_device_and_flags(report: Report) -> None:
    bundle = to_fhir_bundle(report, fhir=None)
    (diagnostic,) = resources(bundle, "DiagnosticReport")
    values = {i.get("system"): i["value"] for i in diagnostic["identifier"]}
    assert values["urn:algocyte:report-id"] == "test-01:S-1"
    assert values["urn:ietf:rfc:3986"] == f"urn:uuid:{report.result_id}"
    accession = next(i for i in diagnostic["identifier"] if "type" in i)
    assert accession["type"]["coding"][0]["code"] == "ACSN" and accession["value"] == "ACC-42"
    (specimen,) = resources(bundle, "Specimen")
    assert specimen["identifier"][0] == {"system": "urn:algocyte:sample-id", "value": "S-1"}
    assert specimen["accessionIdentifier"]["value"] == "ACC-42"
    (device,) = resources(bundle, "Device")
    assert device["identifier"][0]["value"] == "test-01"
    versions = [v["value"] for v in device["version"]]
    assert any(v.startswith("algocyte-agent ") for v in versions)
    assert any("sha256:" + "b" * 64 in v for v in versions)
    # IG >= 2% is flagged on its Observation and every flag is in the conclusion.
    ig = next(
        o for o in resources(bundle, "Observation") if o["code"]["coding"][0]["code"] == "71695-1"
    )
    assert ig["interpretation"][0]["coding"][0]["code"] == "A"
    for flag in report.flags:
        assert flag.message in diagnostic["conclusion"]
    # Conditional-update keys name the stable identifiers.
    report_entry = next(
        e for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"
    )
    assert unquote(report_entry["request"]["url"]) == (
        "DiagnosticReport?identifier=urn:algocyte:report-id|test-01:S-1"
    )


def test_configured_accession_system(report: Report, service: ReportService) -> None:
    bundle = service.fhir_bundle(report)
    (specimen,) = resources(bundle, "Specimen")
    assert specimen["accessionIdentifier"]["system"] == "https://lab.example.org/accession"


def test_status_follows_review(report: Report, service: ReportService) -> None:
    amended = service.reclassify("S-1", 1, "lymphocyte", "Dr. Ada")
    final = service.finalize("S-1", "Dr. Ada")
    for r, status in [(amended, "amended"), (final, "final")]:
        bundle = service.fhir_bundle(r)
        validate(bundle)
        (diagnostic,) = resources(bundle, "DiagnosticReport")
        assert diagnostic["status"] == status
        assert {o["status"] for o in resources(bundle, "Observation")} == {status}
        assert diagnostic["resultsInterpreter"] == [{"display": "Dr. Ada"}]
    # The amended report updates the same resources (same conditional keys).
    first_keys = [e["request"]["url"] for e in service.fhir_bundle(report)["entry"]]
    assert [e["request"]["url"] for e in service.fhir_bundle(final)["entry"]] == first_keys


def test_aborted_sample_is_a_cancelled_report_without_values(service: ReportService) -> None:
    aborted = service.begin_sample("S-2").abort("the slide holder was opened")
    bundle = service.fhir_bundle(aborted)
    validate(bundle)
    (diagnostic,) = resources(bundle, "DiagnosticReport")
    assert diagnostic["status"] == "cancelled"
    assert "slide holder was opened" in diagnostic["conclusion"]
    assert resources(bundle, "Observation") == []
    assert "result" not in diagnostic


def test_the_validator_catches_a_broken_bundle(report: Report) -> None:
    bundle = to_fhir_bundle(report)
    resources(bundle, "Observation")[0].pop("code")  # Observation.code is 1..1
    with pytest.raises(ValueError, match="code"):
        validate(bundle)
    bundle = to_fhir_bundle(report)
    resources(bundle, "Observation")[0]["valueString"] = "59"  # two value[x]
    with pytest.raises(ValueError):
        validate(bundle)
    bundle = to_fhir_bundle(report)
    resources(bundle, "DiagnosticReport")[0]["status"] = "done"
    with pytest.raises(AssertionError):
        validate(bundle)
