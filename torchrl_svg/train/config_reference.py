"""The configuration reference: every key's type, default, choices and description.

Read from the schema's dataclasses and their ``Attributes:`` docstrings, so the
reference printed by ``python -m torchrl_svg.train --help`` cannot drift from
the code. Imports no torch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torchrl_svg.train.config_schema import CHOICES, KEY_OWNERS, Config
from torchrl_svg.train.presets import OWN_ENVS, PRESETS

__all__ = ["config_help", "describe_config"]


def _groups() -> list[tuple[str, type]]:
    """``(group, dataclass)`` for the top level (``""``) and each group, in declaration order."""
    out: list[tuple[str, type]] = [("", Config)]
    for f in dataclasses.fields(Config):
        if dataclasses.is_dataclass(f.default_factory):  # type: ignore[arg-type]
            out.append((f.name, f.default_factory))  # type: ignore[arg-type]
    return out


def _attribute_docs(cls: type) -> dict[str, str]:
    """``{field: description}`` from the ``Attributes:`` section of a dataclass docstring.

    An entry ``a / b: text`` documents both ``a`` and ``b``.
    """
    import inspect
    import re

    docs: dict[str, str] = {}
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    try:
        start = lines.index("Attributes:") + 1
    except ValueError:
        return docs
    names: list[str] = []
    for line in lines[start:]:
        if line.strip() and not line.startswith("    "):
            break  # the next section
        entry = re.match(r"^    (\w+(?: / \w+)*): (.*)$", line)
        if entry:
            names = entry[1].split(" / ")
            for name in names:
                docs[name] = entry[2].strip()
        elif line.strip() and names:
            for name in names:
                docs[name] += " " + line.strip()
    return {k: _plain(v) for k, v in docs.items()}


def _plain(text: str) -> str:
    """Docstring markup as plain terminal text: ``x`` and :role:`x` become x."""
    import re

    return re.sub(r"``([^`]*)``", r"\1", re.sub(r":\w+:`~?([^`]*)`", r"\1", text))


def _override_text(value: Any) -> str:
    """A value as it is written in a ``group.key=value`` override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_override_text(v) for v in value) + "]"
    return str(value)


def describe_config() -> list[dict[str, Any]]:
    """Every configuration key with its description, type, default and choices.

    Returns:
        One dict per key, in declaration order: ``key`` (``group.key``), ``type`` (as
        annotated), ``default`` (the dataclass default, before any preset), ``choices``
        (a tuple, or ``None`` when any value of the type goes), ``algorithms`` (those that
        read the key, or ``None`` for all) and ``description``.

    Examples:
        >>> keys = {d["key"]: d for d in describe_config()}
        >>> keys["loss.horizon"]["type"], keys["loss.horizon"]["default"]
        ('int', 1)
        >>> keys["algorithm"]["choices"]
        ('s2vg', 'svg0', 'svg1', 'svg1_er', 'svgk', 'svginf', 'sac')
        >>> keys["loss.horizon"]["description"]
        'value-expansion horizon H (1: real data only, as in the paper).'
    """
    rows = []
    for group, cls in _groups():
        docs = _attribute_docs(cls)
        for f in dataclasses.fields(cls):
            if group == "" and dataclasses.is_dataclass(f.default_factory):  # type: ignore[arg-type]
                continue
            path = (group, f.name) if group else (f.name,)
            if f.default is not dataclasses.MISSING:
                default = f.default
            else:
                default = f.default_factory()  # type: ignore[misc]
            choices = CHOICES.get(path)
            kind = str(f.type)
            if choices is not None:  # a Literal: the type of its values
                kind = " | ".join(dict.fromkeys(type(c).__name__ for c in choices))
                kind = kind.replace("NoneType", "None")
            rows.append(
                {
                    "key": ".".join(path),
                    "type": kind,
                    "default": default,
                    "choices": choices,
                    "algorithms": KEY_OWNERS.get(path),
                    "description": docs.get(f.name, ""),
                }
            )
    return rows


def config_help(width: int = 100) -> str:
    """The configuration reference printed by ``--help``: every group and key.

    Each key is shown with its type, default (before any per-task preset) and
    choices, then its description; the per-task presets and the tasks follow.

    Examples:
        >>> text = config_help()
        >>> "loss.horizon: int = 1" in text and "value-expansion horizon H" in text
        True
        >>> "(read by svgk only)" in text  # svg.horizon
        True
    """
    import textwrap

    out = [
        "configuration keys (override with group.key=value; defaults before any per-task preset):"
    ]
    docs = {group: _plain((cls.__doc__ or "").strip().splitlines()[0]) for group, cls in _groups()}
    current = None
    for row in describe_config():
        group = row["key"].rpartition(".")[0]
        if group != current:
            current = group
            out.append("")
            out.append(f"{group}: {docs[group]}" if group else "top level:")
        choices = row["choices"]
        shown = ""
        if choices:
            names = [_override_text(c) for c in choices]
            shown = "  {" + ", ".join(names) + "}"
        out.append(f"  {row['key']}: {row['type']} = {_override_text(row['default'])}{shown}")
        if row["algorithms"]:
            out.append(f"      (read by {', '.join(row['algorithms'])} only)")
        if row["description"]:
            out.extend(
                textwrap.wrap(
                    row["description"],
                    width,
                    initial_indent="      ",
                    subsequent_indent="      ",
                    break_on_hyphens=False,
                )
            )
    out.append("")
    out.append("per-task presets (applied over the defaults; use_preset=false skips them):")
    families: dict[tuple[str, ...], list[str]] = {}
    for algo, presets in PRESETS.items():
        families.setdefault(tuple(presets), []).append(algo)
    for tasks, algos in families.items():
        out.extend(
            textwrap.wrap(
                f"{', '.join(algos)}: {', '.join(tasks)}",
                width,
                initial_indent="  ",
                subsequent_indent="      ",
            )
        )
    out.append("")
    out.extend(
        textwrap.wrap(
            "tasks (env.name): any registered Gymnasium environment with a continuous (Box) "
            "action space and flat vector observations, e.g. the MuJoCo tasks "
            "(InvertedPendulum-v5, HalfCheetah-v5, Hopper-v5, Walker2d-v5, ...), and the "
            f"package's own {' and '.join(OWN_ENVS)}.",
            width,
        )
    )
    return "\n".join(out)
