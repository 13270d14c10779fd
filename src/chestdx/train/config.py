"""Run configuration: defaults <- YAML preset (``inherit:`` chain) <- ``key.sub=value`` overrides, all validated.

Presets ship inside the package (``chestdx/configs/*.yaml``, read with :mod:`importlib.resources`); a YAML path
works too. Every layer is checked against :class:`chestdx.train.config_schema.ChestConfig`: an unknown key or a
wrong type raises :class:`ConfigError` naming the source, the full key path and the nearest valid name.
``load_config`` returns a plain dict (``ChestConfig.model_dump()``).
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ValidationError

from chestdx.train.config_schema import ChestConfig

if TYPE_CHECKING:
    from importlib.abc import Traversable  # importlib.resources.abc from Python 3.11 on

__all__ = ["DEFAULTS", "MAX_INHERIT_DEPTH", "ConfigError", "PresetNotFoundError", "UnknownConfigKeyError",
           "deep_update", "list_presets", "load_config", "parse_override", "preset_names", "resolve_config_path",
           "save_config", "validate_config"]

#: Every default, from the schema (the one place they are written).
DEFAULTS: dict[str, Any] = ChestConfig().model_dump()
#: Longest ``inherit:`` chain (a preset and its ancestors); longer chains are refused, not truncated.
MAX_INHERIT_DEPTH = 8


class ConfigError(ValueError):
    """A config that cannot be used: the message names the source, the key path and the problem."""


class UnknownConfigKeyError(ConfigError, KeyError):
    """A key the schema does not have (also a KeyError for older callers)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PresetNotFoundError(ConfigError, FileNotFoundError):
    """Neither a YAML file nor a packaged preset."""


def _preset_dir() -> Traversable:
    return resources.files("chestdx") / "configs"


def preset_names() -> list[str]:
    """Names of the presets shipped in the package (``chestdx/configs/*.yaml``)."""
    return sorted(p.name[:-5] for p in _preset_dir().iterdir() if p.name.endswith(".yaml"))


def list_presets() -> list[tuple[str, str]]:
    """(name, first sentence of the preset's opening comment) of every packaged preset."""
    out = []
    for name in preset_names():
        lines = (_preset_dir() / f"{name}.yaml").read_text(encoding="utf-8").splitlines()
        comment = []
        for line in lines:
            if not line.startswith("#"):
                break
            comment.append(line.lstrip("#").strip())
        text = " ".join(comment)
        out.append((name, text.split(". ")[0].rstrip(".") + "." if text else ""))
    return out


def resolve_config_path(name_or_path: str | Path, base: Path | None = None) -> Path | Traversable:
    """A YAML path (relative paths also tried beside ``base``), or a packaged preset name (e.g. "default")."""
    path = Path(name_or_path)
    for candidate in (path, base / path if base is not None and not path.is_absolute() else None):
        if candidate is not None and candidate.is_file():
            return candidate
    preset = _preset_dir() / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    names = preset_names()
    raise PresetNotFoundError(f"config {str(name_or_path)!r} not found{_did_you_mean(str(name_or_path), names)}; "
                              f"presets: {', '.join(names)}")


def deep_update(base: dict, update: dict) -> dict:
    """Recursive dict merge (``update`` wins); returns a new dict."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def validate_config(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Check ``config`` (keys, then types and values) and return it with every default filled in."""
    check_keys(config, source)
    try:
        return ChestConfig.model_validate(config).model_dump()
    except ValidationError as err:
        raise ConfigError(f"{source}: {_format_errors(err)}") from None


def load_config(name_or_path: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Defaults <- preset YAML (which may ``inherit:`` another) <- overrides; each layer validated."""
    config = copy.deepcopy(DEFAULTS)
    if name_or_path is not None:
        for source, data in _read_chain(name_or_path):
            check_keys(data, source)
            config = validate_config(_merge(config, data), source)
    for item in overrides or []:
        keys, value = parse_override(item)
        config = validate_config(_apply(config, keys, value, item), f"--set {item}")
    return config


def save_config(config: dict[str, Any], path: str | Path) -> None:
    """Write the fully resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config, sort_keys=False))


# ---- overrides ---------------------------------------------------------------------------------------------


def parse_override(item: str) -> tuple[list[str], Any]:
    """``'optimizer.lr=3e-4'`` -> (['optimizer', 'lr'], 0.0003). The field's type decides the parsing: a text
    field keeps the raw text (``name=1e3`` is "1e3"; ``null``/``~``/empty = None where allowed), any other is
    read as YAML. Unknown keys raise :class:`UnknownConfigKeyError` with the nearest valid name."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not key=value (e.g. --set optimizer.lr=3e-4)")
    key, raw = item.split("=", 1)
    keys = [k.strip() for k in key.strip().split(".")]
    if not all(keys):
        raise ConfigError(f"override {item!r}: empty key segment")
    annotation = _field_annotation(keys, f"--set {item}")
    if _is_text(annotation):
        if raw.strip() in ("null", "~", "") and _allows_none(annotation):
            return keys, None
        return keys, raw
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {item}: value is not valid YAML ({err.__class__.__name__})") from None
    return keys, value


def _apply(config: dict[str, Any], keys: list[str], value: Any, item: str) -> dict[str, Any]:
    out = copy.deepcopy(config)
    node = out
    for i, k in enumerate(keys[:-1]):
        child = node.get(k)
        if isinstance(child, str) and _section_of(keys[: i + 1]) is not None:
            child = {"name": child}  # shorthand (loss: focal) -> mapping, to set one of its parameters
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item}: {'.'.join(keys[: i + 1])} is a value, not a section")
        node[k] = child
        node = child
    if keys == ["loss"] or (len(keys) == 2 and keys[0] == "loss" and keys[1] == "name"):
        _reset_loss_params(out, value if keys == ["loss"] else {"name": value})
    node[keys[-1]] = value
    return out


def _reset_loss_params(config: dict[str, Any], new: Any) -> None:
    """Switching the loss to another name drops the old loss's parameters (focal gamma does not fit bce)."""
    old = config.get("loss")
    old_name = old.get("name") if isinstance(old, dict) else old
    new_name = new.get("name") if isinstance(new, dict) else new
    if isinstance(old, dict) and new_name != old_name:
        config["loss"] = {"name": old_name}


def _merge(config: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """``deep_update``, except that a layer naming another loss replaces the loss (and its parameters)."""
    layer = dict(layer)
    if "loss" in layer:
        new = {"name": layer["loss"]} if isinstance(layer["loss"], str) else layer["loss"]
        old = config.get("loss")
        old = {"name": old} if isinstance(old, str) else old
        if isinstance(new, dict) and isinstance(old, dict) and new.get("name", old.get("name")) == old.get("name"):
            layer["loss"] = {**old, **new}
        config = {**config, "loss": None}
    return deep_update(config, layer)


# ---- preset files ------------------------------------------------------------------------------------------


def _read_chain(name_or_path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """[(source, data)] from the root ancestor down to the named preset; cycles and deep chains refused."""
    chain: list[tuple[str, dict[str, Any]]] = []
    seen: list[str] = []
    target: str | Path = name_or_path
    base: Path | None = None
    while True:
        path = resolve_config_path(target, base)
        ident = str(Path(path).resolve()) if isinstance(path, Path) else str(path)
        if ident in seen:
            loop = " -> ".join([*seen, ident])
            raise ConfigError(f"inherit cycle: {loop}")
        seen.append(ident)
        if len(seen) > MAX_INHERIT_DEPTH:
            raise ConfigError(f"inherit chain longer than {MAX_INHERIT_DEPTH}: {' -> '.join(seen)}")
        source = f"{path}"
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: not valid YAML: {err}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a config must be a mapping of keys, got {type(data).__name__}")
        parent = data.pop("inherit", None)
        chain.append((source, data))
        if parent is None:
            break
        if not isinstance(parent, str):
            raise ConfigError(f"{source}: inherit must be a preset name or a YAML path, got {parent!r}")
        target, base = parent, Path(path).parent if isinstance(path, Path) else None
    return chain[::-1]


# ---- schema walking and messages ---------------------------------------------------------------------------


def _unwrap(annotation: Any) -> list[Any]:
    """The members of a union (Optional included), with ``Annotated`` stripped."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _unwrap(arg)]
    return [annotation]


def _section(annotation: Any) -> type[BaseModel] | None:
    for member in _unwrap(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _section_of(keys: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = ChestConfig
    for k in keys:
        model = _section(model.model_fields[k].annotation) if model and k in model.model_fields else None
    return model


def _is_text(annotation: Any) -> bool:
    members = [m for m in _unwrap(annotation) if m is not type(None)]
    return bool(members) and all(m is str for m in members)


def _allows_none(annotation: Any) -> bool:
    return type(None) in _unwrap(annotation)


def _field_annotation(keys: list[str], source: str) -> Any:
    model: type[BaseModel] = ChestConfig
    annotation: Any = None
    for i, k in enumerate(keys):
        if k not in model.model_fields:
            _unknown(keys[: i + 1], model, source)
        annotation = model.model_fields[k].annotation
        section = _section(annotation)
        if i < len(keys) - 1:
            if section is None:
                raise ConfigError(f"{source}: {'.'.join(keys[: i + 1])} is a value, not a section")
            model = section
    return annotation


def check_keys(data: dict[str, Any], source: str, model: type[BaseModel] = ChestConfig,
               prefix: tuple[str, ...] = ()) -> None:
    """Refuse any key (at any depth) that ``model`` does not define, naming the nearest valid one."""
    for key, value in data.items():
        path = [*prefix, str(key)]
        if key not in model.model_fields:
            _unknown(path, model, source)
        section = _section(model.model_fields[key].annotation)
        if section is not None and isinstance(value, dict):
            check_keys(value, source, section, tuple(path))


def _unknown(path: list[str], model: type[BaseModel], source: str) -> None:
    names = list(model.model_fields)
    hint = _did_you_mean(path[-1], names, prefix=".".join(path[:-1]))
    where = f" in {'.'.join(path[:-1])}" if len(path) > 1 else ""
    raise UnknownConfigKeyError(f"{source}: unknown config key {'.'.join(path)!r}{hint}; "
                                f"valid keys{where}: {', '.join(names)}")


def _did_you_mean(word: str, choices: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f" (did you mean {(prefix + '.' if prefix else '') + close[0]!r}?)" if close else ""


def _format_errors(err: ValidationError) -> str:
    """One line per key path: ``optimizer.lr: Input should be greater than 0 (got -1.0)``."""
    grouped: dict[str, list[str]] = {}
    inputs: dict[str, Any] = {}
    for e in err.errors(include_url=False):
        path, model = [], ChestConfig
        for part in e["loc"]:
            if isinstance(part, int):
                path.append(f"[{part}]")
            elif model is not None and part in model.model_fields:
                path.append(part)
                model = _section(model.model_fields[part].annotation)
            # else: a union member's tag (e.g. 'int', "literal['auto']"): not part of the key path
        key = ".".join(path).replace(".[", "[") or "config"
        msg = e["msg"].removeprefix("Value error, ")
        if msg not in grouped.setdefault(key, []):
            grouped[key].append(msg)
        inputs.setdefault(key, e.get("input"))
    parts = []
    for key in grouped:
        got = inputs[key]
        text = " or ".join(grouped[key])
        shown = "" if isinstance(got, dict) or repr(got) in text else f" (got {got!r})"
        parts.append(f"{key}: {text}{shown}")
    return "; ".join(parts)
