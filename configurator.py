"""nanoGPT-style configuration: a script's plain variables are its config; --key=value overrides them.

    config, args = configurator.configure(globals())

--config=FILE reads `key = value` lines (Python literals, # comments) first; --help lists every key
with its default and the comment beside it in the script. Nothing is exec'd.
"""

from __future__ import annotations

import ast
import difflib
import math
import os
import re
import sys
from pathlib import Path

CONFIG_TYPES = (bool, int, float, str, list, type(None))


def _parse(key: str, text: str, default):
    """text as the type of default (lists collect strings, bools take true/false/1/0)."""
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--{key} takes True or False, not {text!r}")
    if isinstance(default, (int, float)):
        kind = "a whole number" if isinstance(default, int) else "a number"
        try:
            value = type(default)(float(text) if isinstance(default, int) and "e" in text.lower() else text)
        except (ValueError, OverflowError):
            raise ValueError(f"--{key} takes {kind}, not {text!r}") from None
        if not math.isfinite(value):  # nan and inf pass float(); no option means them
            raise ValueError(f"--{key} takes a finite number, not {text!r}")
        return value
    return text


def _help(namespace: dict, keys: list[str]) -> str:
    """The script's docstring and one line per key: default and the comment beside it."""
    source = Path(namespace.get("__file__", "")).read_text() if namespace.get("__file__") else ""
    lines = [(namespace.get("__doc__") or "").strip(), "", "options (--key=value; --config=FILE reads key = value lines):"]
    for k in keys:
        m = re.search(rf"^{k}\s*=.*?#\s*(.*)$", source, re.M)
        lines.append(f"  --{k}={namespace[k]!r}".ljust(36) + f" {m.group(1) if m else ''}")
    return "\n".join(lines)


def configure(namespace: dict, argv: list[str] | None = None, positional: bool = False) -> tuple[dict, list[str]]:
    """Apply --config and --key=value to namespace's config variables; return (config, positional args)."""
    argv = sys.argv[1:] if argv is None else argv
    prog = Path(namespace.get("__file__") or "script").name  # errors read "train_gan.py: ...", as the scripts' own
    # lower-case plain values only: an imported CONSTANT is not an option, nor a key of the saved config
    keys = [k for k, v in namespace.items() if not k.startswith("_") and not k.isupper() and isinstance(v, CONFIG_TYPES)]
    if "--help" in argv or "-h" in argv:
        print(_help(namespace, keys))
        sys.exit(0)
    overrides: list[tuple[str, str]] = []
    args: list[str] = []
    for arg in argv:
        if arg.startswith("--config="):
            name = arg.split("=", 1)[1]
            try:
                lines = Path(name).read_text().splitlines()
            except OSError as e:
                raise SystemExit(f"{prog}: --config={name}: {e.strerror}") from None
            for n, line in enumerate(lines, 1):
                line = line.split("#", 1)[0].strip()
                if line:
                    k, eq, v = line.partition("=")
                    try:
                        value = ast.literal_eval(v.strip()) if eq else None
                    except (ValueError, SyntaxError):
                        value = None
                    if value is None:
                        raise SystemExit(f"{prog}: {name} line {n}: expected key = value (a Python literal), got {line!r}")
                    overrides.append((k.strip(), value if isinstance(value, str) else repr(value)))
        elif arg.startswith("--"):
            k, eq, v = arg[2:].partition("=")
            if not eq and k in keys and not isinstance(namespace[k], bool):  # --ckpt runs/x.pt: the space ate the value
                raise SystemExit(f"{prog}: --{k} needs a value: --{k}=VALUE (with '=', not a space)")
            overrides.append((k, v if eq else "True"))
        elif positional:
            args.append(arg)
        else:
            raise SystemExit(f"{prog}: unexpected argument {arg!r}; options are --key=value (see --help)")
    lists_seen: set[str] = set()
    for k, v in overrides:
        if k not in keys:
            close = difflib.get_close_matches(k, keys, n=1)
            raise SystemExit(f"{prog}: unknown option --{k}" + (f": did you mean --{close[0]}?" if close else " (see --help)"))
        if isinstance(namespace[k], list):  # repeated --key=a --key=b builds the list
            namespace[k] = (namespace[k] if k in lists_seen else []) + [v]
            lists_seen.add(k)
            continue
        try:
            namespace[k] = _parse(k, v, namespace[k])
        except ValueError as e:
            raise SystemExit(f"{prog}: {e}") from None
    for k in keys:  # ~ as a path option's start: the shell does not expand it after --key=
        if isinstance(namespace[k], str) and namespace[k].startswith("~"):
            namespace[k] = os.path.expanduser(namespace[k])
        elif isinstance(namespace[k], list):
            namespace[k] = [os.path.expanduser(v) if isinstance(v, str) and v.startswith("~") else v for v in namespace[k]]
    return {k: namespace[k] for k in keys}, args
