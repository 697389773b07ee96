"""SIEM formats of a Tetragon event: pure functions of the event mapping.

``format_cef`` and ``format_leef`` give one line; ``to_ecs`` and ``to_ocsf`` give
a JSON-ready dict. All raise ``UnsupportedEvent`` (a ValueError) for a mapping
that holds no event kind.
"""

from services.exporter.formats.cef import format_cef
from services.exporter.formats.ecs import ecs_mappings, to_ecs
from services.exporter.formats.facts import UnsupportedEvent
from services.exporter.formats.leef import format_leef
from services.exporter.formats.ocsf import to_ocsf

__all__ = ["UnsupportedEvent", "ecs_mappings", "format_cef", "format_leef", "to_ecs", "to_ocsf"]
