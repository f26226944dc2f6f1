"""validate: check whole ``#cloud-config`` files the way cloud-init would, plus ours.

cloud-init offers no hook for third-party schema (upstream issue #5558), so we
build a combined schema: cloud-init's own, plus ``host_routing`` under
``$defs``, referenced from ``allOf`` (and declared in ``properties`` on 24+,
whose top level forbids unknown keys).  That works on 22.4 and 25.1 alike.
``host_routing`` errors come from our own checks instead of jsonschema's,
because ours name the fix and cover what a schema cannot (addresses, duplicates),
so the combined schema accepts any ``host_routing`` value: jsonschema would only
repeat our findings, or fail on values ours handle (a ``!!binary`` gate unit).

Files are read through ``loader``: bounded, UTF-8, no duplicate keys (which
only a file can have: cloud-init hands the module an already-parsed dict).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Tuple

from .config import ConfigError, parse
from .loader import FileError, load_yaml, read_text
from .schema import MAX_SHOWN_PROBLEMS

KEY = "host_routing"


def combined_schema(base: Dict[str, Any]) -> Dict[str, Any]:
    """cloud-init's schema ``base`` extended with ``host_routing``."""
    schema = copy.deepcopy(base)
    schema.setdefault("$defs", {})["cc_host_routing"] = {
        "type": "object",
        "properties": {KEY: {}},
    }
    schema.setdefault("allOf", []).append({"$ref": "#/$defs/cc_host_routing"})
    if isinstance(schema.get("properties"), dict):
        schema["properties"][KEY] = {}
    return schema


def cloudinit_errors(data: Dict[str, Any]) -> List[str]:
    """Problems cloud-init's validator finds outside ``host_routing``."""
    from cloudinit.config.schema import (
        SchemaValidationError,
        get_schema,
        validate_cloudconfig_schema,
    )

    try:
        validate_cloudconfig_schema(config=data, schema=combined_schema(get_schema()),
                                    strict=True)
    except SchemaValidationError as err:
        return [f"{path}: {message}" if path else message
                for path, message in (err.schema_errors or [])
                if not (path == KEY or path.startswith(KEY + "."))]
    except Exception as err:  # cloud-init's validator on odd values
        # e.g. a !!binary value where cloud-init's schema has a pattern: its
        # validator raises TypeError rather than reporting the value.
        return [f"cloud-init's schema validator cannot check this file "
                f"({type(err).__name__}: {' '.join(str(err).split())[:200]}); "
                "look for values of an unusual type (!!binary, dates, numbers as keys)"]
    return []


def validate_data(data: Any) -> Tuple[List[str], List[str]]:
    """(errors, warnings) for a loaded cloud-config mapping."""
    if not isinstance(data, dict):
        return [f"top level must be a mapping, not {type(data).__name__}"], []
    errors, warnings = _capped(cloudinit_errors(data)), []
    if KEY in data:
        try:
            warnings = list(parse(data[KEY]).warnings)
        except ConfigError as err:
            errors += _capped([str(p) for p in err.problems])
    return errors, warnings


def validate_file(path: str) -> Tuple[List[str], List[str]]:
    """(errors, warnings) for one file; unreadable or unloadable files are errors."""
    try:
        text = read_text(path)
        if not text.startswith("#cloud-config"):
            return ["first line must be '#cloud-config'"], []
        data = load_yaml(text)
    except OSError as err:
        return [f"cannot read: {err.strerror or err}"], []
    except FileError as err:
        return [str(err)], []
    except ConfigError as err:  # duplicate keys, each with its path
        return _capped([str(p) for p in err.problems]), []
    return validate_data(data)


def _capped(lines: List[str]) -> List[str]:
    """The first problems and a count of the rest, as ``ConfigError`` shows them."""
    more = len(lines) - MAX_SHOWN_PROBLEMS
    return lines if more <= 0 else [*lines[:MAX_SHOWN_PROBLEMS],
                                    f"and {more} more problem(s)"]
