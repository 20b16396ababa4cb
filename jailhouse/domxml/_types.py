"""Result types of the domain XML translation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jailhouse.errors import _show, _show_path, _show_reason

if TYPE_CHECKING:
    from jailhouse.config.model import CellConfig

__all__ = ["BootImage", "BootSpec", "DomainTranslation", "TranslationNote"]


@dataclass(frozen=True, slots=True)
class TranslationNote:
    """Something of the domain XML that was ignored or only approximated.

    Attributes:
        element: XPath of the element or attribute, such as ``/domain/devices/disk[2]``.
        reason: What happened to it, in one sentence.
        value: The value concerned, if any.
    """

    element: str
    reason: str
    value: str | None = None

    def __str__(self) -> str:
        """Render as ``/domain/devices/disk[1]: reason`` on one line of bounded length.

        A long value is shortened as errors shorten it (``'AAAA...' (900000 characters)``);
        :attr:`value` keeps it whole.
        """
        element, reason = _show_path(self.element), _show_reason(self.reason)
        if self.value is None:
            return f"{element}: {reason}"
        return f"{element} = {_show(self.value)}: {reason}"


@dataclass(frozen=True, slots=True)
class BootImage:
    """An image to load into a cell before it starts.

    Attributes:
        path: The image file on the host (never opened by the translator).
        address: Where it goes in the cell's (guest) address space.
    """

    path: str
    address: int

    def __str__(self) -> str:
        """Render as ``/path/inmate.bin@0x0``."""
        return f"{self.path}@{self.address:#x}"


@dataclass(frozen=True, slots=True, kw_only=True)
class BootSpec:
    """What to load into a cell and how to start it.

    A bare-metal inmate lists its :attr:`images` with their load addresses.  A Linux cell
    names :attr:`kernel` (plus optional :attr:`initrd`, :attr:`cmdline` and :attr:`dtb`),
    booted the way ``jailhouse cell linux`` does it: the loader places the images, so their
    addresses depend on the files and are not part of the spec.

    Attributes:
        images: Images with their load addresses (bare-metal inmates).
        kernel: Linux kernel image (``<os><kernel>``).
        initrd: Initial ramdisk (``<os><initrd>``).
        cmdline: Kernel command line (``<os><cmdline>``).
        dtb: Device tree blob (``<os><dtb>``); ``jailhouse cell linux`` needs one on ARM.
    """

    images: tuple[BootImage, ...] = ()
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    dtb: str | None = None

    @property
    def is_linux(self) -> bool:
        """Whether this boots a Linux kernel (``jailhouse cell linux``)."""
        return self.kernel is not None

    @property
    def is_empty(self) -> bool:
        """Whether there is nothing to load."""
        return not self.images and self.kernel is None

    def __str__(self) -> str:
        """Summarise as ``linux /boot/Image (initrd, dtb)`` or ``images a@0x0, b@0x1000``."""
        if self.kernel is not None:
            extras = [
                name
                for name, value in (("initrd", self.initrd), ("dtb", self.dtb))
                if value is not None
            ]
            tail = f" ({', '.join(extras)})" if extras else ""
            return f"linux {self.kernel}{tail}"
        if self.images:
            return "images " + ", ".join(str(image) for image in self.images)
        return "nothing to load"


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainTranslation:
    """The result of :func:`~jailhouse.domxml.domain_to_cell`.

    Attributes:
        config: The cell config.
        boot: What to load and how to start the cell.
        notes: What the XML asked for that was ignored or approximated, each naming the
            element by XPath.
        uuid: The domain's ``<uuid>`` in canonical form, if it had one (a cell config has
            no place for it; keep it to write the domain back).
    """

    config: CellConfig
    boot: BootSpec = field(default_factory=BootSpec)
    notes: tuple[TranslationNote, ...] = ()
    uuid: str | None = None

    def __str__(self) -> str:
        """Summarise the cell, the boot spec and the number of notes."""
        notes = f", {len(self.notes)} note(s)" if self.notes else ""
        return f"{self.config}; boot: {self.boot}{notes}"
