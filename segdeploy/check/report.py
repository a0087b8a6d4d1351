"""The check's report: one JSON document and its Markdown, whose tables paste into
docs/benchmarks.md as they are.

Exit code policy (``exit_code``): 0 when every step that could run here passed (skipped steps
are not failures: a CPU-only host skips every GPU step and exits 0); 1 when any step failed;
2 for a usage mistake (bad option, unwritable --out), decided before any step runs.
Python 3.6 compatible.
"""

from collections import OrderedDict

from .runner import FAILED, OK, SKIPPED

SCHEMA = "segdeploy-check/1"
STEP_FIELDS = ("name", "title", "status", "reason", "would_run", "duration_s", "data")


def build_report(environment, results, mode, command, started, duration_s):
    counts = OrderedDict(
        (s, sum(1 for r in results if r["status"] == s)) for s in (OK, FAILED, SKIPPED)
    )
    return OrderedDict(
        [
            ("schema", SCHEMA),
            ("command", command),
            ("mode", mode),
            ("started_utc", started),
            ("duration_s", round(duration_s, 1)),
            ("summary", counts),
            ("exit_code", exit_code(results)),
            ("environment", environment),
            ("steps", results),
        ]
    )


def exit_code(results):
    return 1 if any(r["status"] == FAILED for r in results) else 0


def _cell(value):
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return "{:.3g}".format(value)
        return (
            "{:.3f}".format(value).rstrip("0").rstrip(".")
            if abs(value) < 100
            else "{:.1f}".format(value)
        )
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(columns, rows):
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def to_markdown(report, heading="###"):
    env = report["environment"]
    out = [
        "{} segdeploy-check ({}) on {}".format(
            heading,
            report["mode"],
            env.get("gpu", "?")
            if not str(env.get("gpu", "")).startswith("no")
            else "a machine without a usable GPU",
        ),
        "",
        "Command: `{}` · started {} UTC · {:.0f} s · {} ok, {} failed, {} skipped · "
        "exit code {}".format(
            report["command"],
            report["started_utc"],
            report["duration_s"],
            report["summary"][OK],
            report["summary"][FAILED],
            report["summary"][SKIPPED],
            report["exit_code"],
        ),
        "",
        markdown_table(
            ("environment", "value"), [(k, v) for k, v in env.items() if k != "python_executable"]
        ),
        "",
        markdown_table(
            ("step", "status", "s", "result, or why not (what it would run)"),
            [
                (
                    r["name"],
                    r["status"],
                    r["duration_s"],
                    _summary(r),
                )
                for r in report["steps"]
            ],
        ),
    ]
    for r in report["steps"]:
        table = (r.get("data") or {}).get("table")
        if r["status"] == OK and table and table.get("rows"):
            out += ["", "**{}** — {}".format(r["name"], r["title"]), ""]
            out.append(markdown_table(table["columns"], table["rows"]))
            note = (r.get("data") or {}).get("note")
            if note:
                out += ["", note]
    return "\n".join(out) + "\n"


def _summary(result):
    if result["status"] == OK:
        return (result.get("data") or {}).get("summary") or result["title"]
    if result["status"] == SKIPPED:
        return "{} (would run: {})".format(result["reason"], result["would_run"])
    return result["reason"]
