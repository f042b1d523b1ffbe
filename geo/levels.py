"""The levels of the administrative unit tree, top down: the one list of their names.

Districts stay a level: units valid before the 2025 reorganisation have them (DOMAIN.md).
"""

from __future__ import annotations

from typing import Literal, get_args

Level = Literal["province", "district", "commune", "hamlet"]
#: The level names, top down (the CHECK on ``admin_units.level`` lists the same; a test checks).
LEVELS: tuple[Level, ...] = get_args(Level)
#: Depth of each level in the tree; a child is deeper than its parent.
DEPTH: dict[str, int] = {level: depth for depth, level in enumerate(LEVELS)}


def check_level_below(parent_level: str, level: str) -> bool:
    """Whether ``level`` lies below ``parent_level`` in the tree.

    >>> check_level_below("province", "hamlet"), check_level_below("commune", "district")
    (True, False)
    """
    return DEPTH[level] > DEPTH[parent_level]
