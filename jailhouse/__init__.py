"""Manage Jailhouse hypervisor cells through the kernel driver, and describe them as libvirt XML.

The names below are imported on first use, so ``import jailhouse`` stays cheap and does
no I/O: the config model needs neither lxml nor the compiled shim.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs more than the rest of --version
if TYPE_CHECKING:
    from typing import Any

    from jailhouse.config.flags import Arch, CellFlag, MemFlag
    from jailhouse.config.model import (
        CellConfig,
        Console,
        MemoryRegion,
        SystemConfig,
        load_config,
    )
    from jailhouse.config.validate import (
        Finding,
        Severity,
        check_configs,
        validate_cell,
        validate_system,
    )
    from jailhouse.console import ConsoleReader
    from jailhouse.device import Device, KernelDevice
    from jailhouse.domxml import (
        BootImage,
        BootSpec,
        DomainTranslation,
        TranslationNote,
        cell_to_domain,
        domain_to_cell,
    )
    from jailhouse.errors import (
        BusyError,
        CellExistsError,
        CellNotFoundError,
        ConfigError,
        ConfigTooLargeError,
        DeviceError,
        DeviceNotFoundError,
        InvalidConfigError,
        JailhouseError,
        NotEnabledError,
        PermissionDeniedError,
        StatusParseError,
        TranslationError,
    )
    from jailhouse.hostcheck import CheckStatus, HostCheck, validate_host
    from jailhouse.hypervisor import Cell, Hypervisor, Image, open  # noqa: A004 - jailhouse.open
    from jailhouse.inmates import park_inmate
    from jailhouse.jobs import Job, JobCancelledError, JobProgress, cancel_on_interrupt
    from jailhouse.selftest import SelftestError, Transcript, run_selftest, simulate_selftest
    from jailhouse.sim import FakeDevice, SimHost
    from jailhouse.store import DefinitionStore
    from jailhouse.sysfs import CellState, CellStatus, HypervisorStatus, SysfsReader

__version__ = "0.1.0.dev0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "Arch": "jailhouse.config.flags",
    "CellConfig": "jailhouse.config.model",
    "CellFlag": "jailhouse.config.flags",
    "Console": "jailhouse.config.model",
    "MemFlag": "jailhouse.config.flags",
    "MemoryRegion": "jailhouse.config.model",
    "SystemConfig": "jailhouse.config.model",
    "load_config": "jailhouse.config.model",
    "Finding": "jailhouse.config.validate",
    "Severity": "jailhouse.config.validate",
    "check_configs": "jailhouse.config.validate",
    "validate_cell": "jailhouse.config.validate",
    "validate_system": "jailhouse.config.validate",
    "BootImage": "jailhouse.domxml",
    "BootSpec": "jailhouse.domxml",
    "DomainTranslation": "jailhouse.domxml",
    "TranslationNote": "jailhouse.domxml",
    "cell_to_domain": "jailhouse.domxml",
    "domain_to_cell": "jailhouse.domxml",
    "BusyError": "jailhouse.errors",
    "CellExistsError": "jailhouse.errors",
    "CellNotFoundError": "jailhouse.errors",
    "ConfigError": "jailhouse.errors",
    "ConfigTooLargeError": "jailhouse.errors",
    "DeviceError": "jailhouse.errors",
    "DeviceNotFoundError": "jailhouse.errors",
    "InvalidConfigError": "jailhouse.errors",
    "JailhouseError": "jailhouse.errors",
    "NotEnabledError": "jailhouse.errors",
    "PermissionDeniedError": "jailhouse.errors",
    "StatusParseError": "jailhouse.errors",
    "TranslationError": "jailhouse.errors",
    "ConsoleReader": "jailhouse.console",
    "Device": "jailhouse.device",
    "KernelDevice": "jailhouse.device",
    "Cell": "jailhouse.hypervisor",
    "Hypervisor": "jailhouse.hypervisor",
    "Image": "jailhouse.hypervisor",
    "open": "jailhouse.hypervisor",
    "CellState": "jailhouse.sysfs",
    "CellStatus": "jailhouse.sysfs",
    "HypervisorStatus": "jailhouse.sysfs",
    "SysfsReader": "jailhouse.sysfs",
    "FakeDevice": "jailhouse.sim",
    "SimHost": "jailhouse.sim",
    "CheckStatus": "jailhouse.hostcheck",
    "HostCheck": "jailhouse.hostcheck",
    "validate_host": "jailhouse.hostcheck",
    "park_inmate": "jailhouse.inmates",
    "Job": "jailhouse.jobs",
    "JobCancelledError": "jailhouse.jobs",
    "JobProgress": "jailhouse.jobs",
    "cancel_on_interrupt": "jailhouse.jobs",
    "DefinitionStore": "jailhouse.store",
    "SelftestError": "jailhouse.selftest",
    "Transcript": "jailhouse.selftest",
    "run_selftest": "jailhouse.selftest",
    "simulate_selftest": "jailhouse.selftest",
}

__all__ = [
    "Arch",
    "BootImage",
    "BootSpec",
    "BusyError",
    "Cell",
    "CellConfig",
    "CellExistsError",
    "CellFlag",
    "CellNotFoundError",
    "CellState",
    "CellStatus",
    "CheckStatus",
    "ConfigError",
    "ConfigTooLargeError",
    "Console",
    "ConsoleReader",
    "DefinitionStore",
    "Device",
    "DeviceError",
    "DeviceNotFoundError",
    "DomainTranslation",
    "FakeDevice",
    "Finding",
    "HostCheck",
    "Hypervisor",
    "HypervisorStatus",
    "Image",
    "InvalidConfigError",
    "JailhouseError",
    "Job",
    "JobCancelledError",
    "JobProgress",
    "KernelDevice",
    "MemFlag",
    "MemoryRegion",
    "NotEnabledError",
    "PermissionDeniedError",
    "SelftestError",
    "Severity",
    "SimHost",
    "StatusParseError",
    "SysfsReader",
    "SystemConfig",
    "Transcript",
    "TranslationError",
    "TranslationNote",
    "__version__",
    "cancel_on_interrupt",
    "cell_to_domain",
    "check_configs",
    "domain_to_cell",
    "load_config",
    "open",
    "park_inmate",
    "run_selftest",
    "simulate_selftest",
    "validate_cell",
    "validate_host",
    "validate_system",
]


def __getattr__(name: str) -> Any:  # noqa: ANN401 - module-level lazy attribute hook
    """Import a public name from its module on first use."""
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'jailhouse' has no attribute {name!r}") from None
    from importlib import import_module  # noqa: PLC0415 - kept off `import jailhouse`

    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """List the public names."""
    return __all__
