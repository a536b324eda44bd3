"""The agent's typed configuration: YAML file < environment (FROSTED_EDGE_*, nested with __) < flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from edge_agent.tls_files import check_client_tls
from facesplit.errors import FrostedError
from facesplit.faceboxes import SPLITS
from facesplit.noise import DEFAULT_PROFILE
from facesplit.preprocess import InputSize
from facesplit.runtimes import (
    DEFAULT_DEVICE,
    DEFAULT_PRECISION,
    DEFAULT_RUNTIME,
    MAX_THREADS,
    check_calibration,
    check_device,
    check_precision,
    check_runtime_name,
)
from frosted_wire.address import parse_tail_address


class ConfigError(FrostedError):
    """A configuration the agent cannot run with; the message names the field."""


class OverrideError(ConfigError):
    """A value of the overrides (the command line's flags) the agent cannot run with: ``field`` names it, and
    ``reason`` says why, so the CLI can say it in its flag's terms as a usage error."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


MAX_SECONDS = 3600.0  # a time limit past an hour is a typo; past ~1e9 s gRPC's deadline overflows and expires at once
MAX_CONFIG_BYTES = 1 << 20  # a camera list of thousands fits; parsing more would only stall the start


class TlsConfig(_Strict):
    ca: Path | None = None  # CA that signed the tail's certificate (default: the system's trust store)
    cert: Path | None = None  # client certificate and key: mutual TLS
    key: Path | None = None
    server_name: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together (mutual TLS needs both)")
        for name in ("ca", "cert", "key"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name} file not found: {path}")
        check_client_tls(self.ca, self.cert, self.key)
        return self

    @property
    def configured(self) -> bool:
        return any(value is not None for value in (self.ca, self.cert, self.key, self.server_name))


class TailConfig(_Strict):
    address: str = Field(description="HOST:PORT of the cloud tail, or triton://HOST:PORT[/MODEL] for Triton")
    insecure: bool = False  # plaintext: only when asked for by name
    tls: TlsConfig = Field(default_factory=TlsConfig)
    # 2: the tail computes one frame while the next is on its way; more only queues frames at the tail
    window: int = Field(2, ge=1, le=64, description="unanswered frames per camera")
    deadline_seconds: float = Field(2.0, gt=0, le=MAX_SECONDS,
                                    description="a frame unanswered this long: reopen the stream")
    dtype: Literal["float16", "int8"] = "float16"

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_tail_address(value)
        return value

    @model_validator(mode="after")
    def _plaintext_or_tls(self) -> TailConfig:
        # both would mean plaintext with the TLS files silently unused: the user believes they have TLS
        if self.insecure and self.tls.configured:
            raise ValueError("insecure (plaintext) and tls files together: the tls files would be ignored; "
                             "drop one of them")
        return self


class CameraConfig(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    url: str = Field(min_length=1)


class NoiseConfig(_Strict):
    # a shipped profile's name or a path; the default ends the head after the Inception blocks, where an
    # attacker's reconstructions no longer re-identify people (bench/results/attack_budget.md)
    profile: str = DEFAULT_PROFILE
    disabled: bool = False  # --no-noise: clean activations leave the site


class ModelConfig(_Strict):
    weights: Path | None = None
    split: str | None = None  # where the head ends (`facesplit.faceboxes.SPLITS`); None: the profile's
    input_size: str = "1024"
    threads: int | None = Field(None, ge=1, le=MAX_THREADS)
    runtime: str = DEFAULT_RUNTIME  # what runs the head (`facesplit.runtimes.RUNTIME_NAMES`); --runtime
    device: str = DEFAULT_DEVICE  # where it runs, cpu or cuda (`facesplit.runtimes.DEVICES`); --device
    precision: str = DEFAULT_PRECISION  # what the head computes in (`facesplit.runtimes.PRECISIONS`); --precision
    calibration: Path | None = None  # int8: the frames to calibrate on (None: MIT+CMU folds 1-5); --calibration

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, value: str) -> str:
        return check_runtime_name(value)

    @model_validator(mode="after")
    def _precision(self) -> ModelConfig:
        check_device(self.device, self.runtime)  # ValueErrors: reported with the field
        check_precision(self.precision, self.runtime, self.device)
        check_calibration(self.calibration, self.precision)
        return self

    @field_validator("split")
    @classmethod
    def _split(cls, value: str | None) -> str | None:
        if value is not None and value not in SPLITS:
            raise ValueError(f"one of {', '.join(SPLITS)}, not {value!r}")
        return value

    @field_validator("input_size", mode="before")
    @classmethod
    def _size_text(cls, value: object) -> object:
        # YAML reads `input_size: 1024` as an integer; it means the same as "1024"
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("input_size")
    @classmethod
    def _size(cls, value: str) -> str:
        size = InputSize.parse(value)
        if size.native:
            raise ValueError("the live service needs a fixed input size, not 'native'")
        return value


class MetricsConfig(_Strict):
    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=1, le=65535)  # None: no /metrics endpoint


class PreviewConfig(_Strict):
    # the live preview page shows raw frames: loopback unless the operator chooses a trusted interface
    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=1, le=65535)  # None: no preview page (the default)
    fps: float = Field(5.0, gt=0, le=30, description="page updates per second, and the most frames encoded "
                                                     "for it per camera per second")


class SourceTimeouts(_Strict):
    open_seconds: float = Field(5.0, gt=0, le=MAX_SECONDS)
    read_seconds: float = Field(3.0, gt=0, le=MAX_SECONDS)
    reconnect_initial_seconds: float = Field(0.1, gt=0, le=MAX_SECONDS)
    reconnect_max_seconds: float = Field(1.0, gt=0, le=MAX_SECONDS)

    @model_validator(mode="after")
    def _initial_within_max(self) -> SourceTimeouts:
        if self.reconnect_initial_seconds > self.reconnect_max_seconds:
            raise ValueError(f"reconnect_initial_seconds ({self.reconnect_initial_seconds:g}) is more than "
                             f"reconnect_max_seconds ({self.reconnect_max_seconds:g})")
        return self


ENV_PREFIX = "FROSTED_EDGE_"
_ENV_NESTING = "__"


class AgentConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=_ENV_NESTING, extra="forbid")

    tail: TailConfig
    cameras: list[CameraConfig] = Field(min_length=1)
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    preview: PreviewConfig = Field(default_factory=PreviewConfig)
    sources: SourceTimeouts = Field(default_factory=SourceTimeouts)
    output: str = "-"  # JSON lines of boxes: '-' for stdout, or a file path

    @field_validator("cameras")
    @classmethod
    def _unique_ids(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        ids = [c.id for c in cameras]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise ValueError(f"camera ids must be unique; repeated: {', '.join(duplicated)}")
        return cameras

    @model_validator(mode="after")
    def _ports_apart(self) -> AgentConfig:
        # two servers on one port: the second would fail to bind after the model has loaded, with OS words
        if self.metrics.port is not None and self.metrics.port == self.preview.port:
            raise ValueError(f"metrics.port and preview.port are both {self.metrics.port}: the metrics endpoint "
                             "and the preview page need a port each")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings


def load_agent_config(path: Path | None, overrides: dict[str, Any]) -> AgentConfig:
    """Flags (``overrides``, nested dicts) over the environment over the YAML file; one-line errors."""
    settings_cls: type[AgentConfig] = AgentConfig
    document: Any = None
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"{path}: " + ("a folder, not a config file" if path.is_dir()
                                             else "config file not found"))
        if (size := path.stat().st_size) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {size} bytes, more than a config's {MAX_CONFIG_BYTES}")
        try:
            document = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text, as YAML is (byte {exc.start})") from None
        except _DuplicateKeyError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        except yaml.MarkedYAMLError as exc:  # the problem, where it is, not the context it was found in
            where = f"line {exc.problem_mark.line + 1}: " if exc.problem_mark else ""
            raise ConfigError(f"{path}: not valid YAML ({where}{exc.problem or exc.context})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        except RecursionError:
            raise ConfigError(f"{path}: not a config (nested too deeply)") from None
        if not isinstance(document, dict):
            raise ConfigError(f"{path}: expected a mapping with 'tail' and 'cameras' at the top")

        file_document = document

        class FromFile(AgentConfig):
            @classmethod
            def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                           init_settings: PydanticBaseSettingsSource,
                                           env_settings: PydanticBaseSettingsSource,
                                           **_unused: PydanticBaseSettingsSource
                                           ) -> tuple[PydanticBaseSettingsSource, ...]:
                # the document parsed above (duplicate keys refused), lowest of the three
                return init_settings, env_settings, InitSettingsSource(settings_cls, file_document)

        settings_cls = FromFile
    _check_environment(os.environ)
    try:
        return settings_cls(**overrides)
    except SettingsError as exc:  # an environment variable pydantic-settings cannot parse (bad JSON, say)
        raise ConfigError(f"environment: {str(exc).splitlines()[0]}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "config"
        # the file is named only for a value it holds: one from FROSTED_EDGE_* or a flag is not the file's fault
        # (a setting missing altogether is the file's to give)
        in_file = _holds(document, first["loc"]) or first["type"] == "missing"
        where = f"{path}: " if path is not None and in_file else ""
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        message = first["msg"].removeprefix("Value error, ")  # pydantic's prefix for our validators' words
        if _holds(overrides, first["loc"]) and not isinstance(_at(overrides, first["loc"]), dict | list):
            raise OverrideError(field, f"{message}{more}") from None  # a flag's own value: a usage error
        raise ConfigError(f"{where}{field}: {message}{more}") from None


def _at(document: Any, loc: tuple[int | str, ...]) -> Any:
    for part in loc:
        document = document[part]
    return document


def _holds(document: Any, loc: tuple[int | str, ...]) -> bool:
    """Whether the parsed YAML ``document`` has a value at ``loc`` (a pydantic error's location)."""
    for part in loc:
        in_mapping = isinstance(document, dict) and part in document
        in_list = isinstance(document, list) and isinstance(part, int) and 0 <= part < len(document)
        if not (in_mapping or in_list):
            return False
        document = document[part]
    return True


class _DuplicateKeyError(ValueError):
    """A YAML mapping with a key twice: yaml.safe_load would keep the last one silently."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (``window: 2`` then ``window: 8`` further
    down): which one the user meant is not for the agent to guess."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool):
                continue  # a list or a mapping as a key: SafeLoader refuses it as unhashable, below
            if key in seen:
                raise _DuplicateKeyError(f"line {key_node.start_mark.line + 1}: key {key!r} appears twice in "
                                         "one mapping; keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_environment(environ: Mapping[str, str]) -> None:
    """Every FROSTED_EDGE_* variable names a setting: pydantic-settings ignores the others, so a misspelt
    FROSTED_EDGE_TAIL__ADRESS would leave the file's address in force, unseen."""
    for name in environ:
        if not name.upper().startswith(ENV_PREFIX):
            continue
        model: type[BaseModel] | None = AgentConfig
        for part in name[len(ENV_PREFIX):].lower().split(_ENV_NESTING):
            if model is None:
                raise ConfigError(f"environment: {name} nests past a setting that takes a plain value")
            if part not in model.model_fields:
                raise ConfigError(f"environment: {name} names no setting of the agent (known here: "
                                  f"{', '.join(model.model_fields)})")
            annotation = model.model_fields[part].annotation
            model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
