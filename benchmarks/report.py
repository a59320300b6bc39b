"""Merge every ``benchmarks/results/*.json`` into ``benchmarks/report.json`` and ``report.md``.

Each benchmark script writes its own result file (see ``_common.write_result``); this script
knows nothing about their internals and renders any payload with a few conventions:

* ``goals``: a list of ``{"name", "target", "value", "met"}`` (or a ``{name: bool}`` dict),
  gathered into a summary at the top and a table in the benchmark's section; a boolean field
  named ``met`` or ``*_met`` anywhere in the payload counts as a goal too (its siblings
  ``target*`` and ``median*``/``value`` give the target and the measured value);
* a list of flat-ish dicts (e.g. ``cases``, ``rows``): one table, nested dicts become
  ``outer.inner`` columns;
* a dict of dicts: one table with a row per key; a dict or list of scalars: a small table;
* any other scalar: a ``field | value`` line in the section's overview table.

The machine description is printed once (and per section only where it differs). Missing or
unreadable result files become a note, never a crash. Run: ``python benchmarks/report.py``.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
#: Sections in reading order; any other result file follows alphabetically.
EXPECTED = {
    "tokenizers": "bench_tokenizers.py",
    "generate": "bench_generate.py",
    "train": "bench_train.py",
    "peers": "bench_peers.py",
    "nanogpt": "bench_nanogpt.py --nanogpt DIR (a clone of karpathy/nanoGPT)",
    "book": "the book build (writes results/book.json)",
}
SKIP_KEYS = {"benchmark", "machine", "goals", "description"}


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_results(results_dir: Path = RESULTS_DIR) -> dict[str, dict[str, Any]]:
    """``{name: payload}`` for every readable result file; unreadable ones carry ``error``."""
    results: dict[str, dict[str, Any]] = {}
    for path in sorted(results_dir.glob("*.json")):
        try:
            payload = json.loads(path.read_text())
            if not isinstance(payload, dict):
                raise ValueError("top level is not a JSON object")
        except (OSError, ValueError) as error:
            payload = {"error": f"could not read {path.name}: {error}"}
        results[str(payload.get("benchmark") or path.stem)] = payload
    return results


def ordered_names(results: dict[str, Any]) -> list[str]:
    """Expected sections first (present or not), then any others alphabetically."""
    return list(EXPECTED) + sorted(set(results) - set(EXPECTED))


def normalise_goals(goals: Any) -> list[dict[str, Any]]:
    """Goals as a list of ``{"name", "target", "value", "met"}`` whatever shape they came in."""
    if isinstance(goals, dict):
        goals = [
            {"name": k, **(v if isinstance(v, dict) else {"met": v})} for k, v in goals.items()
        ]
    if not isinstance(goals, list):
        return []
    out = []
    for goal in goals:
        if isinstance(goal, dict):
            out.append({"name": goal.get("name", "?"), **goal, "met": _as_met(goal.get("met"))})
    return out


def flag_goals(data: Any, path: str = "") -> list[dict[str, Any]]:
    """Goals written as boolean ``met``/``*_met`` fields inside nested dicts."""
    if isinstance(data, list):
        return [g for i, item in enumerate(data) for g in flag_goals(item, f"{path}[{i}]")]
    if not isinstance(data, dict):
        return []
    out = []
    for key, value in data.items():
        if isinstance(value, bool) and (key == "met" or key.endswith("_met")):
            out.append(_flag_goal(data, key, path))
        elif key != "goals":
            out += flag_goals(value, f"{path}.{key}" if path else key)
    return out


def _flag_goal(data: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    prefix = key.removesuffix("met").removesuffix("_")
    targets = [k for k in data if k.startswith("target") and k != key]
    values = [k for k in data if k in ("value", "measured") or k.startswith("median")]
    return {
        "name": ".".join(p for p in (path, prefix) if p) or key,
        "target": f"{targets[0]} = {fmt(data[targets[0]])}" if targets else None,
        "value": data[values[0]] if values else None,
        "met": data[key],
    }


def all_goals(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Explicit ``goals`` first, then ``*_met`` flags."""
    return normalise_goals(payload.get("goals")) + flag_goals(payload)


def _as_met(value: Any) -> bool | None:
    return value if isinstance(value, bool) or value is None else bool(value)


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    """Human-readable cell: 4 significant digits, thousands separators, ✓/✗ for booleans."""
    if isinstance(value, bool):
        return "✓" if value else "✗"
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, (list, tuple)) and all(not isinstance(v, (dict, list)) for v in value):
        return ", ".join(fmt(v) for v in value)
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists of scalars stay whole)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


MAX_ROWS = 12


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def records_table(records: list[dict[str, Any]]) -> list[str]:
    """One row per record, the union of their (flattened) keys as columns; long lists are
    shortened to their first and last rows (report.json keeps everything)."""
    note = []
    if len(records) > MAX_ROWS:
        half = MAX_ROWS // 2
        note = [f"_{len(records)} rows; showing the first and last {half}._", ""]
        records = records[:half] + records[-half:]
    flat = [flatten(r) for r in records]
    nested = sorted({k for row in flat for k, v in row.items() if _is_records(v)})
    if nested:  # per-step histories and the like: too wide for a table cell
        flat = [{k: v for k, v in row.items() if k not in nested} for row in flat]
        note += [f"_Columns kept in report.json only: {', '.join(nested)}._", ""]
    columns: list[str] = []
    for row in flat:
        columns += [k for k in row if k not in columns]
    return note + table(columns, [[row.get(c) for c in columns] for row in flat])


def render_value(key: str, value: Any) -> list[str]:
    """Markdown for one non-scalar payload field."""
    title = [f"**{key}**", ""]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return title + records_table(value)
    if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        return title + records_table([{"": k, **v} for k, v in value.items()])
    if isinstance(value, dict):
        return title + table(["field", "value"], [[k, v] for k, v in flatten(value).items()])
    return title + table(["#", "value"], [[i, v] for i, v in enumerate(value)])


def goals_table(goals: list[dict[str, Any]], with_benchmark: bool = False) -> list[str]:
    header = (["benchmark"] if with_benchmark else []) + ["goal", "target", "measured", "met"]
    rows = [
        ([g.get("benchmark")] if with_benchmark else [])
        + [g["name"], g.get("target"), g.get("value"), g["met"]]
        for g in goals
    ]
    return table(header, rows)


def machine_lines(machine: dict[str, Any]) -> list[str]:
    return table(["machine", ""], [[k, v] for k, v in machine.items()])


def section(name: str, payload: dict[str, Any] | None, machine: dict[str, Any]) -> list[str]:
    """The Markdown section of one benchmark."""
    lines = [f"## {name}", ""]
    if payload is None:
        return [*lines, f"_No results yet: run {EXPECTED.get(name, name)}._", ""]
    if "error" in payload and len(payload) == 1:
        return [*lines, f"_{payload['error']}_", ""]
    if payload.get("description"):
        lines += [str(payload["description"]), ""]
    goals = all_goals(payload)
    if goals:
        lines += goals_table(goals)
    scalars = [
        [k, v] for k, v in payload.items() if k not in SKIP_KEYS and not isinstance(v, (dict, list))
    ]
    if scalars:
        lines += table(["field", "value"], scalars)
    for key, value in payload.items():
        if key not in SKIP_KEYS and isinstance(value, (dict, list)) and value:
            lines += render_value(key, value)
    if payload.get("machine") and payload["machine"] != machine:
        lines += ["Measured on a different machine:", "", *machine_lines(payload["machine"])]
    return lines


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def build_report(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The merged JSON report: machine, every payload, all goals, what is missing."""
    machines = [r["machine"] for r in results.values() if isinstance(r.get("machine"), dict)]
    goals = [
        {"benchmark": name, **goal}
        for name, payload in results.items()
        for goal in all_goals(payload)
    ]
    return {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machines[0] if machines else {},
        "goals_met": sum(g["met"] is True for g in goals),
        "goals_total": len(goals),
        "goals": goals,
        "missing": [name for name in EXPECTED if name not in results],
        "benchmarks": results,
    }


def render_markdown(report: dict[str, Any]) -> str:
    """The readable report: summary of goals, machine once, one section per benchmark."""
    results = report["benchmarks"]
    lines = ["# tinytrans benchmark report", "", f"Generated {report['generated']}.", ""]
    lines += [f"**Goals met: {report['goals_met']} of {report['goals_total']}**", ""]
    if report["goals"]:
        lines += goals_table(report["goals"], with_benchmark=True)
    if report["machine"]:
        lines += machine_lines(report["machine"])
    for name in ordered_names(results):
        lines += section(name, results.get(name), report["machine"])
    return "\n".join(lines).rstrip() + "\n"


def main(results_dir: Path = RESULTS_DIR, out_dir: Path = HERE) -> dict[str, Any]:
    report = build_report(load_results(results_dir))
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text(render_markdown(report))
    print(
        f"wrote {out_dir / 'report.md'} and report.json: {len(report['benchmarks'])} result "
        f"file(s), goals met {report['goals_met']}/{report['goals_total']}"
        + (f", missing {report['missing']}" if report["missing"] else "")
    )
    return report


if __name__ == "__main__":
    main()
