"""What the scripts share on the command line: `--name=value` overrides of their UPPER_CASE
constants, presets, and one-line errors instead of tracebacks for bad input."""
import sys
from fractions import Fraction


class UserError(Exception):
    """Bad input from the user: printed as one line ("error: ...") and exit status 2."""


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


def parse_settings(defaults, argv, presets=None):
    """Apply `--name=value` overrides (and `--preset=NAME`, applied first) to a copy of `defaults`.

    defaults: {"UPPER_NAME": value}; each value's type decides how its override is parsed.
    Returns (settings, positional arguments).
    """
    settings, positional, overrides = dict(defaults), [], []
    presets = presets or {}
    for arg in argv:
        if not arg.startswith("--"):
            positional.append(arg)
            continue
        name, sep, value = arg[2:].partition("=")
        if not sep:
            raise UserError(f"{arg}: write overrides as --name=value")
        if name == "preset":
            if value not in presets:
                raise UserError(f"unknown preset {value!r}; presets: {', '.join(presets) or 'none'}")
            settings.update(presets[value])
            settings["PRESET"] = value
        else:
            overrides.append((name, value))
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


def resolve_device(name):
    """DEVICE setting -> a torch device string: auto picks CUDA when present; asking for CUDA
    without one is a UserError."""
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device={name} but no CUDA device is available")
    return name


def run(main, argv=None):
    """Call main(argv); a UserError becomes one line on stderr and exit status 2."""
    try:
        return main(sys.argv[1:] if argv is None else argv) or 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
