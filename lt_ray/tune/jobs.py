"""A shipped study launched as a Ray job (the web UI's Studies tab): ``lt-ray sweep`` as the
job's entrypoint, on the cluster's head, as ``launch/submit.sh`` does with ``ray job submit``.

The study file and its overrides are validated here first (one line for a bad input, nothing
submitted); the job then writes the study into its storage, where the Studies tab reads its
progress without a Ray client.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from lt_ray import storage
from lt_ray.config import parse_override
from lt_ray.errors import LTRayError
from lt_ray.tune.parse import check_study_name, load_spec
from lt_ray.tune.study_folder import check_study_dir, study_dir_for, with_absolute_data_root

LOG_CHARS = 6_000
AGENT_WAIT_S = 30.0  # how long a submission waits for the job agent of a Ray just started
NO_AGENT = "No available agent to submit job"


@dataclass(frozen=True)
class StudyLaunch:
    """A validated launch: the command the job runs and the study folder it writes."""

    command: list[str]
    study_dir: str


def plan_launch(space: str, *, storage_root: str, overrides: Sequence[str] = (),
                name: str | None = None, data_root: str | None = None,
                resume: bool = False) -> StudyLaunch:
    """Validate the study file ``space`` with ``overrides`` (``KEY=VALUE``) and say what the
    job will run; an LTRayError for a bad file, override or name, or for a study that exists
    already (unless ``resume``), or is not this very study (with ``resume``): the sweep's own
    checks, before anything is submitted."""
    changes = dict(parse_override(text) for text in overrides)
    spec = load_spec(space, overrides=changes)
    if name:
        spec = replace(spec, name=check_study_name(name, "study name"))
    study = study_dir_for(storage_root, spec.name)
    check_study_dir(study, with_absolute_data_root(spec), resume=resume)  # as the sweep will
    command = ["lt-ray", "sweep", space, "--storage", storage.normalize(storage_root)]
    command += ["--name", name] if name else []
    for text in overrides:
        command += ["--set", text]
    command += ["--data-root", data_root] if data_root else []
    command += ["--resume"] if resume else []
    return StudyLaunch(command, study)


def _client(dashboard_url: str | None) -> Any:
    if not dashboard_url:
        raise LTRayError("no Ray dashboard here, so no job server: start lt-ray ui without "
                         "--no-dashboard, or join a cluster whose head runs the dashboard")
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(dashboard_url)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise LTRayError(f"cannot reach Ray's job server at {dashboard_url}: "
                         f"{_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def submit(launch: StudyLaunch, dashboard_url: str | None, *,
           program: Sequence[str] = ("lt-ray",)) -> str:
    """Submit ``launch`` as a Ray job; its job id. ``program`` runs in place of ``lt-ray``
    (a local Ray's job: this interpreter, ``python -m lt_ray.cli``, whatever PATH says)."""
    entrypoint = shlex.join([*program, *launch.command[1:]])
    client = _client(dashboard_url)
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint)
        except RuntimeError as exc:  # the job agent of a Ray just started may not be up yet
            if NO_AGENT not in str(exc):
                raise LTRayError(f"Ray's job server refused the study: {_first_line(exc)}") \
                    from None
            if time.monotonic() > deadline:
                raise LTRayError(
                    f"Ray's job agent did not come up in {AGENT_WAIT_S:g} s (is another local "
                    "Ray holding its port 52365 on this machine? stop it, or join it with "
                    "--address)") from None
            time.sleep(1.0)


def job_state(job_id: str, dashboard_url: str | None) -> tuple[str, str]:
    """The job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED) and its log's tail; an
    LTRayError for a job this Ray does not know (one of a Ray that has stopped since)."""
    client = _client(dashboard_url)
    try:
        return (str(client.get_job_status(job_id).value),
                client.get_job_logs(job_id)[-LOG_CHARS:])
    except RuntimeError as exc:
        raise LTRayError(f"job {job_id}: {_first_line(exc)}") from None


def stop_job(job_id: str, dashboard_url: str | None) -> None:
    """Stop the job (SIGTERM: the sweep exports what finished and can be resumed)."""
    _client(dashboard_url).stop_job(job_id)
