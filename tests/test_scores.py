import warnings

import minari
import numpy as np
import pytest
from gymnasium import spaces
from minari.data_collector import EpisodeBuffer

from diffgym import scores
from diffgym.scores import Reference, get_reference, normalized_score, register_reference


@pytest.mark.parametrize("name", ["hopper", "hopper-medium-v2", "mujoco/hopper/medium-v0", "Hopper-v5"])
def test_d4rl_locomotion_names(name):
    assert normalized_score(name, -20.272305) == pytest.approx(0.0)
    assert normalized_score(name, 3234.3) == pytest.approx(100.0)
    assert "D4RL" in get_reference(name).source


def test_maze_and_longest_match():
    assert get_reference("maze2d-umaze-v1").random == 23.85
    assert get_reference("maze2d-large-v1").expert == 273.99
    assert get_reference("Ant-v5").expert == 3879.7
    with pytest.raises(KeyError, match="no reference returns"):
        get_reference("antmaze-umaze-v2")


def test_arrays_explicit_and_registered(monkeypatch):
    monkeypatch.setattr(scores, "_REFERENCES", dict(scores._REFERENCES))  # keep the registry clean
    values = normalized_score("walker2d", np.array([1.629008, 4592.3]))
    np.testing.assert_allclose(values, [0.0, 100.0])
    assert normalized_score("anything", 5.0, reference=(0.0, 10.0)) == pytest.approx(50.0)
    register_reference("mpe-spread", -24.69, -5.66, "shared/datasets/README.md")
    assert get_reference("mpe-spread-expert") == Reference(-24.69, -5.66, "shared/datasets/README.md")
    with pytest.raises(ValueError):
        register_reference("flat", 1.0, 1.0, "nowhere")


def test_dataset_references(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    buffer = EpisodeBuffer(
        observations=np.zeros((3, 1)),
        actions=np.zeros((2, 1)),
        rewards=np.zeros(2),
        terminations=np.zeros(2, bool),
        truncations=np.array([False, True]),
    )
    box = spaces.Box(-1, 1, (1,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dataset = minari.create_dataset_from_buffers(
            "test/hopper/x-v0", [buffer], observation_space=box, action_space=box
        )
    assert get_reference(dataset).expert == 3234.3  # no references stored: matched by its id
    dataset.storage.update_metadata({"ref_min_score": 10.0, "ref_max_score": 20.0})
    assert normalized_score(dataset, 15.0) == pytest.approx(50.0)
    assert "test/hopper/x-v0" in get_reference(dataset).source
    assert minari.get_normalized_score(dataset, np.array(15.0)) == pytest.approx(0.5)
