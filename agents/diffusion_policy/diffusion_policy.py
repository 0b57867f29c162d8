"""DiffusionPolicy: imitation by denoising action chunks conditioned on an observation history."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.type_aliases import GymEnv
from torch import Tensor

from diffgym.agents.diffusion_policy.policies import DiffusionPolicyNet
from diffgym.data import DatasetLike
from diffgym.trajectory import SegmentSamples, SequenceAlgorithm


def repeat_last_action(actions: Tensor, mask: Tensor) -> Tensor:
    """Replace the actions after a window's last real step by that step's action (DP's edge padding).

    Padding before an episode already repeats its first action and is kept. Shapes: actions
    (B, H, A), mask (B, H) bool (True on real steps) -> (B, H, A).

    >>> actions = torch.tensor([[[1.0], [2.0], [0.0], [0.0]]])
    >>> repeat_last_action(actions, torch.tensor([[True, True, False, False]])).flatten().tolist()
    [1.0, 2.0, 2.0, 2.0]
    """
    steps = torch.arange(actions.shape[1], device=actions.device).expand_as(mask)
    last_real = torch.where(mask, steps, -1).cummax(dim=1).values
    source = torch.where(last_real >= 0, last_real, steps)
    return actions.gather(1, source.unsqueeze(-1).expand_as(actions))


class DiffusionPolicy(SequenceAlgorithm):
    """Diffusion Policy (Chi, Feng, Du, Xu, Cousineau, Burchfiel & Song, "Diffusion Policy:
    Visuomotor Policy Learning via Action Diffusion", RSS 2023), CNN variant on low-dimensional
    observations, as an SB3 algorithm that imitates a dataset's demonstrations.

    Each gradient step takes ``batch_size`` windows of ``horizon`` steps, each starting
    ``n_obs_steps - 1`` steps before the first action it teaches to execute (windows may start
    before an episode, on rows repeating its first step). A 1-D U-Net with FiLM conditioning
    (:class:`~diffgym.denoisers.TemporalUnet`, ``film=True``) learns to predict the noise added to
    the window's ``horizon`` actions, conditioned on its first ``n_obs_steps`` observations (DP's
    ``obs_as_global_cond``); DDPM loss over the whole chunk, ε-prediction, cosine schedule, x0
    clipped to [-1, 1] when sampling. AdamW with a linear warm-up and a cosine decay of the
    learning rate; an EMA of the model (DP's warm-up decay, every step) is what acts.

    Acting (:class:`~diffgym.agents.diffusion_policy.DiffusionPolicyNet`): sample a chunk from the
    last ``n_obs_steps`` observations, execute its ``n_action_steps`` actions from the current step
    on, then sample again; ``predict`` follows SB3's recurrent-policy convention (pass the returned
    state back, as ``evaluate_policy`` does, so that it returns the chunk's actions in order).
    ``temporal_ensemble_coeff`` switches to ACT's temporal ensembling.

    **On an action-chunk env** (:func:`~diffgym.wrappers.make_chunked_env`, or
    :class:`~diffgym.wrappers.ActionChunkWrapper` alone when ``n_obs_steps`` is 1; DP's own
    ``MultiStepWrapper``), the model emits whole chunks: built on an env whose action space is a Box
    ``(k, *action_shape)`` (two or more axes: a chunk of ``k`` actions) and whose observations are the
    history ``(n_obs_steps, *obs_shape)`` (or ``obs_shape`` alone with ``n_obs_steps=1``), it learns from
    the same per-step dataset (its spaces are checked against one step of the env's: ``(obs_shape,)``,
    ``(action_shape,)``), and ``model.predict(obs)`` samples a fresh chunk per call from the history the
    env shows: an observation ``(n_obs_steps, *obs_shape)`` gives a chunk ``(k, *action_shape)``, a batch
    ``(n, n_obs_steps, *obs_shape)`` gives ``(n, k, *action_shape)``; no state is kept (the env holds the
    history), so ``evaluate_policy`` works as on any env. The env's ``k`` must equal ``n_action_steps``
    and its history ``n_obs_steps`` (an error says which to change), and temporal ensembling, which needs
    a chunk every env step, is refused there. Model files record the env's spaces, so a loaded model
    acts on the chunk env again. On an env of single steps an observation ``(n, *obs_shape)`` is a batch
    of ``n`` envs (SB3's convention): feed a chunk env's histories to a model built on the chunk env.

    Paper defaults (``train_diffusion_unet_lowdim_workspace.yaml``): T_o = 2, T_p = 16, T_a = 8;
    100 DDPM training steps, ``squaredcos_cap_v2``, ε-prediction, clipped samples; 100 DDPM
    inference steps (DDIM with 16 on the real robots); U-Net ``down_dims=(256, 512, 1024)``,
    kernel 5, 8 groups, FiLM; AdamW lr 1e-4, betas (0.95, 0.999), weight decay 1e-6; cosine
    schedule with 500 warm-up steps; batch 256; EMA power 0.75, max 0.9999; min-max normalisation
    of observations and actions to [-1, 1].

    Deliberate differences:

    - Sized for CPU: U-Net widths 64·(1, 2, 4) (DP: 256·(1, 2, 4)) and DDIM with 10 steps (see
      :class:`DiffusionPolicyNet`).
    - The U-Net embeds the global condition with an MLP concatenated to the time embedding (DP
      concatenates the raw condition; see :class:`~diffgym.denoisers.TemporalUnet`).
    - Observations are standardised, their std floored at 0.01 (DP: min-max to [-1, 1], which
      ``policy_kwargs=dict(normalizer="limits")`` gives); actions are scaled to [-1, 1] by
      the action space's bounds (DP: by the data's range).
    - Padding after an episode's end repeats its last action, as DP's, with the loss on every step;
      but windows may start at every step of an episode (DP's stop ``n_action_steps - 1`` steps
      after its end), so once per episode the current observation is the final one and every
      action is padding.
    - DP anneals along a cosine over its whole run (its ``num_epochs`` × batches per epoch), which
      only the user knows: pass ``lr_decay_steps`` = the total gradient steps (the Meta-World keys
      of ``zoo/hyperparams/diffusion_policy.yml`` do); the default None keeps the rate constant
      after warm-up. The cosine spans the warm-up too (DP: the steps after warm-up).
    - Offline only: ``learn(online=True)`` raises; ``total_timesteps`` counts gradient steps.
    - An action space of two or more axes is taken for an action-chunk env (see above); DP's actions are
      vectors.

    Args (besides :class:`~diffgym.algorithm.OfflineAlgorithm`'s):
        learning_rate: AdamW's peak learning rate (DP: 1e-4).
        batch_size: windows per gradient step (DP: 256).
        lr_warmup_steps: gradient steps of linear learning-rate warm-up (DP: 500); 0 for none.
        lr_decay_steps: gradient steps of the cosine decay to 0, across ``learn`` calls (DP: its
            whole run); None: no decay.
    """

    policy_aliases: ClassVar[dict[str, type]] = {
        "MlpPolicy": DiffusionPolicyNet,
        "MultiInputPolicy": DiffusionPolicyNet,
    }
    policy: DiffusionPolicyNet

    def __init__(
        self,
        policy: str | type[DiffusionPolicyNet],
        env: GymEnv | str | None,
        dataset: DatasetLike | None = None,
        learning_rate: float = 1e-4,
        batch_size: int = 256,
        lr_warmup_steps: int = 500,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            policy,
            env,
            dataset,
            learning_rate=learning_rate,
            batch_size=batch_size,
            lr_warmup_steps=lr_warmup_steps,
            **kwargs,
        )

    def _policy_spaces(self) -> tuple[spaces.Space, spaces.Space]:
        """One step's spaces: the env's, or on an action-chunk env those of one of its steps."""
        return chunk_env_step_spaces(self.observation_space, self.action_space) or super()._policy_spaces()

    def _build_policy(self) -> None:
        super()._build_policy()
        if acts_in_chunks(self.action_space):
            _check_chunk_env(self.observation_space, self.action_space, self.policy)

    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's ``predict``; on an action-chunk env, one whole chunk per env and no state (see the class doc).

        Raises:
            ValueError: on an action-chunk env, an observation of neither the env's shape nor a batch of it.
        """
        if not acts_in_chunks(self.action_space):
            return super().predict(observation, state, episode_start, deterministic)
        shape = self.observation_space.shape
        array = np.asarray(observation)
        if array.shape != shape and array.shape[1:] != shape:
            raise ValueError(
                f"{type(self).__name__} acts on its action-chunk env's observations, of shape {shape} (the last "
                f"{self.policy.n_obs_steps} observations) or a batch (n, *{shape}); got shape {array.shape}"
            )
        batch = array if array.shape != shape else array[None]
        chunks = self.policy.act_in_chunks(batch, deterministic)
        return (chunks if array.shape != shape else chunks[0]), None

    def train_step(self, batch: SegmentSamples) -> dict[str, Tensor]:
        policy = self.policy
        actions = repeat_last_action(batch.actions, batch.mask)
        loss = policy.model.loss(actions, policy.condition(batch.observations), generator=self.generator)
        policy.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        policy.optimizer.step()
        policy.ema.update(policy.model, self._n_updates)  # DP's warm-up decay, every step
        return {"diffusion_loss": loss}

    def _prepare_batch(self, batch: SegmentSamples) -> SegmentSamples:
        """Normalise only the observations the condition uses (the first ``n_obs_steps``)."""
        history = batch.observations[:, : self.policy.n_obs_steps]
        return batch._replace(observations=self.policy.obs_normalizer.normalize(history))


def acts_in_chunks(action_space: spaces.Space) -> bool:
    """Whether an env's action space is a chunk of actions: a Box of two or more axes, ``(k, *action_shape)``."""
    return isinstance(action_space, spaces.Box) and len(action_space.shape) >= 2


def chunk_env_step_spaces(
    observation_space: spaces.Space, action_space: spaces.Space
) -> tuple[spaces.Box, spaces.Box] | None:
    """One step's spaces of an action-chunk env, or None for an env of single steps.

    Actions ``Box (k, *action_shape)`` -> ``Box (*action_shape)`` (the first row's bounds); observations
    ``Box (T, *obs_shape)`` (a history: two or more axes) -> ``Box (*obs_shape)`` (the newest row's
    bounds), a one-axis Box is already one step's.

    Raises:
        TypeError: an action-chunk env whose observation space is not a Box.
    """
    if not acts_in_chunks(action_space):
        return None
    assert isinstance(action_space, spaces.Box)
    if not isinstance(observation_space, spaces.Box):
        raise TypeError(
            f"DiffusionPolicy on an action-chunk env needs Box observations (a history (n_obs_steps, *obs_shape)), "
            f"got {observation_space}"
        )
    step_action = spaces.Box(
        action_space.low[0], action_space.high[0], action_space.shape[1:], action_space.dtype
    )
    if len(observation_space.shape) < 2:
        return observation_space, step_action
    low, high = observation_space.low[-1], observation_space.high[-1]
    return spaces.Box(low, high, observation_space.shape[1:], observation_space.dtype), step_action


def _check_chunk_env(
    observation_space: spaces.Space, action_space: spaces.Space, policy: DiffusionPolicyNet
) -> None:
    """Refuse an action-chunk env (action space ``(k, *action_shape)``) whose chunk length or history
    differ from the policy's."""
    k = (action_space.shape or (0,))[0]
    if policy.temporal_ensemble_coeff is not None:
        raise ValueError(
            "temporal ensembling (temporal_ensemble_coeff) samples a chunk at every env step, but an action-chunk "
            f"env executes whole chunks of {k} actions: build the model on the env without ActionChunkWrapper to "
            "ensemble, or leave temporal_ensemble_coeff out"
        )
    if k != policy.chunk_steps:
        raise ValueError(
            f"the env executes chunks of {k} actions (its action space {action_space}) but the policy executes "
            f"n_action_steps={policy.chunk_steps} per chunk: pass policy_kwargs=dict(n_action_steps={k}), or "
            f"wrap the env with n_action_steps={policy.chunk_steps}"
        )
    shape = observation_space.shape or ()
    history = shape[0] if len(shape) >= 2 else 1
    if history != policy.n_obs_steps:
        raise ValueError(
            f"the env's observations hold {history} step(s) (observation space {observation_space}) but the policy "
            f"is conditioned on n_obs_steps={policy.n_obs_steps}: pass policy_kwargs=dict(n_obs_steps={history}), "
            f"or wrap the env with make_chunked_env(env, n_obs_steps={policy.n_obs_steps}, n_action_steps={k})"
        )
