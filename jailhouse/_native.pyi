# Type stub for ``jailhouse._native``, the compiled cffi shim (built from ``cffi_build/``).
#
# Only :mod:`jailhouse._ffi` imports the module.  The stub names the cdata shapes the
# library reads and writes, so cffi's ``Any`` never leaks into typed code: any other
# cdata is a plain :class:`CData` with no attributes.  The classes below exist for the
# type checker only; at run time every cdata is an instance of ``ffi.CData``.

from typing import Final, Literal, overload, type_check_only

from typing_extensions import Buffer

@type_check_only
class CData:
    # A C value, pointer or array owned (or viewed) by cffi.

    def __bool__(self) -> bool: ...

@type_check_only
class CType:
    # A C type as cffi sees it (``ffi.typeof``).

    cname: str
    kind: str

@type_check_only
class CInteger(CData):
    # An integer cdata, such as the result of ``ffi.cast("uintptr_t", ptr)``.

    def __int__(self) -> int: ...

@type_check_only
class CharArray(CData):
    # A ``char[]`` cdata: a C buffer, or a view of a Python buffer.

    def __len__(self) -> int: ...

@type_check_only
class CBuffer:
    # The result of ``ffi.buffer()``: raw bytes of C memory.

    def __len__(self) -> int: ...
    def __getitem__(self, index: slice) -> bytes: ...

@type_check_only
class CellCreate(CData):
    # ``struct jailhouse_cell_create *``.

    config_address: int
    config_size: int
    padding: int

@type_check_only
class CellId(CData):
    # ``struct jailhouse_cell_id *`` (or the struct, as a field).

    id: int
    padding: int
    @property
    def name(self) -> CharArray: ...
    @name.setter
    def name(self, value: bytes) -> None: ...

@type_check_only
class PreloadImage(CData):
    # ``struct jailhouse_preload_image *`` (or an element of ``image[]``).

    source_address: int
    size: int
    target_address: int
    padding: int

@type_check_only
class PreloadImageArray(CData):
    # ``struct jailhouse_preload_image[]``, the flexible array of a load.

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> PreloadImage: ...

@type_check_only
class CellLoad(CData):
    # ``struct jailhouse_cell_load *``.

    @property
    def cell_id(self) -> CellId: ...
    num_preload_images: int
    padding: int
    @property
    def image(self) -> PreloadImageArray: ...

@type_check_only
class CellDesc(CData):
    # ``struct jailhouse_cell_desc *``: the counts that size a cell config.

    architecture: int
    revision: int
    cpu_set_size: int
    num_memory_regions: int
    num_cache_regions: int
    num_irqchips: int
    num_pio_regions: int
    num_pci_devices: int
    num_pci_caps: int
    num_stream_ids: int

@type_check_only
class SystemHeader(CData):
    # ``struct jailhouse_system *``: the fields python-jailhouse reads through ffi.

    architecture: int
    revision: int
    flags: int
    @property
    def root_cell(self) -> CellDesc: ...

@type_check_only
class FFI:
    # The ``ffi`` object of the compiled module (API mode).

    NULL: CData
    error: type[Exception]

    @overload
    def new(self, cdecl: Literal["struct jailhouse_cell_create *"], /) -> CellCreate: ...
    @overload
    def new(self, cdecl: Literal["struct jailhouse_cell_id *"], /) -> CellId: ...
    @overload
    def new(
        self, cdecl: Literal["struct jailhouse_cell_load *"], init: dict[str, int], /
    ) -> CellLoad: ...
    @overload
    def new(self, cdecl: Literal["char[]"], init: bytes | int, /) -> CharArray: ...
    @overload
    def new(self, cdecl: str, init: object = ..., /) -> CData: ...
    @overload
    def from_buffer(self, python_buffer: Buffer, /) -> CharArray: ...
    @overload
    def from_buffer(
        self, cdecl: Literal["struct jailhouse_cell_create *"], python_buffer: Buffer, /
    ) -> CellCreate: ...
    @overload
    def from_buffer(
        self, cdecl: Literal["struct jailhouse_cell_id *"], python_buffer: Buffer, /
    ) -> CellId: ...
    @overload
    def from_buffer(
        self, cdecl: Literal["struct jailhouse_cell_load *"], python_buffer: Buffer, /
    ) -> CellLoad: ...
    @overload
    def from_buffer(
        self, cdecl: Literal["struct jailhouse_preload_image *"], python_buffer: Buffer, /
    ) -> PreloadImage: ...
    @overload
    def from_buffer(
        self, cdecl: Literal["struct jailhouse_system *"], python_buffer: Buffer, /
    ) -> SystemHeader: ...
    @overload
    def from_buffer(self, cdecl: str, python_buffer: Buffer, /) -> CData: ...
    @overload
    def cast(
        self, cdecl: Literal["uintptr_t", "intptr_t", "uint64_t"], value: CData | int, /
    ) -> CInteger: ...
    @overload
    def cast(self, cdecl: str, value: CData | int, /) -> CData: ...
    def buffer(self, cdata: CData, size: int = ..., /) -> CBuffer: ...
    def string(self, cdata: CData, maxlen: int = ..., /) -> bytes: ...
    def sizeof(self, cdecl: str | CData, /) -> int: ...
    def alignof(self, cdecl: str | CData, /) -> int: ...
    def offsetof(self, cdecl: str, field: str | int, /, *fields: str | int) -> int: ...
    def typeof(self, cdecl: str | CData, /) -> CType: ...

@type_check_only
class Lib:
    # The ``lib`` object: compiled constants and the C helpers.

    # ioctl ABI (driver/jailhouse.h layout, fact sheet section 1)
    JAILHOUSE_CELL_ID_NAMELEN: Final[int]
    JAILHOUSE_CELL_ID_UNUSED: Final[int]
    JAILHOUSE_IOCTL_TYPE: Final[int]
    JAILHOUSE_ENABLE: Final[int]
    JAILHOUSE_DISABLE: Final[int]
    JAILHOUSE_CELL_CREATE: Final[int]
    JAILHOUSE_CELL_LOAD: Final[int]
    JAILHOUSE_CELL_START: Final[int]
    JAILHOUSE_CELL_DESTROY: Final[int]
    JH_IOC_NONE: Final[int]
    JH_IOC_WRITE: Final[int]
    JH_IOC_READ: Final[int]

    # config format (fact sheet section 3)
    JAILHOUSE_CONFIG_REVISION: Final[int]
    JAILHOUSE_X86: Final[int]
    JAILHOUSE_ARM: Final[int]
    JAILHOUSE_ARM64: Final[int]
    JAILHOUSE_SIGNATURE_LEN: Final[int]
    JAILHOUSE_CELL_NAME_MAXLEN: Final[int]
    JAILHOUSE_MAX_IOMMU_UNITS: Final[int]
    JAILHOUSE_PCI_MSI_64BITS: Final[int]
    JAILHOUSE_PCI_MSI_MASKABLE: Final[int]
    JAILHOUSE_CELL_DESC_SIGNATURE: Final[CData]
    JAILHOUSE_SYSTEM_SIGNATURE: Final[CData]

    def jh_ioctl(self, fd: int, request: int, arg: int, /) -> int: ...
    def jh_ioc_dir(self, request: int, /) -> int: ...
    def jh_ioc_type(self, request: int, /) -> int: ...
    def jh_ioc_nr(self, request: int, /) -> int: ...
    def jh_ioc_size(self, request: int, /) -> int: ...

ffi: FFI
lib: Lib
