"""The /dev/jailhouse ioctl ABI: request numbers, argument buffers and their decoders.

Every number and layout here comes from the C compiler through :mod:`jailhouse._ffi`
(``cffi_build/ioctl.csrc.c`` pins them with ``_Static_assert``); nothing is a
hand-written ``struct`` format.

The builders (:func:`enable_arg`, :func:`cell_create_arg`, :func:`cell_id_arg`,
:func:`cell_load_arg`) return an :class:`Arg`: the user-space address that the ioctl
takes, plus the cffi objects that own the memory behind it, so the struct and every
buffer it points at stay alive as long as the :class:`Arg` does.  Keep the
:class:`Arg` referenced until the ioctl returns.

The decoders are the driver's side of the same structs: given the bytes the kernel
would copy from user memory (:func:`read_memory`), they return the fields a simulated
driver needs.  They accept any bytes and never validate beyond the length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, NamedTuple

from jailhouse._ffi import ffi, lib

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from jailhouse._ffi import CData, CellDesc, CellId

__all__ = [
    "CELL_CREATE",
    "CELL_DESTROY",
    "CELL_ID_UNUSED",
    "CELL_LOAD",
    "CELL_START",
    "DISABLE",
    "ENABLE",
    "IOC_NONE",
    "IOC_READ",
    "IOC_WRITE",
    "NAMELEN",
    "NO_ARG",
    "PRELOAD_IMAGE_SIZE",
    "REQUEST_NAMES",
    "Arg",
    "CellCreateRequest",
    "CellIdRequest",
    "CellLoadRequest",
    "PreloadImageRequest",
    "cell_config_size",
    "cell_create_arg",
    "cell_id_arg",
    "cell_load_arg",
    "decode_cell_create",
    "decode_cell_id",
    "decode_cell_load",
    "decode_preload_image",
    "enable_arg",
    "ioctl",
    "read_memory",
    "request_dir",
    "request_nr",
    "request_size",
    "request_type",
    "system_config_size",
]

ENABLE: Final[int] = lib.JAILHOUSE_ENABLE
"""``JAILHOUSE_ENABLE``: the argument is the address of the system config blob."""
DISABLE: Final[int] = lib.JAILHOUSE_DISABLE
"""``JAILHOUSE_DISABLE``: no argument."""
CELL_CREATE: Final[int] = lib.JAILHOUSE_CELL_CREATE
"""``JAILHOUSE_CELL_CREATE``: the argument is a ``struct jailhouse_cell_create``."""
CELL_LOAD: Final[int] = lib.JAILHOUSE_CELL_LOAD
"""``JAILHOUSE_CELL_LOAD``: a ``struct jailhouse_cell_load`` and its image array."""
CELL_START: Final[int] = lib.JAILHOUSE_CELL_START
"""``JAILHOUSE_CELL_START``: the argument is a ``struct jailhouse_cell_id``."""
CELL_DESTROY: Final[int] = lib.JAILHOUSE_CELL_DESTROY
"""``JAILHOUSE_CELL_DESTROY``: the argument is a ``struct jailhouse_cell_id``."""

REQUEST_NAMES: Final[Mapping[int, str]] = MappingProxyType(
    {
        ENABLE: "enable",
        DISABLE: "disable",
        CELL_CREATE: "cell create",
        CELL_LOAD: "cell load",
        CELL_START: "cell start",
        CELL_DESTROY: "cell destroy",
    }
)
"""Each request number and the operation it performs, as ``jailhouse`` commands say it."""

NAMELEN: Final[int] = lib.JAILHOUSE_CELL_ID_NAMELEN
"""The longest cell name in bytes (31); the name field holds one more for the NUL."""
CELL_ID_UNUSED: Final[int] = lib.JAILHOUSE_CELL_ID_UNUSED
"""The id (-1) that tells the driver to look the cell up by name."""

IOC_NONE: Final[int] = lib.JH_IOC_NONE
"""Direction bits of a request without an argument."""
IOC_WRITE: Final[int] = lib.JH_IOC_WRITE
"""Direction bits of a request whose argument the driver reads (``_IOW``)."""
IOC_READ: Final[int] = lib.JH_IOC_READ
"""Direction bits of a request whose argument the driver writes (unused by Jailhouse)."""

PRELOAD_IMAGE_SIZE: Final[int] = ffi.sizeof("struct jailhouse_preload_image")
"""Bytes of one ``image[]`` entry; entry ``n`` sits at ``48 + n * 32`` in a load argument."""

_U32_MAX: Final = 0xFFFF_FFFF
_U64_MAX: Final = 0xFFFF_FFFF_FFFF_FFFF
_S32_MAX: Final = 0x7FFF_FFFF
_CELL_CREATE_SIZE: Final = ffi.sizeof("struct jailhouse_cell_create")
_CELL_ID_SIZE: Final = ffi.sizeof("struct jailhouse_cell_id")
_CELL_LOAD_SIZE: Final = ffi.sizeof("struct jailhouse_cell_load")
_SYSTEM_SIZE: Final = ffi.sizeof("struct jailhouse_system")


@dataclass(frozen=True, eq=False)
class Arg:
    """An ioctl argument: an address, and the memory behind it kept alive.

    Attributes:
        address: The user-space address to pass to the ioctl; 0 for none.
        size: How many bytes at ``address`` the driver reads: the struct, followed by
            the image array for ``CELL_LOAD``, or the whole blob for ``ENABLE``.
        keepalive: The cffi objects that own that memory and every buffer it points
            at.  The addresses are valid while this :class:`Arg` is referenced.
    """

    address: int
    size: int
    keepalive: tuple[CData, ...] = field(default=(), repr=False)

    def data(self) -> bytes:
        """Return a copy of the ``size`` bytes at ``address``."""
        return read_memory(self.address, self.size)


NO_ARG: Final = Arg(0, 0)
"""The argument of ``DISABLE``: the null address, nothing to read."""


class CellCreateRequest(NamedTuple):
    """The fields of a ``struct jailhouse_cell_create``."""

    config_address: int
    """User-space address of the cell config blob."""
    config_size: int
    """Length of the blob in bytes."""


class CellIdRequest(NamedTuple):
    """The fields of a ``struct jailhouse_cell_id``, as the driver looks a cell up."""

    cell_id: int | None
    """The cell id, or ``None`` when it is :data:`CELL_ID_UNUSED` (look up by name)."""
    name: str
    """The name up to its first NUL within :data:`NAMELEN` bytes (the driver forces
    ``name[31] = 0``), one character per byte (latin-1, as the config codec packs names)."""


class CellLoadRequest(NamedTuple):
    """The header fields of a ``struct jailhouse_cell_load``."""

    cell_id: int | None
    """As :attr:`CellIdRequest.cell_id`."""
    name: str
    """As :attr:`CellIdRequest.name`."""
    num_images: int
    """How many ``struct jailhouse_preload_image`` entries follow the header."""


class PreloadImageRequest(NamedTuple):
    """The fields of a ``struct jailhouse_preload_image``."""

    source_address: int
    """User-space address of the image bytes."""
    size: int
    """Length of the image in bytes."""
    target_address: int
    """Where the image goes, in the cell's address space."""


def _address(cdata: CData) -> int:
    """Return the address that a pointer or array cdata points at."""
    return int(ffi.cast("uintptr_t", cdata))


def read_memory(address: int, size: int) -> bytes:
    """Copy bytes from this process's memory, as the driver's ``copy_from_user`` does.

    Only addresses taken from a live :class:`Arg` (or decoded from its bytes) are safe
    to read; anything else may crash the interpreter.

    Args:
        address: The user-space address to read from.
        size: How many bytes to copy.

    Returns:
        The ``size`` bytes at ``address``; ``b""`` when ``size`` is 0.

    Raises:
        ValueError: ``size`` is negative, or ``address`` is 0 or negative while
            ``size`` is not 0.
    """
    if size < 0:
        raise ValueError(f"size: {size} is negative")
    if size == 0:
        return b""
    if address <= 0:
        raise ValueError(f"address: {address:#x} is not a user-space address")
    return ffi.buffer(ffi.cast("char *", address), size)[:]


def ioctl(fd: int, request: int, address: int) -> int:
    """Issue one ioctl on an open file of the hypervisor device.

    Args:
        fd: The file descriptor of ``/dev/jailhouse``.
        request: The request number, such as :data:`CELL_CREATE`.
        address: The argument's user-space address (:attr:`Arg.address`), 0 for none.

    Returns:
        The driver's non-negative result, or ``-errno`` on failure (never raises for
        an errno; see :func:`jailhouse.errors.raise_for_errno`).
    """
    return lib.jh_ioctl(fd, request, address)


def _check_request(request: int) -> int:
    """Return ``request`` if it fits the 32-bit ioctl command word.

    Raises:
        ValueError: It does not.
    """
    if not 0 <= request <= _U32_MAX:
        raise ValueError(f"request: {request:#x} is not a 32-bit ioctl request number")
    return request


def request_dir(request: int) -> int:
    """Return the direction bits of a request number (:data:`IOC_WRITE` ...).

    Raises:
        ValueError: ``request`` is not a 32-bit number.
    """
    return lib.jh_ioc_dir(_check_request(request))


def request_type(request: int) -> int:
    """Return the type ("magic") of a request number; 0 for every Jailhouse request.

    Raises:
        ValueError: ``request`` is not a 32-bit number.
    """
    return lib.jh_ioc_type(_check_request(request))


def request_nr(request: int) -> int:
    """Return the command number of a request (0 for ENABLE ... 5 for CELL_DESTROY).

    Raises:
        ValueError: ``request`` is not a 32-bit number.
    """
    return lib.jh_ioc_nr(_check_request(request))


def request_size(request: int) -> int:
    """Return the argument size encoded in a request number.

    That is the struct the driver copies first: 48 for ``CELL_LOAD`` (the image array
    follows it), and the pointer size for ``ENABLE``, whose blob length the driver
    derives from the blob's header.

    Raises:
        ValueError: ``request`` is not a 32-bit number.
    """
    return lib.jh_ioc_size(_check_request(request))


def cell_config_size(desc: CellDesc) -> int:
    """Return the byte length of a cell config, from its header's counts.

    The header is followed by the CPU set and then the arrays of memory regions, cache
    regions, irqchips, PIO regions, PCI devices, PCI capabilities and stream ids.

    Args:
        desc: A ``struct jailhouse_cell_desc`` view, such as ``system.root_cell``.
    """
    return (
        ffi.sizeof("struct jailhouse_cell_desc")
        + desc.cpu_set_size
        + desc.num_memory_regions * ffi.sizeof("struct jailhouse_memory")
        + desc.num_cache_regions * ffi.sizeof("struct jailhouse_cache")
        + desc.num_irqchips * ffi.sizeof("struct jailhouse_irqchip")
        + desc.num_pio_regions * ffi.sizeof("struct jailhouse_pio")
        + desc.num_pci_devices * ffi.sizeof("struct jailhouse_pci_device")
        + desc.num_pci_caps * ffi.sizeof("struct jailhouse_pci_capability")
        + desc.num_stream_ids * ffi.sizeof("union jailhouse_stream_id")
    )


def system_config_size(system_blob: bytes) -> int:
    """Return the byte length that a system config's header describes.

    That is the ``jailhouse_system`` header up to its embedded root cell, plus the root
    cell config: the length the driver reads on ``ENABLE``.

    Raises:
        ValueError: The blob is shorter than the ``struct jailhouse_system`` header.
    """
    if len(system_blob) < _SYSTEM_SIZE:
        raise ValueError(
            f"system_blob: {len(system_blob)} bytes is shorter than the "
            f"{_SYSTEM_SIZE}-byte struct jailhouse_system header"
        )
    system = ffi.from_buffer("struct jailhouse_system *", system_blob)
    root_cell_offset = ffi.offsetof("struct jailhouse_system", "root_cell")
    return root_cell_offset + cell_config_size(system.root_cell)


def enable_arg(system_blob: bytes) -> Arg:
    """Build the ``ENABLE`` argument: the address of the system config blob itself.

    No length is passed: the driver reads as many bytes as the blob's header
    describes, so a blob shorter than that is refused here rather than letting the
    driver read past its end.  The blob is not copied.

    Args:
        system_blob: The packed system config (``struct jailhouse_system`` and the root
            cell's arrays).

    Returns:
        The argument; :attr:`Arg.size` is the length of the blob.

    Raises:
        ValueError: The blob is shorter than its header says (or than the header).
    """
    described = system_config_size(system_blob)
    if len(system_blob) < described:
        raise ValueError(
            f"system_blob: {len(system_blob)} bytes, but its header describes {described}"
        )
    blob = ffi.from_buffer(system_blob)
    return Arg(_address(blob), len(system_blob), (blob,))


def cell_create_arg(config_blob: bytes) -> Arg:
    """Build the ``CELL_CREATE`` argument for a cell config blob.

    The blob is not copied and not checked: the driver validates it (and answers
    EINVAL to a short or foreign one).

    Args:
        config_blob: The packed cell config.

    Returns:
        The argument: a ``struct jailhouse_cell_create`` holding the blob's address
        and length, with the blob kept alive.

    Raises:
        ValueError: The blob is longer than a 32-bit ``config_size`` can say.
    """
    if len(config_blob) > _U32_MAX:
        raise ValueError(f"config_blob: {len(config_blob)} bytes does not fit config_size (u32)")
    blob = ffi.from_buffer(config_blob)
    create = ffi.new("struct jailhouse_cell_create *")
    create.config_address = _address(blob)
    create.config_size = len(config_blob)
    return Arg(_address(create), _CELL_CREATE_SIZE, (create, blob))


def _fill_cell_id(struct: CellId, cell_id: int | None, name: str | None) -> None:
    """Fill a ``struct jailhouse_cell_id`` from an id, a name, or both.

    Raises:
        ValueError: Neither is given, the id is outside 0..2**31-1, or the name is
            empty, holds a NUL or a character beyond latin-1, or is longer than
            :data:`NAMELEN` bytes.
    """
    if cell_id is None and name is None:
        raise ValueError("cell_id, name: both are None; give a cell id or a name")
    if cell_id is not None and not 0 <= cell_id <= _S32_MAX:
        raise ValueError(f"cell_id: {cell_id!r} is outside 0..{_S32_MAX}")
    encoded = b""
    if name is not None:
        try:
            encoded = name.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(
                f"name: {name!r} has a character beyond latin-1; a cell name is bytes, "
                "one per character, as the config packs it"
            ) from None
        if not encoded:
            raise ValueError("name: '' is empty")
        if b"\0" in encoded:
            raise ValueError(f"name: {name!r} contains a NUL character")
        if len(encoded) > NAMELEN:
            raise ValueError(
                f"name: {name!r} is {len(encoded)} bytes; a cell name has at most {NAMELEN}"
            )
    struct.id = CELL_ID_UNUSED if cell_id is None else cell_id
    struct.name = encoded


def cell_id_arg(cell_id: int | None = None, name: str | None = None) -> Arg:
    """Build the ``CELL_START`` / ``CELL_DESTROY`` argument naming one cell.

    The driver matches on the id when there is one and ignores the name; otherwise it
    looks the cell up by name.

    Args:
        cell_id: The cell's id, or ``None`` to select by name.
        name: The cell's name (at most :data:`NAMELEN` latin-1 bytes).

    Returns:
        The argument: a ``struct jailhouse_cell_id``.

    Raises:
        ValueError: Neither is given, or one is out of range (the message names the
            field and the value).
    """
    struct = ffi.new("struct jailhouse_cell_id *")
    _fill_cell_id(struct, cell_id, name)
    return Arg(_address(struct), _CELL_ID_SIZE, (struct,))


def cell_load_arg(
    cell_id: int | None = None,
    name: str | None = None,
    images: Sequence[tuple[bytes, int]] = (),
) -> Arg:
    """Build the ``CELL_LOAD`` argument: a cell, and the images to copy into it.

    With no images this is how a cell is shut down: the driver parks its CPUs and
    makes its loadable regions accessible to the root cell.

    Args:
        cell_id: The cell's id, or ``None`` to select by name.
        name: The cell's name (at most :data:`NAMELEN` latin-1 bytes).
        images: ``(data, target_address)`` pairs, in load order; the data is not
            copied.

    Returns:
        The argument: a ``struct jailhouse_cell_load`` with its ``image[]`` array,
        every image buffer kept alive; :attr:`Arg.size` covers the array too.

    Raises:
        ValueError: The cell is given as for :func:`cell_id_arg` wrongly, there are
            more than 2**32-1 images, or a target address is not a u64.
    """
    if len(images) > _U32_MAX:
        raise ValueError(f"images: {len(images)} entries do not fit num_preload_images (u32)")
    load = ffi.new("struct jailhouse_cell_load *", {"image": len(images)})
    _fill_cell_id(load.cell_id, cell_id, name)
    load.num_preload_images = len(images)
    keepalive: list[CData] = [load]
    for index, (data, target) in enumerate(images):
        if not 0 <= target <= _U64_MAX:
            raise ValueError(f"images[{index}].target_address: {target!r} is not a u64")
        buffer = ffi.from_buffer(data)
        entry = load.image[index]
        entry.source_address = _address(buffer)
        entry.size = len(data)
        entry.target_address = target
        keepalive.append(buffer)
    size = _CELL_LOAD_SIZE + len(images) * PRELOAD_IMAGE_SIZE
    return Arg(_address(load), size, tuple(keepalive))


def _check_length(raw: bytes, size: int, cdecl: str) -> None:
    """Require ``raw`` to hold exactly one struct.

    Raises:
        ValueError: It does not.
    """
    if len(raw) != size:
        raise ValueError(f"raw: {len(raw)} bytes, but {cdecl} is {size}")


def _decode_name(struct: CellId) -> tuple[int | None, str]:
    """Return the id (``None`` for :data:`CELL_ID_UNUSED`) and the name of a cell id."""
    raw_name = ffi.string(struct.name, NAMELEN)
    cell_id = None if struct.id == CELL_ID_UNUSED else struct.id
    return cell_id, raw_name.decode("latin-1")


def decode_cell_create(raw: bytes) -> CellCreateRequest:
    """Decode the bytes of a ``struct jailhouse_cell_create``.

    Raises:
        ValueError: ``raw`` is not exactly 16 bytes.
    """
    _check_length(raw, _CELL_CREATE_SIZE, "struct jailhouse_cell_create")
    create = ffi.from_buffer("struct jailhouse_cell_create *", raw)
    return CellCreateRequest(create.config_address, create.config_size)


def decode_cell_id(raw: bytes) -> CellIdRequest:
    """Decode the bytes of a ``struct jailhouse_cell_id``.

    Raises:
        ValueError: ``raw`` is not exactly 40 bytes.
    """
    _check_length(raw, _CELL_ID_SIZE, "struct jailhouse_cell_id")
    return CellIdRequest(*_decode_name(ffi.from_buffer("struct jailhouse_cell_id *", raw)))


def decode_cell_load(raw: bytes) -> CellLoadRequest:
    """Decode the 48-byte header of a ``struct jailhouse_cell_load``.

    The images follow it in user memory; read entry ``n`` at
    ``address + request_size(CELL_LOAD) + n * PRELOAD_IMAGE_SIZE`` and decode it with
    :func:`decode_preload_image`.

    Raises:
        ValueError: ``raw`` is not exactly 48 bytes.
    """
    _check_length(raw, _CELL_LOAD_SIZE, "struct jailhouse_cell_load")
    load = ffi.from_buffer("struct jailhouse_cell_load *", raw)
    cell_id, name = _decode_name(load.cell_id)
    return CellLoadRequest(cell_id, name, load.num_preload_images)


def decode_preload_image(raw: bytes) -> PreloadImageRequest:
    """Decode the bytes of a ``struct jailhouse_preload_image``.

    Raises:
        ValueError: ``raw`` is not exactly 32 bytes.
    """
    _check_length(raw, PRELOAD_IMAGE_SIZE, "struct jailhouse_preload_image")
    image = ffi.from_buffer("struct jailhouse_preload_image *", raw)
    return PreloadImageRequest(image.source_address, image.size, image.target_address)
