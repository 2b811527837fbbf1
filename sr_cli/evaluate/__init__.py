"""``srx evaluate``: the papers' benchmark protocol (docs/engine.md) on any model of the engine."""
