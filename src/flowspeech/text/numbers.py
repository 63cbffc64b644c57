"""Numbers to words for English text-to-speech.

The Tacotron number rules (keithito/tacotron ``text/numbers.py``, used unchanged by
Glow-TTS ``english_cleaners``) are reproduced exactly, quirks included, because a model
trained on them expects their output:

* commas between digits are deleted (``1,000`` -> ``1000``, and ``1,2`` -> ``12`` too);
* ``$`` amounts: ``$1`` -> ``1 dollar``, ``$2.50`` -> ``2 dollars, 50 cents``, ``$.5`` ->
  ``5 cents``; the part after the point is read as a whole number, so ``$5.5`` gives
  ``5 cents``; more than one point gives ``<amount> dollars``;
* decimals read the fraction as a number: ``3.14`` -> ``three point fourteen``;
* ordinals ``1st``, ``22nd`` -> ``first``, ``twenty-second``;
* every integer from 1001 to 2999 is read as a year: ``1995`` -> ``nineteen ninety-five``,
  ``2000`` -> ``two thousand``, ``2005`` -> ``two thousand five``, ``1900`` ->
  ``nineteen hundred``, ``2010`` -> ``twenty ten``;
* other integers are cardinals without "and": ``1234567`` -> ``one million, two hundred
  thirty-four thousand, five hundred sixty-seven`` (inflect keeps the commas, which the
  models read as short pauses).

``extended=True`` adds rules for text the Tacotron rules get wrong, and changes nothing
else: clock times (``3:30``, ``10:05 pm``, ``12:00``, ``5 a.m.``), percentages (``50%``,
``12.5%``), and pound and euro amounts with pence and cents (``£5.50``, ``€1``). Numbers
too long for inflect (37 digits and more) are read digit by digit instead of failing.
Word forms come from ``inflect``, imported on first use (it takes a second to load).
"""

from __future__ import annotations

import re
from functools import lru_cache

# inflect names numbers below 10**36; longer digit strings are spelled digit by digit.
_MAX_DIGITS = 36
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

_COMMA_NUMBER_RE = re.compile(r"[0-9][0-9,]+[0-9]")
_DECIMAL_RE = re.compile(r"[0-9]+\.[0-9]+")
_DOLLARS_RE = re.compile(r"\$([0-9.,]*[0-9]+)")
_ORDINAL_RE = re.compile(r"[0-9]+(?:st|nd|rd|th)")
_NUMBER_RE = re.compile(r"[0-9]+")
_ANY_DIGIT_RE = re.compile(r"[0-9]")

# Extended rules. The text is lower case when they run.
_POUNDS_RE = re.compile(r"£\s?([0-9.,]*[0-9]+)")
_EUROS_RE = re.compile(r"€\s?([0-9.,]*[0-9]+)")
_PERCENT_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*%")
# h:mm with an optional am/pm (a.m., am, a m); the hour may not follow a digit or a colon
# and the minutes may not run on into more digits, so "12:99" and "1:30:45" stay numbers.
_TIME_RE = re.compile(
    r"(?<![0-9:])([01]?[0-9]|2[0-3]):([0-5][0-9])(?![0-9])(?:\s*([ap])\.?\s?m\b\.?)?"
)
_HOUR_AMPM_RE = re.compile(r"(?<![0-9.:,])\b(1[0-2]|0?[1-9])\s*([ap])\.?\s?m\b\.?")

_CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
}


@lru_cache(maxsize=1)
def _inflect_engine():
    import inflect  # lazy: 0.3 s to import; only when a number is met

    return inflect.engine()


def _digits_one_by_one(digits: str) -> str:
    return " ".join(_DIGIT_WORDS[int(d)] for d in digits)


@lru_cache(maxsize=4096)
def cardinal(digits: str) -> str:
    """Words for a string of ASCII digits, Tacotron style (years 1001-2999 as years)."""
    stripped = digits.lstrip("0") or "0"
    if len(stripped) > _MAX_DIGITS:
        return _digits_one_by_one(digits)
    num = int(stripped)
    engine = _inflect_engine()
    if 1000 < num < 3000:
        if num == 2000:
            return "two thousand"
        if 2000 < num < 2010:
            return "two thousand " + engine.number_to_words(num % 100)
        if num % 100 == 0:
            return engine.number_to_words(num // 100) + " hundred"
        # group=2 reads "1995" as "nineteen, ninety-five"; the comma is not wanted here
        return engine.number_to_words(num, andword="", zero="oh", group=2).replace(", ", " ")
    return engine.number_to_words(num, andword="")


@lru_cache(maxsize=1024)
def ordinal(token: str) -> str:
    """Words for ``<digits><st|nd|rd|th>`` as inflect reads them (``22nd`` -> twenty-second)."""
    digits = token[:-2]
    if len(digits.lstrip("0")) <= _MAX_DIGITS:
        try:
            return _inflect_engine().number_to_words(token)
        except Exception:  # inflect.NumOutOfRangeError; not expected below 10**36
            pass
    return _digits_one_by_one(digits) + " " + token[-2:]


def _currency(amount: str, symbol: str) -> str:
    """``$``/``£``/``€`` amount (digits and points) -> words with digits, e.g. ``2 dollars,
    50 cents``. The Tacotron dollar rule, generalised to other units."""
    unit, units, sub, subs = _CURRENCIES[symbol]
    # The Tacotron rule calls int() on the parts; stray commas (as in "$1,.5") made it fail.
    parts = amount.replace(",", "").split(".")
    if len(parts) > 2:
        return f"{amount} {units}"  # unexpected format: say the amount, then the unit
    whole = (parts[0].lstrip("0") or "0") if parts[0] else "0"
    frac = (parts[1].lstrip("0") or "0") if len(parts) > 1 and parts[1] else "0"
    if whole != "0" and frac != "0":
        return f"{whole} {unit if whole == '1' else units}, {frac} {sub if frac == '1' else subs}"
    if whole != "0":
        return f"{whole} {unit if whole == '1' else units}"
    if frac != "0":
        return f"{frac} {sub if frac == '1' else subs}"
    return f"zero {units}"


def _time(m: re.Match) -> str:
    hour, minute, half = int(m.group(1)), int(m.group(2)), m.group(3)
    words = cardinal(str(hour))
    if minute == 0:
        if half:
            pass
        elif hour <= 12:
            words += " o'clock"
        else:
            words += " hundred"  # 24-hour clock: "fourteen hundred"
    elif minute < 10:
        words += " oh " + cardinal(str(minute))
    else:
        words += " " + cardinal(str(minute))
    if half:
        words += f" {half}.m."
    return words


def expand_numbers(text: str, extended: bool = True) -> str:
    """Replace numbers, amounts (and, if ``extended``, times and percentages) by words.

    Args:
        text: lower-case ASCII text (``£`` and ``€`` may remain when ``extended``).
        extended: add the times/percent/pound/euro rules to the Tacotron ones.

    Returns:
        The text with every ASCII digit replaced by words.
    """
    if not _ANY_DIGIT_RE.search(text):
        return text  # every rule below needs a digit
    text = _COMMA_NUMBER_RE.sub(lambda m: m.group(0).replace(",", ""), text)
    if extended:
        text = _TIME_RE.sub(_time, text)
        text = _HOUR_AMPM_RE.sub(lambda m: f"{int(m.group(1))} {m.group(2)}.m.", text)
        text = _PERCENT_RE.sub(r"\1 percent", text)
        text = _POUNDS_RE.sub(lambda m: _currency(m.group(1), "£"), text)
        text = _EUROS_RE.sub(lambda m: _currency(m.group(1), "€"), text)
    text = _DOLLARS_RE.sub(lambda m: _currency(m.group(1), "$"), text)
    text = _DECIMAL_RE.sub(lambda m: m.group(0).replace(".", " point "), text)
    text = _ORDINAL_RE.sub(lambda m: ordinal(m.group(0)), text)
    text = _NUMBER_RE.sub(lambda m: cardinal(m.group(0)), text)
    return text
