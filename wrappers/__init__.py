"""Gymnasium / PettingZoo wrappers and SB3 replay buffers (installed as ``diffgym.wrappers``)."""

from diffgym.wrappers.action_chunk import ActionChunkWrapper, make_chunked_env
from diffgym.wrappers.multiagent import JointAgentEnv, TeamPolicy, evaluate_team
from diffgym.wrappers.replay_buffer import DiffusionReplayBuffer
from diffgym.wrappers.synther import (
    SynthERConfig,
    SyntheticTransitions,
    TransitionDiffusion,
    fit_observation_normalizer,
    synthesize_dataset,
)
from diffgym.wrappers.video import record_video

__all__ = [
    "ActionChunkWrapper",
    "DiffusionReplayBuffer",
    "JointAgentEnv",
    "SynthERConfig",
    "SyntheticTransitions",
    "TeamPolicy",
    "TransitionDiffusion",
    "evaluate_team",
    "fit_observation_normalizer",
    "make_chunked_env",
    "record_video",
    "synthesize_dataset",
]
