"""Provider adapters: one per upstream dialect, plus the built-in simulator."""
