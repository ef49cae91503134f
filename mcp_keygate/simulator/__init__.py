"""A faithful local stand-in for the provider APIs, with scripted key behaviour."""

from .app import create_app
from .runner import SimulatorThread
from .scenario import KeyBehavior, Scenario, ScenarioError, load_scenario, parse_scenario
from .state import fingerprint

__all__ = [
    "KeyBehavior",
    "Scenario",
    "ScenarioError",
    "SimulatorThread",
    "create_app",
    "fingerprint",
    "load_scenario",
    "parse_scenario",
]
