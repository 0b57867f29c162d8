"""Data layer: Minari loading, transitions, trajectory segments, dataset creation and import."""

from diffgym.data.loading import (
    DatasetLike,
    EpisodeArrays,
    Transitions,
    flatten_observations,
    load_dataset,
    load_transitions,
    read_episodes,
    validate_dataset,
)
from diffgym.data.making import collect_dataset, import_d4rl, imported_dataset_id
from diffgym.data.segments import SegmentDataset, SegmentRows, Segments, discounted_returns_to_go
from diffgym.data.validation import (
    DatasetSpaceMismatchError,
    EpisodeLengthError,
    NonFiniteDataError,
    check_spaces,
)

__all__ = [
    "DatasetLike",
    "DatasetSpaceMismatchError",
    "EpisodeArrays",
    "EpisodeLengthError",
    "NonFiniteDataError",
    "SegmentDataset",
    "SegmentRows",
    "Segments",
    "Transitions",
    "check_spaces",
    "collect_dataset",
    "discounted_returns_to_go",
    "flatten_observations",
    "import_d4rl",
    "imported_dataset_id",
    "load_dataset",
    "load_transitions",
    "read_episodes",
    "validate_dataset",
]
