"""A host reader's refusal of a document that is not its kind at all (as against a broken one)."""

from __future__ import annotations

from cpuguard.errors import BadInput


class NotThisKind(BadInput):
    """The document is not of the reader's kind (a wrong root element, no 'processor' lines...):
    another reader may take it. A document of the right kind with a fault is a plain BadInput."""
