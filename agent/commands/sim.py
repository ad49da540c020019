"""``algocyte-agent sim``: the simulated analyzer as a process of its own.

It starts the virtual GRBL controller (a pseudo-terminal behind a stable symlink) and
a frame server for the virtual camera, prints both addresses and the config lines that
use them, and runs until SIGINT or SIGTERM. The agent (or plain pyserial) then talks to
it exactly as to a real analyzer on another port.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

from agent.commands.common import load_selected_config
from agent.errors import ConfigError
from drivers.sim.config import SimulatorConfig


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "sim",
        parents=[common],
        help="run the simulated analyzer (virtual GRBL controller and camera) as its own process",
        description=(
            "Start the simulated analyzer and print how to reach it: the pseudo-terminal of the "
            "virtual GRBL controller and the address of the virtual camera. Runs until stopped "
            "(Ctrl-C or SIGTERM). Uses the embedded simulator configuration unless --config is "
            "given (its simulator, camera and stage.limits sections are used)."
        ),
    )
    p.add_argument(
        "--cells",
        type=Path,
        metavar="DIR",
        help="cell library for the virtual slide (one subfolder per class); default: the demo library",
    )
    p.add_argument("--seed", type=int, metavar="S", help="seed of the virtual slide")
    p.add_argument(
        "--camera",
        metavar="ADDR",
        help=(
            "where to serve the camera: unix:///path.sock or tcp://host:port (port 0 picks a "
            "free one); default: a socket in a fresh private directory"
        ),
    )
    p.add_argument(
        "--stage-link",
        type=Path,
        metavar="PATH",
        help="also make PATH a symlink to the controller's port (a fixed path for agent.yaml)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print one JSON line {"stage_port": ..., "camera": ...} instead of the text',
    )
    p.set_defaults(func=execute)


def _simulator_config(args: argparse.Namespace, section: SimulatorConfig | None) -> SimulatorConfig:
    if section is None:
        raise ConfigError(
            "the configuration has no simulator section; add 'simulator: {}' or run without "
            "--config for the embedded simulator"
        )
    update: dict[str, object] = {}
    if args.cells is not None:
        update["cell_library"] = args.cells
    if args.seed is not None:
        if args.seed < 0:
            raise ConfigError(f"--seed must be >= 0, got {args.seed}")
        update["seed"] = args.seed
    return section.model_copy(update=update) if update else section


def execute(args: argparse.Namespace) -> int:
    config = load_selected_config(args, fallback="embedded")
    sim_config = _simulator_config(args, config.simulator)
    # Imported here so the other subcommands never pay for the simulator's imports.
    from drivers.sim.analyzer import SimulatedAnalyzer

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    runtime_dir: Path | None = None
    link: Path | None = None
    try:
        with SimulatedAnalyzer(sim_config, config.camera, config.stage.limits) as analyzer:
            address = args.camera
            if address is None:
                base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
                runtime_dir = Path(tempfile.mkdtemp(prefix="algocyte-sim-", dir=base))
                address = f"unix://{runtime_dir / 'camera.sock'}"
            camera_address = analyzer.serve_camera(address)
            port = analyzer.port_path
            if args.stage_link is not None:
                link = args.stage_link.expanduser().absolute()
                if link.is_symlink():
                    link.unlink()
                elif link.exists():
                    raise ConfigError(f"--stage-link {link}: exists and is not a symlink")
                link.symlink_to(port)
                port = str(link)
            _announce(args.json, port, camera_address, sim_config)
            while not stop.wait(0.5):
                pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if link is not None and link.is_symlink():
            link.unlink()
        if runtime_dir is not None:
            shutil.rmtree(runtime_dir, ignore_errors=True)
    if not args.json:
        print("simulated analyzer stopped", flush=True)
    return 0


def _announce(as_json: bool, port: str, camera: str, config: SimulatorConfig) -> None:
    if as_json:
        print(json.dumps({"stage_port": port, "camera": camera}), flush=True)
        return
    library = config.cell_library or "the demo library"
    lines = [
        f"simulated analyzer running (seed {config.seed}, cells from {library})",
        f"stage port: {port}",
        f"camera: {camera}",
        "In agent.yaml:",
        "  stage:",
        f"    port: {port}",
        "  camera:",
        "    type: simulated",
        f"    device: {camera}",
        "Stop with Ctrl-C or SIGTERM.",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
