"""Import the traces users already have: OpenTelemetry GenAI, OpenInference, Langfuse, MLflow.

One reader per format turns its files or DataFrames into span records; one shared core
turns span trees into plans and steps in the interchange format, so every format imports
by the same rules. No SDK of those tools is needed.

>>> from metalearn import HistoryStore
>>> from metalearn.importers import read_otlp
>>> def span(sid, parent, name, operation, start_s, end_s, status="ok"):
...     return {"name": name, "context": {"trace_id": "0x7d1e", "span_id": sid},
...             "parent_id": parent, "start_time": int(start_s * 1e9),
...             "end_time": int(end_s * 1e9), "status": {"status_code": status},
...             "attributes": {"gen_ai.operation.name": operation},
...             "resource": {"attributes": {"service.name": "support-bot"}}}
>>> trace = {"spans": [span("0x1", None, "invoke_agent", "invoke_agent", 1.7e9, 1.7e9 + 5),
...                    span("0x2", "0x1", "execute_tool lookup_order", "execute_tool",
...                         1.7e9 + 1, 1.7e9 + 2),
...                    span("0x3", "0x1", "execute_tool refund", "execute_tool",
...                         1.7e9 + 3, 1.7e9 + 4, status="error")]}
>>> result = read_otlp(trace)
>>> result.steps[["tool", "status"]].to_dict("records")
[{'tool': 'lookup_order', 'status': 'ok'}, {'tool': 'refund', 'status': 'error'}]
>>> store = HistoryStore("sqlite://")
>>> store.import_frames(result.plans, result.steps)
<ImportReport imported=1 rejected=0 steps=2>
>>> store.plans_after(0).plans.to_pandas()[["agent_id", "status"]].to_dict("records")
[{'agent_id': 'support-bot', 'status': 'succeeded'}]
>>> store.close()

**Every trace is accounted for.** ``result.report`` has a row per plan and a row per trace
(or agent subtree) that gave none, saying why: ``no spans``, ``no root span`` (every span
has a parent, some parent is missing), ``still running`` (the plan's root span has no end
time, or MLflow says ``IN_PROGRESS``), ``no tool spans``.

**A plan** is one trace by default (``plan_id`` = the trace id), rooted at the outermost
agent span (``invoke_agent`` / kind ``AGENT``, or a span naming an agent in
``gen_ai.agent.name``, ``gen_ai.agent.id`` or ``agent.name``) when there is exactly one;
otherwise at the trace's root span (several top-level spans are covered by the trace
itself). Spans whose parent was never exported hang under the single root. With
``per_agent=True`` every agent span that directly owns tool spans (it is their nearest
agent ancestor) is its own plan, ``plan_id`` = ``"{trace_id}:{span_id}"``.

**agent_id**, first found: the root span's ``gen_ai.agent.name``, ``gen_ai.agent.id`` or
``agent.name``; the one agent name used by the agent spans inside the plan; the resource's
``service.name`` (unless it is an OpenTelemetry ``unknown_service`` default); the root
span's name. **goal_type** comes from ``goal_type=``: an attribute name looked up on the
root span, then on the trace's own attributes, or a callable ``(trace, root) -> str``.

**Outcome**, first rule that decides (``report.outcome_rule`` says which):

1. ``incomplete``: a span of the plan has no end time; such a plan is never counted as
   succeeded (status ``failed``; ``report.incomplete`` is true).
2. ``callable``: ``outcome=`` returns ``True``/``"succeeded"`` or ``False``/``"failed"``
   (``None`` falls through).
3. ``score``: ``score=ScoreRule(name, at_least=..., at_most=..., labels=...)`` judges a
   Langfuse score, Phoenix annotation or MLflow assessment of that name.
4. ``root_status``: the root span failed (status ERROR, an ``error.type`` attribute or an
   ``exception`` event) → ``failed``; OK or UNSET → ``succeeded``. This only catches
   crashes, so prefer a score or a callable when you have one.

**Steps** are the plan's tool spans: every tool span of the trace by default, those whose
nearest agent is the plan's root with ``per_agent=True``. A tool span is ``execute_tool``,
of kind ``TOOL``, or carries ``gen_ai.tool.name``/``tool.name`` (the readers add their
formats' fallbacks); it is named by ``gen_ai.tool.name``, ``tool.name`` or its span name.
Only the outermost tool span of a nested chain counts (an MCP call shows up as framework →
client → server span) unless ``flatten=True``. Steps are ordered by (start, end, span id);
timestamps are compared raw only within one resource (host): a host whose span does not
fit inside its parent on another host is shifted to sit inside it, as clock-skew
correction does. A step is an ``error`` when its status is ERROR, ``error.type`` is set or
it has an ``exception`` event. ``duration_ms`` comes from the timestamps only (never from
a ``latency`` field, whose unit varies), is clamped at 0, and is empty when a timestamp is
missing.

**Messy data**: spans may come in any order, parents after children; duplicates (same
trace and span id) are read once, preferring a copy with an end time; statuses may be
``2``, ``"STATUS_CODE_ERROR"``, ``"ERROR"`` or ``"error"``; ids may be upper- or
lower-case hex, ``0x``-prefixed or integers.

**Malformed data** raises :class:`TraceFormatError` (a ``MetalearnError`` and a
``ValueError``), whose message, ``source`` and ``field`` name the file (and line) or input,
the record (span, row or item position) and the field: a file that is not UTF-8, gzip,
JSON, CSV or Parquet; a field that must hold an object or a list (``status``,
``attributes``, ``context``, ``resource``, ``spans``, ``observations``...) holding something
else; an id that is an object or a list; a timestamp that is no ISO-8601 text or number,
is infinite, or lies outside 1677-09-21..2262-04-11 (the nanosecond range of the plans'
datetimes); objects or lists nested more than 100 levels deep (the real samples need 12);
an integer of more than 4,096 bits. Besides these only ``OSError`` (an unreadable path)
leaves a reader. Fields the formats leave free (Langfuse ``metadata``, MLflow ``tags``,
events that are not a list) are ignored when they are not objects, as before.

>>> from metalearn.importers import TraceFormatError
>>> try:
...     read_otlp({"spans": [{"context": {"trace_id": 1, "span_id": 2}, "status": 3}]})
... except TraceFormatError as err:
...     print(err.source, err.field)
input, item 0 status
"""

from metalearn.importers._core import ImportResult, ScoreRule, Span, Trace
from metalearn.importers._errors import MissingDependencyError, TraceFormatError, TraceImportError
from metalearn.importers._langfuse import read_langfuse
from metalearn.importers._mlflow import read_mlflow
from metalearn.importers._openinference import read_openinference
from metalearn.importers._otlp import read_otlp

__all__ = [
    "ImportResult",
    "MissingDependencyError",
    "ScoreRule",
    "Span",
    "Trace",
    "TraceFormatError",
    "TraceImportError",
    "read_langfuse",
    "read_mlflow",
    "read_openinference",
    "read_otlp",
]
