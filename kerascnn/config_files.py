"""Configuration files: the options in a run's run.json, or in a TOML, YAML
or JSON file of options (`fit --config`, `study --config`)."""

import json
from pathlib import Path

from kerascnn.config import OptionError, spell, upgrade


def read_options(path):
    """The options in a configuration file: a run.json's given options, or a
    TOML, YAML or JSON mapping of options."""
    path = Path(path)
    if not path.is_file():
        raise OptionError(f"{spell('config')}: no configuration file at {path}")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".toml":
            options = _toml().loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            options = yaml.safe_load(text)
        elif suffix == ".json":
            options = json.loads(text)
        else:
            raise OptionError(f"{path}: a configuration is a .json (a run's run.json), .toml or .yaml file")
    except (OSError, UnicodeDecodeError, ValueError) as e:  # the parsers' errors are ValueErrors
        raise OptionError(f"cannot read the configuration {path}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # noqa: BLE001 - yaml.YAMLError
        raise OptionError(f"cannot read the configuration {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(options, dict):
        raise OptionError(f"{path} holds no mapping of options")
    if "test_accuracy" in options or "given" in options:  # a run's record
        options = upgrade(options)["given"]
    return options


def _toml():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib
