"""validate: check whole ``#cloud-config`` files the way cloud-init would, plus ours.

cloud-init offers no hook for third-party schema (upstream issue #5558), so we
build a combined schema: cloud-init's own, plus ``host_routing`` under
``$defs``, referenced from ``allOf`` (and declared in ``properties`` on 24+,
whose top level forbids unknown keys).  That works on 22.4 and 25.1 alike.
``host_routing`` errors come from our own checks instead of jsonschema's,
because ours name the fix and cover what a schema cannot (addresses, duplicates).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Tuple

from .config import ConfigError, parse
from .schema import HOST_ROUTING_SCHEMA

KEY = "host_routing"


def combined_schema(base: Dict[str, Any]) -> Dict[str, Any]:
    """cloud-init's schema ``base`` extended with ``host_routing``."""
    schema = copy.deepcopy(base)
    schema.setdefault("$defs", {})["cc_host_routing"] = {
        "type": "object",
        "properties": {KEY: HOST_ROUTING_SCHEMA},
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
        return [f"{path}: {message}" for path, message in (err.schema_errors or [])
                if not (path == KEY or path.startswith(KEY + "."))]
    return []


def validate_data(data: Any) -> Tuple[List[str], List[str]]:
    """(errors, warnings) for a loaded cloud-config mapping."""
    if not isinstance(data, dict):
        return [f"top level must be a mapping, not {type(data).__name__}"], []
    errors, warnings = cloudinit_errors(data), []
    if KEY in data:
        try:
            warnings = list(parse(data[KEY]).warnings)
        except ConfigError as err:
            errors += [str(p) for p in err.problems]
    return errors, warnings


def validate_file(path: str) -> Tuple[List[str], List[str]]:
    """(errors, warnings) for one file; unreadable or non-YAML files are errors."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as err:
        return [f"cannot read: {err.strerror}"], []
    if not text.startswith("#cloud-config"):
        return ["first line must be '#cloud-config'"], []
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        return [f"not valid YAML: {err}"], []
    return validate_data(data)
