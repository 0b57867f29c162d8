"""Data layer: Minari loading, transitions, trajectory segments, dataset creation and import.

Modules, lowest first (each imports only those before it): :mod:`~diffgym.data.tree`,
:mod:`~diffgym.data.validation` and :mod:`~diffgym.data.minari_writer`; :mod:`~diffgym.data.collection`
(datasets from any policy) and :mod:`~diffgym.data.d4rl` (D4RL-layout files); :mod:`~diffgym.data.loading`
(any dataset into arrays); :mod:`~diffgym.data.mapped` (the same, memory-mapped from a cache); :mod:`~diffgym.data.segments` (trajectory windows); and the package
:mod:`diffgym.data.team` (multi-agent data).
"""

from diffgym.data.collection import collect_dataset
from diffgym.data.d4rl import import_d4rl, imported_dataset_id
from diffgym.data.loading import (
    DatasetLike,
    EpisodeArrays,
    Transitions,
    flatten_observations,
    iterate_episodes,
    load_dataset,
    load_transitions,
    read_episodes,
    validate_dataset,
)
from diffgym.data.mapped import map_episodes
from diffgym.data.segments import (
    SegmentDataset,
    SegmentLayout,
    SegmentRows,
    Segments,
    discounted_returns_to_go,
    join_continuing_episodes,
    penalize_terminations,
    segment_layout,
    window_rows,
)
from diffgym.data.team import (
    AgentMismatchError,
    JointStep,
    JointStepper,
    MultiAgentEpisodes,
    MultiAgentSegmentDataset,
    MultiAgentSegments,
    check_agents_and_spaces,
    collect_multiagent_dataset,
    dataset_agents,
    import_multiagent_d4rl,
    make_parallel_env,
    read_multiagent_episodes,
    recover_parallel_env,
    stack_agents,
    team_flags,
    team_reward,
    unstack_agents,
    validate_multiagent_dataset,
)
from diffgym.data.validation import (
    DatasetSpaceMismatchError,
    EpisodeLengthError,
    NonFiniteDataError,
    check_spaces,
)

__all__ = [
    "AgentMismatchError",
    "DatasetLike",
    "DatasetSpaceMismatchError",
    "EpisodeArrays",
    "EpisodeLengthError",
    "JointStep",
    "JointStepper",
    "MultiAgentEpisodes",
    "MultiAgentSegmentDataset",
    "MultiAgentSegments",
    "NonFiniteDataError",
    "SegmentDataset",
    "SegmentLayout",
    "SegmentRows",
    "Segments",
    "Transitions",
    "check_agents_and_spaces",
    "check_spaces",
    "collect_dataset",
    "collect_multiagent_dataset",
    "dataset_agents",
    "discounted_returns_to_go",
    "flatten_observations",
    "import_d4rl",
    "import_multiagent_d4rl",
    "imported_dataset_id",
    "iterate_episodes",
    "join_continuing_episodes",
    "load_dataset",
    "load_transitions",
    "make_parallel_env",
    "map_episodes",
    "penalize_terminations",
    "read_episodes",
    "read_multiagent_episodes",
    "recover_parallel_env",
    "segment_layout",
    "stack_agents",
    "team_flags",
    "team_reward",
    "unstack_agents",
    "validate_dataset",
    "validate_multiagent_dataset",
    "window_rows",
]
