"""Import boundaries: `lt-ray --help` stays instant and only lt_ray.tune imports Ray/Optuna."""

import subprocess
import sys


def loaded_after(statement: str, modules: tuple[str, ...]) -> list[str]:
    code = f"import sys; {statement}; print(','.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_cli_module_imports_no_heavy_library():
    assert loaded_after("import lt_ray.cli", ("torch", "ray", "optuna", "matplotlib")) == []


def test_engine_and_experiment_run_without_ray():
    heavy = ("ray", "optuna")
    assert loaded_after("import lt_ray.experiment, lt_ray.engine, lt_ray.results", heavy) == []
