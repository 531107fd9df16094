"""Fake fine-tuning APIs (Cohere, OpenAI, Azure OpenAI, Mistral, Together, Fireworks) for the
demo, the tests and the benchmarks.

``Scenario`` scripts models (each at one provider), their status timelines and faults;
``build_app`` turns it into an aiohttp application, ``running_simulator`` /
``serve_forever`` put it on a socket. The base URL per provider is in ``app``'s docstring
(``PROVIDER_BASE_PATHS`` has the path to append to the simulator's URL).
"""

from watcher.simulator.app import (
    PROVIDER_BASE_PATHS,
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
    PROVIDERS,
    FailureSpec,
    FaultSpec,
    GenerateSpec,
    ModelSpec,
    Scenario,
    bundled_scenario_path,
    demo_scenario,
    load_scenario,
    mixed_scenario,
    parse_scenario,
)

__all__ = [
    "PROVIDERS",
    "PROVIDER_BASE_PATHS",
    "SIMULATION",
    "ClockError",
    "ConflictError",
    "FailureSpec",
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
    "mixed_scenario",
    "parse_scenario",
    "running_simulator",
    "serve_forever",
]
