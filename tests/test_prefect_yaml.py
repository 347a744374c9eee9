"""prefect.yaml stays true to the code: one enroll deployment per plan template, entrypoints that load."""

from __future__ import annotations

import yaml
from prefect.flows import load_flow_from_entrypoint

from engage.plan_templates.loading import load_templates
from engage.settings import PROJECT_ROOT


def _deployments() -> list[dict[str, object]]:
    config = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    return list(config["deployments"])


def test_every_plan_template_has_its_enroll_deployment() -> None:
    enroll = {d["name"]: d for d in _deployments() if d["entrypoint"] == "flows/enroll.py:enroll"}
    templates = {spec.key for spec in load_templates(PROJECT_ROOT / "plan_templates")}
    assert set(enroll) == templates
    for key, deployment in enroll.items():
        assert deployment["parameters"] == {"template": key}


def test_run_due_steps_has_its_safety_net_cron() -> None:
    (run_due,) = [d for d in _deployments() if d["name"] == "run-due-steps"]
    assert run_due["schedules"][0]["cron"] == "*/5 * * * *"  # type: ignore[index]


def test_entrypoints_load_and_name_the_flows() -> None:
    names = {}
    for deployment in _deployments():
        entrypoint = str(deployment["entrypoint"])
        flow = load_flow_from_entrypoint(str(PROJECT_ROOT / entrypoint))
        names[entrypoint] = flow.name
    assert names == {
        "flows/enroll.py:enroll": "enroll",
        "flows/run_due_steps.py:run_due_steps": "run-due-steps",
        "flows/staff_digest.py:staff_digest": "staff-digest",
    }


def test_the_staff_digest_runs_every_hour() -> None:
    (staff_digest,) = [d for d in _deployments() if d["name"] == "staff-digest"]
    assert staff_digest["schedules"][0]["cron"] == "0 * * * *"  # type: ignore[index]
