"""What the Salt modules share, in plain Python: the connection, units, domain XML.

Nothing here imports Salt, so it is typed and tested like the rest of the library.  The
module files under ``modules/``, ``states/`` and ``runners/`` call these helpers and turn
their errors (:class:`ValueError`, :class:`~jailhouse.virt.libvirtError`) into Salt's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from lxml import etree

from jailhouse.domxml._xml import NS

if TYPE_CHECKING:
    from collections.abc import Mapping

    from jailhouse.virt import virDomain

__all__ = [
    "CONFIG_KEY",
    "DEFAULT_URI",
    "DEVICE",
    "availability",
    "connection_uri",
    "domain_info",
    "domain_xml",
    "lookup",
    "memory_kib",
    "parse_cpus",
    "to_bytes",
]

DEFAULT_URI: Final = "jailhouse:///system"
"""The connection used when neither the minion config nor the pillar names one."""
CONFIG_KEY: Final = "jailhouse:connection"
"""Where the connection URI is looked up, in the minion config and then the pillar."""
DEVICE: Final = Path("/dev/jailhouse")
"""The device a ``jailhouse:///`` connection needs."""

_SIZE: Final = re.compile(r"\s*(?P<value>[0-9]+(?:\.[0-9]*)?)\s*(?P<unit>[a-zA-Z]*)\s*")
_UNITS: Final = "bkmgtpezy"
_STATE_NAMES: Final = {
    0: "no state",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutdown",
    5: "shutoff",
    6: "crashed",
    7: "pmsuspended",
}


def lookup(mapping: Mapping[str, Any] | None, key: str = CONFIG_KEY) -> object:
    """Return the value at a ``a:b`` key of nested dicts, as Salt's ``config.get`` reads it.

    A flat key spelled out in full (``jailhouse:connection: ...`` as one key) counts too.
    Returns ``None`` when it is absent.
    """
    if not mapping:
        return None
    if key in mapping:
        return mapping[key]
    value: object = dict(mapping)  # Salt's __pillar__ is a mapping proxy, not a dict
    for part in key.split(":"):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def connection_uri(
    opts: Mapping[str, Any] | None,
    pillar: Mapping[str, Any] | None,
    override: str | None = None,
) -> str:
    """Return the connection URI: the argument, else the minion config, else the pillar.

    Raises:
        ValueError: The configured value is not a string.
    """
    if override:
        return override
    for source, mapping in (("the minion config", opts), ("the pillar", pillar)):
        value = lookup(mapping)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise ValueError(f"{CONFIG_KEY} in {source} must be a URI string, not {value!r}")
        return value
    return DEFAULT_URI


def availability(uri: str, device: Path = DEVICE) -> tuple[bool, str]:
    """Tell whether the library can work with this connection, and why not.

    A ``sim:///`` URI always can (the simulator is a directory); ``jailhouse:///`` needs
    the device node of the jailhouse driver.
    """
    scheme = urlsplit(uri).scheme
    if scheme == "sim":
        return True, ""
    if scheme != "jailhouse":
        return False, (
            f"{CONFIG_KEY} is {uri!r}: python-jailhouse opens jailhouse:///system or "
            "sim:///PATH URIs only"
        )
    if not device.exists():
        return False, (
            f"{device} does not exist (the jailhouse driver is not loaded) and {CONFIG_KEY} "
            f"is {uri!r}, not a simulated host (sim:///PATH)"
        )
    return True, ""


def virtual(
    virtualname: str, opts: Mapping[str, Any] | None, pillar: Mapping[str, Any] | None
) -> str | tuple[bool, str]:
    """Answer a module's ``__virtual__``: its name, or ``(False, reason)`` when it cannot work.

    The connection is read as :func:`connection_uri` reads it, then checked by
    :func:`availability`.
    """
    try:
        uri = connection_uri(opts, pillar)
    except ValueError as exc:
        return False, str(exc)
    ok, reason = availability(uri)
    return virtualname if ok else (False, f"jailhouse: {reason}")


# -- units ----------------------------------------------------------------------------------


def to_bytes(value: object, field: str, *, default_unit: str = "m") -> int:
    """Convert a size as Salt's ``virt`` module takes it to bytes.

    A number without a unit is in ``default_unit`` (MiB for memory, as in Salt); ``k``,
    ``m``, ``g``... and ``kib``, ``mib``, ``gib``... are powers of 1024; ``kb``, ``mb``,
    ``gb``... are powers of 1000; ``b`` is bytes.  Case does not matter.

    Raises:
        ValueError: Not a positive size with a known unit; the message names ``field``.
        TypeError: Not a number or a string.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"{field} = {value!r}: expected a size such as 512, '64m' or '1GiB'")
    match = _SIZE.fullmatch(str(value))
    if match is None:
        raise ValueError(f"{field} = {value!r}: expected a size such as 512, '64m' or '1GiB'")
    unit = (match["unit"] or default_unit).lower()
    if re.fullmatch(r"[kmgtpezy]b", unit):
        factor = 1000 ** _UNITS.index(unit[0])
    elif re.fullmatch(r"b|[kmgtpezy](ib)?", unit):
        factor = 1024 ** _UNITS.index(unit[0])
    else:
        raise ValueError(
            f"{field} = {value!r}: unknown unit {match['unit']!r} (use b, k/KiB, m/MiB, g/GiB, "
            "or KB/MB/GB for powers of 1000)"
        )
    size = int(float(match["value"]) * factor)
    if size <= 0:
        raise ValueError(f"{field} = {value!r}: a size must be above 0")
    return size


def memory_kib(mem: object) -> int:
    """Return a domain's memory in KiB from Salt's ``mem`` argument.

    ``mem`` is a size (MiB without a unit) or a dict with ``boot``, ``current`` and
    ``max`` as in ``virt.defined``.  A cell owns all its memory from the start and cannot
    balloon or hot-plug, so the values given must agree; other keys (``hard_limit``,
    ``hugepages``...) tune things a cell does not have and are refused.

    Raises:
        ValueError: A value is malformed, the values disagree, or a key is unknown.
    """
    if not isinstance(mem, dict):
        return -(-to_bytes(mem, "mem") // 1024)
    unknown = sorted(set(mem) - {"boot", "current", "max"})
    if unknown:
        raise ValueError(
            f"mem:{unknown[0]} = {mem[unknown[0]]!r}: a cell owns its memory outright; "
            "only boot, current and max (all equal) apply"
        )
    sizes = {
        key: -(-to_bytes(mem[key], f"mem:{key}") // 1024)
        for key in ("boot", "current", "max")
        if key in mem
    }
    if not sizes:
        raise ValueError("mem = {}: give boot, current or max")
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{key} {kib} KiB" for key, kib in sizes.items())
        raise ValueError(
            f"mem: {listed}: a cell cannot balloon or hot-plug memory, so they must be equal"
        )
    return next(iter(sizes.values()))


def parse_cpus(text: object, field: str) -> list[int]:
    """Parse a CPU list (``2``, ``1-3``, ``0,2``) into sorted CPU numbers.

    Raises:
        ValueError: Not a CPU list; the message names ``field``.
    """
    cpus: set[int] = set()
    for part in str(text).split(","):
        bounds = part.strip().split("-")
        if not all(b.strip().isdigit() for b in bounds) or len(bounds) > 2:
            raise ValueError(f"{field} = {text!r}: expected CPU numbers such as 2, 1-3 or 0,2")
        low, high = int(bounds[0]), int(bounds[-1])
        if high < low:
            raise ValueError(f"{field} = {text!r}: the range {part.strip()} runs backwards")
        cpus.update(range(low, high + 1))
    return sorted(cpus)


# -- domain XML from state arguments --------------------------------------------------------


def domain_xml(
    name: str,
    *,
    arch: str,
    cpu: object = None,
    cpuset: object = None,
    vcpupin: object = None,
    mem: object = None,
    images: object = None,
    kernel: str | None = None,
    initrd: str | None = None,
    cmdline: str | None = None,
) -> str:
    """Build the domain XML a ``jailhouse.defined`` state describes.

    Args:
        name: The domain's name.
        arch: The libvirt architecture of the host (``aarch64``, ``x86_64``).
        cpu: The vCPU count, or Salt's ``cpu`` dict (``maximum``/``current``,
            ``cpuset``, ``tuning: {vcpupin: {VCPU: CPU}}``).
        cpuset: Host CPUs the vCPUs may take (a CPU list).
        vcpupin: ``{vcpu: host_cpu}``: pin each vCPU to one host CPU.
        mem: Salt's ``mem`` (see :func:`memory_kib`); required.
        images: Bare-metal images: a list of ``{"path": FILE, "address": ADDR}``.
        kernel: A Linux kernel (``<os><kernel>``).
        initrd: Its initrd.
        cmdline: Its command line.

    Raises:
        ValueError: An argument is malformed; the message names it.
    """
    count, cpuset, pins = _cpu_arguments(cpu, cpuset, vcpupin)
    if mem is None:
        raise ValueError("mem is required: the memory of the cell, such as 64 (MiB) or '16m'")
    kib = memory_kib(mem)
    domain = etree.Element("domain", type="jailhouse")
    etree.SubElement(domain, "name").text = name
    etree.SubElement(domain, "memory", unit="KiB").text = str(kib)
    vcpu = etree.SubElement(domain, "vcpu", placement="static")
    vcpu.text = str(count)
    if cpuset is not None:
        vcpu.set("cpuset", ",".join(str(cpu) for cpu in cpuset))
    if pins:
        cputune = etree.SubElement(domain, "cputune")
        for index, host in sorted(pins.items()):
            etree.SubElement(cputune, "vcpupin", vcpu=str(index), cpuset=str(host))
    os_el = etree.SubElement(domain, "os")
    etree.SubElement(os_el, "type", arch=arch).text = "hvm"
    for tag, value in (("kernel", kernel), ("initrd", initrd), ("cmdline", cmdline)):
        if value is not None:
            etree.SubElement(os_el, tag).text = str(value)
    boot = _image_list(images)
    if boot:
        metadata = etree.SubElement(domain, "metadata")
        cell = etree.SubElement(metadata, f"{{{NS}}}cell", nsmap={"jailhouse": NS})
        boot_el = etree.SubElement(cell, f"{{{NS}}}boot")
        for path, address in boot:
            etree.SubElement(boot_el, f"{{{NS}}}image", file=path, address=hex(address))
    return etree.tostring(domain, encoding="unicode", pretty_print=True)


def _cpu_arguments(
    cpu: object, cpuset: object, vcpupin: object
) -> tuple[int, list[int] | None, dict[int, int]]:
    """Return the vCPU count, the cpuset and the pins from the state's arguments."""
    pins_given: object = vcpupin
    if isinstance(cpu, dict):
        unknown = sorted(set(cpu) - {"maximum", "current", "placement", "cpuset", "tuning"})
        if unknown:
            raise ValueError(
                f"cpu:{unknown[0]} = {cpu[unknown[0]]!r}: a cell runs on whole host CPUs; "
                "only maximum/current, placement, cpuset and tuning:vcpupin apply"
            )
        if cpu.get("placement", "static") != "static":
            raise ValueError(
                f"cpu:placement = {cpu['placement']!r}: a cell owns fixed CPUs; use 'static'"
            )
        maximum, current = cpu.get("maximum"), cpu.get("current")
        if maximum is not None and current is not None and maximum != current:
            raise ValueError(
                f"cpu: current {current!r} and maximum {maximum!r}: a cell cannot hot-plug "
                "vCPUs, so they must be equal"
            )
        count_value: object = maximum if maximum is not None else current
        cpuset = cpu.get("cpuset", cpuset)
        tuning = cpu.get("tuning") or {}
        if not isinstance(tuning, dict) or set(tuning) - {"vcpupin"}:
            raise ValueError(f"cpu:tuning = {tuning!r}: only vcpupin applies to a cell")
        pins_given = tuning.get("vcpupin", vcpupin)
    else:
        count_value = cpu
    pins: dict[int, int] = {}
    if pins_given is not None:
        if not isinstance(pins_given, dict):
            raise ValueError(f"vcpupin = {pins_given!r}: expected {{vcpu: host CPU}}")
        for key, host in pins_given.items():
            index = _natural(key, f"vcpupin:{key}")
            chosen = parse_cpus(host, f"vcpupin:{key}")
            if len(chosen) != 1:
                raise ValueError(
                    f"vcpupin:{key} = {host!r}: each vCPU of a cell is one host CPU; pin it "
                    "to exactly one"
                )
            pins[index] = chosen[0]
    if count_value is None:
        count = max(len(pins), 1)
    else:
        count = _natural(count_value, "cpu")
        if count == 0:
            raise ValueError("cpu = 0: a cell needs at least one CPU")
    cpus = None if cpuset is None else parse_cpus(cpuset, "cpuset")
    return count, cpus, pins


def _natural(value: object, field: str) -> int:
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())
    ):
        raise ValueError(f"{field} = {value!r}: expected a whole number")
    number = int(value)
    if number < 0:
        raise ValueError(f"{field} = {value!r}: expected a whole number")
    return number


def _image_list(images: object) -> list[tuple[str, int]]:
    if images is None:
        return []
    if not isinstance(images, list):
        raise TypeError(f"images = {images!r}: expected a list of {{path, address}}")
    out: list[tuple[str, int]] = []
    for index, item in enumerate(images):
        where = f"images[{index}]"
        if not isinstance(item, dict) or "path" not in item:
            raise ValueError(f"{where} = {item!r}: expected {{path: FILE, address: ADDRESS}}")
        path = str(item["path"])
        if not Path(path).is_absolute():
            raise ValueError(f"{where}:path = {path!r}: give an absolute path")
        address = item.get("address", 0)
        try:
            number = address if isinstance(address, int) else int(str(address), 0)
        except ValueError:
            raise ValueError(f"{where}:address = {address!r}: expected a number") from None
        if isinstance(number, bool) or number < 0:
            raise ValueError(f"{where}:address = {address!r}: expected an address >= 0")
        out.append((path, number))
    return out


# -- results --------------------------------------------------------------------------------


def domain_info(dom: virDomain) -> dict[str, Any]:
    """Describe a domain as ``virt.vm_info`` does: state, CPUs, memory, images, statistics."""
    conn = dom.connect()
    view = conn.driver.find_uuid(dom.UUIDString(), dom.name())
    state = view.state()[0]
    definition = view.current
    cpus = (
        sorted(view.cell.cpus_assigned)
        if view.cell is not None
        else (sorted(definition.config.cpus) if definition is not None else [])
    )
    images = (
        [{"path": i.path, "address": i.address} for i in definition.boot.images]
        if definition is not None
        else []
    )
    return {
        "uuid": view.uuid,
        "id": view.id,
        "state": _STATE_NAMES.get(state, str(state)),
        "cell_state": None if view.cell is None else str(view.cell.state),
        "persistent": view.persistent is not None,
        "updated": bool(dom.isUpdated()),
        "cpu": len(cpus),
        "cpus": cpus,
        "mem": view.memory_kib(),
        "maxMem": view.memory_kib(),
        "images": images,
        "kernel": None if definition is None else definition.boot.kernel,
        "autostart": int(dom.autostart()),
        "statistics": {} if view.cell is None else dict(view.cell.statistics),
    }
