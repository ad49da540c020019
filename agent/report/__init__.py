"""The differential report: counting, statistics, storage of cells and samples, FHIR."""
