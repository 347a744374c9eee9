"""The fields an attendee file can feed: header aliases in English and French, and how each cell is normalised."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping

from email_validator import EmailNotValidError, validate_email

from engage.errors import ImportFileError

#: The fields an attendee column can feed; ``--map COLUMN=FIELD`` takes one of these.
FIELDS: tuple[str, ...] = (
    "email",
    "first_name",
    "last_name",
    "phone",
    "language",
    "role",
    "owner",
    "email_opt_out",
    "do_not_call",
    "city",
    "postal_code",
    "country",
    "tags",
    "organisation",
)


#: Map a column to this to leave it out even though its header looks like a known one.
IGNORE = "ignore"


# Header texts as tools write them; compared after fold(): no case, no accents, letters and digits only.
_ALIASES: dict[str, tuple[str, ...]] = {
    "first_name": ("first name", "firstname", "given name", "forename", "prénom"),
    "last_name": ("last name", "lastname", "surname", "family name", "nom", "nom de famille"),
    "email": (
        "email",
        "e-mail",
        "mail",
        "email address",
        "e-mail address",
        "courriel",
        "adresse e-mail",
        "adresse mail",
        "adresse courriel",
        "adresse électronique",
    ),  # fmt: skip
    "phone": (
        "phone",
        "phone number",
        "telephone",
        "téléphone",
        "tél",
        "mobile",
        "mobile phone",
        "portable",
        "numéro de téléphone",
    ),  # fmt: skip
    "language": ("language", "lang", "langue", "preferred language", "langue préférée"),
    "role": ("role", "rôle", "type", "community", "communauté"),
    "owner": ("owner", "propriétaire", "record owner", "owner email", "référent"),
    "email_opt_out": (
        "HasOptedOutOfEmail",
        "email opt out",
        "opt_out",
        "optout",
        "opted out",
        "unsubscribed",
        "désinscrit",
        "désinscrite",
        "désabonné",
        "désabonnée",
        "désinscription",
    ),  # fmt: skip
    "do_not_call": ("do not call", "DoNotCall", "ne pas appeler"),
    "city": ("city", "town", "ville", "mailing city"),
    "postal_code": ("postal code", "postcode", "zip", "zip code", "code postal", "cp", "mailing zip/postal code"),
    "country": ("country", "pays", "mailing country"),
    "tags": ("tags", "tag", "étiquettes", "étiquette", "labels"),
    "organisation": ("organisation", "organization", "entreprise", "company", "société", "structure", "account name"),
}


# Mirrors the column sizes of models.Contact (a test keeps them equal): an over-long value is the row's
# problem to report, not a database error that would abort a whole chunk on PostgreSQL.
_MAX_LENGTH = {
    "email": 320,
    "first_name": 200,
    "last_name": 200,
    "phone": 50,
    "city": 200,
    "postal_code": 20,
    "organisation": 200,
    "role": 40,
    "tags": 80,
}


_TRUE = frozenset({"yes", "oui", "true", "vrai", "1", "x", "y", "o"})


_FALSE = frozenset({"no", "non", "false", "faux", "0", "n", ""})


_LANGUAGE_WORDS = {
    "fr": ("français", "french", "fra", "fre"),
    "en": ("anglais", "english", "eng"),
    "es": ("espagnol", "spanish", "español"),
    "de": ("allemand", "german", "deutsch"),
    "it": ("italien", "italian", "italiano"),
    "pt": ("portugais", "portuguese", "português"),
    "ar": ("arabe", "arabic"),
    "nl": ("néerlandais", "dutch", "nederlands"),
}


_LANGUAGE_TAG_RE = re.compile(r"^([a-z]{2})(?:[-_][a-z0-9]{2,8})*$")


_ROLE_WORDS = {
    "volunteer": ("volunteer", "bénévole", "volontaire"),
    "donor": ("donor", "donateur", "donatrice"),
    "member": ("member", "membre", "adhérent", "adhérente"),
    "beneficiary": ("beneficiary", "beneficiaries", "bénéficiaire"),
}


_COUNTRY_WORDS = {
    "FR": ("France",),
    "BE": ("Belgique", "Belgium"),
    "CH": ("Suisse", "Switzerland"),
    "LU": ("Luxembourg",),
    "MC": ("Monaco",),
    "CA": ("Canada",),
    "DE": ("Allemagne", "Germany"),
    "ES": ("Espagne", "Spain"),
    "IT": ("Italie", "Italy"),
    "PT": ("Portugal",),
    "GB": ("Royaume-Uni", "United Kingdom", "UK", "Angleterre", "England"),
    "IE": ("Irlande", "Ireland"),
    "NL": ("Pays-Bas", "Netherlands"),
    "US": ("États-Unis", "United States", "USA"),
    "MA": ("Maroc", "Morocco"),
    "DZ": ("Algérie", "Algeria"),
    "TN": ("Tunisie", "Tunisia"),
    "SN": ("Sénégal", "Senegal"),
}


_LIST_SPLIT_RE = re.compile(r"[,;|]")


def fold(text: str) -> str:
    """Reduce a header or word to lower-case letters and digits, no accents: ``Adresse e-mail`` -> ``adresseemail``."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if char.isalnum()).casefold()


def _by_word(table: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    return {fold(word): value for value, words in table.items() for word in words}


_FIELD_BY_ALIAS = _by_word(_ALIASES)


_LANGUAGES = _by_word(_LANGUAGE_WORDS)


# plurals too: a "Rôle" column often says "Bénévoles"
_ROLES = _by_word(_ROLE_WORDS) | {fold(word) + "s": role for role, words in _ROLE_WORDS.items() for word in words}


_COUNTRIES = _by_word(_COUNTRY_WORDS)


def _clean(value: str) -> str:
    """Trim, collapse inner white space and unwrap Excel's ``="0612"`` text-forcing formula."""
    value = value.strip()
    if value.startswith('="') and value.endswith('"') and len(value) >= 3:
        value = value[2:-1]
    return " ".join(value.split())


def normalise_email(raw: str) -> str:
    """Return the address trimmed, its domain lower-cased; raise ``ValueError`` with the reason if it is not one."""
    value = raw.strip()
    if value[:7].lower() == "mailto:":
        value = value[7:]
    # "Jean Dupont <jean@example.org>", as mail clients copy addresses
    if value.endswith(">") and "<" in value:
        value = value[value.rindex("<") + 1 : -1]
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise ValueError(str(error)) from None


def normalise_language(raw: str) -> str | None:
    """Return a short language code (``"fr"`` for ``Français``, ``fr-FR``, ``FR``); ``None`` if unrecognisable."""
    value = raw.strip().lower()
    match = _LANGUAGE_TAG_RE.match(value)
    if match:
        return match.group(1)
    return _LANGUAGES.get(fold(value))


def normalise_roles(raw: str) -> list[str]:
    """Return the communities of a role cell in canonical English (``bénévole`` -> ``volunteer``), in order."""
    roles: list[str] = []
    for part in _LIST_SPLIT_RE.split(raw):
        part = " ".join(part.split())
        if not part:
            continue
        role = _ROLES.get(fold(part), part.lower())
        if role not in roles:
            roles.append(role)
    return roles


def normalise_country(raw: str) -> str | None:
    """Return an ISO 3166 alpha-2 code for ``FR``, ``fr`` or a common country name; ``None`` if unknown."""
    value = fold(raw)
    if value in _COUNTRIES:  # before the 2-letter rule: "UK" is GB
        return _COUNTRIES[value]
    if len(value) == 2 and value.isalpha() and value.isascii():
        return value.upper()
    return None


def parse_flag(raw: str) -> bool | None:
    """Return True for yes/oui/true/vrai/1/x/y/o, False for no/non/false/faux/0/blank, None for anything else."""
    value = fold(raw)
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return None


def parse_mapping(entries: Iterable[str]) -> dict[str, str]:
    """Parse ``COLUMN=FIELD`` entries (as given to ``--map``) into ``{column: field}``; raise ImportFileError."""
    mapping: dict[str, str] = {}
    for entry in entries:
        column, equals, field_name = entry.rpartition("=")
        if not equals or not column.strip() or not field_name.strip():
            raise ImportFileError(f'column mapping {entry!r}: expected COLUMN=FIELD, e.g. "Adresse perso=email"')
        mapping[column.strip()] = field_name.strip()
    _check_mapping_fields(mapping)
    return mapping


def _check_mapping_fields(mapping: Mapping[str, str]) -> dict[str, str]:
    checked: dict[str, str] = {}
    for column, field_name in mapping.items():
        name = field_name.strip().lower().replace("-", "_")
        if name not in FIELDS and name != IGNORE:
            raise ImportFileError(
                f'column mapping "{column}={field_name}": unknown field "{field_name}" '
                f"(fields: {', '.join(FIELDS)}, or {IGNORE})"
            )
        checked[column] = name
    return checked
