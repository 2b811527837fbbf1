"""``srx evaluate``: the papers' benchmark protocol (DESIGN 6) on any model of the engine."""
