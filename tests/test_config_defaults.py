"""One home per default: conf/. Every blockqnn object Hydra instantiates receives what the composed
config says: each constructor argument the program does not supply itself is in the YAML, and a
Python default, where one exists, equals the YAML's value (so it cannot contradict it).

Bug this catches: a constructor default changed in Python (or in a YAML file) without the other,
e.g. QLearningAgent's 0.01 / 0.5 against conf's 0.1 / 1.0 (issue 26), or a new constructor argument
that the YAML never shows."""

import inspect
from pathlib import Path

import pytest
from hydra.utils import _locate
from omegaconf import OmegaConf

from tests.conftest import compose_search, compose_train

CONF = Path(__file__).resolve().parents[1] / "conf"

#: Arguments the program passes itself (from other sections or from the run), never from YAML.
SUPPLIED = {
    "seed",
    "max_layers",
    "batch_size",
    "eval_batch_size",
    "device",
    "run",
    "evaluator",
    "run_dir",
    "run_config",
    "name",
    "space",
}
#: Groups whose options are whole experiments or settings, not constructors' homes.
SKIP_GROUPS = {"hydra", "experiment", "debug", "paths"}


def _options():
    for group in sorted(p for p in CONF.iterdir() if p.is_dir() and p.name not in SKIP_GROUPS):
        for option in sorted(group.glob("*.yaml")):
            yield group.name, option.stem


def _variant(group: str, option: str) -> bool:
    """An option that builds on a sibling (agent=qlearning_paper on qlearning): its values are
    deliberate departures from the base option, which is what the Python defaults must equal."""
    siblings = {p.stem for p in (CONF / group).glob("*.yaml")} - {option}
    defaults = OmegaConf.load(CONF / group / f"{option}.yaml").get("defaults") or []
    return any(isinstance(d, str) and d in siblings for d in defaults)


def _targets(node, path=""):
    if isinstance(node, dict):
        if "_target_" in node:
            yield path, node
        for key, value in node.items():
            yield from _targets(value, f"{path}.{key}" if path else key)


def _same(yaml_value, default) -> bool:
    if yaml_value == "???":  # mandatory in the YAML: the Python default is never used
        return True
    if default is None and yaml_value in ({}, []):  # "nothing" either way
        return True
    return yaml_value == default


def _checked_nodes():
    seen = set()
    for compose in (compose_search, compose_train):
        for group, option in _options():
            try:
                cfg = compose(f"{group}={option}")
            except Exception:  # the group belongs to the other entry point
                continue
            tree = OmegaConf.to_container(cfg, resolve=False)
            for path, node in _targets(tree):
                target = node["_target_"]
                key = (target, repr(sorted(node.items(), key=lambda kv: kv[0])))
                if target.startswith("blockqnn.") and key not in seen:
                    seen.add(key)
                    where = f"{compose.__name__}({group}={option}) {path}"
                    yield where, target, node, _variant(group, option)


NODES = list(_checked_nodes())


def test_every_option_of_every_group_is_checked():
    targets = {n[1] for n in NODES}
    # one of each kind at least: agents, evaluators, executors, data, loggers, predictor
    for expected in (
        "blockqnn.agent.QLearningAgent",
        "blockqnn.agent.RandomAgent",
        "blockqnn.agent.EvolutionAgent",
        "blockqnn.agent.TPEAgent",
        "blockqnn.evaluator.lightning.LightningEvaluator",
        "blockqnn.evaluator.surrogate.SurrogateEvaluator",
        "blockqnn.executors.PoolExecutor",
        "blockqnn.executors.RayExecutor",
        "blockqnn.data.modules.TensorDataModule",
        "blockqnn.predictor.RewardPredictor",
        "blockqnn.search.loggers.WandbLogger",
    ):
        assert expected in targets


@pytest.mark.parametrize("where,target,node,variant", NODES, ids=[n[0] for n in NODES])
def test_constructor_receives_the_composed_config(where, target, node, variant):
    params = inspect.signature(_locate(target)).parameters
    for name, p in params.items():
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or name in SUPPLIED:
            continue
        assert name in node, f"{where}: {target}({name}=...) is not in the YAML (its home)"
        if p.default is not inspect.Parameter.empty and not variant:
            assert _same(node[name], p.default), (
                f"{where}: {target} defaults {name}={p.default!r} but conf/ says {node[name]!r}"
            )
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = set(node) - set(params) - {"_target_", "_partial_", "_recursive_"}
        assert not unknown, f"{where}: keys {sorted(unknown)} reach no argument of {target}"


def test_network_defaults_in_python_equal_the_final_network_config():
    """NetworkSpec and network_cost keep defaults for callers that build a network by hand
    (tests, notebooks); they must be conf/model/network/final.yaml's and CIFAR-10's shape."""
    from blockqnn.data.shapes import SHAPES
    from blockqnn.space.cost import network_cost
    from blockqnn.space.network import NetworkSpec, build_network

    final = OmegaConf.load(CONF / "model" / "network" / "final.yaml")
    c, side, classes = SHAPES["cifar10"]
    want = {
        "width": final.width,
        "blocks_per_stage": final.blocks_per_stage,
        "stages": final.stages,
        "drop_path": final.drop_path,
        "num_classes": classes,
        "in_channels": c,
        "input_size": side,
    }
    spec = NetworkSpec()
    assert {k: getattr(spec, k) for k in want} == want
    cost = inspect.signature(network_cost).parameters
    assert {k: cost[k].default for k in want if k in cost} == {
        k: v for k, v in want.items() if k in cost
    }
    assert cost["kind"].default == final.kind
    assert inspect.signature(build_network).parameters["kind"].default == final.kind
