"""metalearn: learn from AI agents' execution history.

Record plans (ordered tool calls that end succeeded or failed) in a SQL database and find
out which agents, goal types, tools and tool sequences go with success.
"""

from metalearn._analysis import ExecutionAnalysis
from metalearn._errors import (
    DuplicatePlanError,
    InvalidArgumentError,
    InvalidRecordError,
    MetalearnError,
)
from metalearn._patterns import PatternReport
from metalearn._service import MetaLearningService
from metalearn._store import HistoryStore, ImportReport, PlanBatch
from metalearn._types import Plan, PlanStatus, Step, StepStatus
from metalearn._warehouse import Warehouse

__version__ = "0.1.0"

__all__ = [
    "DuplicatePlanError",
    "ExecutionAnalysis",
    "HistoryStore",
    "ImportReport",
    "InvalidArgumentError",
    "InvalidRecordError",
    "MetaLearningService",
    "MetalearnError",
    "PatternReport",
    "Plan",
    "PlanBatch",
    "PlanStatus",
    "Step",
    "StepStatus",
    "Warehouse",
    "__version__",
]
