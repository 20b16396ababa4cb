"""The shape of a loader stub: a few instructions that jump into the kernel.

A Linux kernel cannot be the cell's first code: each architecture's kernel wants its
boot argument in a register (arm64: ``x0`` = device tree address; x86: ``rsi`` =
``boot_params`` address, in 64-bit mode), which the CPU reset state does not give.  A
stub, loaded where the cell's first CPU starts, sets that up and jumps to the kernel.

A stub reads its two values from a parameter block inside its own image: two
little-endian 64-bit words, the kernel's entry address and the boot argument.  The load
plan fills them in with :meth:`LoaderStub.with_params` before the image is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jailhouse.config.flags import Arch

__all__ = ["LoaderStub"]

_WORD = 8


@dataclass(frozen=True, slots=True)
class LoaderStub:
    """A loader stub image and where its parts are.

    Attributes:
        arch: The architecture it runs on.
        code: The image, parameter block zeroed.
        entry_offset: Offset in :attr:`code` of the first instruction the CPU runs.
        params_offset: Offset in :attr:`code` of the parameter block (kernel entry, then
            boot argument; 8-byte aligned).
        load_address: Fixed guest address the image must be loaded at, or ``None`` when
            it goes at the cell's ``cpu_reset_address`` minus :attr:`entry_offset`.
    """

    arch: Arch
    code: bytes
    entry_offset: int
    params_offset: int
    load_address: int | None = None

    def __post_init__(self) -> None:
        """Check that the entry and the parameter block lie inside the image."""
        if not 0 <= self.entry_offset < len(self.code):
            raise ValueError(f"entry_offset {self.entry_offset:#x} outside the stub")
        end = self.params_offset + 2 * _WORD
        if self.params_offset % _WORD or not 0 <= self.params_offset < end <= len(self.code):
            raise ValueError(f"params_offset {self.params_offset:#x} is not a block in the stub")

    def with_params(self, kernel_entry: int, boot_arg: int) -> bytes:
        """Return the image with its parameter block set.

        Args:
            kernel_entry: Guest address the stub jumps to.
            boot_arg: Guest address of the boot parameters (device tree or
                ``boot_params``), passed in the register the kernel reads.
        """
        block = kernel_entry.to_bytes(_WORD, "little") + boot_arg.to_bytes(_WORD, "little")
        start = self.params_offset
        return self.code[:start] + block + self.code[start + len(block) :]
