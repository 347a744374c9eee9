"""Plan templates: the schema, one clear problem per mistake, the seed templates and versions in the ledger."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import time as clock
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from pydantic import ValidationError
from sqlalchemy import event, text
from sqlmodel import Session, col, select

from engage import db as engage_db
from engage.errors import NotFoundError, TemplateError
from engage.plan_templates.loading import load_template, load_templates, template_problems
from engage.plan_templates.schema import PlanTemplateSpec
from engage.plan_templates.store import current_template, spec_of, sync_templates
from engage.rules.due import CalendarRules
from engage.settings import get_settings
from models import PlanTemplate, TemplateStep

REPO = Path(__file__).resolve().parents[2]
SEED_KEYS = ["donor-followup", "volunteer-followup"]
VOLUNTEER_FILE = "plan_templates/volunteer-followup.yaml"


def seed_data(key: str = "volunteer-followup") -> dict[str, Any]:
    data = yaml.safe_load((REPO / "plan_templates" / f"{key}.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def write_template(folder: Path, data: dict[str, Any], name: str | None = None) -> Path:
    path = folder / "plan_templates" / f"{name or data['key']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def task_template(*steps: dict[str, Any], key: str = "chain") -> dict[str, Any]:
    """A template of task steps only: no email texts needed."""
    return {
        "key": key,
        "name": "Chain",
        "steps": [{"name": s["key"], "kind": "task", "days_after": 1} | s for s in steps],
    }


# --- the seed templates ------------------------------------------------------------------------------------


def test_the_seed_templates_validate_against_the_repository_email_texts() -> None:
    specs = load_templates(REPO / "plan_templates")
    assert [spec.key for spec in specs] == SEED_KEYS


@pytest.mark.parametrize("key", SEED_KEYS)
def test_seed_templates_land_on_days_1_7_14_30(key: str) -> None:
    spec = load_template(REPO / "plan_templates" / f"{key}.yaml")
    assert list(spec.nominal_days().values()) == [1, 7, 14, 30]
    assert [step.days_after for step in spec.steps] == [1, 6, 7, 16]
    assert [step.kind for step in spec.steps] == ["email", "email", "email", "call"]
    assert len(spec.roots()) == 1
    assert spec.calendar_rules() == CalendarRules(
        timezone="Europe/Paris",
        skip_weekends=True,
        reschedule_to="monday",
        holidays="FR",
        send_window_start=clock(9, 0),
        send_window_end=clock(17, 0),
    )


def test_volunteer_seed_is_worked_by_the_applier_and_links_its_pages() -> None:
    spec = load_template(REPO / "plan_templates" / "volunteer-followup.yaml")
    assert spec.assignee == "applier"
    assert spec.assignee_of("follow-up-call") == "applier"
    assert [step.key for step in spec.dependents("survey")] == ["resource-pack"]
    assert spec.step("motivation").email_template == "volunteer/motivation"
    assert set(spec.links) == {"survey", "resource_pack", "ambassador_video", "policy_news"}


def test_donor_seed_gives_the_last_call_to_the_record_owner() -> None:
    spec = load_template(REPO / "plan_templates" / "donor-followup.yaml")
    assert spec.assignee == "owner"
    assert spec.step("owner-call").assignee == "owner"
    assert [s.depends_on for s in spec.steps] == [None, "impact-story", "call-to-give", "project-visit"]
    assert set(spec.links) == {"impact_report", "donation_page", "project_visit"}


def test_asking_for_a_step_that_does_not_exist_is_a_key_error() -> None:
    spec = load_template(REPO / "plan_templates" / "donor-followup.yaml")
    with pytest.raises(KeyError, match="no step"):
        spec.step("nope")


# --- the email texts ---------------------------------------------------------------------------------------

EMAIL_FILES = sorted((REPO / "email_templates").glob("*/*/*/*.txt"))


def _context(first_name: str) -> dict[str, Any]:
    return {
        "contact": {"first_name": first_name, "last_name": "Martin"},
        "workshop": {"name": "Regards sur la rue", "date_text": "20/11/2026", "place": "Lyon 1er"},
        "organisation": {"name": "No More Homelessness", "address": "12 rue de la Solidarité, 69001 Lyon"},
        "staff": {"name": "Jeanne Petit"},
        "links": {name: f"https://nomorehomelessness.example.org/{name}" for name in _ALL_LINKS},
        "unsubscribe_url": "https://nomorehomelessness.example.org/unsubscribe/abc",
    }


_ALL_LINKS = [
    "survey",
    "resource_pack",
    "ambassador_video",
    "policy_news",
    "impact_report",
    "donation_page",
    "project_visit",
]


def test_there_are_six_emails_in_french_and_english() -> None:
    folders = {path.parent.parent.relative_to(REPO / "email_templates").as_posix() for path in EMAIL_FILES}
    assert len(folders) == 6
    assert len(EMAIL_FILES) == 6 * 2 * 2


@pytest.mark.parametrize("path", EMAIL_FILES, ids=lambda p: p.relative_to(REPO / "email_templates").as_posix())
@pytest.mark.parametrize("first_name", ["Léa", ""])
def test_each_email_text_renders_with_the_documented_variables_only(path: Path, first_name: str) -> None:
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, trim_blocks=True)
    rendered = environment.from_string(path.read_text(encoding="utf-8")).render(_context(first_name))
    assert "{{" not in rendered and "{#" not in rendered
    if path.name == "subject.txt":
        assert len(rendered.strip().splitlines()) == 1
        return
    hello = "Bonjour" if path.parent.name == "fr" else "Hello"
    assert rendered.splitlines()[0] == (f"{hello} {first_name}," if first_name else f"{hello},")
    tail = rendered.rstrip().splitlines()[-8:]
    assert "Jeanne Petit" in tail and "No More Homelessness" in tail
    assert tail[-1].endswith("https://nomorehomelessness.example.org/unsubscribe/abc")
    assert any("12 rue de la Solidarité" in line for line in tail)


# --- one clear problem per mistake -------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any], Path], None]


def _set_step(index: int, **fields: Any) -> Mutation:
    def mutate(data: dict[str, Any], _root: Path) -> None:
        data["steps"][index].update(fields)

    return mutate


def _set(**fields: Any) -> Mutation:
    def mutate(data: dict[str, Any], _root: Path) -> None:
        data.update(fields)

    return mutate


def _drop_step_field(index: int, field: str) -> Mutation:
    def mutate(data: dict[str, Any], _root: Path) -> None:
        del data["steps"][index][field]

    return mutate


def _set_link(name: str, url: str) -> Mutation:
    def mutate(data: dict[str, Any], _root: Path) -> None:
        data["links"][name] = url

    return mutate


def _duplicate_first_step(data: dict[str, Any], _root: Path) -> None:
    data["steps"].append(dict(data["steps"][0]))


def _remove_english_body(_data: dict[str, Any], root: Path) -> None:
    (root / "email_templates/volunteer/survey/en/body.txt").unlink()


def _misspell_a_link_in_english(_data: dict[str, Any], root: Path) -> None:
    body = root / "email_templates/volunteer/motivation/en/body.txt"
    body.write_text(body.read_text(encoding="utf-8").replace("links.policy_news", "links.policy_newz"), "utf-8")


BROKEN: list[tuple[str, Mutation, str]] = [
    (
        "unknown step field",
        _set_step(1, dependson="survey"),
        'step "resource-pack": dependson: unknown field (did you mean "depends_on"?)',
    ),
    ("unknown template field", _set(skip_weekend=True), 'skip_weekend: unknown field (did you mean "skip_weekends"?)'),
    (
        "depends_on names no step",
        _set_step(1, depends_on="surveyy"),
        'step "resource-pack": depends_on: no step named "surveyy" (did you mean "survey"?)',
    ),
    ("self dependency", _set_step(0, depends_on="survey"), 'step "survey": depends_on: a step cannot depend on itself'),
    ("negative offset", _set_step(2, days_after=-7), 'step "motivation": days_after: must be 0 or more'),
    ("offset not a number", _set_step(2, days_after="7"), 'step "motivation": days_after: input should be a valid'),
    (
        "email step without template",
        _drop_step_field(0, "email_template"),
        'step "survey": email_template: an email step needs an email template',
    ),
    (
        "call step with an email template",
        _set_step(3, email_template="volunteer/survey"),
        'step "follow-up-call": email_template: only email steps have an email template',
    ),
    ("duplicate step key", _duplicate_first_step, 'step "survey": key: another step is already named "survey"'),
    (
        "key does not match the file name",
        _set(key="volunteer-folowup"),
        'key: "volunteer-folowup" does not match the file name',
    ),
    ("key not kebab-case", _set(key="Volunteer_Followup"), "key: 'Volunteer_Followup' is not kebab-case"),
    (
        "email template folder missing",
        _set_step(1, email_template="volunteer/resource-pak"),
        'step "resource-pack": email_template: no email template folder "volunteer/resource-pak"',
    ),
    (
        "email text missing in one language",
        _remove_english_body,
        'step "survey": email_template: language "en": missing email_templates/volunteer/survey/en/body.txt',
    ),
    (
        "email uses an undefined link",
        _misspell_a_link_in_english,
        'step "motivation": email_template: language "en": email_templates/volunteer/motivation/en/body.txt '
        'uses links.policy_newz, which the template does not define under links (did you mean "policy_news"?)',
    ),
    (
        "email template name with a path",
        _set_step(0, email_template="../secrets"),
        "step \"survey\": email_template: '../secrets' is not an email template name",
    ),
    ("bad timezone", _set(timezone="Europe/Pariss"), "timezone: unknown time zone 'Europe/Pariss'"),
    ("send window backwards", _set(send_window="17:00-09:00"), "send_window: send window '17:00-09:00' must end after"),
    ("send window not a range", _set(send_window="9h-17h"), "send_window: send window '9h-17h' is not of the form"),
    (
        "reschedule elsewhere",
        _set(reschedule_to="tuesday"),
        "reschedule_to: must be 'friday' or 'monday', not 'tuesday'",
    ),
    ("unknown holiday country", _set(holidays="XX"), "holidays: unknown holiday country 'XX'"),
    ("Norway read as false", _set(holidays=False), 'holidays: write the country code in quotes, e.g. holidays: "NO"'),
    ("unknown kind", _set_step(3, kind="phone"), "step \"follow-up-call\": kind: must be 'email', 'call' or 'task'"),
    ("bad assignee", _set_step(3, assignee="someone"), 'step "follow-up-call": assignee: must be owner, applier or'),
    ("missing step name", _drop_step_field(0, "name"), 'step "survey": name: missing (required)'),
    ("no steps", _set(steps=[]), "steps: a template needs at least one step"),
    ("relative link", _set_link("survey", "example.org/s"), "links: link 'survey': 'example.org/s' is not an abs"),
    ("call slot of zero", _set(call_slot_minutes=0), "call_slot_minutes: must be between 5 and 480 minutes"),
]


@pytest.mark.parametrize(("mutate", "expected"), [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN])
def test_each_mistake_is_one_problem_naming_file_step_and_field(
    workspace: Path, mutate: Mutation, expected: str
) -> None:
    data = seed_data()
    mutate(data, workspace)
    path = write_template(workspace, data, name="volunteer-followup")
    problems = template_problems(path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{VOLUNTEER_FILE}: {expected}"), problems[0]
    with pytest.raises(TemplateError) as raised:
        load_template(path)
    assert str(raised.value) == problems[0]


SEED_EMAILS = [
    ("volunteer-followup", "survey", "volunteer/survey", "survey"),
    ("volunteer-followup", "resource-pack", "volunteer/resource-pack", "resource_pack"),
    ("volunteer-followup", "motivation", "volunteer/motivation", "ambassador_video"),
    ("donor-followup", "impact-story", "donor/impact-story", "impact_report"),
    ("donor-followup", "call-to-give", "donor/call-to-give", "donation_page"),
    ("donor-followup", "project-visit", "donor/project-visit", "project_visit"),
]


def _replace(path: Path, old: str, new: str) -> None:
    content = path.read_text(encoding="utf-8")
    assert old in content, (path, old)
    path.write_text(content.replace(old, new), encoding="utf-8")


EMAIL_MISTAKES: dict[str, tuple[Callable[[Path, str], None], str]] = {
    "unknown variable": (
        lambda folder, _link: _replace(folder / "body.html", "contact.first_name %}", "contact.firstname %}"),
        "{folder}/body.html uses contact.firstname, which is not a variable emails may use "
        '(did you mean "contact.first_name"?) (line ',
    ),
    "link the template does not define": (
        lambda folder, link: _replace(folder / "body.txt", f"links.{link} }}}}", f"links.{link}s }}}}"),
        "{folder}/body.txt uses links.{link}s, which the template does not define under links "
        '(did you mean "{link}"?) (line ',
    ),
    "missing subject": (
        lambda folder, _link: (folder / "subject.txt").unlink(),
        "missing {folder}/subject.txt (the subject)",
    ),
    "missing text part": (
        lambda folder, _link: (folder / "body.txt").unlink(),
        "missing {folder}/body.txt (the text part)",
    ),
    "missing translation": (
        lambda folder, _link: shutil.rmtree(folder),
        "missing {folder} (no translation in this language yet)",
    ),
}


@pytest.mark.parametrize("mistake", list(EMAIL_MISTAKES))
@pytest.mark.parametrize("language", ["fr", "en"])
@pytest.mark.parametrize(("template", "step", "email", "link"), SEED_EMAILS, ids=[e[1] for e in SEED_EMAILS])
def test_validation_renders_each_email_and_names_template_step_language_and_variable(
    workspace: Path, template: str, step: str, email: str, link: str, language: str, mistake: str
) -> None:
    break_it, expected = EMAIL_MISTAKES[mistake]
    folder = f"email_templates/{email}/{language}"
    break_it(workspace / folder, link)
    problems = template_problems(workspace / "plan_templates" / f"{template}.yaml")
    assert len(problems) == 1, problems
    prefix = f'plan_templates/{template}.yaml: step "{step}": email_template: language "{language}": '
    assert problems[0].startswith(prefix + expected.format(folder=folder, link=link)), problems[0]


def test_a_new_language_lists_every_missing_translation(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGAGE_LANGUAGES", "fr,en,de")
    get_settings.cache_clear()
    problems = template_problems(workspace / VOLUNTEER_FILE)
    assert problems == [
        f'{VOLUNTEER_FILE}: step "{step}": email_template: language "de": missing email_templates/{email}/de '
        "(no translation in this language yet)"
        for template, step, email, _ in SEED_EMAILS
        if template == "volunteer-followup"
    ]


def test_an_html_part_missing_in_one_language_is_reported(workspace: Path) -> None:
    (workspace / "email_templates/volunteer/motivation/en/body.html").unlink()
    assert template_problems(workspace / VOLUNTEER_FILE) == [
        f'{VOLUNTEER_FILE}: step "motivation": email_template: language "en": missing '
        "email_templates/volunteer/motivation/en/body.html (the HTML part; fr has one)"
    ]


def test_a_jinja_syntax_error_names_its_line(workspace: Path) -> None:
    (workspace / "email_templates/volunteer/survey/fr/subject.txt").write_text("Merci {% if %}", encoding="utf-8")
    (problem,) = template_problems(workspace / VOLUNTEER_FILE)
    assert problem.startswith(
        f'{VOLUNTEER_FILE}: step "survey": email_template: language "fr": '
        "email_templates/volunteer/survey/fr/subject.txt: syntax error: "
    )
    assert problem.endswith("(line 1)")


def test_a_step_without_a_key_is_named_by_its_position(workspace: Path) -> None:
    data = seed_data()
    del data["steps"][2]["key"]
    data["steps"][3]["depends_on"] = "resource-pack"
    problems = template_problems(write_template(workspace, data))
    assert problems == [f"{VOLUNTEER_FILE}: step #3: key: missing (required)"]


def test_every_problem_of_a_file_is_listed_one_per_line(workspace: Path) -> None:
    data = seed_data()
    data["timezone"] = "Mars/Olympus"
    data["steps"][1]["depends_on"] = "nothing"
    data["steps"][3]["days_after"] = -1
    path = write_template(workspace, data)
    with pytest.raises(TemplateError) as raised:
        load_template(path)
    lines = str(raised.value).splitlines()
    assert len(lines) == 3
    assert all(line.startswith(f"{VOLUNTEER_FILE}: ") for line in lines)
    assert {line.split(": ")[1] for line in lines} == {"timezone", 'step "resource-pack"', 'step "follow-up-call"'}


def test_malformed_yaml_names_the_line(workspace: Path) -> None:
    path = workspace / VOLUNTEER_FILE
    lines = path.read_text(encoding="utf-8").splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip() == "- key: motivation")
    lines[at + 1] = "    name: [Motivation"  # an unclosed flow sequence
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (problem,) = template_problems(path)
    assert problem.startswith(f"{VOLUNTEER_FILE}: line ")
    assert "invalid YAML" in problem
    line_number = int(problem.split("line ")[1].split(",")[0])
    assert at + 2 <= line_number <= at + 4


def test_a_field_written_twice_is_refused_with_its_line(workspace: Path) -> None:
    path = workspace / VOLUNTEER_FILE
    lines = path.read_text(encoding="utf-8").splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip() == "days_after: 7                       # day 14")
    lines.insert(at + 1, "    days_after: 8")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert template_problems(path) == [
        f"{VOLUNTEER_FILE}: line {at + 2}, column 5: "
        "invalid YAML: while reading a mapping; 'days_after' is written twice"
    ]


def test_yaml_anchors_and_merge_keys_still_work(workspace: Path) -> None:
    path = workspace / "plan_templates/chain.yaml"
    path.write_text(
        "key: chain\nname: Chain\nsteps:\n"
        "  - &task {key: a, name: Call, kind: task, days_after: 1}\n"
        "  - <<: *task\n    key: b\n    depends_on: a\n",
        encoding="utf-8",
    )
    spec = load_template(path)
    assert [(s.key, s.name, s.depends_on) for s in spec.steps] == [("a", "Call", None), ("b", "Call", "a")]


@pytest.mark.parametrize(
    ("content", "expected"),
    [("", "the file is empty"), ("- a\n- b\n", "must be a mapping of template fields (key: value), not a list")],
)
def test_a_file_that_is_not_a_template_says_so(workspace: Path, content: str, expected: str) -> None:
    path = workspace / VOLUNTEER_FILE
    path.write_text(content, encoding="utf-8")
    (problem,) = template_problems(path)
    assert problem.startswith(f"{VOLUNTEER_FILE}: {expected}")


def test_load_templates_lists_every_bad_file(workspace: Path) -> None:
    volunteer, donor = seed_data(), seed_data("donor-followup")
    volunteer["timezone"] = "Nowhere/Land"
    donor["steps"][0]["days_after"] = -1
    write_template(workspace, volunteer)
    write_template(workspace, donor)
    with pytest.raises(TemplateError) as raised:
        load_templates()
    lines = str(raised.value).splitlines()
    assert [line.split(": ")[0] for line in lines] == ["plan_templates/donor-followup.yaml", VOLUNTEER_FILE]


def test_a_yml_file_is_reported_not_ignored(workspace: Path) -> None:
    (workspace / "plan_templates/extra.yml").write_text("key: extra\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=r"plan_templates/extra.yml: plan template files end in \.yaml"):
        load_templates()


def test_a_missing_folder_is_one_error(workspace: Path) -> None:
    with pytest.raises(TemplateError, match="nowhere: no such folder of plan templates"):
        load_templates(workspace / "nowhere")


# --- dependency cycles --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (
            [{"key": "a", "depends_on": "b"}, {"key": "b", "depends_on": "a"}, {"key": "c"}],
            ['step "a": depends_on: dependency cycle: a -> b -> a'],
        ),
        (
            [{"key": "a", "depends_on": "c"}, {"key": "b", "depends_on": "a"}, {"key": "c", "depends_on": "b"}],
            ['step "a": depends_on: dependency cycle: a -> c -> b -> a'],
        ),
        (
            # d hangs off the cycle without being in it: only the cycle is reported.
            [{"key": "a", "depends_on": "b"}, {"key": "b", "depends_on": "a"}, {"key": "d", "depends_on": "a"}],
            ['step "a": depends_on: dependency cycle: a -> b -> a'],
        ),
        ([{"key": "a", "depends_on": "a"}], ['step "a": depends_on: a step cannot depend on itself']),
    ],
    ids=["a-b-a", "three steps", "branch off a cycle", "self"],
)
def test_dependency_cycles_are_found_and_reported_once(
    workspace: Path, steps: list[dict[str, Any]], expected: list[str]
) -> None:
    path = write_template(workspace, task_template(*steps))
    assert template_problems(path) == [f"plan_templates/chain.yaml: {line}" for line in expected]


def test_a_spec_built_in_code_is_checked_too() -> None:
    with pytest.raises(ValidationError, match="dependency cycle: a -> b -> a"):
        PlanTemplateSpec.model_validate(task_template({"key": "a", "depends_on": "b"}, {"key": "b", "depends_on": "a"}))


def test_nominal_days_follow_the_chain_in_any_order(workspace: Path) -> None:
    spec = PlanTemplateSpec.model_validate(
        task_template(
            {"key": "late", "depends_on": "middle", "days_after": 16},
            {"key": "first", "days_after": 1},
            {"key": "middle", "depends_on": "first", "days_after": 6},
            {"key": "other", "days_after": 3},
        )
    )
    assert spec.nominal_days() == {"late": 23, "first": 1, "middle": 7, "other": 3}
    assert [step.key for step in spec.roots()] == ["first", "other"]


# --- versions in the ledger ---------------------------------------------------------------------------------


def _versions(session: Session, key: str) -> list[int]:
    rows = session.exec(select(PlanTemplate).where(PlanTemplate.key == key).order_by(col(PlanTemplate.version)))
    return [row.version for row in rows]


def test_sync_stores_version_1_with_its_steps(workspace: Path, session: Session) -> None:
    rows = sync_templates(session=session)
    session.commit()
    assert [(row.key, row.version) for row in rows] == [(key, 1) for key in SEED_KEYS]
    donor = rows[0]
    steps = session.exec(
        select(TemplateStep).where(TemplateStep.template_id == donor.id).order_by(col(TemplateStep.position))
    )
    assert [(s.position, s.key, s.days_after, s.depends_on, s.assignee) for s in steps] == [
        (1, "impact-story", 1, None, "owner"),
        (2, "call-to-give", 6, "impact-story", "owner"),
        (3, "project-visit", 7, "call-to-give", "owner"),
        (4, "owner-call", 16, "project-visit", "owner"),
    ]
    assert donor.source_file == "donor-followup.yaml"
    assert len(donor.content_hash) == 64


def test_an_unchanged_or_reformatted_file_reuses_its_version(workspace: Path, session: Session) -> None:
    first = current_template(session=session, key="volunteer-followup")
    session.commit()
    assert current_template(session=session, key="volunteer-followup").id == first.id
    # Same content, different layout: no comments, keys reordered, flow style.
    data = seed_data()
    reordered = {name: data[name] for name in reversed(list(data))}
    path = workspace / VOLUNTEER_FILE
    path.write_text(yaml.safe_dump(reordered, default_flow_style=True, allow_unicode=True), encoding="utf-8")
    assert current_template(session=session, key="volunteer-followup").id == first.id
    session.commit()
    assert _versions(session, "volunteer-followup") == [1]


def test_a_typo_fix_makes_version_2_and_keeps_version_1(workspace: Path, session: Session) -> None:
    path = workspace / VOLUNTEER_FILE
    path.write_text(path.read_text(encoding="utf-8").replace("name: Motivation", "name: Motivaton"), "utf-8")
    first = current_template(session=session, key="volunteer-followup")
    session.commit()
    path.write_text(path.read_text(encoding="utf-8").replace("name: Motivaton", "name: Motivation"), "utf-8")
    rows = sync_templates(session=session)
    session.commit()
    second = next(row for row in rows if row.key == "volunteer-followup")
    assert (first.version, second.version) == (1, 2)
    assert second.id != first.id and second.content_hash != first.content_hash
    assert spec_of(first).step("motivation").name == "Motivaton"
    assert spec_of(second).step("motivation").name == "Motivation"
    assert _versions(session, "volunteer-followup") == [1, 2]
    old_steps = session.exec(select(TemplateStep.name).where(TemplateStep.template_id == first.id)).all()
    assert "Motivaton" in old_steps


def test_undoing_a_change_returns_the_earlier_version(workspace: Path, session: Session) -> None:
    path = workspace / VOLUNTEER_FILE
    original = path.read_text(encoding="utf-8")
    first = current_template(session=session, key="volunteer-followup")
    path.write_text(original.replace("days_after: 16", "days_after: 15"), encoding="utf-8")
    assert current_template(session=session, key="volunteer-followup").version == 2
    path.write_text(original, encoding="utf-8")
    assert current_template(session=session, key="volunteer-followup").id == first.id
    session.commit()


def test_spec_of_rebuilds_the_loaded_spec(workspace: Path, session: Session) -> None:
    for row in sync_templates(session=session):
        loaded = load_template(workspace / "plan_templates" / f"{row.key}.yaml")
        assert spec_of(row) == loaded
        assert spec_of(row).content_hash() == row.content_hash
    session.commit()
    session.expire_all()
    for row in session.exec(select(PlanTemplate)):
        assert spec_of(row).definition() == row.definition


@pytest.mark.parametrize("key", ["nope", "../plan_templates/volunteer-followup"])
def test_current_template_of_an_unknown_key_is_not_found(workspace: Path, session: Session, key: str) -> None:
    with pytest.raises(NotFoundError, match="known: donor-followup, volunteer-followup"):
        current_template(session=session, key=key)


def test_a_broken_file_is_not_synced(workspace: Path, session: Session) -> None:
    data = seed_data()
    data["steps"][0]["days_after"] = -1
    write_template(workspace, data)
    with pytest.raises(TemplateError, match='step "survey": days_after'):
        sync_templates(session=session)
    assert session.exec(select(PlanTemplate)).all() == []


def _wait_for_a_blocked_writer(url: str) -> None:
    """Return once another transaction waits for a lock (PostgreSQL), or after a pause (SQLite queues on BEGIN)."""
    if not url.startswith("postgresql"):
        time.sleep(0.3)
        return
    deadline = time.monotonic() + 10
    with engage_db.get_engine(url).connect() as connection:
        while time.monotonic() < deadline:
            if connection.execute(text("select count(*) from pg_locks where not granted")).scalar_one():
                return
            connection.rollback()
            time.sleep(0.02)
    raise AssertionError("the second sync never waited for the first")


@pytest.fixture
def database_errors(db_url: str) -> Iterator[list[str]]:
    """The names of the errors the database raises during the test."""
    engine = engage_db.get_engine(db_url)
    errors: list[str] = []

    def record(context: Any) -> None:
        errors.append(type(context.sqlalchemy_exception).__name__)

    event.listen(engine, "handle_error", record)
    yield errors
    event.remove(engine, "handle_error", record)


def test_two_syncs_at_once_agree_on_one_version(workspace: Path, db_url: str, database_errors: list[str]) -> None:
    engine = engage_db.get_engine(db_url)
    started = threading.Event()

    def second_sync() -> int | None:
        with Session(engine, expire_on_commit=False) as other:
            started.set()
            row = current_template(session=other, key="volunteer-followup")
            other.commit()
            return row.id

    with Session(engine, expire_on_commit=False) as first, ThreadPoolExecutor(max_workers=1) as pool:
        mine = current_template(session=first, key="volunteer-followup")
        theirs = pool.submit(second_sync)
        started.wait(5)
        # On PostgreSQL the second insert waits on the unique index, then fails and re-reads inside its savepoint.
        _wait_for_a_blocked_writer(db_url)
        first.commit()
        assert theirs.result(timeout=30) == mine.id
    with Session(engine) as check:
        assert _versions(check, "volunteer-followup") == [1]
    if db_url.startswith("postgresql"):
        assert database_errors == ["IntegrityError"], "the race was not exercised"
