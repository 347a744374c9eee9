"""Rendering the seed emails: both parts, both languages, escaped HTML with inlined CSS, dates in words."""

from __future__ import annotations

import re
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from engage.errors import RenderError
from engage.plan_templates.loading import load_template
from engage.rendering.context import Variables, email_context, signer
from engage.rendering.frames import _NO_FRAME
from engage.rendering.renderer import EmailRenderer, get_renderer
from engage.rendering.samples import sample_contexts, sample_people
from engage.rules.words import long_date
from engage.settings import Settings
from models import Contact, Staff, Workshop

REPO = Path(__file__).resolve().parents[2]
EMAILS = {
    "volunteer/survey": ("volunteer-followup", "survey"),
    "volunteer/resource-pack": ("volunteer-followup", "resource_pack"),
    "volunteer/motivation": ("volunteer-followup", "ambassador_video"),
    "donor/impact-story": ("donor-followup", "impact_report"),
    "donor/call-to-give": ("donor-followup", "donation_page"),
    "donor/project-visit": ("donor-followup", "project_visit"),
}
LANGUAGES = ["fr", "en"]
GREETING = {"fr": "Bonjour", "en": "Hello"}
UNSUBSCRIBE = {"fr": "Se désabonner", "en": "Unsubscribe"}


def renderer() -> EmailRenderer:
    return get_renderer(REPO / "email_templates", ("fr", "en"))


def plain_renderer() -> EmailRenderer:
    """The same renderer with frames off: each email rendered on its own, the measure of the frames."""
    return get_renderer(REPO / "email_templates", ("fr", "en"), frames=False)


def links_of(template: str) -> dict[str, str]:
    return dict(load_template(REPO / "plan_templates" / f"{template}.yaml").links)


def context_for(name: str, language: str, **contact: Any) -> dict[str, Any]:
    people = sample_people(language)[0]
    for field, value in contact.items():
        setattr(people.contact, field, value)
    return email_context(
        contact=people.contact,
        workshop=people.workshop,
        signed_by=signer(applied_by=people.staff, assignee=None, settings=Settings()),
        links=links_of(EMAILS[name][0]),
        settings=Settings(),
        unsubscribe_url="http://127.0.0.1:8025/u/7.c2lnbmF0dXJl",
        language=language,
    )


def urls(text: str) -> set[str]:
    return set(re.findall(r"https?://[^\s\"<>]+", text))


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", list(EMAILS))
def test_each_email_has_a_subject_a_text_and_an_html_part_saying_the_same(name: str, language: str) -> None:
    email = renderer().render(name, language, context_for(name, language))
    template, main_link = EMAILS[name]
    link = links_of(template)[main_link]
    assert email.language == language
    assert email.subject and "\n" not in email.subject and "{" not in email.subject
    assert email.text.startswith(f"{GREETING[language]} Hélène,\n")
    assert email.html is not None
    assert f'<html lang="{language}"' in email.html
    assert f"{GREETING[language]} Hélène," in email.html
    # Every link of the text part is a link (or button) of the HTML part, the unsubscribe link included.
    assert urls(email.text) == {link for link in urls(email.html) if link != "http://www.w3.org/1999/xhtml"}
    assert f'href="{link}"' in email.html
    assert 'href="http://127.0.0.1:8025/u/7.c2lnbmF0dXJl"' in email.html
    assert f">{UNSUBSCRIBE[language]}</a>" in email.html
    for part in (email.text, email.html):
        assert "Camille Martin" in part and "12 rue de la Solidarité, 69001 Lyon, France" in part
        assert "{{" not in part and "{%" not in part and "{#" not in part


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", list(EMAILS))
def test_the_css_is_inlined_and_only_media_queries_stay_in_a_style_block(name: str, language: str) -> None:
    html = renderer().render(name, language, context_for(name, language)).html
    assert html is not None
    styles = re.findall(r"<style>(.*?)</style>", html, flags=re.DOTALL)
    assert len(styles) == 1 and styles[0].strip().startswith("@media")
    assert re.search(r'<td class="header"[^>]* style="[^"]*background-color: #1f4e5a', html)
    assert re.search(r'<a class="button-link"[^>]* style="[^"]*color: #ffffff', html)
    assert all('style="' in tag for tag in re.findall(r"<p\b[^>]*>", html))
    # Outlook's fixed-width frame survives inlining.
    assert "<!--[if mso]>" in html


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", list(EMAILS))
def test_a_contact_about_whom_little_is_known_gets_a_tidy_email(name: str, language: str) -> None:
    _, sparse = sample_contexts(settings=Settings(), links=links_of(EMAILS[name][0]), language=language)
    email = renderer().render(name, language, sparse)
    assert email.text.startswith(f"{GREETING[language]},\n")
    assert email.html is not None
    for part in (email.subject, email.text, email.html):
        assert '""' not in part and "«  »" not in part and "« »" not in part and "«&nbsp;&nbsp;»" not in part
    assert "No More Homelessness" in email.text.rstrip().splitlines()[-6:]


@pytest.mark.parametrize("language", LANGUAGES)
def test_html_special_characters_are_escaped_in_html_and_kept_in_text(language: str) -> None:
    name = 'Tom <b>&</b> "Jerry"'
    email = renderer().render("volunteer/survey", language, context_for("volunteer/survey", language, first_name=name))
    assert email.text.startswith(f"{GREETING[language]} {name},\n")
    assert email.html is not None
    assert "<b>" not in email.html
    assert "Tom &lt;b&gt;&amp;&lt;/b&gt;" in email.html


def test_the_survey_says_the_workshop_date_in_words_in_each_language() -> None:
    french = renderer().render("volunteer/survey", "fr", context_for("volunteer/survey", "fr"))
    english = renderer().render("volunteer/survey", "en", context_for("volunteer/survey", "en"))
    assert "le vendredi 20 novembre 2026 à Lyon" in french.text
    assert "on Friday 20 November 2026 in Lyon" in english.text
    assert "vendredi 20 novembre 2026" in (french.html or "")
    assert french.subject == "Merci pour votre présence à « Regards sur la rue » : votre avis en 3 minutes"
    assert english.subject == 'Thank you for coming to "Regards sur la rue": 3 minutes for your feedback'


@pytest.mark.parametrize(
    ("day", "language", "expected"),
    [
        (date(2026, 11, 20), "fr", "vendredi 20 novembre 2026"),
        (date(2026, 12, 1), "fr", "mardi 1er décembre 2026"),
        (date(2026, 8, 15), "fr", "samedi 15 août 2026"),
        (date(2026, 11, 20), "en", "Friday 20 November 2026"),
        (date(2027, 1, 1), "en", "Friday 1 January 2027"),
        (date(2026, 3, 2), "de", "Montag, 2. März 2026"),
        (date(2026, 11, 20), "es", "viernes, 20 de noviembre de 2026"),
        (date(2026, 11, 20), "it", "venerdì 20 novembre 2026"),
        (date(2026, 11, 20), "fr-CA", "vendredi 20 novembre 2026"),
        (date(2026, 11, 20), "nl", "2026-11-20"),
    ],
)
def test_dates_in_words_do_not_depend_on_the_machine_locale(day: date, language: str, expected: str) -> None:
    assert long_date(day, language) == expected


@pytest.mark.parametrize(
    ("languages", "wanted", "expected"),
    [
        (("fr", "en"), "fr", "fr"),
        (("fr", "en"), "EN", "en"),
        (("fr", "en"), "fr-CA", "fr"),
        (("fr", "en"), "en_GB", "en"),
        (("fr", "en"), "de", "fr"),
        (("fr", "en"), None, "fr"),
        (("fr", "en"), "", "fr"),
        (("en", "fr"), "es", "en"),
    ],
)
def test_a_contact_gets_their_language_or_the_organisation_first(
    languages: tuple[str, ...], wanted: str | None, expected: str
) -> None:
    assert EmailRenderer(REPO / "email_templates", languages).pick_language(wanted) == expected


def test_without_staff_or_workshop_the_organisation_signs_and_takes_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGAGE_ORGANISATION_REPLY_TO", "hello@nomorehomelessness.org")
    organisation = signer(applied_by=None, assignee=None, settings=Settings())
    context = email_context(
        contact=Contact(email="a@example.org", email_key="a@example.org"),
        workshop=None,
        signed_by=organisation,
        links={},
        settings=Settings(),
        unsubscribe_url="u",
        language="en",
    )
    assert context["staff"].name == "No More Homelessness"
    assert context["staff"].email == "hello@nomorehomelessness.org"
    assert context["workshop"].date is None and context["workshop"].date_text == ""
    # The same answers the email's Reply-To.
    assert (organisation.reply_to, organisation.reply_to_name) == (
        "hello@nomorehomelessness.org",
        "No More Homelessness",
    )


def test_without_a_reply_to_address_the_organisation_signs_and_no_reply_to_is_written() -> None:
    organisation = signer(applied_by=None, assignee=None, settings=Settings())
    assert (organisation.name, organisation.email) == ("No More Homelessness", "contact@nomorehomelessness.org")
    assert organisation.reply_to is None and organisation.reply_to_name is None


@pytest.mark.parametrize(
    ("applied", "assigned", "expected"),
    [
        (True, True, "camille@nmh.example.org"),
        (True, False, "camille@nmh.example.org"),
        (False, True, "jeanne@nmh.example.org"),
    ],
)
def test_the_staff_member_who_applied_the_plan_signs_else_the_assignee(
    applied: bool, assigned: bool, expected: str
) -> None:
    camille = Staff(email="camille@nmh.example.org", name="Camille Martin")
    jeanne = Staff(email="jeanne@nmh.example.org", name="Jeanne Smith")
    signed = signer(applied_by=camille if applied else None, assignee=jeanne if assigned else None, settings=Settings())
    assert signed.email == signed.reply_to == expected


@pytest.fixture
def emails(tmp_path: Path) -> Path:
    """A copy of the email templates to break."""
    shutil.copytree(REPO / "email_templates", tmp_path / "email_templates")
    return tmp_path / "email_templates"


def _context(language: str = "en") -> dict[str, Any]:
    return email_context(
        contact=Contact(email="zoe@example.org", email_key="zoe@example.org", first_name="Zoë"),
        workshop=Workshop(name="Atelier", date=date(2026, 11, 20), place="Lyon"),
        signed_by=signer(
            applied_by=Staff(email="camille@nmh.example.org", name="Camille Martin"), assignee=None, settings=Settings()
        ),
        links={"survey": "https://example.org/s", "items": "https://example.org/items"},
        settings=Settings(),
        unsubscribe_url="https://example.org/u/1.x",
        language=language,
    )


def test_a_misspelt_variable_stops_the_render_naming_it(emails: Path) -> None:
    body = emails / "volunteer/survey/en/body.html"
    body.write_text(body.read_text(encoding="utf-8").replace("contact.first_name %}", "contact.first_nam %}"), "utf-8")
    with pytest.raises(RenderError, match=r'body.html line \d+: uses contact.first_nam, .*"contact.first_name"'):
        EmailRenderer(emails, ["en"]).render("volunteer/survey", "en", _context())


def test_a_link_named_like_a_dict_method_is_still_a_link(emails: Path) -> None:
    (emails / "volunteer/survey/en/subject.txt").write_text("{{ links.items }} {{ workshop.date | long_date }}")
    email = EmailRenderer(emails, ["en"]).render("volunteer/survey", "en", _context())
    assert email.subject == "https://example.org/items Friday 20 November 2026"


def test_variables_say_their_names() -> None:
    group = Variables("contact", {"first_name": "Zoë"})
    assert group.first_name == "Zoë" and group["first_name"] == "Zoë" and "first_name" in group
    assert list(group) == ["first_name"] and len(group) == 1 and group.names() == ["first_name"]
    with pytest.raises(AttributeError):
        _ = group.last_name


# --- one email for many contacts -----------------------------------------------------------------------------------

PEOPLE = [
    {"first_name": "Hélène", "last_name": "Lefèvre"},
    {"first_name": None, "last_name": "O'Connor"},
    {"first_name": "Zoë & Léa", "last_name": "<b>Dupont</b>"},
    {"first_name": 'Jean "JJ"', "last_name": "d'Arc"},
    {"first_name": None, "last_name": None},
    {"first_name": "Jean  Pierre", "last_name": "Martin"},  # a run of spaces: the subject would collapse it
    {"first_name": "A\u00a0B", "last_name": "C"},
    {"first_name": "Ünïcödé 名前", "last_name": "Ø"},
]


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", sorted(EMAILS))
def test_an_email_rendered_for_many_contacts_is_byte_for_byte_the_one_rendered_alone(name: str, language: str) -> None:
    fast = EmailRenderer(REPO / "email_templates", ["fr", "en"])
    for with_workshop in (True, False):
        for number, person in enumerate(PEOPLE):
            context = context_for(name, language, email=f"person.{number}@example.org", **person)
            context["unsubscribe_url"] = f'http://127.0.0.1:8025/u/{number}.c2ln&x="y"'
            if not with_workshop:
                context["workshop"] = Variables("workshop", {"name": "", "date": None, "date_text": "", "place": ""})
            assert fast.render(name, language, context) == plain_renderer().render(name, language, context)
    # the first people of each shape built a frame that passed its probe; the others were filled in
    assert fast._frames and all(frame is not _NO_FRAME for frame in fast._frames.values())


def test_a_template_that_does_more_than_print_a_contact_value_is_rendered_for_each_contact(emails: Path) -> None:
    body = emails / "volunteer/survey/en/body.html"
    source = body.read_text(encoding="utf-8")
    body.write_text(source.replace("{{ contact.first_name }}", "{{ contact.first_name|upper }}"), "utf-8")
    fast, plain = EmailRenderer(emails, ["en"]), EmailRenderer(emails, ["en"], frames=False)
    for first_name in ("Zoë", "Léa"):
        context = _context()
        contact = context["contact"]
        context["contact"] = Variables("contact", {**{key: contact[key] for key in contact}, "first_name": first_name})
        rendered = fast.render("volunteer/survey", "en", context)
        assert rendered == plain.render("volunteer/survey", "en", context)
        assert f"Hello {first_name.upper()}," in (rendered.html or "")
    assert not fast._frames
