"""Drive the hypervisor: enable it, and create, load, start and destroy cells.

A :class:`Hypervisor` wraps one open :class:`~jailhouse.device.Device` (the kernel's
``/dev/jailhouse`` or a simulated one) and the sysfs tree that goes with it.  It guards
the driver's traps before each ioctl (the root cell's CPUs must be exactly the online
CPUs, a cell's arch byte must match the host, a cell config is passed with its exact
size), finds a new cell's id in sysfs (CREATE does not return it), maps every errno to
an exception naming the operation and the cell, and rolls back what it started when a
step fails.  :func:`open` builds one from a URI.

A whole session on a simulated host:

>>> import tempfile
>>> import jailhouse
>>> from jailhouse.config.model import (
...     Arch, ArmPlatform, CellConfig, MemFlag, MemoryRegion, PlatformInfo, SystemConfig,
... )
>>> system = SystemConfig(
...     arch=Arch.ARM64,
...     hypervisor_memory=MemoryRegion(0x7FC00000, 0x7FC00000, 0x400000),
...     platform=PlatformInfo(arch_info=ArmPlatform(gic_version=3)),
...     root_cell=CellConfig(name="root", arch=Arch.ARM64, cpus=frozenset({0, 1, 2, 3})),
... )
>>> ram = MemoryRegion(0x70000000, 0, 0x10000, MemFlag.READ | MemFlag.WRITE | MemFlag.LOADABLE)
>>> demo = CellConfig(name="demo", arch=Arch.ARM64, cpus=frozenset({3}), mem_regions=(ram,))
>>> with tempfile.TemporaryDirectory() as tmp, jailhouse.open(
...     f"sim://{tmp}?arch=arm64&cpus=4"
... ) as hv:
...     hv.enable(system)
...     cell = hv.run_cell(demo, [Image(bytes(64), 0x0)])
...     print(cell.status())
...     print([str(c) for c in hv.cells()])
...     cell.shutdown()
...     cell.destroy()
...     hv.disable()
...     print(hv.status())
1 demo: running, CPUs 3
['0 root: running, CPUs 0-2', '1 demo: running, CPUs 3']
disabled
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from jailhouse.config.flags import Arch, format_cpus
from jailhouse.console import ConsoleReader
from jailhouse.errors import (
    CellNotFoundError,
    ConfigError,
    DeviceError,
    JailhouseError,
    error_for_errno,
)
from jailhouse.sysfs import CellStatus, HypervisorStatus, SysfsReader

TYPE_CHECKING = False  # not typing's: the status verbs do not import typing
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from types import TracebackType
    from typing import Final, Self

    from jailhouse import _abi
    from jailhouse.config.model import CellConfig, SystemConfig
    from jailhouse.device import Device
    from jailhouse.linux import LoadPlan

__all__ = ["Cell", "Hypervisor", "Image", "ImageSource", "open"]


class _AbiOnFirstUse:
    """Stands for :mod:`jailhouse._abi` (the cffi shim) until an ioctl needs it.

    The status verbs (``jhctl cell list``, ``status``) read sysfs only; the first
    attribute read imports the module and puts it in this one's place.
    """

    def __getattr__(self, name: str) -> object:
        from jailhouse import _abi as module  # noqa: PLC0415 - the point of this class

        globals()["_abi"] = module
        return getattr(module, name)


if not TYPE_CHECKING:
    _abi = _AbiOnFirstUse()

ImageSource = bytes | bytearray | memoryview | str | os.PathLike[str]
"""An image's contents: the bytes themselves, or the path of a file holding them."""

_ROOT_CELL_ID: Final = 0


@dataclass(frozen=True, slots=True)
class Image:
    """An image to load into a cell.

    Attributes:
        source: The image's bytes, or the path of a file that holds them (``str`` is
            always a path).
        address: Where the image goes, in the cell's (guest) address space.  It must
            lie in a memory region with the WRITE and LOADABLE flags.
    """

    source: ImageSource
    address: int

    def data(self) -> bytes:
        """Return the image's bytes, reading the file if the source is a path.

        Raises:
            OSError: The file cannot be read.
        """
        if isinstance(self.source, bytes):
            return self.source
        if isinstance(self.source, bytearray | memoryview):
            return bytes(self.source)
        return Path(self.source).read_bytes()

    def __str__(self) -> str:
        """Render as ``<path or N bytes> @ 0x...``."""
        what = (
            f"{len(self.source)} bytes"
            if isinstance(self.source, bytes | bytearray | memoryview)
            else os.fspath(self.source)
        )
        return f"{what} @ {self.address:#x}"


class Hypervisor:
    """The hypervisor behind one open device.

    The hypervisor owns the device: :meth:`close` (or leaving the ``with`` block)
    closes it.  Nothing is cached; every query reads sysfs again.

    Args:
        device: The open device (:class:`~jailhouse.device.KernelDevice`, or a
            simulated host's ``FakeDevice``).
        sysfs: The reader of the device's sysfs tree, or the directory that plays
            ``/sys``; by default ``device.sysfs_root``.

    Attributes:
        device: The device.
        sysfs: The sysfs reader.
    """

    def __init__(
        self, device: Device, *, sysfs: SysfsReader | str | os.PathLike[str] | None = None
    ) -> None:
        """Wrap an open device; nothing is read yet."""
        self.device = device
        if sysfs is None:
            sysfs = device.sysfs_root
        self.sysfs = sysfs if isinstance(sysfs, SysfsReader) else SysfsReader(sysfs)

    @property
    def arch(self) -> Arch | None:
        """The host's architecture, as the device reports it (``None``: not fixed yet)."""
        return self.device.arch

    def close(self) -> None:
        """Close the device; closing twice does nothing."""
        self.device.close()

    def __enter__(self) -> Self:
        """Return the hypervisor itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the device."""
        self.close()

    def __repr__(self) -> str:
        """Name the device."""
        return f"Hypervisor({self.device!r})"

    # -- queries ------------------------------------------------------------------

    def status(self) -> HypervisorStatus:
        """Read whether the hypervisor is enabled, and its pool usage.

        Raises:
            DeviceNotFoundError: The driver is not loaded.
            StatusParseError: A sysfs file is malformed.
        """
        return self.sysfs.status()

    def enabled(self) -> bool:
        """Tell whether the hypervisor is enabled.

        Raises:
            DeviceNotFoundError: The driver is not loaded.
        """
        return self.sysfs.enabled()

    def cells(self, *, statistics: bool = True) -> list[CellStatus]:
        """Read every cell, root cell first (empty while disabled).

        Args:
            statistics: Read each cell's exit counters too; with False (what
                ``jhctl cell list`` does, as upstream's tool shows no counters there)
                ``statistics`` and ``per_cpu`` are left empty.

        Returns:
            One :class:`~jailhouse.sysfs.CellStatus` per cell, by ascending id.  Use
            :meth:`cell` for a handle that can act on a cell.

        Raises:
            DeviceNotFoundError: The driver is not loaded.
            StatusParseError: A sysfs file is malformed.
        """
        return self.sysfs.cells(statistics=statistics)

    def cell(self, name_or_id: str | int) -> Cell:
        """Return a handle on an existing cell.

        Args:
            name_or_id: The cell's name (a ``str``, even if it is all digits) or its id
                (an ``int``).

        Raises:
            CellNotFoundError: No cell has that name or id.
            DeviceNotFoundError: The driver is not loaded.
        """
        status: CellStatus | None
        if isinstance(name_or_id, int):
            try:
                status = self.sysfs.cell(name_or_id)
            except KeyError:
                status = None
        else:
            status = self.sysfs.find_cell(name_or_id)
        if status is None:
            raise CellNotFoundError(
                errno.ENOENT,
                op="cell lookup",
                cell=name_or_id,
                hint="list the cells with `jhctl cell list`",
            )
        return Cell(self, status.id, status.name)

    def console(self) -> ConsoleReader:
        """Return a reader of the hypervisor console on this device.

        The driver keeps one read position per open device, so every reader from the
        same hypervisor shares it.
        """
        return ConsoleReader(self.device)

    # -- enable / disable ---------------------------------------------------------

    def enable(self, system: SystemConfig | bytes | str | os.PathLike[str]) -> None:
        """Enable the hypervisor with a system config (``jailhouse enable``).

        Before the ioctl, the config's arch must be the host's, and the root cell's CPU
        set must equal the online CPUs: a set that leaves an online CPU out hangs a real
        machine, and one with CPUs that are not online fails after every CPU entered the
        hypervisor.

        Args:
            system: The system config, its bytes, or the path of its file.

        Raises:
            ConfigError: The arch or the root cell's CPU set does not fit the host; the
                bytes are not a system config (``InvalidConfigError``).
            BusyError: The hypervisor is already enabled.
            DeviceError: The driver's errno for any other failure (EINVAL: config or
                hypervisor memory refused; ENODEV: no virtualisation support; ENOENT:
                the firmware file is missing).
            OSError: The config file cannot be read.
        """
        config, blob = _system_and_blob(system)
        # A simulated host created without arch/cpus takes both from its first system
        # config: there is nothing to check against yet.  A kernel device always has one.
        if self.arch is not None:
            self._check_enable(config, self.arch)
        arg = _abi.enable_arg(blob)
        self._ioctl(_abi.ENABLE, arg, op="enable")

    def _check_enable(self, config: SystemConfig, arch: Arch) -> None:
        """Refuse, before ENABLE, a system config the host cannot take or would hang on."""
        if config.arch != arch:
            raise ConfigError(
                "arch",
                config.arch.name,
                f"the host is {arch.name}; the driver refuses a foreign system config",
            )
        online = self._online_cpus("enable")
        cpus = config.root_cell.cpus
        if cpus != online:
            missing, extra = online - cpus, cpus - online
            problems = []
            if missing:
                problems.append(
                    f"it leaves out online CPUs {format_cpus(missing)} (a real machine hangs)"
                )
            if extra:
                problems.append(f"CPUs {format_cpus(extra)} are not online (the driver fails)")
            raise ConfigError(
                "root_cell.cpus",
                format_cpus(cpus) or "none",
                f"must equal the online CPUs {format_cpus(online)}: {'; '.join(problems)}",
            )

    def disable(self) -> None:
        """Disable the hypervisor (``jailhouse disable``); the driver destroys every cell first.

        Raises:
            NotEnabledError: The hypervisor is not enabled.
            PermissionDeniedError: A cell refused to shut down, or is running/locked.
            BusyError: A root-cell CPU is offline.
            DeviceError: The driver's errno for any other failure.
        """
        self._ioctl(_abi.DISABLE, _abi.NO_ARG, op="disable")

    # -- cells --------------------------------------------------------------------

    def create_cell(self, config: CellConfig | bytes | str | os.PathLike[str]) -> Cell:
        """Create a cell (``jailhouse cell create``); it starts out shut down.

        The config's arch must be the host's: the driver answers a foreign one with
        success and creates nothing.  The config is passed with the exact size its
        header describes, without any bytes that follow the arrays.

        Args:
            config: The cell config, its bytes, or the path of its file.

        Returns:
            A handle on the new cell, with the id the driver gave it.

        Raises:
            ConfigError: The arch differs from the host's; the bytes are not a cell
                config (``InvalidConfigError``).
            NotEnabledError: The hypervisor is not enabled.
            CellExistsError: A cell of that name exists.
            BusyError: A CPU of the config is not the root cell's to give.
            PermissionDeniedError: A cell is running/locked.
            ConfigTooLargeError: The config needs more than 16 pages.
            DeviceError: Any other errno, or the driver reported success and no cell
                of that name appeared.
            OSError: The config file cannot be read.
        """
        cell_config, blob = _cell_and_blob(config)
        if self.arch is not None and cell_config.arch != self.arch:
            raise ConfigError(
                "arch",
                cell_config.arch.name,
                f"the host is {self.arch.name}; the driver would report success and create no cell",
            )
        arg = _abi.cell_create_arg(blob)
        self._ioctl(_abi.CELL_CREATE, arg, op="cell create", cell=cell_config.name)
        name = _driver_name(cell_config.name)
        status = self.sysfs.find_cell(name)
        if status is None:
            raise self._unlisted_cell(name)
        return Cell(self, status.id, status.name)

    def _unlisted_cell(self, name: str) -> DeviceError:
        """Explain a CREATE that succeeded without a cell of that name in sysfs.

        The driver answers a foreign arch with success and makes nothing; if it did make
        the cell and only sysfs does not show it under ``name``, the cell is destroyed by
        name again, so it does not keep the CPUs it took from the root cell.
        """
        try:
            arg = _abi.cell_id_arg(name=name)
            self._ioctl(_abi.CELL_DESTROY, arg, op="cell create", cell=name)
        except CellNotFoundError:
            return DeviceError(
                errno.EIO,
                op="cell create",
                cell=name,
                detail="the driver reported success but made no cell of that name",
                hint="check the config's arch byte and the kernel log",
            )
        except (JailhouseError, ValueError) as exc:
            return DeviceError(
                errno.EIO,
                op="cell create",
                cell=name,
                detail=(
                    "the driver made the cell but sysfs lists no cell of that name, and "
                    f"destroying it again failed ({exc}); it still holds its CPUs"
                ),
                hint=f"destroy it with `jhctl cell destroy {name}` once the cause is fixed",
            )
        return DeviceError(
            errno.EIO,
            op="cell create",
            cell=name,
            detail=(
                "the driver made the cell but sysfs lists no cell of that name; "
                "it was destroyed again"
            ),
            hint="compare the name bytes in the config with cells/<id>/name in sysfs",
        )

    def run_cell(
        self,
        config: CellConfig | bytes | str | os.PathLike[str],
        images: Iterable[Image | tuple[ImageSource, int]] = (),
    ) -> Cell:
        """Create a cell, load its images and start it; undo everything if a step fails.

        Args:
            config: The cell config, its bytes, or the path of its file.
            images: The images to load, each an :class:`Image` or a
                ``(source, address)`` pair.

        Returns:
            A handle on the running cell.

        Raises:
            JailhouseError: The error of the step that failed (see :meth:`create_cell`,
                :meth:`Cell.load`, :meth:`Cell.start`).  The cell is destroyed before
                it is raised, so the root cell has its CPUs back; if that fails too, the
                error carries a note saying so.
            OSError: An image file cannot be read (before anything is created).
        """
        return self._set_up(config, _read_images(images), load=True, start=True)

    def plan_linux(
        self,
        cell_config: CellConfig | bytes | str | os.PathLike[str],
        kernel: ImageSource,
        initrd: ImageSource | None = None,
        cmdline: str | None = None,
        dtb: ImageSource | None = None,
        *,
        system: SystemConfig | bytes | str | os.PathLike[str] | None = None,
    ) -> LoadPlan:
        """Plan a Linux boot in a cell without touching the device (``--dry-run``).

        Reads the files, checks the cell's arch against the host's, and places the
        loader stub, kernel, initrd and boot parameters in the cell's loadable RAM
        (see :func:`jailhouse.linux.plan_linux`).

        Args:
            cell_config: The cell config, its bytes, or the path of its file.
            kernel: The kernel image (arm64 ``Image``, x86 ``bzImage``): bytes or a path.
            initrd: The initial ramdisk, if any.
            cmdline: The kernel command line, if any.
            dtb: arm64: the device tree; by default one is generated from the configs.
            system: The system config, used for the generated device tree.  By default
                the one the hypervisor runs with where the device can tell it (a
                simulated host can; the kernel driver cannot, so on a board pass it).

        Returns:
            The load plan.

        Raises:
            BootError: The kernel, initrd, command line or device tree cannot boot in
                this cell (the error names the field).
            ConfigError: The cell's arch is not the host's; a config does not parse.
            OSError: A file cannot be read.
        """
        from jailhouse.linux import plan_linux  # noqa: PLC0415 - only for Linux boots

        cell, _blob = _cell_and_blob(cell_config)
        if self.arch is not None and cell.arch != self.arch:
            raise ConfigError(
                "arch",
                cell.arch.name,
                f"the host is {self.arch.name}; this cell's kernel cannot run here",
            )
        return plan_linux(
            cell,
            _source_bytes(kernel),
            initrd=None if initrd is None else _source_bytes(initrd),
            cmdline=cmdline,
            dtb=None if dtb is None else _source_bytes(dtb),
            system=self._system_for_boot(system),
        )

    def _system_for_boot(
        self, system: SystemConfig | bytes | str | os.PathLike[str] | None
    ) -> SystemConfig | None:
        """The system config given, else the running one if the device offers it."""
        if system is None:
            running = getattr(self.device, "enabled_system_config", None)
            system = running() if callable(running) else None
        return None if system is None else _system_and_blob(system)[0]

    def boot_linux(
        self,
        cell_config: CellConfig | bytes | str | os.PathLike[str],
        kernel: ImageSource,
        initrd: ImageSource | None = None,
        cmdline: str | None = None,
        dtb: ImageSource | None = None,
        *,
        system: SystemConfig | bytes | str | os.PathLike[str] | None = None,
    ) -> Cell:
        """Boot Linux in a new cell (``jailhouse cell linux``).

        Everything is checked first (:meth:`plan_linux`); then the cell is created, the
        plan's images are loaded in one request, and the cell is started, with the
        rollback of :meth:`run_cell`.

        Args:
            cell_config: The cell config, its bytes, or the path of its file.
            kernel: The kernel image (arm64 ``Image``, x86 ``bzImage``): bytes or a path.
            initrd: The initial ramdisk, if any.
            cmdline: The kernel command line, if any.
            dtb: arm64: the device tree; by default one is generated from the configs.
            system: The system config, used for the generated device tree.

        Returns:
            A handle on the running cell.

        Raises:
            BootError: As :meth:`plan_linux`; nothing was created.
            JailhouseError: As :meth:`run_cell`; the cell is destroyed before it is
                raised.
            OSError: A file cannot be read (before anything is created).
        """
        plan = self.plan_linux(cell_config, kernel, initrd, cmdline, dtb, system=system)
        return self.boot_plan(cell_config, plan)

    def boot_plan(
        self, cell_config: CellConfig | bytes | str | os.PathLike[str], plan: LoadPlan
    ) -> Cell:
        """Create a cell, load a :class:`~jailhouse.linux.LoadPlan`'s images and start it.

        Args:
            cell_config: The cell config the plan was made for.
            plan: The plan, from :meth:`plan_linux`.

        Raises:
            ValueError: The plan was made for another cell.
            JailhouseError: As :meth:`run_cell`.
        """
        cell, _blob = _cell_and_blob(cell_config)
        if cell.name != plan.cell or cell.arch != plan.arch:
            raise ValueError(
                f"the plan is for cell {plan.cell!r} ({plan.arch.name}), not for "
                f"{cell.name!r} ({cell.arch.name})"
            )
        images = [Image(data, address) for data, address in plan.images()]
        return self._set_up(cell_config, images, load=True, start=True)

    @contextmanager
    def temporary_cell(
        self,
        config: CellConfig | bytes | str | os.PathLike[str],
        images: Iterable[Image | tuple[ImageSource, int]] = (),
        *,
        start: bool | None = None,
    ) -> Iterator[Cell]:
        """Run a cell for the duration of a ``with`` block, destroying it on the way out.

        The cell is destroyed however the block ends, by an exception too; if the block
        destroyed it already, nothing more happens.

        Args:
            config: The cell config, its bytes, or the path of its file.
            images: The images to load.
            start: Whether to start the cell; by default, when there are images.

        Yields:
            A handle on the cell.

        Raises:
            JailhouseError: As :meth:`run_cell`; or destroying the cell failed after the
                block ended normally (after an exception in the block, that exception
                is raised with a note instead).
        """
        loaded = _read_images(images)
        do_start = bool(loaded) if start is None else start
        cell = self._set_up(config, loaded, load=do_start or bool(loaded), start=do_start)
        try:
            yield cell
        except BaseException as exc:
            if not cell.destroyed:
                _destroy_noting(cell, exc)
            raise
        if not cell.destroyed:
            cell.destroy()

    # -- plumbing -----------------------------------------------------------------

    def _set_up(
        self,
        config: CellConfig | bytes | str | os.PathLike[str],
        loaded: Sequence[Image],
        *,
        load: bool,
        start: bool,
    ) -> Cell:
        """Create a cell, then load and start it as asked; destroy it if a step fails."""
        cell = self.create_cell(config)
        try:
            if load:
                cell.load(loaded)
            if start:
                cell.start()
        except BaseException as exc:
            _destroy_noting(cell, exc)
            raise
        return cell

    def _online_cpus(self, op: str) -> frozenset[int]:
        """Read the online CPUs, as a DeviceError naming ``op`` when sysfs lacks them."""
        try:
            return self.sysfs.online_cpus()
        except KeyError as exc:
            raise DeviceError(
                errno.ENOENT,
                op=op,
                detail=f"cannot read the online CPUs from {exc.args[0]}",
                hint="the sysfs root must hold devices/system/cpu/online",
            ) from exc

    def _enabled_or_none(self) -> bool | None:
        """Read ``enabled`` after a failure; None when it cannot be read."""
        try:
            return self.sysfs.enabled()
        except (KeyError, ValueError, OSError):
            return None

    def _ioctl(self, request: int, arg: _abi.Arg, *, op: str, cell: str | int | None = None) -> int:
        """Issue an ioctl with ``arg`` kept alive, raising the mapped error on failure."""
        rv = self.device.ioctl(request, arg.address)
        if rv < 0:
            enabled = self._enabled_or_none() if -rv == errno.EINVAL else None
            raise error_for_errno(-rv, op=op, cell=cell, enabled=enabled)
        return rv


class Cell:
    """A handle on one cell; get it from :meth:`Hypervisor.cell` or :meth:`Hypervisor.create_cell`.

    Operations name the cell by its name, so a handle never acts on another cell that
    took over a freed id.  After :meth:`destroy` the handle is dead.

    Attributes:
        hv: The hypervisor.
        id: The cell id the driver gave it.
        name: The cell name.
        destroyed: Whether :meth:`destroy` succeeded on this handle.
    """

    def __init__(self, hv: Hypervisor, cell_id: int, name: str) -> None:
        """Make a handle; nothing is checked or read."""
        self.hv = hv
        self.id = cell_id
        self.name = name
        self.destroyed = False

    def __repr__(self) -> str:
        """Name the cell."""
        return f"Cell(id={self.id}, name={self.name!r})"

    def __eq__(self, other: object) -> bool:
        """Compare by hypervisor, id and name."""
        if not isinstance(other, Cell):
            return NotImplemented
        return (self.hv, self.id, self.name) == (other.hv, other.id, other.name)

    def __hash__(self) -> int:
        """Hash by id and name."""
        return hash((self.id, self.name))

    def status(self) -> CellStatus:
        """Read the cell's state, CPUs and statistics.

        Raises:
            CellNotFoundError: The cell no longer exists.
            StatusParseError: A sysfs file is malformed.
        """
        self._check_alive("cell status")
        try:
            status = self.hv.sysfs.cell(self.id)
        except KeyError:
            status = None
        if status is None or status.name != self.name:
            raise CellNotFoundError(
                errno.ENOENT,
                op="cell status",
                cell=self.name,
                hint="the cell was destroyed",
            )
        return status

    def load(self, images: Iterable[Image | tuple[ImageSource, int]]) -> None:
        """Shut the cell down and copy images into its loadable memory (``jailhouse cell load``).

        Every image's bytes are kept alive until the driver has copied them.

        Args:
            images: Each an :class:`Image` or a ``(source, address)`` pair.

        Raises:
            NotEnabledError: The hypervisor is not enabled.
            CellNotFoundError: The cell no longer exists.
            PermissionDeniedError: The cell refused to shut down.
            DeviceError: EINVAL: an address outside a WRITE+LOADABLE region, or an image
                that does not fit it; any other errno.
            OSError: An image file cannot be read (nothing is loaded then).
        """
        loaded = _read_images(images)
        self._check_alive("cell load")
        arg = _abi.cell_load_arg(
            name=self.name, images=[(image.data(), image.address) for image in loaded]
        )
        self.hv._ioctl(_abi.CELL_LOAD, arg, op="cell load", cell=self.name)  # noqa: SLF001

    def shutdown(self) -> None:
        """Stop the cell and park its CPUs; it stays created (``jailhouse cell shutdown``).

        The driver has no shutdown request: this is a load of no images.

        Raises:
            As :meth:`load`.
        """
        self._check_alive("cell shutdown")
        arg = _abi.cell_load_arg(name=self.name, images=())
        self.hv._ioctl(_abi.CELL_LOAD, arg, op="cell shutdown", cell=self.name)  # noqa: SLF001

    def start(self) -> None:
        """Start (or restart) the cell at its reset address (``jailhouse cell start``).

        Raises:
            NotEnabledError: The hypervisor is not enabled.
            CellNotFoundError: The cell no longer exists.
            PermissionDeniedError: The running cell refused to restart.
            DeviceError: Any other errno.
        """
        self._check_alive("cell start")
        arg = _abi.cell_id_arg(name=self.name)
        self.hv._ioctl(_abi.CELL_START, arg, op="cell start", cell=self.name)  # noqa: SLF001

    def destroy(self) -> None:
        """Destroy the cell and give its CPUs and memory back to the root cell.

        Raises:
            NotEnabledError: The hypervisor is not enabled.
            CellNotFoundError: The cell no longer exists.
            PermissionDeniedError: The cell refused to shut down, or another cell is
                running/locked.
            DeviceError: Any other errno.
        """
        self._check_alive("cell destroy")
        arg = _abi.cell_id_arg(name=self.name)
        self.hv._ioctl(_abi.CELL_DESTROY, arg, op="cell destroy", cell=self.name)  # noqa: SLF001
        self.destroyed = True

    def _check_alive(self, op: str) -> None:
        """Refuse to act through a handle whose cell this handle destroyed."""
        if self.destroyed:
            raise CellNotFoundError(
                errno.ENOENT, op=op, cell=self.name, hint="the cell was destroyed"
            )


def open(uri: str) -> Hypervisor:  # noqa: A001 - exported as jailhouse.open, like libvirt.open
    """Open a hypervisor by URI.

    URIs:

    - ``jailhouse:///system``: the kernel driver, ``/dev/jailhouse`` and ``/sys``, with
      the running machine's arch.  Query parameters override them:
      ``jailhouse:///system?device=/dev/jailhouse&sysfs=/sys&arch=arm64``, and
      ``console=PATH`` reads the console from a separate file (see
      :class:`~jailhouse.device.KernelDevice`).
    - ``sim:///ABS/PATH?arch=arm64&cpus=4``: a simulated host persisted in the directory
      ``/ABS/PATH`` (made if missing).  ``sim:relative/path`` (no ``//``) names a
      directory relative to the working directory; ``sim://name`` is refused, because
      the part after ``//`` would be a host name, not a path.

    Args:
        uri: The URI.

    Returns:
        A hypervisor that owns its device; close it, or use it in a ``with`` block.

    Raises:
        ValueError: The URI is malformed, or names an unknown scheme or parameter.
        DeviceNotFoundError: ``jailhouse://``: the device node is missing.
        PermissionDeniedError: ``jailhouse://``: the device node is not accessible.
    """
    parts = urlsplit(uri)
    params = _query(uri, parts.query)
    if parts.fragment:
        raise ValueError(f"URI {uri!r}: a fragment ('#{parts.fragment}') has no meaning")
    if parts.scheme == "jailhouse":
        return _open_kernel(uri, parts.netloc, parts.path, params)
    if parts.scheme == "sim":
        return _open_sim(uri, parts.netloc, parts.path, params)
    raise ValueError(
        f"URI {uri!r}: unknown scheme {parts.scheme!r}; use jailhouse:///system or sim:///PATH"
    )


def _query(uri: str, query: str) -> dict[str, str]:
    """Parse a URI query into single values."""
    try:
        raw = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise ValueError(f"URI {uri!r}: malformed query {query!r}") from exc
    out: dict[str, str] = {}
    for key, values in raw.items():
        if len(values) != 1:
            raise ValueError(f"URI {uri!r}: parameter {key!r} is given {len(values)} times")
        out[key] = values[0]
    return out


def _check_params(uri: str, params: dict[str, str], allowed: Sequence[str]) -> None:
    """Refuse parameters the scheme does not know."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"URI {uri!r}: unknown parameter {', '.join(unknown)}; "
            f"this scheme takes {', '.join(allowed)}"
        )


def _parse_arch(uri: str, params: dict[str, str]) -> Arch | None:
    """Read the ``arch`` parameter."""
    if "arch" not in params:
        return None
    try:
        return Arch.from_name(params["arch"])
    except ValueError as exc:
        raise ValueError(f"URI {uri!r}: {exc}") from exc


def _open_kernel(uri: str, netloc: str, path: str, params: dict[str, str]) -> Hypervisor:
    """Open ``jailhouse:///system``."""
    from jailhouse.device import DEFAULT_PATH, KernelDevice  # noqa: PLC0415 - only when asked

    if netloc or path != "/system":
        raise ValueError(f"URI {uri!r}: the kernel driver is 'jailhouse:///system'")
    _check_params(uri, params, ("device", "console", "sysfs", "arch"))
    for key in ("device", "console", "sysfs"):
        if key in params and not params[key]:
            raise ValueError(f"URI {uri!r}: parameter {key!r} is empty")
    device = KernelDevice(
        params.get("device", DEFAULT_PATH),
        sysfs_root=params.get("sysfs", "/sys"),
        arch=_parse_arch(uri, params),
        console_path=params.get("console"),
    )
    return Hypervisor(device)


def _open_sim(uri: str, netloc: str, path: str, params: dict[str, str]) -> Hypervisor:
    """Open ``sim:///PATH``."""
    if netloc:
        raise ValueError(
            f"URI {uri!r}: {netloc!r} would be a host name; write sim:///ABS/PATH for an "
            "absolute directory or sim:relative/path for a relative one"
        )
    if not path:
        raise ValueError(f"URI {uri!r}: names no directory; write sim:///ABS/PATH")
    _check_params(uri, params, ("arch", "cpus"))
    arch = _parse_arch(uri, params)
    cpus: int | None = None
    if "cpus" in params:
        text = params["cpus"]
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"URI {uri!r}: cpus={text!r} is not a positive number of CPUs")
        cpus = int(text)
    from jailhouse.sim import SimHost  # noqa: PLC0415 - the simulator loads only when asked

    host = SimHost(Path(unquote(path)), arch=arch, cpus=cpus)
    return Hypervisor(host.device())


def _system_and_blob(
    system: SystemConfig | bytes | str | os.PathLike[str],
) -> tuple[SystemConfig, bytes]:
    """Return the system config and exactly the bytes its header describes."""
    from jailhouse.config.codec import parse_system  # noqa: PLC0415 - off the status path
    from jailhouse.config.model import SystemConfig  # noqa: PLC0415

    if isinstance(system, SystemConfig):
        config, data = system, system.to_bytes()
    else:
        data = system if isinstance(system, bytes) else Path(system).read_bytes()
        config = parse_system(data)
    return config, data[: config.size]


def _cell_and_blob(
    config: CellConfig | bytes | str | os.PathLike[str],
) -> tuple[CellConfig, bytes]:
    """Return the cell config and exactly the bytes its header describes."""
    from jailhouse.config.codec import parse_cell  # noqa: PLC0415 - off the status path
    from jailhouse.config.model import CellConfig  # noqa: PLC0415

    if isinstance(config, CellConfig):
        cell, data = config, config.to_bytes()
    else:
        data = config if isinstance(config, bytes) else Path(config).read_bytes()
        cell = parse_cell(data)
    return cell, data[: cell.size]


def _driver_name(name: str) -> str:
    """Return a config's cell name as the driver keeps it: 31 latin-1 bytes up to a NUL.

    The codec packs the name as latin-1 bytes; the driver forces ``name[31] = 0`` and
    prints the bytes with ``%s`` to ``cells/<id>/name``.
    """
    raw = name.encode("latin-1", "replace")[: _abi.NAMELEN]
    return raw.split(b"\0", 1)[0].decode("latin-1")


def _source_bytes(source: ImageSource) -> bytes:
    """Return an image source's bytes, reading the file if it is a path."""
    return Image(source, 0).data()


def _read_images(images: Iterable[Image | tuple[ImageSource, int]]) -> list[Image]:
    """Resolve every image to one whose source is its bytes, reading files first."""
    out: list[Image] = []
    for item in images:
        image = item if isinstance(item, Image) else Image(*item)
        out.append(image if isinstance(image.source, bytes) else Image(image.data(), image.address))
    return out


def _destroy_noting(cell: Cell, exc: BaseException) -> None:
    """Destroy a cell during rollback; if that fails, note it on the original error."""
    try:
        cell.destroy()
    except JailhouseError as cleanup:
        exc.add_note(f"rollback: destroying cell {cell.name!r} failed too: {cleanup}")
