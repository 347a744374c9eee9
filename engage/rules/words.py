"""Dates and languages in words, without the machine's locale. Pure: no database, no Prefect."""

from __future__ import annotations

from datetime import date

_DATE_WORDS: dict[str, tuple[list[str], list[str]]] = {
    "fr": (
        "lundi mardi mercredi jeudi vendredi samedi dimanche".split(),
        "janvier février mars avril mai juin juillet août septembre octobre novembre décembre".split(),
    ),
    "en": (
        "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split(),
        "January February March April May June July August September October November December".split(),
    ),
    "de": (
        "Montag Dienstag Mittwoch Donnerstag Freitag Samstag Sonntag".split(),
        "Januar Februar März April Mai Juni Juli August September Oktober November Dezember".split(),
    ),
    "es": (
        "lunes martes miércoles jueves viernes sábado domingo".split(),
        "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre".split(),
    ),
    "it": (
        "lunedì martedì mercoledì giovedì venerdì sabato domenica".split(),
        "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre dicembre".split(),
    ),
}


def long_date(day: date, language: str) -> str:
    """Write a date in words, e.g. "vendredi 20 novembre 2026" or "Friday 20 November 2026"; ISO otherwise."""
    words = _DATE_WORDS.get(language.split("-")[0].lower())
    if words is None:
        return day.isoformat()
    weekday, month = words[0][day.weekday()], words[1][day.month - 1]
    match language[:2].lower():
        case "fr":
            return f"{weekday} {'1er' if day.day == 1 else day.day} {month} {day.year}"
        case "de":
            return f"{weekday}, {day.day}. {month} {day.year}"
        case "es":
            return f"{weekday}, {day.day} de {month} de {day.year}"
        case _:
            return f"{weekday} {day.day} {month} {day.year}"


_LANGUAGE_NAMES = {
    "en": {"en": "English", "fr": "French", "es": "Spanish", "de": "German", "it": "Italian", "ar": "Arabic"},
    "fr": {"en": "anglais", "fr": "français", "es": "espagnol", "de": "allemand", "it": "italien", "ar": "arabe"},
}


def _language_name(code: str | None, language: str) -> str:
    if not code:
        return "-"
    return _LANGUAGE_NAMES[language].get(code.split("-")[0].lower(), code)
