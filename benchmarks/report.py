"""The suite's results as rows, targets and agreement: a printed table, Markdown and JSON."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.suite import CASES, Stat

TARGET_SIZE = 1_000_000
PEAK_TARGET_BYTES = 2.5e9
LAG_TARGET_MS = 10.0

PAIRS: list[tuple[str, str | None]] = [
    ("cold_build", "pandas_load"),
    ("refresh_1", None),
    ("refresh_1000", None),
    ("analyze", "pandas_rates"),
    ("extract", "pandas_ngrams"),
    ("extract_stratified", "extract"),
    ("extract_stratified", "pandas_cmh"),
    ("extract", "prefixspan_20"),
    ("extract", "prefixspan_5pct"),
    ("extract", "pm4py_variants"),
    ("agent_job", None),
    ("agent_job_all", None),
]
"""Table rows: a metalearn measurement and the baseline it is compared with."""

SECONDS_TARGETS = {
    "cold_build": 5.0,
    "refresh_1": 0.020,
    "analyze": 1.0,
    "extract": 3.0,
    "extract_stratified": 3.0,
    "agent_job": 0.300,
}
STRATIFIED_OVER_POOLED = 1.5
"""The stratified extract (defaults) may take at most this times the pooled one."""
POOLED_EXTRACT_BEFORE_S = 1.61
"""The pooled extract at 1M plans before stratification existed (benchmarks.md of 2026-11-28)."""
SPEEDUP_TARGETS = {"pandas_ngrams": 6.0, "prefixspan_20": 10.0}
VERSIONS = [
    "numpy",
    "pandas",
    "duckdb",
    "pyarrow",
    "SQLAlchemy",
    "metalearn",
    "pm4py",
    "prefixspan",
]


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:,.1f} ms"
    return f"{value:,.2f} s" if value < 100 else f"{value:,.0f} s"


def _cell(stat: Stat | None, repeats: int) -> str:
    if stat is None:
        return "-"
    if stat.skipped:
        return "skipped"
    if stat.error:
        return "FAILED"
    if stat.timed_out:
        return f"> {stat.limit_s:g} s"
    single = " (1 run)" if stat.runs == 1 and repeats > 1 else ""
    return seconds(stat.seconds) + single


def _mib(stat: Stat | None) -> str:
    return "-" if stat is None or stat.peak_mib is None else f"{stat.peak_mib:,.0f}"


@dataclass(frozen=True)
class Speedup:
    """baseline / metalearn seconds; ``bound`` when the baseline hit its limit (at least)."""

    value: float
    bound: bool

    def __str__(self) -> str:
        return f"{'> ' if self.bound else ''}{self.value:,.1f}x"


def speedup(ours: Stat | None, theirs: Stat | None) -> Speedup | None:
    if ours is None or ours.seconds is None or theirs is None or not ours.seconds:
        return None
    if theirs.timed_out and theirs.limit_s:
        return Speedup(theirs.limit_s / ours.seconds, bound=True)
    if theirs.seconds is None:
        return None
    return Speedup(theirs.seconds / ours.seconds, bound=False)


def _ratio(ours: Stat | None, theirs: Stat | None) -> str:
    """metalearn / baseline, with how many times faster or slower that is."""
    fast = speedup(ours, theirs)
    if fast is None:
        return "-"
    ratio = 1 / fast.value
    bound = "< " if fast.bound else ""
    if fast.value >= 1:
        return f"{bound}{ratio:.3g} ({fast} faster)"
    return f"{ratio:.3g} ({ratio:,.1f}x slower)"


class Report:
    """Everything one run measured, and how it reads against the issue's targets."""

    def __init__(
        self,
        results: dict[int, dict[str, Stat]],
        agreement: dict[int, list[str] | None],
        config: dict[str, Any],
        machine: dict[str, Any],
    ) -> None:
        self.results = results
        self.agreement = agreement
        self.config = config
        self.machine = machine

    def stat(self, n: int, case: str) -> Stat | None:
        return self.results.get(n, {}).get(case)

    # -- targets -----------------------------------------------------------------------

    def _met_seconds(self, case: str) -> tuple[str, bool | None]:
        stat = self.stat(TARGET_SIZE, case)
        if stat is None or stat.seconds is None:
            return "not measured", None
        target = SECONDS_TARGETS[case]
        met = stat.seconds <= target
        over = "" if met else f" ({stat.seconds / target:,.1f}x the target)"
        return seconds(stat.seconds) + over, met

    def _met_speedup(self, baseline: str) -> tuple[str, bool | None]:
        ours = self.stat(TARGET_SIZE, "extract")
        fast = speedup(ours, self.stat(TARGET_SIZE, baseline))
        target = SPEEDUP_TARGETS[baseline]
        if fast is None:
            return "not measured", None
        if not fast.bound or fast.value >= target:
            return f"{fast} faster", fast.value >= target
        if baseline == "prefixspan_20":  # prefixspan at 5% support does less work than at 20
            easier = speedup(ours, self.stat(TARGET_SIZE, "prefixspan_5pct"))
            if easier is not None and easier.value >= target:
                return f"{fast} faster (at 5% support: {easier})", True
        limit = self.stat(TARGET_SIZE, baseline)
        stopped = f"{limit.limit_s:g} s" if limit and limit.limit_s else "its limit"
        return f"{fast} faster (baseline stopped at {stopped}: raise --timeout)", None

    def _stratified_ratio(self) -> tuple[str, bool | None]:
        ours, pooled = (
            self.stat(TARGET_SIZE, "extract_stratified"),
            self.stat(TARGET_SIZE, "extract"),
        )
        if ours is None or ours.seconds is None or pooled is None or not pooled.seconds:
            return "not measured", None
        now, before = ours.seconds / pooled.seconds, ours.seconds / POOLED_EXTRACT_BEFORE_S
        text = (
            f"{now:.2f}x today's pooled run ({seconds(pooled.seconds)}); "
            f"{before:.2f}x the pooled extract before ({POOLED_EXTRACT_BEFORE_S:g} s)"
        )
        return text, max(now, before) <= STRATIFIED_OVER_POOLED

    def _peak(self) -> tuple[str, bool | None]:
        stats = [
            s
            for c, s in self.results.get(TARGET_SIZE, {}).items()
            if CASES[c].system == "metalearn" and s.peak_mib is not None
        ]
        if not stats:
            return "not measured", None
        worst = max(stats, key=lambda s: s.peak_mib or 0.0)
        peak = (worst.peak_mib or 0.0) * 2**20
        return f"{peak / 1e9:.2f} GB ({worst.case})", peak <= PEAK_TARGET_BYTES

    def _refresh_flat(self) -> str:
        values = [
            f"{n:,}: {seconds(s.seconds)}"
            for n in sorted(self.results)
            if (s := self.stat(n, "refresh_1")) is not None and s.seconds is not None
        ]
        return "; ".join(values) or "-"

    def _loop_lag(self) -> tuple[str, bool | None]:
        path = Path(__file__).parent / "results" / "background.json"  # background.py's own
        try:
            data = json.loads(path.read_text())
            p99 = min(run["loop_lag_p99_ms"] for run in data["metalearn"])
        except (OSError, ValueError, KeyError, TypeError):
            return "not measured (run: python -m benchmarks background)", None
        return (
            f"{p99:.1f} ms (background benchmark, {data.get('history', 0):,}-plan "
            "history, from background.json)",
            p99 <= LAG_TARGET_MS,
        )

    def targets(self) -> list[dict[str, Any]]:
        agent = self.stat(TARGET_SIZE, "agent_job")
        window = (
            f"{agent.info['window_plans']:,}" if agent and "window_plans" in agent.info else "?"
        )
        rows = [
            ("cold warehouse build <= 5 s", self._met_seconds("cold_build")),
            ("refresh after one new plan <= 20 ms", self._met_seconds("refresh_1")),
            ("  ... and flat as history grows", (self._refresh_flat(), None)),
            ("analyze_execution_patterns <= 1 s", self._met_seconds("analyze")),
            ("extract_successful_patterns (1-4) <= 3 s", self._met_seconds("extract")),
            (
                "stratified extract, defaults (goal type + findings) <= 3 s",
                self._met_seconds("extract_stratified"),
            ),
            ("  ... and <= 1.5x the pooled extract", self._stratified_ratio()),
            ("extract >= 6x faster than pandas n-grams", self._met_speedup("pandas_ngrams")),
            ("extract >= 10x faster than prefixspan", self._met_speedup("prefixspan_20")),
            (
                f"one agent's background job <= 300 ms (window: {window} plans)",
                self._met_seconds("agent_job"),
            ),
            ("peak memory <= 2.5 GB (largest metalearn process)", self._peak()),
            ("event-loop lag p99 <= 10 ms", self._loop_lag()),
        ]
        return [{"target": t, "measured": m, "met": met} for t, (m, met) in rows]

    def _row_target(self, n: int, ours: str, theirs: str | None) -> tuple[str, str]:
        text = {
            ("cold_build", "pandas_load"): "<= 5 s",
            ("refresh_1", None): "<= 20 ms",
            ("analyze", "pandas_rates"): "<= 1 s",
            ("extract", "pandas_ngrams"): "<= 3 s and >= 6x faster",
            ("extract_stratified", "extract"): "<= 3 s and <= 1.5x",
            ("extract", "prefixspan_20"): ">= 10x faster",
            ("agent_job", None): "<= 300 ms",
        }.get((ours, theirs), "")
        if not text or n != TARGET_SIZE:
            return text, ""
        checks = [] if theirs in ("prefixspan_20",) else [self._met_seconds(ours)[1]]
        if theirs in SPEEDUP_TARGETS:
            checks.append(self._met_speedup(theirs)[1])
        if (ours, theirs) == ("extract_stratified", "extract"):
            checks.append(self._stratified_ratio()[1])
        if None in checks:
            return text, "?"
        return text, "met" if all(checks) else "NOT MET"

    # -- tables --------------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        repeats = int(self.config["repeats"])
        rows = []
        for n in sorted(self.results):
            for ours, theirs in PAIRS:
                a, b = self.stat(n, ours), self.stat(n, theirs) if theirs else None
                stratified = ours == "extract_stratified"
                if (
                    (a is None and b is None)
                    or (theirs and b is None and ours == "extract")
                    or (stratified and (a is None or b is None))
                ):
                    continue
                target, met = self._row_target(n, ours, theirs)
                rows.append(
                    {
                        "plans": f"{n:,}",
                        "measurement": CASES[ours].label,
                        "metalearn": _cell(a, repeats),
                        "MiB": _mib(a),
                        "baseline": CASES[theirs].label if theirs else "-",
                        "baseline s": _cell(b, repeats),
                        "baseline MiB": _mib(b),
                        "metalearn / baseline": _ratio(a, b) if theirs else "-",
                        "target (1M)": target,
                        "met": met,
                    }
                )
        return rows

    def markdown(self) -> str:
        lines = [
            f"# metalearn benchmark suite\n\n{self._preamble()}\n",
            "## Results\n",
            markdown_table(self.rows()),
            "\n## Targets at 1,000,000 plans\n",
            markdown_table(
                [
                    {
                        "target": t["target"],
                        "measured": t["measured"],
                        "status": {True: "met", False: "NOT MET", None: "-"}[t["met"]],
                    }
                    for t in self.targets()
                ]
            ),
            "\n## Agreement with the pandas baseline\n",
            self._agreement_text(),
            "\n## Details\n",
            self._details(),
        ]
        return "\n".join(lines) + "\n"

    def _preamble(self) -> str:
        m = self.config
        versions = ", ".join(f"{k} {v}" for k, v in self.machine["versions"].items())
        load = self.machine["load_average"]
        return (
            f"{self.machine['date']}; {self.machine['cores']} cores; Python "
            f"{self.machine['python']}; {versions}.\n\n"
            f"Histories: `make_history(n, n_agents=20, seed=0, end={m['end']})` in SQLite "
            f"stores. Each figure is the median of {m['repeats']} run(s), each in a fresh "
            f"process on its own copy of the store (a baseline slower than "
            f'{m["single_above_s"]:g} s runs once: marked "(1 run)"); baselines stop at '
            f'{m["limit_s"]:g} s ("> N s"). Peak RSS is the measuring process\'s plus '
            "that of the largest process it started (the SQLite bulk reader of a cold build) "
            f"(imports alone: {self.machine['imports_mib']:,.0f} MiB). Load average "
            f"(1 min) at start {load['start']:.1f}, at end {load['end']:.1f}: this is a "
            "shared machine, so figures are noisy."
        )

    def _agreement_text(self) -> str:
        lines = []
        for n in sorted(self.agreement):
            problems = self.agreement[n]
            if problems is None:
                lines.append(
                    f"- {n:,} plans: not checked (needs analyze, extract, "
                    "pandas_rates and pandas_ngrams to finish)"
                )
            elif problems:
                lines.append(f"- {n:,} plans: **DISAGREE** ({len(problems)} differences)")
                lines += [f"  - {p}" for p in problems]
            else:
                patterns = self.stat(n, "extract")
                count = f"{patterns.info['patterns']:,}" if patterns else "?"
                both = all(
                    (s := self.stat(n, c)) is not None and s.seconds is not None
                    for c in ("extract_stratified", "pandas_cmh")
                )
                stratified = (
                    "; MH odds ratio and CMH p-value within goal types of every pattern, "
                    "to a relative 1e-9"
                    if both
                    else ""
                )
                lines.append(
                    f"- {n:,} plans: agree (plans; plans, successes and success "
                    f"rate by agent, goal type and day; supports of all {count} "
                    f"patterns{stratified})"
                )
        return "\n".join(lines) or "- not checked"

    def _details(self) -> str:
        lines = []
        for n in sorted(self.results):
            for name, stat in self.results[n].items():
                main = CASES[name].main
                extra = {k: round(v, 4) for k, v in stat.parts.items() if k != main}
                note = stat.skipped or ", ".join(
                    [f"{k} {seconds(v)}" for k, v in extra.items()]
                    + [
                        f"{k}: {v:,}" if isinstance(v, int) else f"{k}: {v}"
                        for k, v in stat.info.items()
                    ]
                )
                if note:
                    lines.append(f"- {n:,} plans, {name}: {note}")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "config": self.config,
            "results": {
                str(n): {c: s.as_dict() for c, s in stats.items()}
                for n, stats in self.results.items()
            },
            "rows": self.rows(),
            "targets": self.targets(),
            "agreement": {str(n): p for n, p in self.agreement.items()},
        }

    def write(self, directory: Path, stem: str = "benchmarks") -> tuple[Path, Path]:
        """``<stem>.md`` and ``<stem>.json`` in ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        md, js = directory / f"{stem}.md", directory / f"{stem}.json"
        md.write_text(self.markdown())
        js.write_text(json.dumps(self.as_json(), indent=2, default=str) + "\n")
        return md, js

    @classmethod
    def load(cls, path: Path) -> Report:
        """The report of an earlier run, from its ``benchmarks.json``."""
        data = json.loads(path.read_text())
        results = {
            int(n): {case: Stat(**stat) for case, stat in stats.items()}
            for n, stats in data["results"].items()
        }
        agreement = {int(n): problems for n, problems in data["agreement"].items()}
        return cls(results, agreement, data["config"], data["machine"])


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows of equal keys as a Markdown table (the keys its header)."""
    if not rows:
        return "(nothing measured)"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def machine(imports_mib: float, load_start: float) -> dict[str, Any]:
    """Core count, versions, date and load of the machine that ran the suite."""
    from metalearn import __file__ as metalearn_file

    versions = {}
    for name in VERSIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "metalearn_from": str(Path(metalearn_file).parent),
        "imports_mib": imports_mib,
        "load_average": {"start": load_start, "end": os.getloadavg()[0]},
    }


if __name__ == "__main__":  # re-render a run's Markdown from its JSON (no measuring)
    import sys

    source = Path(
        sys.argv[1] if sys.argv[1:] else Path(__file__).parent / "results/benchmarks.json"
    )
    written = Report.load(source).write(source.parent, source.stem)
    print(f"written to {written[0]} and {written[1]}")
