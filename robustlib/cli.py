"""What the scripts share on the command line: `--name=value` overrides of their UPPER_CASE
constants, presets, and the ranges every setting is checked against before any work (a value out
of range is a one-line UserError). Processes and devices: runtime.py; errors and exit codes: errors.py."""
import math
import os
import re
import tempfile
from fractions import Fraction

from .errors import UserError


def parse_value(name, text, like):
    """Parse `text` to the type of `like` (bool, int, float, str, or a comma list of those)."""
    try:
        if isinstance(like, bool):
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            return float(Fraction(text.strip()))  # accepts 0.03, 8/255, 1e-3
        if isinstance(like, (list, tuple)):
            item = like[0] if like else ""
            parts = [p for p in text.split(",") if p.strip()]
            return type(like)(parse_value(name, p.strip(), item) for p in parts)
        return text
    except (ValueError, ZeroDivisionError):
        kind = type(like).__name__ if not isinstance(like, (list, tuple)) else \
            f"comma list of {type(like[0]).__name__ if like else 'str'}"
        raise UserError(f"--{name.lower()}={text}: expected a {kind}") from None


def parse_settings(defaults, argv, presets=None, preset_key="PRESET"):
    """Apply `--name=value` overrides to a copy of `defaults`, after the preset named by
    `--preset=NAME` (or by the script's own PRESET constant where it names one: editing it at the
    top of the script works too). `preset_key` names the setting that picks a preset (adv_testing:
    BUDGET); presets: {name: {"UPPER_NAME": value}}.

    defaults: {"UPPER_NAME": value}; each value's type decides how its override is parsed.
    Returns (settings, positional arguments).
    """
    settings, positional, overrides = dict(defaults), [], []
    presets, flag = presets or {}, preset_key.lower()
    chosen = defaults.get(preset_key) if defaults.get(preset_key) in presets else None
    for arg in argv:
        if arg == "--":  # torchrun's separator (it would take --n=... for an abbreviation of its own)
            continue
        if not arg.startswith("--"):
            positional.append(arg)
            continue
        name, sep, value = arg[2:].partition("=")
        if not sep:
            raise UserError(f"{arg}: write overrides as --name=value")
        if name == flag and presets:
            if value not in presets:
                raise UserError(f"--{flag}={value} is out of range: allowed one of {', '.join(presets)}")
            chosen = value
        else:
            overrides.append((name, value))
    if chosen is not None:
        settings.update(presets[chosen])
        settings[preset_key] = chosen
    for name, value in overrides:
        key = name.upper().replace("-", "_")
        if key not in defaults or name != name.lower():
            known = ", ".join(k.lower() for k in defaults)
            raise UserError(f"unknown setting --{name}; settings: {known}")
        settings[key] = parse_value(key, value, defaults[key])
    return settings, positional


def settings_of(namespace):
    """The settings of a script: its UPPER_CASE globals of type bool, int, float, str or list, in
    the order they were written (tuples and dicts, such as imported name tables, are not settings)."""
    return {k: v for k, v in namespace.items()
            if k.isupper() and not k.startswith("_") and isinstance(v, (bool, int, float, str, list))}


class Rule:
    """The allowed values of one setting: `text` tells the user, `ok(value)` decides, and
    `outside` holds values just outside the range (as they would be typed), for the tests."""

    def __init__(self, text, ok, outside=()):
        self.text, self.ok, self.outside = text, ok, tuple(outside)

    def __repr__(self):
        return f"Rule({self.text!r})"


def interval(spec, integer=False):
    """Numbers in an interval written as in maths: '[0, 1]', '(0, inf)', '[1, inf)'."""
    low, high = (float(v) for v in spec[1:-1].split(","))
    closed_low, closed_high = spec[0] == "[", spec[-1] == "]"

    def ok(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            return False
        return ((low < v or (closed_low and v == low)) and (v < high or (closed_high and v == high))
                and not math.isnan(v))

    def just(bound, below):  # the nearest typed value beyond a bound
        if integer:
            return str(int(bound) - 1 if below else int(bound) + 1)
        step = 1e-6 * max(1.0, abs(bound))
        return repr(bound - step if below else bound + step)

    outside = []
    if math.isfinite(low):
        outside.append(just(low, True) if closed_low else (str(int(low)) if integer else repr(low)))
    if math.isfinite(high):
        outside.append(just(high, False) if closed_high else (str(int(high)) if integer else repr(high)))
    kind = "whole numbers" if integer else "numbers"
    return Rule(f"{kind} in {spec}", ok, outside)


def one_of(*choices):
    names = ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
    return Rule(f"one of {names}", lambda v: v in choices,
                () if all(isinstance(c, bool) for c in choices) else ("no-such-choice",))


BOOL = one_of(True, False)
ANY_TEXT = Rule("any text", lambda v: isinstance(v, str))
DEVICE_RULE = Rule("auto, cpu, cuda or cuda:N", lambda v: re.fullmatch(r"auto|cpu|cuda(:\d+)?", v)
                   is not None, ("gpu",))


def each(rule, min_len=0):
    """A comma list whose items each follow `rule` (at least `min_len` of them)."""
    least = f" of at least {min_len} item{'s' if min_len > 1 else ''}" if min_len else ""
    return Rule(f"a comma list{least}, each item {rule.text}",
                lambda v: isinstance(v, (list, tuple)) and len(v) >= min_len and all(map(rule.ok, v)),
                list(rule.outside) + ([""] if min_len else []))


def grid_or_auto(spec):
    """'auto', or a comma list of numbers (8/255 allowed) in the interval `spec`."""
    inner = interval(spec)

    def ok(v):
        if v == "auto":
            return True
        try:
            values = parse_value("EPS", v, [0.0])
        except UserError:
            return False
        return bool(values) and all(map(inner.ok, values))
    return Rule(f"auto, or a comma list of {inner.text}", ok, list(inner.outside) + ["abc"])


def _writable(path, want_dir):
    """Could `path` be written (as a directory, or as a file) without an error? The nearest
    existing folder is probed by creating and removing an empty folder in it (os.access alone
    says yes to root on a read-only mount or in /proc); nothing is left behind."""
    if not path:
        return False
    path = os.path.abspath(path)
    if os.path.exists(path) and os.path.isdir(path) != want_dir:
        return False
    place = path if want_dir and os.path.isdir(path) else os.path.dirname(path)
    while not os.path.exists(place):
        place = os.path.dirname(place)
    if not os.path.isdir(place):
        return False
    try:
        os.rmdir(tempfile.mkdtemp(dir=place, prefix=".write-probe-"))
    except OSError:
        return False
    return True


WRITABLE_DIR = Rule("a directory that can be created or written", lambda v: _writable(v, True))
WRITABLE_FILE = Rule("a file path that can be written", lambda v: _writable(v, False))
CSV_FILE = Rule("a writable file path ending in .csv (its .md, .png, .log and .cache/ go beside it)",
                lambda v: isinstance(v, str) and v.lower().endswith(".csv") and len(os.path.basename(v)) > 4
                and _writable(v, False), ("r.md", "r.png", "r.log", "q.cache", ".csv"))


def check_settings(settings, ranges):
    """Check every setting against its rule in `ranges` (the script's range table), before any
    work: the first bad value is a UserError naming the setting, its value and the range."""
    missing = [k for k in settings if k not in ranges]
    if missing:  # a programming error, not the user's: every setting needs a range
        raise KeyError(f"settings without a range: {missing}")
    for key, value in settings.items():
        if not ranges[key].ok(value):
            shown = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
            raise UserError(f"--{key.lower()}={shown} is out of range: allowed {ranges[key].text}")
