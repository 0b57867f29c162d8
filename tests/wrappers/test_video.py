"""``record_video``: one call, the frames RecordVideo would record (streamed), a clear error when nothing
can draw."""

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
import pytest
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from diffgym.tasks.rendering import HINT, choose_headless_gl
from diffgym.wrappers import record_video


class Swing:
    """A fixed policy with SB3's ``predict``."""

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return np.ones((len(observation), 1), dtype=np.float32), state


class BrokenGL(gym.Wrapper):
    def render(self):
        raise OSError("no OpenGL context")


def frames_of(path):
    return np.stack(imageio.mimread(path, format="ffmpeg", memtest=False)).astype(float)


def test_episodes_become_one_video_with_every_frame(tmp_path):
    env = gym.make("Pendulum-v1", render_mode="rgb_array", max_episode_steps=30)
    returns, lengths = record_video(Swing(), env, tmp_path / "swing.mp4", episodes=2, seed=0)
    assert lengths == [30, 30] and len(returns) == 2
    # each reset's frame and one per step; SB3's vector env resets once more after the last episode
    assert len(frames_of(tmp_path / "swing.mp4")) == 2 * 31 + 1
    assert [p.name for p in tmp_path.iterdir()] == ["swing.mp4"]  # nothing half-written left behind
    env.render()  # the caller's env stays open


def test_the_frames_are_those_gymnasiums_record_video_records(tmp_path):
    """Against the library: RecordVideo around the same seeded episode (it keeps frames in memory)."""
    pytest.importorskip("moviepy")
    env = gym.make("Pendulum-v1", render_mode="rgb_array", max_episode_steps=20)
    record_video(Swing(), env, tmp_path / "ours.mp4", seed=5)
    recorder = gym.wrappers.RecordVideo(
        gym.make("Pendulum-v1", render_mode="rgb_array", max_episode_steps=20),
        str(tmp_path / "theirs"),
        episode_trigger=lambda episode: episode == 1,
        video_length=10**9,
        fps=env.metadata["render_fps"],
    )
    record_video_reference = Monitor(recorder)
    record_video_reference.reset(seed=5)
    evaluate_policy(Swing(), record_video_reference, n_eval_episodes=1)
    recorder.close()
    ours, (theirs_path,) = frames_of(tmp_path / "ours.mp4"), (tmp_path / "theirs").glob("*.mp4")
    theirs = frames_of(theirs_path)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).mean() < 2.0  # the same pictures; the two encoders round differently


def test_only_mp4_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"give a path ending in \.mp4, not 'x\.gif'"):
        record_video(Swing(), "Pendulum-v1", tmp_path / "x.gif")


def test_the_same_seed_records_the_same_episodes(tmp_path):
    runs = [
        record_video(
            Swing(), "Pendulum-v1", tmp_path / f"{i}.mp4", seed=3, env_kwargs={"max_episode_steps": 10}
        )
        for i in range(2)
    ]
    assert runs[0] == runs[1]


def test_an_env_without_rgb_frames_is_refused(tmp_path):
    with pytest.raises(ValueError, match="render_mode='rgb_array', not None"):
        record_video(Swing(), gym.make("Pendulum-v1"), tmp_path / "x.mp4")


def test_a_backend_that_cannot_draw_says_what_to_install(tmp_path):
    env = gym.make("Pendulum-v1", render_mode="rgb_array")
    env.unwrapped.render = BrokenGL(env).render
    with pytest.raises(RuntimeError, match=r"rendering failed with MUJOCO_GL=.*no OpenGL context") as error:
        record_video(Swing(), env, tmp_path / "x.mp4")
    assert HINT in str(error.value) and not (tmp_path / "x.mp4").exists()


def test_a_headless_machine_gets_osmesa_or_egl_and_a_display_keeps_its_default(monkeypatch):
    """On mappings of the test's own: the process's environment is not touched."""
    monkeypatch.setattr(
        "ctypes.util.find_library", lambda name: "libOSMesa.so.8" if name == "OSMesa" else None
    )
    headless = {}
    assert choose_headless_gl(headless) == "osmesa" and headless["PYOPENGL_PLATFORM"] == "osmesa"
    monkeypatch.setattr("ctypes.util.find_library", lambda name: None)
    assert choose_headless_gl({}) == "egl"
    with_display = {"DISPLAY": ":0"}
    assert choose_headless_gl(with_display) is None and "MUJOCO_GL" not in with_display
