"""The hyperparameter files and their loader: merging over ``default``, key selection, ``--set``."""

import doctest
import inspect
import re

import pytest

from diffgym.agents.registry import AGENTS
from diffgym.zoo import hyperparameters
from diffgym.zoo.hyperparameters import (
    HYPERPARAMS_DIR,
    apply_overrides,
    deep_merge,
    hyperparams_file,
    load_hyperparams,
    parse_override,
    read_hyperparams,
    resolve_hyperparams,
    select_key,
    split_config,
)

FILES = sorted(HYPERPARAMS_DIR.glob("*.yml"))
#: where an agent's settings are declared: the algorithm's and the policy's constructors
SIGNATURES = ("__init__", "_build", "_build_mode")


def test_doc_examples():
    assert doctest.testmod(hyperparameters).failed == 0


@pytest.mark.parametrize("spec", AGENTS, ids=lambda spec: spec.name)
def test_every_shipped_agent_has_a_file_with_a_default(spec):
    assert "default" in read_hyperparams(spec.hyperparams_name)


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_every_field_has_a_comment(path):
    """A line that sets a value (not one that only opens a mapping or names an anchor) says why."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        sets_value = re.match(r"^\s*[^#\s][^#]*:\s+(?!&\S+\s*$)\S", line)
        assert not sets_value or " # " in line, f"{path.name}:{number} has no comment: {line!r}"


def _declared_defaults(cls):
    """Every parameter default of the constructors in ``cls``'s MRO, the most derived winning."""
    defaults = {}
    for klass in reversed(cls.__mro__):
        for method in (klass.__dict__.get(name) for name in SIGNATURES):
            if method is not None:
                parameters = inspect.signature(method).parameters.values()
                defaults |= {
                    p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty
                }
    return defaults


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, tuple | list) else value


def _check_defaults(settings, cls):
    declared = _declared_defaults(cls)
    for name, value in settings.items():
        assert name in declared, f"{cls.__name__} takes no {name!r}"
        assert _plain(declared[name]) == value, (
            f"{cls.__name__}.{name}: file {value!r}, code {declared[name]!r}"
        )


@pytest.mark.parametrize("spec", AGENTS, ids=lambda spec: spec.name)
def test_default_entry_is_the_agents_own_defaults(spec):
    """The ``default`` entry restates the code's defaults (so a file never silently changes an agent)."""
    steps, policy, kwargs = split_config(read_hyperparams(spec.hyperparams_name)["default"])
    assert steps > 0
    cls = spec.load()
    _check_defaults({k: v for k, v in kwargs.items() if k != "policy_kwargs"}, cls)
    _check_defaults(kwargs.get("policy_kwargs", {}), cls.policy_aliases[policy])


def test_a_key_is_merged_over_default_key_by_key():
    medium = load_hyperparams("diffuser", "maze2d-medium")
    assert medium["policy_kwargs"]["horizon"] == 320  # its own
    assert medium["policy_kwargs"]["num_timesteps"] == 64  # from maze2d-umaze through the YAML anchor
    assert medium["batch_size"] == 64  # from default
    hopper = load_hyperparams("diffuser", "hopper-medium")["policy_kwargs"]
    assert hopper["n_plans"] == 16 and hopper["guide_scale"] == 0.1 and hopper["dim_mults"] == [1, 2, 4, 8]
    assert load_hyperparams("dql", "hopper-medium-replay")["grad_norm"] == 4.0


def test_unknown_files_and_keys_are_named():
    with pytest.raises(FileNotFoundError, match=r"no hyperparameter file nope\.yml.*known: .*dql"):
        hyperparams_file("nope")
    with pytest.raises(
        KeyError, match=r"dql\.yml has no key 'walker2d-medium'; its keys: default, hopper-medium"
    ):
        load_hyperparams("dql", "walker2d-medium")


@pytest.mark.parametrize(
    ("names", "key"),
    [
        (["hopper-medium"], "hopper-medium"),
        (["mujoco/hopper/medium-replay-v0"], "hopper-medium-replay"),  # most words win
        (
            ["quickstart/pendulum/random-v0", "Pendulum-v1"],
            "Pendulum-v1",
        ),  # the env id when the data fits none
        (["pendulum-v1"], "Pendulum-v1"),  # case aside
        (["walker2d-medium", "Walker2d-v5"], None),
    ],
)
def test_select_key(names, key):
    assert select_key(read_hyperparams("idql"), names) == key


def test_resolve_falls_back_to_default_and_applies_overrides():
    key, config = resolve_hyperparams("dql", ["walker2d-medium"], overrides=["eta=2.5"])
    assert key == "default" and config["eta"] == 2.5
    key, config = resolve_hyperparams("dql", ["hopper-medium"], key="halfcheetah-medium-replay")
    assert key == "halfcheetah-medium-replay" and config["grad_norm"] == 2.0


def test_an_agent_without_a_file_gets_only_its_overrides():
    assert resolve_hyperparams("a-plugins-agent", ["hopper-medium"], overrides=["eta=1"]) == (
        None,
        {"eta": 1},
    )
    with pytest.raises(FileNotFoundError):
        resolve_hyperparams("a-plugins-agent", [], key="hopper-medium")


def test_overrides_are_yaml_values_at_nested_keys():
    config = {"eta": 1.0, "policy_kwargs": {"sampler": "ddpm"}}
    result = apply_overrides(
        config,
        ["eta=1e-3", "lr_decay_steps=null", "policy_kwargs.sampler={name: ddim, num_steps: 5}", "policy_kwargs.dim_mults=[1, 2]",
         "new.nested.key=null", "name=ddim"],
    )  # fmt: skip
    assert result == {
        "eta": 0.001,
        "lr_decay_steps": None,
        "policy_kwargs": {"sampler": {"name": "ddim", "num_steps": 5}, "dim_mults": [1, 2]},
        "new": {"nested": {"key": None}},
        "name": "ddim",
    }
    assert config == {"eta": 1.0, "policy_kwargs": {"sampler": "ddpm"}}  # untouched


@pytest.mark.parametrize("bad", ["eta", "=1", "a..b=1"])
def test_malformed_overrides_are_refused(bad):
    with pytest.raises(ValueError, match="--set takes key=value"):
        parse_override(bad)


def test_an_override_that_is_not_yaml_is_named():
    with pytest.raises(ValueError, match=r"--set sampler: the value '\{name: ddim' is not valid YAML"):
        parse_override("sampler={name: ddim")


def test_an_override_cannot_descend_into_a_value():
    with pytest.raises(ValueError, match=r"policy_kwargs\.sampler is not a mapping"):
        apply_overrides({"policy_kwargs": {"sampler": "ddpm"}}, ["policy_kwargs.sampler.name=ddim"])


def test_split_config_and_deep_merge():
    assert split_config({"n_timesteps": 5, "policy": "MultiInputPolicy", "eta": 1}) == (
        5,
        "MultiInputPolicy",
        {"eta": 1},
    )
    assert split_config({"eta": 1}) == (None, "MlpPolicy", {"eta": 1})
    assert deep_merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 4}}) == {"a": {"b": 4, "c": 2}, "d": 3}
