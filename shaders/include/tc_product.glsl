// The tensor-core product step the SSD's tensor-core kernels share (shaders/tc/chunk_*.comp): a BM x BN tile of
// fp32 accumulators per workgroup, grown by acc += A B for one BM x BK slice A and one BK x BN slice B at a time.
// The including kernel defines, before including this file:
//   spec constants BM, BN, BK, WM, WN (a subgroup's block), TM, TN, TK (a cooperative-matrix shape the device
//   lists), the workgroup size (local_size_x_id = 0: (BM / WM) (BN / WN) subgroups), a push block `p`;
//   vec4 word_a(uint r, uint c) and vec4 word_b(uint r, uint c): 4 consecutive elements of the slice as stored in
//   memory (row r of the stored tile, columns c..c+3), zero outside the problem, with masks and decay weights
//   applied in fp32. A slice is stored row-major (A: BM x BK, B: BK x BN) or, when its memory is contiguous along
//   the other dimension, column-major (A: BK rows of BM, B: BN rows of BK); tc_product says which.
// Operands are rounded as they are staged in shared memory: with OPERAND_BF16 to bf16 (fp32's range, nothing to
// scale); otherwise to f16 after multiplying each slice by the power of two that maps its largest |x| into
// [2^14, 2^15) (operand_scale.glsl), divided out exactly when the slice's product joins the accumulators. Per
// slice, because the SSD's operands (decayed C.B^T, decay-weighted x) span more than f16's range across a chunk.
// OPERAND_BF16_VALUES (f16 operands) rounds each element to bf16 before it is scaled: bf16's products on devices
// whose cooperative matrices take f16 only (f16 holds a scaled bf16 value exactly).
// Staging works in words of 4 elements (one 16-byte load, the bits in two 32-bit shared cells), as the GEMM does.
// A kernel may define TC_STAGED as a function of its own that tc_product calls after staging a slice, before the
// barrier that publishes it: shared stores of its own that the barrier then publishes too.
// With TC_RUN the kernel may walk its slices with tc_run (below). With TC_PIPELINED as well it splits each word in
// two: vec4 load_a(r, c) / load_b(r, c), the raw words from memory (zero outside the problem), and vec4
// finish_a(v, r, c) / finish_b(v, r, c), their masks and weights, applied when the slice is staged; tc_run then
// issues a slice's loads before the products of the slice before (their registers stay live across those products),
// and a kernel may define TC_FETCHED as a function of its own, returning whether it stored anything, that tc_run
// calls once the first slice's loads are issued: shared stores that finishing reads, published by a barrier of
// their own.
#ifndef MAMBA2_TC_PRODUCT_GLSL
#define MAMBA2_TC_PRODUCT_GLSL

#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#include "operand_scale.glsl"

#include "operand_pack.glsl"
#include "tensor_elems.glsl"
#ifdef OPERAND_BF16_VALUES
#include "bf16_bits.glsl"
#define TC_ROUND(v) bf16_round(v)
#else
#define TC_ROUND(v) (v)
#endif

#define TC_ACC coopmat<float, gl_ScopeSubgroup, TM, TN, gl_MatrixUseAccumulator>

const uint TC_THREADS = gl_WorkGroupSize.x;
const uint TC_WARPS_N = BN / WN;
const uint TC_SUBGROUPS = (BM / WM) * (BN / WN);
const uint TC_FRAGS_M = WM / TM;
const uint TC_FRAGS_N = WN / TN;
const uint TC_FRAGS = TC_FRAGS_M * TC_FRAGS_N;
const uint TC_PAD4 = 2;   // words of pad per stored row: breaks bank conflicts between rows
// A slice's words: BM x BK elements either way; the stored row length (in words) depends on the layout.
const uint TC_A_WORDS = BM * BK / 4;
const uint TC_B_WORDS = BK * BN / 4;
const uint TC_A_PER = (TC_A_WORDS + TC_THREADS - 1) / TC_THREADS;
const uint TC_B_PER = (TC_B_WORDS + TC_THREADS - 1) / TC_THREADS;
// Room for either layout.
const uint TC_A_TILE4 = BM * (BK / 4 + TC_PAD4) > BK * (BM / 4 + TC_PAD4) ? BM * (BK / 4 + TC_PAD4) : BK * (BM / 4 + TC_PAD4);
const uint TC_B_TILE4 = BN * (BK / 4 + TC_PAD4) > BK * (BN / 4 + TC_PAD4) ? BN * (BK / 4 + TC_PAD4) : BK * (BN / 4 + TC_PAD4);

// The operand tiles (A at 0, B at TC_A_TILE4; operand_pack.glsl) and, once a tile's products are done, the
// epilogue's per-subgroup fragment staging (tc_frag_*) share one array: on the H200 the SSD kernels' workgroups per
// SM were bounded by shared memory, and the 8 KiB of a separate staging area cost them 15-27% (docs/PERF.md).
const uint TC_AB_WORDS = TC_A_TILE4 + TC_B_TILE4;
const uint TC_FRAG_WORDS = TC_SUBGROUPS * TM * TN / 2;   // in words of 8 bytes, as the tiles
shared uint tc_ab[2 * (TC_AB_WORDS > TC_FRAG_WORDS ? TC_AB_WORDS : TC_FRAG_WORDS)];   // 32-bit cells (docs/PERF.md)

// Word w of the operand tiles (4 operands' bits, operand_pack.glsl).
void tc_store_word(uint w, uvec2 v) {
    tc_ab[2 * w] = v.x;
    tc_ab[2 * w + 1] = v.y;
}

shared float tc_max[2 * TC_SUBGROUPS];

#ifdef TC_PIPELINED
vec4 load_a(uint r, uint c);
vec4 load_b(uint r, uint c);
vec4 finish_a(vec4 v, uint r, uint c);
vec4 finish_b(vec4 v, uint r, uint c);
#define TC_LOAD_A load_a
#define TC_LOAD_B load_b
#define TC_FINISH_A(v, r, c) finish_a(v, r, c)
#define TC_FINISH_B(v, r, c) finish_b(v, r, c)
#else
vec4 word_a(uint r, uint c);
vec4 word_b(uint r, uint c);
#define TC_LOAD_A word_a
#define TC_LOAD_B word_b
#define TC_FINISH_A(v, r, c) (v)
#define TC_FINISH_B(v, r, c) (v)
#endif

void tc_zero(out TC_ACC acc[TC_FRAGS]) {
    [[unroll]] for (uint f = 0; f < TC_FRAGS; ++f) {
        acc[f] = TC_ACC(0.0);
    }
}

float max4(vec4 v) {
    const vec4 a = abs(v);
    return max(max(a.x, a.y), max(a.z, a.w));
}

// Word q of this invocation's share of a slice of `words` words stored in rows of row4 words: whether it exists, its
// row and its first column. Where the workgroup covers whole rows (the tiles' usual case) an invocation's words are
// a fixed number of rows apart, so a kernel's strided reads (TC_WORD4) cost one multiply-add each. Rows of 8 words
// (10 with the pad) take operand_pack.glsl's paired_rows, so that their shared stores meet on no bank.
bool tc_word(uint q, uint row4, uint words, out uint r, out uint c) {
    const uint tid = gl_LocalInvocationID.x;
    if (row4 == 8 && TC_THREADS % 64 == 0 && words % TC_THREADS == 0) {
        const uvec2 rc = paired_rows(tid, 8);
        r = rc.x + q * (TC_THREADS / 8);
        c = rc.y * 4;
        return true;
    }
    if (TC_THREADS % row4 == 0) {
        r = tid / row4 + q * (TC_THREADS / row4);
        c = (tid % row4) * 4;
    } else {
        const uint w = tid + q * TC_THREADS;
        r = w / row4;
        c = (w % row4) * 4;
    }
    return words % TC_THREADS == 0 || tid + q * TC_THREADS < words;
}

// A slice's words as this invocation loaded them (tc_fetch), until tc_stage stores them.
vec4 tc_va[TC_A_PER];
vec4 tc_vb[TC_B_PER];

// Words per stored row of A and of B in these layouts: a_cols (A stored column-major: BK rows of BM), b_cols (B
// stored column-major: BN rows of BK).
uint tc_a_row4(bool a_cols) {
    return (a_cols ? BM : BK) / 4;
}

uint tc_b_row4(bool b_cols) {
    return (b_cols ? BK : BN) / 4;
}

// Loads the current slice's words (word_a, word_b; TC_PIPELINED: load_a, load_b) into tc_va, tc_vb.
void tc_fetch(bool a_cols, bool b_cols) {
    [[unroll]] for (uint q = 0; q < TC_A_PER; ++q) {
        uint r, c;
        tc_va[q] = tc_word(q, tc_a_row4(a_cols), TC_A_WORDS, r, c) ? TC_LOAD_A(r, c) : vec4(0.0);
    }
    [[unroll]] for (uint q = 0; q < TC_B_PER; ++q) {
        uint r, c;
        tc_vb[q] = tc_word(q, tc_b_row4(b_cols), TC_B_WORDS, r, c) ? TC_LOAD_B(r, c) : vec4(0.0);
    }
}

// The fetched words finished (TC_PIPELINED: finish_a, finish_b, with the slice's state as the kernel now describes
// it), their largest magnitudes in ma, mb.
void tc_finish(bool a_cols, bool b_cols, out float ma, out float mb) {
    ma = 0.0;
    mb = 0.0;
    [[unroll]] for (uint q = 0; q < TC_A_PER; ++q) {
        uint r, c;
        if (tc_word(q, tc_a_row4(a_cols), TC_A_WORDS, r, c)) {
            tc_va[q] = TC_FINISH_A(tc_va[q], r, c);
        }
        ma = max(ma, max4(tc_va[q]));
    }
    [[unroll]] for (uint q = 0; q < TC_B_PER; ++q) {
        uint r, c;
        if (tc_word(q, tc_b_row4(b_cols), TC_B_WORDS, r, c)) {
            tc_vb[q] = TC_FINISH_B(tc_vb[q], r, c);
        }
        mb = max(mb, max4(tc_vb[q]));
    }
}

// Stores the fetched slice into the operand tiles and publishes it (after every subgroup's products on the slice
// before); sa, sb: the f16 operands' scales (1 for bf16).
void tc_stage(bool a_cols, bool b_cols, out float sa, out float sb) {
    const uint a_row4 = tc_a_row4(a_cols);
    const uint b_row4 = tc_b_row4(b_cols);
    const uint a_stride4 = a_row4 + TC_PAD4;
    const uint b_stride4 = b_row4 + TC_PAD4;
    float ma, mb;
    tc_finish(a_cols, b_cols, ma, mb);
#ifdef OPERAND_BF16
    barrier();   // the previous slice's fragments are loaded: the tiles can be overwritten
    sa = 1.0;
    sb = 1.0;
#else
    ma = subgroupMax(ma);
    mb = subgroupMax(mb);
    if (subgroupElect()) {
        tc_max[gl_SubgroupID] = ma;
        tc_max[TC_SUBGROUPS + gl_SubgroupID] = mb;
    }
    barrier();   // also: the previous slice's fragments are loaded
    [[unroll]] for (uint s = 0; s < TC_SUBGROUPS; ++s) {
        ma = max(ma, tc_max[s]);
        mb = max(mb, tc_max[TC_SUBGROUPS + s]);
    }
    sa = operand_scale(floatBitsToUint(ma));
    sb = operand_scale(floatBitsToUint(mb));
#endif
    [[unroll]] for (uint q = 0; q < TC_A_PER; ++q) {
        uint r, c;
        if (tc_word(q, a_row4, TC_A_WORDS, r, c)) {
            tc_store_word(r * a_stride4 + c / 4, pack4(TC_ROUND(tc_va[q]) * sa));
        }
    }
    [[unroll]] for (uint q = 0; q < TC_B_PER; ++q) {
        uint r, c;
        if (tc_word(q, b_row4, TC_B_WORDS, r, c)) {
            tc_store_word(TC_A_TILE4 + r * b_stride4 + c / 4, pack4(TC_ROUND(tc_vb[q]) * sb));
        }
    }
#ifdef TC_STAGED
    TC_STAGED();   // the kernel's own shared stores, published by the barrier below
#endif
    barrier();
}

// acc += A B for the staged slice, scaled by sa, sb.
void tc_mma(inout TC_ACC acc[TC_FRAGS], bool a_cols, bool b_cols, float sa, float sb) {
    const uint a_stride4 = tc_a_row4(a_cols) + TC_PAD4;
    const uint b_stride4 = tc_b_row4(b_cols) + TC_PAD4;
    const uint wm0 = (gl_SubgroupID / TC_WARPS_N) * WM;
    const uint wn0 = (gl_SubgroupID % TC_WARPS_N) * WN;
#ifdef OPERAND_BF16
#define TC_INTO acc
#else
    TC_ACC part[TC_FRAGS];
    tc_zero(part);
#define TC_INTO part
#endif
    [[unroll]] for (uint kk = 0; kk < BK; kk += TK) {
        coopmat<OPERAND, gl_ScopeSubgroup, TM, TK, gl_MatrixUseA> fa[TC_FRAGS_M];
        [[unroll]] for (uint i = 0; i < TC_FRAGS_M; ++i) {
            const uint r = wm0 + i * TM;
            if (a_cols) {
                coopMatLoad(fa[i], tc_ab, 2 * (kk * a_stride4 + r / 4), 2 * a_stride4, gl_CooperativeMatrixLayoutColumnMajor);
            } else {
                coopMatLoad(fa[i], tc_ab, 2 * (r * a_stride4 + kk / 4), 2 * a_stride4, gl_CooperativeMatrixLayoutRowMajor);
            }
        }
        [[unroll]] for (uint j = 0; j < TC_FRAGS_N; ++j) {
            const uint c = wn0 + j * TN;
            coopmat<OPERAND, gl_ScopeSubgroup, TK, TN, gl_MatrixUseB> fb;
            if (b_cols) {
                coopMatLoad(fb, tc_ab, 2 * (TC_A_TILE4 + c * b_stride4 + kk / 4), 2 * b_stride4, gl_CooperativeMatrixLayoutColumnMajor);
            } else {
                coopMatLoad(fb, tc_ab, 2 * (TC_A_TILE4 + kk * b_stride4 + c / 4), 2 * b_stride4, gl_CooperativeMatrixLayoutRowMajor);
            }
            [[unroll]] for (uint i = 0; i < TC_FRAGS_M; ++i) {
                TC_INTO[i * TC_FRAGS_N + j] = coopMatMulAdd(fa[i], fb, TC_INTO[i * TC_FRAGS_N + j]);
            }
        }
    }
#ifndef OPERAND_BF16
    // Powers of two, divided out one at a time (their product may leave fp32's range): exact.
    const float ia = 1.0 / sa;
    const float ib = 1.0 / sb;
    [[unroll]] for (uint f = 0; f < TC_FRAGS; ++f) {
        acc[f] = acc[f] + (part[f] * ia) * ib;
    }
#endif
#undef TC_INTO
}

// acc += A B for the current slice. Every invocation of the workgroup calls it together, with the same layouts.
void tc_product(inout TC_ACC acc[TC_FRAGS], bool a_cols, bool b_cols) {
    float sa, sb;
    tc_fetch(a_cols, b_cols);
    tc_stage(a_cols, b_cols, sa, sb);
    tc_mma(acc, a_cols, b_cols, sa, sb);
}

#ifdef TC_RUN
// acc += A B over the slices k = kb, kb + BK, ... below ke, all in the same layouts: the kernel defines
// void tc_slice(uint k), which describes slice k (its globals, for the words). Call it with constant layouts, so
// that each walk compiles to a loop of its own.
void tc_slice(uint k);

void tc_run(inout TC_ACC acc[TC_FRAGS], uint kb, uint ke, bool a_cols, bool b_cols) {
#ifdef TC_PIPELINED
    if (kb >= ke) {
        return;
    }
    tc_slice(kb);
    tc_fetch(a_cols, b_cols);
#ifdef TC_FETCHED
    // The kernel's shared stores that finishing reads (true when it made some), made while the first slice's loads
    // are in flight.
    if (TC_FETCHED()) {
        barrier();
    }
#endif
    for (uint k = kb; k < ke; k += BK) {
        float sa, sb;
        tc_stage(a_cols, b_cols, sa, sb);
        if (k + BK < ke) {   // the next slice's loads, in flight during this slice's products
            tc_slice(k + BK);
            tc_fetch(a_cols, b_cols);
        }
        tc_mma(acc, a_cols, b_cols, sa, sb);
    }
#else
    for (uint k = kb; k < ke; k += BK) {
        tc_slice(k);
        tc_product(acc, a_cols, b_cols);
    }
#endif
}
#endif

// The epilogue, fragment by fragment through a small staging area per subgroup (KHR fragments do not expose their
// elements' coordinates): calls the kernel's tc_element(i, j, v) for every element (i, j) of the BM x BN tile and,
// with TC_ROW_DOTS, takes each staged fragment's row dots (below). Shared memory is kept this small on purpose: on
// the H200 a 17 KiB output tile cut the workgroups an SM holds (docs/PERF.md). After one workgroup barrier
// (tc_frags_begin: the staging area is the operand tiles' memory) each subgroup works alone.

// Element e of the staging area (each subgroup's at gl_SubgroupID * TM * TN, a fragment row-major), in tc_ab.
float tc_frag_get(uint e) {
    return uintBitsToFloat(tc_ab[e]);
}

// Elements e to e + 3 (a quad of a fragment row).
vec4 tc_frag_get4(uint e) {
    return vec4(tc_frag_get(e), tc_frag_get(e + 1), tc_frag_get(e + 2), tc_frag_get(e + 3));
}

void tc_frag_set(uint e, float v) {
    tc_ab[e] = floatBitsToUint(v);
}

void tc_frag_store(TC_ACC acc, uint at) {
    coopMatStore(acc, tc_ab, at, TN, gl_CooperativeMatrixLayoutRowMajor);
}

// Before an epilogue's first staging: every subgroup's last products have read the operand tiles it overwrites.
// (The next slice's staging waits, in tc_product, for every subgroup's epilogue in turn.)
void tc_frags_begin() {
    barrier();
}

void tc_element(uint i, uint j, float v);
#ifdef TC_QUADS
// With TC_QUADS the kernel takes the epilogue's elements four row neighbours at a time instead: tc_quad(i, j, v),
// elements (i, j) to (i, j + 3), so that its reads and writes of memory can be words (TN is a multiple of 4).
void tc_quad(uint i, uint j, vec4 v);
#endif

#if defined(TC_ROW_DOTS) || defined(TC_ROW_PARTS)
// Row dots, for a kernel that defines TC_ROW_DOTS as the condition under which tc_epilogue takes them: for each row
// i of the tile, the dot of its accumulators with a row of another tensor, one part per fragment column (each over
// its columns in a fixed order), then tc_row_dots_done sums each row's parts in order (deterministic). The kernel defines
//   bool tc_row_partner(uint i, out uint base): whether row i lies inside the problem, and where its partner starts;
//   bool tc_partner(uint base, uint j, out float v): the partner of the tile's column j, false past the tensor;
//   void tc_row_dot(uint i, float dot): row i's dot (for the rows inside the problem).
// A kernel with an epilogue of its own defines TC_ROW_PARTS instead, writes tc_row_parts itself and needs no
// tc_partner.
shared float tc_row_parts[BM * (BN / TN)];

bool tc_row_partner(uint i, out uint base);
void tc_row_dot(uint i, float dot);
#endif

#ifdef TC_ROW_DOTS
bool tc_partner(uint base, uint j, out float v);

void tc_fragment_row_dots(uint row0, uint col0, uint at) {
    for (uint q = gl_SubgroupInvocationID; q < TM; q += gl_SubgroupSize) {
        float dot = 0.0;
        uint base;
        if (tc_row_partner(row0 + q, base)) {
            // Each lane starts at its own column: lanes read rows TN apart, on one bank when they start together.
            for (uint c0 = 0; c0 < TN; ++c0) {
                const uint c = (c0 + q) % TN;
                float v;
                if (tc_partner(base, col0 + c, v)) {
                    dot = fma(v, tc_frag_get(at + q * TN + c), dot);
                }
            }
        }
        tc_row_parts[(row0 + q) * (BN / TN) + col0 / TN] = dot;
    }
}
#endif

#if defined(TC_ROW_DOTS) || defined(TC_ROW_PARTS)
// After a tc_epilogue that took row dots; every invocation of the workgroup calls it.
void tc_row_dots_done() {
    barrier();
    for (uint i = gl_LocalInvocationID.x; i < BM; i += TC_THREADS) {
        uint base;
        if (tc_row_partner(i, base)) {
            float sum = 0.0;
            for (uint k = 0; k < BN / TN; ++k) {
                sum += tc_row_parts[i * (BN / TN) + k];
            }
            tc_row_dot(i, sum);
        }
    }
    barrier();   // the parts are read before the next epilogue writes them
}
#endif

void tc_epilogue(TC_ACC acc[TC_FRAGS]) {
    const uint wm0 = (gl_SubgroupID / TC_WARPS_N) * WM;
    const uint wn0 = (gl_SubgroupID % TC_WARPS_N) * WN;
    const uint at = gl_SubgroupID * TM * TN;
    tc_frags_begin();
    [[unroll]] for (uint i = 0; i < TC_FRAGS_M; ++i) {
        [[unroll]] for (uint j = 0; j < TC_FRAGS_N; ++j) {
            tc_frag_store(acc[i * TC_FRAGS_N + j], at);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
#ifdef TC_QUADS
            for (uint e = 4 * gl_SubgroupInvocationID; e < TM * TN; e += 4 * gl_SubgroupSize) {
                tc_quad(wm0 + i * TM + e / TN, wn0 + j * TN + e % TN, tc_frag_get4(at + e));
            }
#else
            for (uint e = gl_SubgroupInvocationID; e < TM * TN; e += gl_SubgroupSize) {
                tc_element(wm0 + i * TM + e / TN, wn0 + j * TN + e % TN, tc_frag_get(at + e));
            }
#endif
#ifdef TC_ROW_DOTS
            if (TC_ROW_DOTS) {
                tc_fragment_row_dots(wm0 + i * TM, wn0 + j * TN, at);
            }
#endif
            subgroupMemoryBarrierShared();
            subgroupBarrier();
        }
    }
}

// The accumulators straight to a row-major fp32 matrix in memory (row stride `ld`) at the tile's origin `at`:
// for tiles wholly inside it.
#define TC_STORE_DIRECT(acc, buf, at, ld) { \
    const uint wm0_ = (gl_SubgroupID / TC_WARPS_N) * WM; \
    const uint wn0_ = (gl_SubgroupID % TC_WARPS_N) * WN; \
    [[unroll]] for (uint i_ = 0; i_ < TC_FRAGS_M; ++i_) { \
        [[unroll]] for (uint j_ = 0; j_ < TC_FRAGS_N; ++j_) { \
            coopMatStore(acc[i_ * TC_FRAGS_N + j_], buf, (at) + (wm0_ + i_ * TM) * (ld) + wn0_ + j_ * TN, ld, gl_CooperativeMatrixLayoutRowMajor); \
        } \
    } \
}

// The word (4 elements) at row r, column c of a slice whose rows lie at a fixed stride in memory: `at` is the vec4
// index of the slice's first word and `step` the vec4 words from one row to the next (negative where a mirrored
// chunk walks the sequence backwards). For slices wholly inside their tensor with rows on 16-byte boundaries: no
// bounds test, and the address is one multiply-add (tc_word).
// LD4(buf4, i) reads word i of buf4 (TC_PLAIN: as declared; TC_TWORD4 below: through tensor_elems.glsl).
#define TC_PLAIN(arr, i) arr[i]
#define TC_WORD4_BY(LD4, buf4, at, step, r, c) LD4(buf4, (at) + int(r) * (step) + int((c) / 4u))
#define TC_WORD4(buf4, at, step, r, c) TC_WORD4_BY(TC_PLAIN, buf4, at, step, r, c)

// Four elements of a row of `len` elements starting at `at` (the row's element c), zero past the row's end: one
// 16-byte load when the whole word is inside and aligned (whole: the row starts on a 16-byte boundary).
#define TC_LOAD4_BY(LD, LD4, buf, buf4, at, c, len, whole) \
    ((whole) && (c) + 4 <= (len) ? LD4(buf4, (at) / 4) \
     : vec4((c) < (len) ? LD(buf, (at)) : 0.0, (c) + 1 < (len) ? LD(buf, (at) + 1) : 0.0, \
            (c) + 2 < (len) ? LD(buf, (at) + 2) : 0.0, (c) + 3 < (len) ? LD(buf, (at) + 3) : 0.0))
#define TC_LOAD4(buf, buf4, at, c, len, whole) TC_LOAD4_BY(TC_PLAIN, TC_PLAIN, buf, buf4, at, c, len, whole)

// The same for the tensors declared with tensor_elems.glsl's types (fp32 or, with TENSORS_BF16, bf16).
#define TC_TWORD4(buf4, at, step, r, c) TC_WORD4_BY(TENSOR_LOAD4, buf4, at, step, r, c)
#define TC_TLOAD4(buf, buf4, at, c, len, whole) TC_LOAD4_BY(TENSOR_LOAD, TENSOR_LOAD4, buf, buf4, at, c, len, whole)

#endif
