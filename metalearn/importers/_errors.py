"""The exceptions the trace importers raise.

Hierarchy::

    MetalearnError
    ├── TraceImportError (also a ValueError)     an import cannot go on as asked
    │   └── TraceFormatError                     a file, document or row is not in the format
    └── MissingDependencyError (also an ImportError)   an optional extra is not installed
                                                       (defined in metalearn; re-exported)

Messages name the source (file and line, or row), the span or trace and the field, and say
what the reader expected. Messy but readable data (unordered or duplicate spans, missing end
times, clock skew) never raises: it is handled and accounted for in the import report.
"""

from __future__ import annotations

from metalearn._errors import MetalearnError, MissingDependencyError

__all__ = ["MissingDependencyError", "TraceFormatError", "TraceImportError"]


class TraceImportError(MetalearnError, ValueError):
    """An import cannot go on as asked (a bad option, or a callable returning nonsense)."""


class TraceFormatError(TraceImportError):
    """A file, document or row is not in the format its reader expects.

    ``source`` says where (``"trace.jsonl line 3"``, ``"row 12"``) and ``field`` names the
    missing or malformed field; both are ``None`` when unknown.
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        super().__init__(message)
        self.source = source
        self.field = field
