"""Translate between libvirt domain XML and Jailhouse cell configs.

:func:`domain_to_cell` turns a domain into a :class:`~jailhouse.config.model.CellConfig` for
a given system, placing it next to the cells already defined; :func:`cell_to_domain` writes
a cell back as domain XML.  A cell written as XML reads back to the same bytes; XML read as
a cell and written again keeps its meaning.

Mapping (standard elements):

- ``<name>`` is the cell name (printable ASCII, at most 31 bytes, unique on the system);
  ``<uuid>`` is kept in :attr:`DomainTranslation.uuid`.
- ``<vcpu>``, its ``cpuset`` and ``<cputune><vcpupin>`` give the CPU set.  Pins map one vCPU
  onto one host CPU, each a different one; unpinned vCPUs get free CPUs of the root cell,
  highest first, never CPU 0 on x86, never one another defined cell has, never the root
  cell's last.  ``current`` below the count (hot-plug) and ``placement='auto'`` are errors.
- ``<memory>`` (every libvirt unit, rounded up to KiB as libvirt does, then to pages; the
  guest NUMA cells' total when it is missing or 0) is the cell's RAM, taken from the
  inmate pool (see :mod:`jailhouse.domxml._placement`: by
  default the root-cell RAM region nearest to the hypervisor memory; ``pool=`` names it
  exactly).  Layout: on x86 RAM at guest 0 (up to 1 MiB), the comm region at 0x100000 and
  the rest at 0x200000; on ARM RAM at guest 0 and the comm region at 0x80000000, or for a
  Linux cell a 64 KiB loader RAM at 0 plus the rest mapped 1:1.  RAM regions are
  read/write/execute, DMA and LOADABLE.
- ``<os><type arch>`` must be the system's architecture by its libvirt name (``x86_64``,
  ``aarch64``, ``armv7l``; ``armv7l`` on arm64 sets AARCH32, ``i686`` on x86 is a note);
  ``<kernel>``, ``<initrd>``, ``<cmdline>``, ``<dtb>`` form a Linux :class:`BootSpec`.
- ``<console>``/``<serial>`` give the cell the hypervisor console (VIRTUAL_CONSOLE_PERMITTED)
  and the system's debug UART as its console, with the port range (x86 PIO) or the
  register page (MMIO, shared with the root cell) it needs.
- ``<hostdev type='pci'>`` assigns the system's PCI device at that address, with its
  capabilities; an unknown address is an error.
- ``<shmem>`` with a PCI ``<address>`` where the root cell or a defined cell has an ivshmem
  device joins that link as the next free peer, mapping the link's memory; otherwise it
  creates a new two-peer link in the inmate pool (``ivshmem-doorbell`` adds MSI-X vectors).
- Every cell gets PASSIVE_COMMREG unless the metadata says otherwise.
- Anything else (disks, interfaces, graphics, balloon, vIOMMU, hot-plug, tuning...) becomes a
  :class:`TranslationNote`, or an error with ``strict=True``.

Everything a cell config holds beyond that lives in ``<metadata>`` as
``<jailhouse:cell xmlns:jailhouse="urn:x-python-jailhouse:domain:1">`` (see
:mod:`jailhouse.domxml._meta`); each part given there is taken verbatim, must agree with the
standard elements, and config-check errors against the system become notes.

:func:`parse_document` is the parser every entry point uses, for callers that read a
domain themselves; :func:`memory_kib` is the ``<memory>`` value (KiB) written for a cell's
regions.

The input is capped at 1 MiB and decoded in Python; any document type declaration is
refused before libxml2 sees it (libxml2 opens external parameter entities even with entity
resolution off), and libxml2 then parses with entities, DTD loading and network disabled.
"""

from __future__ import annotations

from jailhouse.domxml._to_cell import domain_to_cell, memory_kib
from jailhouse.domxml._to_domain import cell_to_domain
from jailhouse.domxml._types import BootImage, BootSpec, DomainTranslation, TranslationNote
from jailhouse.domxml._xml import MAX_DOCUMENT_BYTES, NS, PREFIX, parse_document

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "NS",
    "PREFIX",
    "BootImage",
    "BootSpec",
    "DomainTranslation",
    "TranslationNote",
    "cell_to_domain",
    "domain_to_cell",
    "memory_kib",
    "parse_document",
]
