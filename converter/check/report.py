"""Findings of `qdq check` and their text / JSON renderings."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConverterError

ERROR, WARNING, NOTE = "error", "warning", "note"


class CheckError(ConverterError):
    """The check itself could not run (unknown target, unreadable model)."""


@dataclass(frozen=True)
class Finding:
    """One rule hit: ``error`` (a violation: the target rejects or mis-runs the model), ``warning`` (it runs,
    but slower or less accurately than the QDQ model suggests) or ``note`` (information)."""

    severity: str
    rule: str
    message: str
    node: str | None = None


@dataclass
class CheckReport:
    """All findings for one model and target."""

    target: str
    model: str
    findings: list[Finding] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def violations(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.violations

    def rules(self, severity: str | None = None) -> set[str]:
        """The rule ids that fired (optionally of one severity)."""
        return {f.rule for f in self.findings if severity is None or f.severity == severity}

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "model": self.model, "ok": self.ok,
                "violations": len(self.violations), "warnings": len(self.warnings), "stats": self.stats,
                "findings": [asdict(f) for f in self.findings]}

    def render(self, per_rule: int = 8) -> str:
        """Text report: a summary line, then findings grouped by severity and rule (``per_rule`` each)."""
        head = (f"{self.model} for {self.target}: {'OK' if self.ok else 'NOT COMPATIBLE'} - "
                f"{len(self.violations)} violation(s), {len(self.warnings)} warning(s)")
        stats = ", ".join(f"{k} {v}" for k, v in self.stats.items())
        lines = [head] + ([f"  ({stats})"] if stats else [])
        order = {ERROR: 0, WARNING: 1, NOTE: 2}
        groups: dict[tuple[str, str], list[Finding]] = {}
        for f in sorted(self.findings, key=lambda f: (order.get(f.severity, 3), f.rule)):
            groups.setdefault((f.severity, f.rule), []).append(f)
        for (severity, rule), items in groups.items():
            lines += [f"  {severity.upper():7} [{rule}] {f.message}" for f in items[:per_rule]]
            if len(items) > per_rule:
                lines.append(f"  {severity.upper():7} [{rule}] ... and {len(items) - per_rule} more like this "
                             "(--json lists all)")
        return "\n".join(lines)
