"""The audit's verdicts: every check it ran (or skipped, with the reason), and the errors that stop it."""
from __future__ import annotations

import json
from pathlib import Path

SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "audit.schema.json"
SCHEMA_VERSION = 2
OK, MISMATCH, SKIPPED, INFO = "ok", "mismatch", "skipped", "info"


class AuditError(ValueError):
    """The audit cannot start (unknown table/row/column, missing results); the message names the fix."""


class Checks:
    """The list of checks, in the order they ran; a mismatch anywhere makes the audit fail."""

    def __init__(self):
        self.items: list[dict] = []

    def add(self, name: str, status: str, detail: str) -> str:
        self.items.append({"name": name, "status": status, "detail": detail})
        return status

    def ok_if(self, name: str, cond: bool, ok_detail: str, bad_detail: str) -> bool:
        self.add(name, OK if cond else MISMATCH, ok_detail if cond else bad_detail)
        return cond

    def skip(self, name: str, reason: str) -> None:
        self.add(name, SKIPPED, reason)

    @property
    def ok(self) -> bool:
        return not any(c["status"] == MISMATCH for c in self.items)


def validate_report(report: dict) -> None:
    import jsonschema

    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(report)
