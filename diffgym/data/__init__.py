"""Data layer: Minari loading, transitions, trajectory segments, dataset creation and import."""
