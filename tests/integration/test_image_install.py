"""The image's install, without a Docker engine: the Dockerfile's own pip commands, run
as written, each stage in a fresh venv, with the image's paths mapped into a temporary
directory (COPY copies the files, a RUN's bind mount points at the other stage's
directory). Then the runtime venv holds exactly the runtime lock and txingest, the
console script answers --help, and `python -m app` refuses a bad configuration with
one line, from the installed wheel (not this checkout).

Needs the package index (the Dockerfile's `pip wheel` downloads the locked wheels
and txingest's build backend), as `make install` does.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.unit.test_deploy import ROOT, dockerfile_instructions

PIP_TIMEOUT_S = 600


@dataclass
class Stage:
    """One FROM ... stage: its filesystem root, a fresh venv as its Python, its env."""

    name: str
    root: Path
    python: Path
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)

    def host(self, path: str) -> Path:
        """Where an absolute or WORKDIR-relative path of the image is in this test."""
        absolute = path if path.startswith("/") else f"{self.workdir.rstrip('/')}/{path}"
        return self.root / absolute.lstrip("/")


def build_stages(tmp: Path) -> dict[str, Stage]:
    """Run the Dockerfile's FROM, WORKDIR, ENV, COPY and the pip commands of its RUNs."""
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for word, args in dockerfile_instructions():
        if word == "FROM":
            name = args.split()[-1] if " AS " in args.upper() else str(len(stages))
            root = tmp / f"stage-{name}"
            subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
            stage = stages[name] = Stage(name, root, root / "venv" / "bin" / "python")
        elif stage is None or word in ("ARG", "USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT"):
            continue
        elif word == "WORKDIR":
            stage.workdir = args
            stage.host(".").mkdir(parents=True, exist_ok=True)
        elif word == "ENV":
            stage.env.update(dict(pair.split("=", 1) for pair in shlex.split(args)))
        elif word == "COPY":
            copy(stage, shlex.split(args))
        elif word == "RUN":
            run_pip_commands(stage, stages, args)
    return stages


def copy(stage: Stage, args: list[str]) -> None:
    assert not any(a.startswith("--") for a in args), f"COPY options not reproduced: {args}"
    *sources, target = args
    for source in sources:
        into = stage.host(target)
        if target.endswith("/") or len(sources) > 1:
            into = into / Path(source).name
        into.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, into, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / source, into)


def run_pip_commands(stage: Stage, stages: dict[str, Stage], args: str) -> None:
    """The RUN's pip commands with the image's paths mapped; the rest (rm, useradd) is
    about the image's layers and user, not what is installed."""
    words = shlex.split(args)
    mounts = {}
    while words and words[0].startswith("--mount="):
        option = dict(part.split("=", 1) for part in words.pop(0)[8:].split(","))
        mounts[option["target"]] = stages[option["from"]].host(option["source"])
    commands: list[list[str]] = [[]]
    for word in words:
        if word == "&&":
            commands.append([])
        else:
            commands[-1].append(word)
    for argv in commands:
        if argv[0] != "pip":
            continue
        command = shlex.join(argv)
        mapped: list[str] = []
        for word in argv[1:]:
            mapped += expand(stage, mounts, word)
        result = subprocess.run([str(stage.python), "-m", "pip", *mapped], cwd=stage.host("."),
                                env={**os.environ, **stage.env}, capture_output=True,
                                text=True, timeout=PIP_TIMEOUT_S, check=False)
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}{result.stderr}"


def expand(stage: Stage, mounts: dict[str, Path], word: str) -> list[str]:
    if not word.startswith("/"):
        return [word]
    for target, source in mounts.items():
        if word == target or word.startswith(target + "/"):
            path = str(source) + word[len(target):]
            break
    else:
        path = str(stage.host(word))
    found = sorted(glob.glob(path)) if "*" in path else [path]
    assert found, f"{word}: nothing at {path}"
    return found


def lock_names(lock: Path) -> set[str]:
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==", lock.read_text(encoding="utf-8"), re.MULTILINE)
    return {normalise(name) for name in pins}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_runtime_stage_installs_the_lock_and_the_wheel_and_starts(tmp_path):
    stages = build_stages(tmp_path)
    runtime = list(stages.values())[-1]
    venv_bin = runtime.python.parent
    away = tmp_path / "elsewhere"  # not this checkout: `python -m app` must find the wheel
    away.mkdir()
    env = {"PATH": f"{venv_bin}:/usr/bin:/bin", **runtime.env}

    listed = subprocess.run([str(runtime.python), "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True, check=True, env=env).stdout
    installed = {normalise(line.split("==")[0]) for line in listed.splitlines()}
    installer = {"pip", "setuptools", "wheel"}  # the base Python's own
    assert installed - installer == lock_names(ROOT / "requirements.lock") | {"txingest"}

    where = subprocess.run([str(runtime.python), "-c", "import app; print(app.__file__)"],
                           cwd=away, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(venv_bin.parent)), where.stdout

    helped = subprocess.run([str(venv_bin / "txingest"), "--help"], cwd=away, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert helped.returncode == 0 and "KAFKA_BOOTSTRAP_SERVERS" in helped.stdout, helped.stderr

    refused = subprocess.run(
        [str(runtime.python), "-m", "app"], cwd=away, capture_output=True, text=True,
        env={**env, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, timeout=60, check=False)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith("txingest: invalid setting KAFKA_SECURITY_PROTOCOL=SASL_SSL: "
                                     "needs KAFKA_SASL_USERNAME"), refused.stderr
