"""compile_networks=True: which networks are compiled, and training gives the eager path's numbers."""

import gymnasium as gym
import pytest
import torch

from diffgym import DiffusionQL
from diffgym.compilation import compile_networks, networks_to_compile

TINY = dict(batch_size=16, check_every=5, seed=0, ema_start=2, ema_every=1,
            policy_kwargs=dict(actor_hidden=16, critic_hidden=16, num_candidates=4))  # fmt: skip


def tiny_dql(dataset, **kwargs):
    return DiffusionQL("MlpPolicy", gym.make("Pendulum-v1"), dataset=dataset, **TINY, **kwargs)


def test_the_networks_are_denoisers_and_critics_with_their_copies(pendulum_dataset):
    names = list(networks_to_compile(tiny_dql(pendulum_dataset).policy))
    assert names == ["actor.denoiser", "ema_actor.module.denoiser", "critic", "critic_target"]


def test_compiled_training_follows_the_eager_losses(pendulum_dataset):
    curves = {}
    for compiled in (False, True):
        model = tiny_dql(pendulum_dataset, compile_networks=compiled)
        curves[compiled] = []
        for _ in range(4):
            model.learn(5, reset_num_timesteps=False)
            curves[compiled].append(model._monitor.means)
        assert model.compile_networks is compiled
    for eager, compiled in zip(curves[False], curves[True], strict=True):
        assert eager.keys() == compiled.keys()
        for name in eager:  # fused kernels round differently; the path is the same
            assert compiled[name] == pytest.approx(eager[name], rel=1e-3, abs=1e-5), name


def test_without_a_cxx_compiler_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"needs a C\+\+ compiler .* compile_networks=False"):
        compile_networks(torch.nn.Linear(2, 2), torch.device("cpu"))
