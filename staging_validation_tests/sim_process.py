"""Test-side name of the simulator process helper; the implementation lives in the package.

`staging_validation.simulator.process` is shared with the rehearsal, so there is one way to start,
wait for, query and stop a simulator. The `simulator_factory` fixture (conftest.py) wraps it.
"""

from staging_validation.simulator.process import RunningSimulator, SimulatorDidNotStart, start_simulator

__all__ = ["RunningSimulator", "SimulatorDidNotStart", "start_simulator"]
