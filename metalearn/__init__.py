"""metalearn: learn from AI agents' execution history.

Record plans (ordered tool calls that end succeeded or failed) in a SQL database and find
out which agents, goal types, tools and tool sequences go with success.
"""

from metalearn._errors import DuplicatePlanError, InvalidRecordError, MetalearnError
from metalearn._store import HistoryStore, ImportReport, PlanBatch
from metalearn._types import Plan, PlanStatus, Step, StepStatus

__version__ = "0.1.0"

__all__ = [
    "DuplicatePlanError",
    "HistoryStore",
    "ImportReport",
    "InvalidRecordError",
    "MetalearnError",
    "Plan",
    "PlanBatch",
    "PlanStatus",
    "Step",
    "StepStatus",
    "__version__",
]
