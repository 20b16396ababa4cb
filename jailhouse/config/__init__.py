"""Jailhouse cell and system configs: the typed model, the binary codec and validation.

The names below are imported on first use: ``jhctl cell list`` reaches
:mod:`jailhouse.config.flags` through this package and should not build the model's
model's records on the way.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

    from jailhouse.config.codec import pack_cell, pack_system, parse_cell, parse_system
    from jailhouse.config.model import (
        CELL_SIGNATURE,
        CONFIG_REVISION,
        NAME_MAXLEN,
        PAGE_SIZE,
        SYSTEM_SIGNATURE,
        ApicMode,
        Arch,
        ArmPlatform,
        CacheFlag,
        CacheRegion,
        CacheType,
        CellConfig,
        CellFlag,
        Console,
        ConsoleFlag,
        ConsoleType,
        IommuType,
        IommuUnit,
        IrqChip,
        MemFlag,
        MemoryRegion,
        PciCapability,
        PciCapFlag,
        PciDevice,
        PciType,
        PioRegion,
        PlatformInfo,
        ShmemProtocol,
        SystemConfig,
        SystemFlag,
        X86Platform,
        format_cpus,
        load_config,
        parse_cpus,
    )

__all__ = [
    "CELL_SIGNATURE",
    "CONFIG_REVISION",
    "NAME_MAXLEN",
    "PAGE_SIZE",
    "SYSTEM_SIGNATURE",
    "ApicMode",
    "Arch",
    "ArmPlatform",
    "CacheFlag",
    "CacheRegion",
    "CacheType",
    "CellConfig",
    "CellFlag",
    "Console",
    "ConsoleFlag",
    "ConsoleType",
    "IommuType",
    "IommuUnit",
    "IrqChip",
    "MemFlag",
    "MemoryRegion",
    "PciCapFlag",
    "PciCapability",
    "PciDevice",
    "PciType",
    "PioRegion",
    "PlatformInfo",
    "ShmemProtocol",
    "SystemConfig",
    "SystemFlag",
    "X86Platform",
    "format_cpus",
    "load_config",
    "pack_cell",
    "pack_system",
    "parse_cell",
    "parse_cpus",
    "parse_system",
]


_CODEC_NAMES: Final = frozenset({"pack_cell", "pack_system", "parse_cell", "parse_system"})
_SUBMODULES: Final = frozenset({"codec", "flags", "model", "validate"})


def __getattr__(name: str) -> Any:  # noqa: ANN401 - module-level lazy attribute hook
    """Import a public name (or a submodule) on first use, from the lightest module with it."""
    from importlib import import_module  # noqa: PLC0415 - kept off the import of the package

    if name in _SUBMODULES:
        return import_module(f"jailhouse.config.{name}")
    if name not in __all__:
        raise AttributeError(f"module 'jailhouse.config' has no attribute {name!r}")
    if name in _CODEC_NAMES:
        module = "jailhouse.config.codec"
    elif hasattr(import_module("jailhouse.config.flags"), name):
        module = "jailhouse.config.flags"  # no dataclass is built for an enum or a constant
    else:
        module = "jailhouse.config.model"
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """List the public names and the submodules."""
    return sorted({*__all__, *_SUBMODULES})
