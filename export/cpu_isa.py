"""Which x86 int8 instructions this CPU has, and which ONNX Runtime (MLAS) int8 GEMM kernel they select.

The int8 profile's error and speed both depend on the CPU that runs the graph (docs/CPU.md): the
certificate and the benchmark record it, so a number is never read as holding on another ISA.

MLAS picks its u8s8 GEMM kernel once per process from CPUID (onnxruntime
onnxruntime/core/mlas/lib/platform.cpp, `MLAS_PLATFORM::MLAS_PLATFORM()`, read at commit
0112bef28c2dad7e501228b204adbde008f7d994 - a stored snapshot of the main branch, not checked
against the pinned 1.32.0 tag): AVX2+FMA ->
`MlasGemmU8S8KernelAvx2` (vpmaddubsw: u8 x s8 pair sums in int16, saturating, then vpmaddwd);
AVX-VNNI -> `MlasGemmU8S8KernelAvxVnni`; AVX512 F+BW+DQ+VL -> `MlasGemmU8S8KernelAvx512Core`;
AVX512_VNNI on top -> `MlasGemmU8S8KernelAvx512Vnni` (vpdpbusd: int32 accumulation, no int16
step); AMX-TILE + AMX-INT8 (and the OS granting tile state) -> `MlasGemmU8S8DispatchAmx`. The
flags are read from /proc/cpuinfo (what the kernel exposes to this VM), the ladder mirrored here.

Graphs with uint8 weights (the U8U8 recipe shipped without VNNI) run the u8u8 GEMM, whose ladder
in the same constructor is shorter: AVX2+FMA -> `MlasGemmU8U8KernelAvx2` (both operands widened to
int16, vpmaddwd: no saturation); AVX512 F+BW+DQ+VL -> `MlasGemmU8U8KernelAvx512Core`;
AVX-VNNI-INT8 -> `MlasGemmU8U8DispatchAvx2Vnni` (set after the AVX-512 block, so it wins). VNNI
and AMX do not change it (vpdpbusd and AMX-INT8 multiply u8 by s8).

AVX-VNNI-INT8 (CPUID.(EAX=7,ECX=1):EDX[4]) has no /proc/cpuinfo name: Linux defines it as a
KVM-only feature (arch/x86/kvm/reverse_cpuid.h), not in arch/x86/include/asm/cpufeatures.h, whose
names /proc/cpuinfo prints. So where /proc/cpuinfo shows `avx_vnni` (every AVX-VNNI-INT8 CPU has
AVX-VNNI) the bit is read with the CPUID instruction itself (`_cpuid`); where that cannot run (a
cpuinfo file from elsewhere, or a kernel that refuses executable memory) the u8u8 kernel is
`UNKNOWN`, which never counts as the same kernel as another.
"""

from __future__ import annotations

import ctypes
import mmap
import platform
from pathlib import Path

PROC_CPUINFO = Path("/proc/cpuinfo")
# Pseudo-flag: /proc/cpuinfo shows avx_vnni, and AVX-VNNI-INT8 could not be read from CPUID.
VNNI_INT8_UNREADABLE = "avx_vnni_int8_unreadable"
UNKNOWN = "Unknown"
# The u8s8 kernels with int32 accumulation (vpdpbusd, AMX): the export ships s8 weights there
# (optimum's avx512_vnni preset) and uint8 weights everywhere else (export/int8_quantization.py).
VNNI_KERNELS = ("AvxVnni", "Avx512Vnni", "Amx")
# cpuid(leaf=edi, subleaf=esi, out=rdx) for x86-64 System V: push rbx; mov eax,edi; mov ecx,esi;
# mov r8,rdx; cpuid; mov [r8],eax; mov [r8+4],ebx; mov [r8+8],ecx; mov [r8+12],edx; pop rbx; ret
_CPUID_CODE = bytes.fromhex("5389f889f14989d00fa241890041895804418948084189500c5bc3")

# The flags each ladder reads (/proc/cpuinfo's spelling): a node with the same ones present and
# absent runs the same kernel.
U8U8_LADDER_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx_vnni_int8")
U8S8_LADDER_FLAGS = (
    "avx2",
    "fma",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512dq",
    "avx512vl",
    "avx512_vnni",
    "amx_tile",
    "amx_int8",
)
# Every flag either ladder reads.
INT8_FLAGS = tuple(dict.fromkeys(U8S8_LADDER_FLAGS + U8U8_LADDER_FLAGS))


def _cpuid(leaf: int, subleaf: int) -> tuple[int, int, int, int] | None:
    """(eax, ebx, ecx, edx) of CPUID on this CPU, run from an executable anonymous page; None on
    another architecture or where the kernel refuses executable memory."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError, AttributeError):
        return None
    try:
        page.write(_CPUID_CODE)
        view = ctypes.c_char.from_buffer(page)
        address = ctypes.addressof(view)
        del view  # the page can be closed only once no buffer exports it
        function = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32))(address)
        out = (ctypes.c_uint32 * 4)()
        function(leaf, subleaf, out)
        return (out[0], out[1], out[2], out[3])
    finally:
        page.close()


def avx_vnni_int8() -> bool | None:
    """CPUID.(EAX=7,ECX=1):EDX[4] of this CPU; None where CPUID cannot be run."""
    basic = _cpuid(0, 0)
    if basic is None:
        return None
    if basic[0] < 7:
        return False
    leaf7 = _cpuid(7, 0)
    if leaf7 is None:
        return None
    if leaf7[0] < 1:  # no subleaf 1
        return False
    leaf7_1 = _cpuid(7, 1)
    return None if leaf7_1 is None else bool(leaf7_1[3] & (1 << 4))


def vnni_int8_of(cpuinfo: Path) -> bool | None:
    """AVX-VNNI-INT8 of the CPU `cpuinfo` describes: read from CPUID for this machine's own
    /proc/cpuinfo, unknown (None) for any other file (tests replace this to say what a file's CPU has)."""
    return avx_vnni_int8() if cpuinfo == PROC_CPUINFO else None


def cpu_flags(cpuinfo: Path = PROC_CPUINFO) -> list[str]:
    """The int8-relevant flags of the first CPU listed (sorted); [] where /proc/cpuinfo is absent.
    With `avx_vnni` listed, AVX-VNNI-INT8 is read from CPUID when `cpuinfo` is this machine's
    (/proc/cpuinfo never shows it), else VNNI_INT8_UNREADABLE is added."""
    flags: list[str] = []
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = sorted(f for f in line.split(":", 1)[1].split() if f in INT8_FLAGS)
                break
    except OSError:
        return []
    if "avx_vnni" in flags and "avx_vnni_int8" not in flags:
        found = vnni_int8_of(cpuinfo)
        if found is None:
            flags = sorted([*flags, VNNI_INT8_UNREADABLE])
        elif found:
            flags = sorted([*flags, "avx_vnni_int8"])
    return flags


def mlas_u8s8_kernel(flags: list[str] | set[str]) -> str:
    """The MLAS u8s8 GEMM kernel these flags select (platform.cpp's ladder, later rungs win)."""
    have = set(flags)
    kernel = "Sse"
    if {"avx2", "fma"} <= have:
        kernel = "Avx2"
        if "avx_vnni" in have:
            kernel = "AvxVnni"
        if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= have:
            kernel = "Avx512Vnni" if "avx512_vnni" in have else "Avx512Core"
        if {"amx_tile", "amx_int8"} <= have:
            kernel = "Amx"
    return kernel


def mlas_u8u8_kernel(flags: list[str] | set[str]) -> str:
    """The MLAS u8u8 GEMM kernel these flags select (what a graph with uint8 weights runs)."""
    have = set(flags)
    kernel = "Sse"
    if {"avx2", "fma"} <= have:
        kernel = "Avx2"
        if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= have:
            kernel = "Avx512Core"
        if "avx_vnni_int8" in have:
            kernel = "Avx2Vnni"
        elif VNNI_INT8_UNREADABLE in have:
            kernel = UNKNOWN  # Avx2Vnni if the CPU has AVX-VNNI-INT8, which could not be read
    return kernel


def same_kernel(a: str, b: str) -> bool:
    """Whether two recorded kernels are known to be the same (an unknown one never is)."""
    return a == b and UNKNOWN not in (a, b)


def ships_uint8_weights(u8s8_kernel: str) -> bool:
    """The weight type the export ships for a host whose u8s8 kernel is this: s8 (optimum's
    avx512_vnni preset) on VNNI kernels, uint8 (U8U8) elsewhere (export/int8_quantization.recipe_for)."""
    return u8s8_kernel not in VNNI_KERNELS


def mlas_kernel_for(flags: list[str] | set[str], weights_uint8: bool) -> str:
    """The int8 GEMM kernel a dynamic-int8 graph runs on these flags: u8u8 for uint8 weights, else u8s8."""
    return mlas_u8u8_kernel(flags) if weights_uint8 else mlas_u8s8_kernel(flags)


# /proc/cpuinfo's spelling -> Node Feature Discovery's (klauspost/cpuid names: NFD labels a node
# feature.node.kubernetes.io/cpu-cpuid.<NAME>=true, kubernetes-sigs/node-feature-discovery
# source/cpu/cpu.go GetLabels; none of these is in its default attributeBlacklist).
NFD_NAMES = {
    "avx2": "AVX2",
    "fma": "FMA3",
    "avx_vnni": "AVXVNNI",
    "avx512f": "AVX512F",
    "avx512bw": "AVX512BW",
    "avx512dq": "AVX512DQ",
    "avx512vl": "AVX512VL",
    "avx512_vnni": "AVX512VNNI",
    "amx_tile": "AMXTILE",
    "amx_int8": "AMXINT8",
    "avx_vnni_int8": "AVXVNNIINT8",
}
NFD_LABEL_PREFIX = "feature.node.kubernetes.io/cpu-cpuid."


def node_features(flags: list[str] | set[str], weights_uint8: bool) -> dict[str, list[str]]:
    """The chart's `int8NodeFeatures` for a graph gated on these flags: the NFD features its kernel's
    ladder reads, split into those the node must have and those it must lack, so the pods land only
    where ONNX Runtime picks the kernel the export was gated on (stricter than needed: a node that
    differs in a flag without changing the outcome is also left out)."""
    have = set(flags)
    ladder = U8U8_LADDER_FLAGS if weights_uint8 else U8S8_LADDER_FLAGS
    return {
        "require": [NFD_NAMES[f] for f in ladder if f in have],
        "exclude": [NFD_NAMES[f] for f in ladder if f not in have],
    }


def describe(cpuinfo: Path = PROC_CPUINFO, weights_uint8: bool | None = None) -> dict:
    """What the certificate and the benchmark record: the flags, the kernels, the model name; with
    the shipped graph's weight type (`weights_uint8`), also the kernel that graph runs and the
    chart's int8NodeFeatures that pin CPU pods to nodes running it (docs/CPU.md)."""
    flags = cpu_flags(cpuinfo)
    model = ""
    try:
        model = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    except OSError:
        pass
    record = {
        "cpu": model,
        "int8_flags": flags,
        "mlas_u8s8_kernel": mlas_u8s8_kernel(flags),
        "mlas_u8u8_kernel": mlas_u8u8_kernel(flags),
        "vnni": any(f in flags for f in ("avx_vnni", "avx512_vnni", "amx_int8")),
        "source": str(cpuinfo),
    }
    if weights_uint8 is not None:
        record.update(
            int8_weights="uint8" if weights_uint8 else "int8",
            mlas_kernel_run=mlas_kernel_for(flags, weights_uint8),
            int8_node_features=node_features(flags, weights_uint8),
        )
    return record
