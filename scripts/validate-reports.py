#!/usr/bin/env python3
"""Validates a conformance --report-dir: report.json against conformance/report.schema.json,
junit.xml against conformance/junit.xsd, and that summary.md, report.json and junit.xml
agree on the counts. Needs the PyPI packages jsonschema and xmlschema.

usage: scripts/validate-reports.py REPORT_DIR [EXPECTED_GATE [EXPECTED_TRIALS]]
"""
import json
import pathlib
import sys
import xml.etree.ElementTree as ET

import jsonschema
import xmlschema

root = pathlib.Path(__file__).resolve().parent.parent
report_dir = pathlib.Path(sys.argv[1])
report = json.loads((report_dir / "report.json").read_text())
schema = json.loads((root / "conformance/report.schema.json").read_text())
jsonschema.Draft202012Validator.check_schema(schema)
jsonschema.Draft202012Validator(schema).validate(report)
xmlschema.XMLSchema(str(root / "conformance/junit.xsd")).validate(str(report_dir / "junit.xml"))

cases = report["cases"]
suite = ET.parse(report_dir / "junit.xml").getroot().find("testsuite")
assert int(suite.get("tests")) == len(cases), "junit tests != report cases"
assert int(suite.get("failures")) == sum(c["fails_gate"] for c in cases), "junit failures"
assert sum(report["totals"].values()) == len(cases), "totals"
summary = (report_dir / "summary.md").read_text()
assert ("gate passed" in summary) == (report["gate"] == "pass"), "summary gate"
if len(sys.argv) > 2:
    assert report["gate"] == sys.argv[2], f"gate {report['gate']}, expected {sys.argv[2]}"
if len(sys.argv) > 3:
    assert len(cases) == int(sys.argv[3]), f"{len(cases)} trials, expected {sys.argv[3]}"
print(f"{report_dir}: report.json, junit.xml and summary.md valid; "
      f"{len(cases)} trials, gate {report['gate']}, totals {report['totals']}")
