"""Classification and holds: the policy the engine consults before planning.

The engine calls :meth:`Policy.assess` for every discovered item before the
plugin plans it. A refusal from the policy (reason ``hold``) wins over any
method the plugin would choose; a ``mask`` requests that the item be masked
rather than destroyed. The default policy classifies nothing and holds
nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plugins.base import Item, Refusal, Target


@dataclass(frozen=True)
class Assessment:
    """The policy's verdict on one item."""

    classification: str = "unclassified"
    refusal: Refusal | None = None
    mask: Mapping[str, Any] | None = None


class Policy:
    """The policy built from the config's ``policy`` section."""

    def __init__(self, section: Mapping[str, Any] | None = None) -> None:
        self.section = section or {}

    @classmethod
    def from_config(cls, config_section: Mapping[str, Any] | None) -> Policy:
        return cls(config_section)

    def assess(self, target: Target, item: Item) -> Assessment:
        """Classify an item and apply holds; the default does neither."""
        return Assessment()
