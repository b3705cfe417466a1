"""metalearn: learn from AI agents' execution history.

Record plans (ordered tool calls that end succeeded or failed) in a SQL database and find
out which agents, goal types, tools and tool sequences go with success.
"""

from metalearn._errors import (
    AnalysisInterrupted,
    DuplicatePlanError,
    InvalidArgumentError,
    InvalidRecordError,
    MetalearnError,
    MissingDependencyError,
    QueueClosedError,
    QueueFullError,
)
from metalearn._execution import ExecutionService, FinalizeResult
from metalearn._queries import BackgroundOptions
from metalearn._queue import AnalysisQueue
from metalearn._results import ChangeReport, ExecutionAnalysis, HintTable, PatternReport
from metalearn._service import MetaLearningService
from metalearn._store import HistoryStore, ImportReport, PlanBatch
from metalearn._types import Plan, PlanStatus, Step, StepStatus
from metalearn._warehouse import Warehouse
from metalearn._worker import AnalysisWorker, queue_status

__version__ = "0.1.0"

__all__ = [
    "AnalysisInterrupted",
    "AnalysisQueue",
    "AnalysisWorker",
    "BackgroundOptions",
    "ChangeReport",
    "DuplicatePlanError",
    "ExecutionAnalysis",
    "ExecutionService",
    "FinalizeResult",
    "HintTable",
    "HistoryStore",
    "ImportReport",
    "InvalidArgumentError",
    "InvalidRecordError",
    "MetaLearningService",
    "MetalearnError",
    "MissingDependencyError",
    "PatternReport",
    "Plan",
    "PlanBatch",
    "PlanStatus",
    "QueueClosedError",
    "QueueFullError",
    "Step",
    "StepStatus",
    "Warehouse",
    "__version__",
    "queue_status",
]
