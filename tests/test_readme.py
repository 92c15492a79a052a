"""The README's commands run as it says, so it cannot drift from the code: every
``python search.py``/``python train.py`` command it shows (code blocks and inline) composes
with Hydra (``--cfg job --resolve``: its groups, keys and values exist), and the ones the README
calls quick run for real, the search ones with a small cap, within the time the README states."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from blockqnn.config import refuse_renamed

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PLACEHOLDERS = {
    "<that folder>": "/tmp/run",
    "<run folder>": "/tmp/run",
    "<run>": "run",
    "<B>": "resnet_basic",
    "<blocks.json>": "/tmp/blocks.json",
    "<p>": "gpu",
    "<path>": "/tmp/x",
}


def commands() -> list[str]:
    """Every search.py/train.py command of the README: lines of its bash blocks, inline code."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        found += [
            line.strip()
            for line in block.splitlines()
            if re.match(r"\s*python (search|train)\.py", line)
        ]
    found += [
        " ".join(c.split()) for c in re.findall(r"`(python (?:search|train)\.py[^`]*)`", README)
    ]
    return list(dict.fromkeys(found))


def argv(command: str) -> list[str]:
    """The command's arguments with placeholders filled and a sweep reduced to its first job."""
    for k, v in PLACEHOLDERS.items():
        command = command.replace(k, v)
    script, *args = shlex.split(command, comments=True)[1:]
    out = []
    for a in args:
        if a in ("-m", "--multirun", "..."):
            continue
        key, _, value = a.partition("=")
        if "," in value and not value.startswith(("[", "{", "'", '"')):
            a = f"{key}={value.split(',')[0]}"  # a sweep: its first job
        out.append(a)
    return [script, *out]


def _env(tmp_path: Path) -> dict:
    return {
        **os.environ,
        "BLOCKQNN_OUTPUT_DIR": str(tmp_path / "outputs"),
        "BLOCKQNN_MULTIRUN_DIR": str(tmp_path / "multirun"),
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
    }


def test_the_readme_shows_its_commands():
    found = commands()
    assert len(found) >= 25
    bare = [argv(c) for c in found]
    assert ["search.py"] in bare and ["train.py"] in bare  # the two entry points as they come


@pytest.mark.parametrize("command", commands())
def test_every_readme_command_composes(command, tmp_path, monkeypatch):
    """Composed in this process as the script's ``@hydra.main`` composes it (``--cfg job
    --resolve``: the primary config, the overrides, the hydra section for ``hydra/...`` and
    ``hydra.*`` overrides, every interpolation resolved) and after the script's own check of
    renamed keys; a subprocess per command cost 1.5 s each for the same check."""
    script, *args = argv(command)
    if "--help" in args:
        proc = subprocess.run(
            [sys.executable, str(ROOT / script), "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert proc.returncode == 0 and "== Configuration groups ==" in proc.stdout
        return
    for key, value in _env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    refuse_renamed(args)
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(Path(script).stem, overrides=args, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # --cfg job: the job's config, resolved
    assert "seed" in OmegaConf.to_container(cfg, resolve=True), command


def _quick(marker: str) -> str:
    matches = [c for c in commands() if marker in c]
    assert len(matches) == 1, f"the README no longer has one command marked {marker!r}"
    return matches[0]


@pytest.mark.slow
def test_the_quick_readme_commands_run_in_the_time_they_state(tmp_path):
    """The smoke test verbatim and ``python train.py`` verbatim (bare ``python search.py`` is
    the smoke test without debug=smoke: it composes here, and bench/search_default.py runs it
    whole). The README's stated times are on an idle 2-core machine; the limits allow for a
    busy one."""
    cases = [
        (_quick("# smoke test"), [], 300),
        (_quick("# resnet_basic preset on digits"), [], 180),
    ]
    for command, cap, limit in cases:
        script, *args = argv(command)
        proc = subprocess.run(
            [sys.executable, str(ROOT / script), *args, *cap],
            capture_output=True,
            text=True,
            timeout=limit,
            cwd=tmp_path,
            env=_env(tmp_path),
        )
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-2000:]}"
        assert "outputs in" in proc.stdout + proc.stderr or "test accuracy" in proc.stderr, command
