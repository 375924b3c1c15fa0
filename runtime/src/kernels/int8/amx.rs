//! Intel AMX (Advanced Matrix Extensions) blocks of the int8 GEMM: the sums of up to 32 rows of
//! A times one or two packed panels of B, in the tile registers.
//!
//! AMX's `tdpbusd` multiplies a tile of u8 (16 rows of 64 bytes: 16 rows of A, 64 steps of k) by
//! a tile of s8 (16 rows of 64 bytes: 16 groups of four steps of k, each row the four values of
//! 16 columns) and adds the products into a tile of i32 (16 rows of 16 columns): 16,384
//! multiply-adds per instruction, exact, where one AVX512-VNNI `vpdpbusd` does 64. The packed
//! panels of `gemm.rs` are already in the layout of the second operand (a panel's groups 16j to
//! 16j + 15 are the 1,024 bytes from `1024 j`), and a row-major A is read as it is, with its
//! row stride: nothing is repacked.
//!
//! A block uses all eight tile registers: `tmm0`..`tmm3` hold the sums (row tile `i`, panel `j`
//! in `tmm(2i + j)`), `tmm4` and `tmm5` the two row tiles of A, `tmm6` and `tmm7` the two
//! panels. Depth runs in chunks of 16 groups; the last, partial chunk is copied into zeroed
//! buffers on the stack so that the tiles never read past A's rows or a panel's end. A block of
//! at most 16 rows gives its second row tile one row, read from the first row of A (one row of
//! work, never stored). Rust code never touches the tile registers, so they keep their values
//! from one `asm!` block to the next.
//!
//! The operating system must let the process use the tile data: on Linux, `arch_prctl` with
//! `ARCH_REQ_XCOMP_PERM`, asked once in [`is_available`]. Where it refuses, or on another
//! system, the int8 kernels run AVX512-VNNI.

use super::gemm::{K_GROUP, NR};
use super::kernels::{TILE_COLS, TileOperands};
use std::arch::asm;

/// Rows of one tile of A or of sums.
pub(crate) const TILE_ROWS: usize = 16;
/// The most rows of one block: two tiles of A.
pub(crate) const BLOCK_ROWS: usize = 2 * TILE_ROWS;
/// Groups of `K_GROUP` steps of k in one tile of B (64 bytes of A per tile row).
pub(crate) const CHUNK_GROUPS: usize = 16;
/// Bytes of one tile row.
const TILE_ROW_BYTES: usize = 64;
/// Bytes of one chunk of one panel: a full tile of B.
const CHUNK_BYTES: usize = CHUNK_GROUPS * NR * K_GROUP;

/// The sums of one block: `BLOCK_ROWS` rows of `TILE_COLS` i32, row `r` at `r * TILE_COLS`.
pub(crate) type BlockSums = [i32; BLOCK_ROWS * TILE_COLS];

/// Whether this processor has AMX-TILE and AMX-INT8 (and AVX512F, BW and VNNI, which the
/// epilogues use), and the operating system lets this process use the tiles.
pub(crate) fn is_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    /// `arch_prctl` code that asks for permission to use an extended state component.
    const ARCH_REQ_XCOMP_PERM: libc::c_ulong = 0x1023;
    /// The XSAVE component of the tile data.
    const XFEATURE_XTILEDATA: libc::c_ulong = 18;
    let vnni = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni");
    // CPUID leaf 7, sub-leaf 0: EDX bit 24 is AMX-TILE, bit 25 AMX-INT8. (`__cpuid_count` is
    // an unsafe function before Rust 1.94, safe after.)
    #[allow(unused_unsafe)]
    // SAFETY: CPUID leaf 7 exists on every x86-64 processor that has AVX-512 (checked first).
    let features = vnni.then(|| unsafe { std::arch::x86_64::__cpuid_count(7, 0) }.edx);
    let amx = features.is_some_and(|edx| edx & (1 << 24) != 0 && edx & (1 << 25) != 0);
    // SAFETY: `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` reads no memory; it only
    // sets the process's permission, and fails (returns -1) on a kernel without AMX support.
    amx && unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    } == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// A tile configuration (`ldtilecfg`'s 64 bytes): palette 1, every tile 64 bytes wide; the
/// sums and A tiles of the first row tile `first_rows` high, of the second `second_rows`, the
/// B tiles 16 high.
#[repr(C, align(64))]
pub(crate) struct TileConfig([u8; 64]);

impl TileConfig {
    /// The configuration of a block of `rows` rows, `1..=BLOCK_ROWS`.
    pub(crate) fn for_rows(rows: usize) -> Self {
        debug_assert!((1..=BLOCK_ROWS).contains(&rows));
        let first_rows = rows.min(TILE_ROWS);
        // A block of one row tile gives the second one row (see the module's notes).
        let second_rows = (rows - first_rows).max(1);
        let mut bytes = [0u8; 64];
        bytes[0] = 1;
        // Tiles 0..3 the sums, 4 and 5 A, 6 and 7 B.
        let tile_rows = [
            first_rows,
            first_rows,
            second_rows,
            second_rows,
            first_rows,
            second_rows,
            CHUNK_GROUPS,
            CHUNK_GROUPS,
        ];
        for (tile, &rows) in tile_rows.iter().enumerate() {
            bytes[16 + 2 * tile..][..2].copy_from_slice(&(TILE_ROW_BYTES as u16).to_le_bytes());
            bytes[48 + tile] = rows as u8;
        }
        TileConfig(bytes)
    }

    /// Loads this configuration, which also zeroes every tile.
    ///
    /// # Safety
    /// The processor has AMX and the process may use it ([`is_available`]).
    pub(crate) unsafe fn load(&self) {
        // SAFETY: The caller vouches for AMX; the configuration is valid (palette 1, rows at
        // most 16, 64 bytes per row) and 64 bytes long.
        unsafe { asm!("ldtilecfg [{}]", in(reg) self.0.as_ptr(), options(nostack, readonly)) };
    }
}

/// Releases the tiles, returning them to their initial state, so that the thread's saved state
/// shrinks back when it is switched out.
///
/// # Safety
/// The processor has AMX and the process may use it ([`is_available`]).
pub(crate) unsafe fn release() {
    // SAFETY: The caller vouches for AMX; `tilerelease` touches no memory.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

/// The memory of AMX blocks, made once per task of the GEMM (zeroing it for every strip took a
/// tenth of the time of ResNet's 7x7 stem): one block's sums, and the buffers of its last,
/// partial chunk of depth.
#[repr(C, align(64))]
pub(crate) struct Scratch {
    pub(crate) sums: BlockSums,
    tail: TailScratch,
}

/// Buffers of one block's last, partial chunk: A's rows (64 bytes each), for the last rows of A,
/// and the two panels' groups. The bytes past the tail's are zero; within one GEMM every copy
/// has the same length, so they stay zero.
#[repr(C, align(64))]
struct TailScratch {
    a: [u8; BLOCK_ROWS * TILE_ROW_BYTES],
    b: [[i8; CHUNK_BYTES]; 2],
}

impl Scratch {
    pub(crate) fn new() -> Self {
        Scratch {
            sums: [0; BLOCK_ROWS * TILE_COLS],
            tail: TailScratch {
                a: [0; BLOCK_ROWS * TILE_ROW_BYTES],
                b: [[0; CHUNK_BYTES]; 2],
            },
        }
    }
}

/// Copies the last, partial chunk of `operands`' panels (if the depth has one) into `scratch`,
/// where `block_sums` reads it: once for the blocks of a strip, which share their panels.
pub(crate) fn prepare_tail(operands: &TileOperands<'_>, scratch: &mut Scratch) {
    let (full_chunks, tail_groups) = (
        operands.groups / CHUNK_GROUPS,
        operands.groups % CHUNK_GROUPS,
    );
    if tail_groups == 0 {
        return;
    }
    let panels = [operands.first_panel, operands.second_panel];
    for (panel, destination) in panels.iter().zip(&mut scratch.tail.b) {
        if !panel.is_empty() {
            destination[..tail_groups * NR * K_GROUP]
                .copy_from_slice(&panel[full_chunks * CHUNK_BYTES..][..tail_groups * NR * K_GROUP]);
        }
    }
}

/// `scratch.sums[r * TILE_COLS + j] = sum_k A[first + r][k] * B[k][j]` for the
/// `rows <= BLOCK_ROWS` rows of `operands` from `first` and its one or two panels' columns. The
/// entries of rows past `rows` (and of the second panel's columns, for one panel) are left with
/// any value.
///
/// # Safety
/// The processor has AMX and the process may use it ([`is_available`]); the tiles hold the
/// configuration `TileConfig::for_rows(rows)`; the operands are as `kernels::check_operands`
/// checks them, for rows `first..first + rows`; `scratch` has only been used for operands of
/// the same depth since it was made, and `prepare_tail` last saw these operands' panels.
pub(crate) unsafe fn block_sums(
    operands: &TileOperands<'_>,
    first: usize,
    rows: usize,
    scratch: &mut Scratch,
) {
    let Scratch {
        sums,
        tail: scratch,
    } = scratch;
    debug_assert!((1..=BLOCK_ROWS).contains(&rows) && first + rows <= operands.rows);
    let two_panels = !operands.second_panel.is_empty();
    let stride = operands.a_stride;
    let a = operands.a[first * stride..].as_ptr();
    // The second row tile's A: row 16 of the block, or the block's first row when it has one
    // row tile (its one row of sums is never read).
    let a_second = if rows > TILE_ROWS {
        a.wrapping_add(TILE_ROWS * stride)
    } else {
        a
    };
    let b = [
        operands.first_panel.as_ptr(),
        if two_panels {
            operands.second_panel.as_ptr()
        } else {
            operands.first_panel.as_ptr()
        },
    ];
    let full_chunks = operands.groups / CHUNK_GROUPS;
    let tail_groups = operands.groups % CHUNK_GROUPS;
    // SAFETY: The caller vouches for AMX and the configuration. Chunk `c` reads bytes
    // `64 c..64 c + 64` of each of the block's rows (at most `groups * K_GROUP`, which each row
    // holds), and bytes `1024 c..1024 c + 1024` of each panel (`groups * 64` bytes long).
    unsafe {
        zero(two_panels);
        if full_chunks > 0 {
            chunks(two_panels, [a, a_second], stride, b, full_chunks);
        }
    }
    if tail_groups > 0 {
        let (offset, bytes) = (full_chunks * TILE_ROW_BYTES, tail_groups * K_GROUP);
        let b = [
            scratch.b[0].as_ptr(),
            scratch.b[usize::from(two_panels)].as_ptr(),
        ];
        // The tail's 64 bytes of each row are read in place when the last row's are inside A:
        // the bytes past the tail (the row's padding, the next row's first bytes) meet the zero
        // weights past the tail in `scratch.b`. Only the last rows of A are copied.
        let in_place = (first + rows - 1) * stride + offset + TILE_ROW_BYTES <= operands.a.len();
        let (a, a_second, a_stride) = if in_place {
            (
                a.wrapping_add(offset),
                a_second.wrapping_add(offset),
                stride,
            )
        } else {
            for row in 0..rows {
                scratch.a[row * TILE_ROW_BYTES..][..bytes]
                    .copy_from_slice(&operands.a[(first + row) * stride + offset..][..bytes]);
            }
            let a = scratch.a.as_ptr();
            let a_second = if rows > TILE_ROWS {
                a.wrapping_add(TILE_ROWS * TILE_ROW_BYTES)
            } else {
                a
            };
            (a, a_second, TILE_ROW_BYTES)
        };
        // SAFETY: As above, for one chunk: in place, 64 bytes from `offset` of each of the
        // block's rows, inside A (checked just above for the last row, the furthest); or the
        // scratch's 32 rows of 64 bytes. The panels' chunk is 1,024 bytes of `scratch.b`, which
        // `prepare_tail` filled for these panels, zero past the tail's groups.
        unsafe { chunks(two_panels, [a, a_second], a_stride, b, 1) };
    }
    // SAFETY: The caller vouches for AMX and the configuration; the stores write at most
    // 16 rows of 64 bytes from rows 0 and 16 of `sums`, 128 bytes apart: inside its 32 rows.
    unsafe { store(two_panels, sums) };
}

/// Zeroes the sums' tiles.
///
/// # Safety
/// As `block_sums`.
#[inline]
unsafe fn zero(two_panels: bool) {
    // SAFETY: Passed on from the caller.
    unsafe {
        if two_panels {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
        } else {
            asm!("tilezero tmm0", "tilezero tmm2", options(nostack, nomem));
        }
    }
}

/// Adds `count >= 1` chunks of products to the sums' tiles: A's two row tiles from `a` (rows
/// `a_stride` bytes apart, the chunks 64 bytes apart), the panels from `b` (each chunk 1,024
/// bytes).
///
/// # Safety
/// As `block_sums`: the tiles are configured, and every byte the chunks read is readable.
#[inline]
unsafe fn chunks(
    two_panels: bool,
    a: [*const u8; 2],
    a_stride: usize,
    b: [*const i8; 2],
    count: usize,
) {
    debug_assert!(count >= 1);
    // The loop over chunks, with the second panel's loads, products and step given as
    // `$second` (its operands after them).
    macro_rules! chunk_loop {
        ([$($second:literal),*] $($operands:tt)*) => {
            asm!(
                "2:",
                "tileloadd tmm4, [{a0} + {stride}*1]",
                "tileloadd tmm6, [{b0} + {row}*1]",
                "tdpbusd tmm0, tmm4, tmm6",
                "tileloadd tmm5, [{a1} + {stride}*1]",
                "tdpbusd tmm2, tmm5, tmm6",
                $($second,)*
                "add {a0}, 64",
                "add {a1}, 64",
                "add {b0}, 1024",
                "dec {count}",
                "jnz 2b",
                a0 = inout(reg) a[0] => _,
                a1 = inout(reg) a[1] => _,
                b0 = inout(reg) b[0] => _,
                count = inout(reg) count => _,
                stride = in(reg) a_stride,
                row = in(reg) TILE_ROW_BYTES,
                $($operands)*
                options(nostack, readonly)
            )
        };
    }
    // SAFETY: Passed on from the caller.
    unsafe {
        if two_panels {
            chunk_loop!(
                [
                    "tileloadd tmm7, [{b1} + {row}*1]",
                    "tdpbusd tmm1, tmm4, tmm7",
                    "tdpbusd tmm3, tmm5, tmm7",
                    "add {b1}, 1024"
                ]
                b1 = inout(reg) b[1] => _,
            );
        } else {
            chunk_loop!([]);
        }
    }
}

/// Stores the sums' tiles into `sums`: row tile `i` from row `16 i`, panel `j` from column
/// `16 j`.
///
/// # Safety
/// As `block_sums`.
#[inline]
unsafe fn store(two_panels: bool, sums: &mut BlockSums) {
    let first = sums.as_mut_ptr();
    let second = sums[TILE_ROWS * TILE_COLS..].as_mut_ptr();
    let stride = TILE_COLS * size_of::<i32>();
    // The first panel's stores, then the second's (`$second`).
    macro_rules! store_tiles {
        ($($second:literal),*) => {
            asm!(
                "tilestored [{c0} + {stride}*1], tmm0",
                "tilestored [{c1} + {stride}*1], tmm2",
                $($second,)*
                c0 = in(reg) first,
                c1 = in(reg) second,
                stride = in(reg) stride,
                options(nostack)
            )
        };
    }
    // SAFETY: Passed on from the caller.
    unsafe {
        if two_panels {
            store_tiles!(
                "tilestored [{c0} + {stride}*1 + 64], tmm1",
                "tilestored [{c1} + {stride}*1 + 64], tmm3"
            );
        } else {
            store_tiles!();
        }
    }
}
