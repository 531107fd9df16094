"""A fake Cohere fine-tuning API for the demo, the tests and the benchmarks.

``Scenario`` scripts models, their status timelines and faults; ``build_app`` turns it
into an aiohttp application, ``running_simulator`` / ``serve_forever`` put it on a socket.
"""

from watcher.simulator.app import (
    SIMULATION,
    ClockError,
    ConflictError,
    RunningSimulator,
    Simulation,
    build_app,
    running_simulator,
    serve_forever,
)
from watcher.simulator.scenario import (
    FaultSpec,
    GenerateSpec,
    ModelSpec,
    Scenario,
    bundled_scenario_path,
    demo_scenario,
    load_scenario,
    parse_scenario,
)

__all__ = [
    "SIMULATION",
    "ClockError",
    "ConflictError",
    "FaultSpec",
    "GenerateSpec",
    "ModelSpec",
    "RunningSimulator",
    "Scenario",
    "Simulation",
    "build_app",
    "bundled_scenario_path",
    "demo_scenario",
    "load_scenario",
    "parse_scenario",
    "running_simulator",
    "serve_forever",
]
