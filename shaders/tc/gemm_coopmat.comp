#version 450
// Tensor-core GEMM, batched, fp32 out (bf16 with OUT_BF16):
//   C[z] = alpha * op(A[z]) * op(B[z]) + beta * C[z]        (row-major; op = transpose when TRANS_A / TRANS_B)
// Same interface and layouts as nn/gemm.comp. A and B are fp32, rounded to OPERAND (f16, or bf16 with
// OPERAND_BF16) as they are staged in shared memory, or already OPERAND in memory (INPUT16: half the bytes to
// read, nothing to convert); products accumulate in fp32 cooperative matrices.
//
// Variants (docs/DESIGN.md, "Tensor-core variants"):
//   default      VK_KHR_cooperative_matrix, subgroup scope: the workgroup is a grid of subgroups, each owning a
//                WM x WN block of TM x TN accumulators (TM x TN x TK: a shape the device lists).
//   COOPMAT2     VK_NV_cooperative_matrix2, workgroup scope: one BM x BN accumulator per workgroup, the driver
//                distributes it; the epilogue stores through a clamped tensor layout. With INPUT16 the operands
//                are loaded straight from memory through clamped tensor layouts (DIRECT): the driver stages them.
// The K loop reads the next slice from global memory into registers while the current one is multiplied, then
// writes it to the other shared buffer (one barrier per slice) or, with BUFFERS = 1 (wider tiles in the same
// shared memory), to the same buffer once every subgroup has read it (two barriers per slice). Tiles inside both
// matrices walk their whole slices in a loop of their own whose loads have no branch around them and are issued a
// whole iteration before their stores (docs/PERF.md: faster than the general loop, most at long K).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#ifdef COOPMAT2
#extension GL_NV_cooperative_matrix2 : require
#endif
#if defined(COOPMAT2) && defined(INPUT16)
#define DIRECT
#endif
#extension GL_EXT_shader_16bit_storage : require
#include "operand_pack.glsl"
// Global words are 16 bytes: 4 fp32 operands, rounded and packed into one 8-byte shared word (a uvec2) as they are
// stored, or 8 operands already 16-bit in memory, loaded as their bits (for the reason operand_pack.glsl gives) and
// stored whole as one 16-byte shared word (a uvec4). GW: operands per word, in memory and in the shared tiles.
#ifdef INPUT16
#include "operand_scale.glsl"
#define ELEMENT uint16_t                 // what A and B hold: the operands' bits
#define LANE uint                        // an operand's bits in a register
#define WORD uvec4
#define SWORD uvec4
#define GW 8
#define PUT(tile, at, v) tile[at] = (v);
#else
#define ELEMENT float
#define LANE float
#define WORD vec4
#define SWORD uvec2
#define GW 4
#define PUT(tile, at, v) tile[at] = pack4(v);
#endif

layout(local_size_x_id = 0) in;             // KHR: (BM / WM) * (BN / WN) subgroups; coopmat2: the listed invocations
layout(constant_id = 1) const uint BM = 64;
layout(constant_id = 2) const uint BN = 64;
layout(constant_id = 3) const uint BK = 32;
layout(constant_id = 4) const uint WM = 32;  // one subgroup's block (KHR variant)
layout(constant_id = 5) const uint WN = 32;
layout(constant_id = 6) const uint TM = 16;  // the cooperative-matrix shape (KHR variant)
layout(constant_id = 7) const uint TN = 16;
layout(constant_id = 8) const uint TK = 16;
layout(constant_id = 9) const bool TRANS_A = false;
layout(constant_id = 10) const bool TRANS_B = false;
layout(constant_id = 11) const uint BUFFERS = 2;   // shared tiles the K slices alternate between (1 or 2)
const uint THREADS = gl_WorkGroupSize.x;

layout(std430, binding = 0) readonly buffer BufA { ELEMENT A[]; };
layout(std430, binding = 1) readonly buffer BufB { ELEMENT B[]; };
// The same buffers as global words: interior tiles of operands whose rows start word-aligned load GW at once.
layout(std430, binding = 0) readonly buffer BufA4 { WORD A4[]; };
layout(std430, binding = 1) readonly buffer BufB4 { WORD B4[]; };
#ifdef INPUT16
// A and B were multiplied by these tensors' power-of-two scales when they were converted: the products are
// divided by both (exactly) in the epilogue. Each operand's own scale word, bound where its writer left it.
layout(std430, binding = 3) readonly buffer ScaleA { uint a_scale_bits[]; };
layout(std430, binding = 4) readonly buffer ScaleB { uint b_scale_bits[]; };
#endif
#ifdef DIRECT
// The driver's tensor loads read the operands as what they are.
layout(std430, binding = 0) readonly buffer BufAT { OPERAND AT[]; };
layout(std430, binding = 1) readonly buffer BufBT { OPERAND BT[]; };
#endif
#ifdef OUT_BF16
// C as bf16 (a KHR variant): the product rounded once to nearest even as it is stored, so that a tensor its next
// kernels read at 2 bytes an element costs no fp32 copy and no conversion pass. Every fragment goes through the
// staging area, in pairs of neighbours (one 32-bit store where the rows start even).
#ifdef COOPMAT2
#error "OUT_BF16 is built for the KHR variant only"
#endif
#include "bf16_bits.glsl"
layout(std430, binding = 2) buffer BufC { uint16_t C16[]; };
layout(std430, binding = 2) buffer BufCW { uint CW[]; };
#define C_LOAD(i) uintBitsToFloat(uint(C16[i]) << 16)
#define C_STORE(i, v) C16[i] = uint16_t(bf16_bits(v))
#else
layout(std430, binding = 2) buffer BufC { float C[]; };
#endif

layout(push_constant) uniform Push {
    uint M, N, K;
    uint lda, ldb, ldc;
    uint batch;
    uint strideA, strideB, strideC;
    float alpha, beta;
    uint kLast;   // the last batch entry's K (a split K whose last part is shorter), else K
} p;

uint kz;   // K of the batch entry being computed: p.K, or p.kLast for the last

// Shared tiles keep the stored layout of the operand (its contiguous dimension along the tile's rows), in words of
// GW operands; the cooperative loads read rows of words. A pad of 16 bytes per row breaks bank conflicts between the
// rows the cooperative loads read. Tile widths along a row are multiples of GW (the host checks).
const uint PAD = 8 / GW;                      // words of pad per stored row (16 bytes)
const uint A_ROWS = TRANS_A ? BK : BM;        // stored tile: A_ROWS x A_COLS operands
const uint A_COLS = TRANS_A ? BM : BK;
const uint A_WPR = A_COLS / GW;               // words per stored row
const uint A_STRIDE = A_WPR + PAD;            // shared words per stored row
const uint B_ROWS = TRANS_B ? BN : BK;
const uint B_COLS = TRANS_B ? BK : BN;
const uint B_WPR = B_COLS / GW;
const uint B_STRIDE = B_WPR + PAD;
const uint A_TILE = A_ROWS * A_STRIDE;
const uint B_TILE = B_ROWS * B_STRIDE;
#ifndef DIRECT
shared SWORD As[BUFFERS * A_TILE];   // operand_pack.glsl
shared SWORD Bs[BUFFERS * B_TILE];
#endif

const uint A_WORDS = BM * BK / GW;
const uint B_WORDS = BN * BK / GW;
const uint A_PER_THREAD = (A_WORDS + THREADS - 1) / THREADS;
const uint B_PER_THREAD = (B_WORDS + THREADS - 1) / THREADS;

#ifndef COOPMAT2
const uint WARPS_N = BN / WN;
const uint FRAGS_M = WM / TM;
const uint FRAGS_N = WN / TN;
const uint SUBGROUPS = (BM / WM) * (BN / WN);
shared float Cs[SUBGROUPS * TM * TN];  // per-subgroup staging of one fragment for edge tiles and alpha / beta
#endif

// Which word of a stored tile (wpr words a row, `words` in all) invocation tid takes as its word w = tid + i THREADS:
// its row and word column. Row-major in w, except for rows of 4 words of 16 bytes, which operand_pack.glsl's
// paired_rows stages without bank conflicts. (The test is made here, not as spec-constant booleans: spirv-opt fails
// on those.)
uvec2 tile_word(uint w, uint wpr, uint words) {
    const bool pairs = GW == 8 && wpr == 4 && words % THREADS == 0 && THREADS % 32 == 0;
    if (!pairs) {
        return uvec2(w / wpr, w % wpr);
    }
    const uvec2 rc = paired_rows(w % THREADS, 4);
    return uvec2(rc.x + (w / THREADS) * (THREADS / 4), rc.y);
}

// GLSL cannot pass a buffer to a function: the operand's loads name theirs by a flag, constant at every call.
WORD global_word(bool a, uint at) {
    if (a) {
        return A4[at / GW];
    }
    return B4[at / GW];
}

// An operand as 32 bits: its bits (INPUT16) or its value.
LANE global_element(bool a, uint at) {
    if (a) {
        return LANE(A[at]);
    }
    return LANE(B[at]);
}

// Word w of a stored tile (wpr words a row, `words` in all) of operand A (a) or B: GW consecutive operands of the
// stored matrix (rows x cols, rows ld apart) from its row row0 and column col0 on, zero outside the matrix.
// whole: the operand's rows are 16-byte aligned, so an in-range word is one 16-byte load.
WORD operand_word(bool a, uint base, uint row0, uint col0, uint rows, uint cols, uint ld, uint wpr, uint words, uint w,
                  bool whole) {
    const uvec2 rc = tile_word(w, wpr, words);
    const uint gr = row0 + rc.x;
    const uint gc = col0 + rc.y * GW;
    if (w >= words || gr >= rows) {
        return WORD(0);
    }
    const uint at = base + gr * ld + gc;
    if (whole && gc + GW <= cols) {
        return global_word(a, at);
    }
#ifdef INPUT16
    uint e[8];
    [[unroll]] for (uint i = 0; i < 8; ++i) {
        e[i] = gc + i < cols ? global_element(a, at + i) : 0u;
    }
    return uvec4(e[0] | e[1] << 16, e[2] | e[3] << 16, e[4] | e[5] << 16, e[6] | e[7] << 16);
#else
    vec4 v = vec4(0.0);
    [[unroll]] for (uint i = 0; i < 4; ++i) {
        v[i] = gc + i < cols ? global_element(a, at + i) : 0.0;
    }
    return v;
#endif
}

// A's stored rows are k (transposed) or m, B's n (transposed) or k.
WORD a_word(uint base, uint row0, uint k0, uint w, bool whole) {
    return operand_word(true, base, TRANS_A ? k0 : row0, TRANS_A ? row0 : k0, TRANS_A ? kz : p.M, TRANS_A ? p.M : kz,
                        p.lda, A_WPR, A_WORDS, w, whole);
}

WORD b_word(uint base, uint col0, uint k0, uint w, bool whole) {
    return operand_word(false, base, TRANS_B ? col0 : k0, TRANS_B ? k0 : col0, TRANS_B ? p.N : kz, TRANS_B ? kz : p.N,
                        p.ldb, B_WPR, B_WORDS, w, whole);
}

// Interior slices: where the operand's rows start word-aligned and the slice lies inside the matrix, invocation
// tid's words sit at a fixed stride from a base fixed for the tile, one vector load each with no bounds test and no
// division (the general a_word/b_word cost about as much as the products at the projections' shapes). Used when every
// invocation loads whole rows' words in step: THREADS a multiple of the words per stored row, the tile a multiple
// of THREADS words.
#ifndef DIRECT
const bool A_STRIDED = A_WORDS % THREADS == 0 && THREADS % A_WPR == 0;
const bool B_STRIDED = B_WORDS % THREADS == 0 && THREADS % B_WPR == 0;

#define LOAD_STRIDED_A(slice) [[unroll]] for (uint i = 0; i < A_PER_THREAD; ++i) { ra[i] = A4[atA + (slice) * sliceA + i * stepA]; }
#define LOAD_STRIDED_B(slice) [[unroll]] for (uint i = 0; i < B_PER_THREAD; ++i) { rb[i] = B4[atB + (slice) * sliceB + i * stepB]; }

#define LOAD_SLICE(k0, slice) \
    if (A_STRIDED && interiorA && (k0) + BK <= kz) { \
        LOAD_STRIDED_A(slice) \
    } else { \
        [[unroll]] for (uint i = 0; i < A_PER_THREAD; ++i) { ra[i] = a_word(baseA, row0, (k0), tid + i * THREADS, wholeA); } \
    } \
    if (B_STRIDED && interiorB && (k0) + BK <= kz) { \
        LOAD_STRIDED_B(slice) \
    } else { \
        [[unroll]] for (uint i = 0; i < B_PER_THREAD; ++i) { rb[i] = b_word(baseB, col0, (k0), tid + i * THREADS, wholeB); } \
    }

void store_a(uint buf, uint w, WORD v) {
    if (w < A_WORDS) {
        const uvec2 rc = tile_word(w, A_WPR, A_WORDS);
        PUT(As, buf * A_TILE + rc.x * A_STRIDE + rc.y, v)
    }
}

void store_b(uint buf, uint w, WORD v) {
    if (w < B_WORDS) {
        const uvec2 rc = tile_word(w, B_WPR, B_WORDS);
        PUT(Bs, buf * B_TILE + rc.x * B_STRIDE + rc.y, v)
    }
}

// A slice's words into shared buffer buf, at the same fixed strides where the loads take them (every word in range).
#define STORE_SLICE(buf) \
    if (A_STRIDED) { \
        [[unroll]] for (uint i = 0; i < A_PER_THREAD; ++i) { PUT(As, (buf) * A_TILE + shA + i * (THREADS / A_WPR * A_STRIDE), ra[i]) } \
    } else { \
        [[unroll]] for (uint i = 0; i < A_PER_THREAD; ++i) { store_a((buf), tid + i * THREADS, ra[i]); } \
    } \
    if (B_STRIDED) { \
        [[unroll]] for (uint i = 0; i < B_PER_THREAD; ++i) { PUT(Bs, (buf) * B_TILE + shB + i * (THREADS / B_WPR * B_STRIDE), rb[i]) } \
    } else { \
        [[unroll]] for (uint i = 0; i < B_PER_THREAD; ++i) { store_b((buf), tid + i * THREADS, rb[i]); } \
    }
#endif

// One K slice's products from shared buffer cur into acc (a macro: acc and the block's names are main's). KHR: each
// subgroup's fragments (r: a fragment's tile row; offsets in words).
#ifdef COOPMAT2
#define MULTIPLY_SLICE(cur) \
        coopmat<OPERAND, gl_ScopeWorkgroup, BM, BK, gl_MatrixUseA> ma; \
        coopmat<OPERAND, gl_ScopeWorkgroup, BK, BN, gl_MatrixUseB> mb; \
        coopMatLoad(ma, As, cur * A_TILE, A_STRIDE, layoutA); \
        coopMatLoad(mb, Bs, cur * B_TILE, B_STRIDE, layoutB); \
        acc = coopMatMulAdd(ma, mb, acc);
#else
#define MULTIPLY_SLICE(cur) \
        [[unroll]] for (uint kk = 0; kk < BK; kk += TK) { \
            coopmat<OPERAND, gl_ScopeSubgroup, TM, TK, gl_MatrixUseA> ma[FRAGS_M]; \
            [[unroll]] for (uint i = 0; i < FRAGS_M; ++i) { \
                const uint r = wm0 + i * TM; \
                const uint off = TRANS_A ? kk * A_STRIDE + r / GW : r * A_STRIDE + kk / GW; \
                coopMatLoad(ma[i], As, cur * A_TILE + off, A_STRIDE, layoutA); \
            } \
            [[unroll]] for (uint j = 0; j < FRAGS_N; ++j) { \
                const uint c = wn0 + j * TN; \
                const uint off = TRANS_B ? c * B_STRIDE + kk / GW : kk * B_STRIDE + c / GW; \
                coopmat<OPERAND, gl_ScopeSubgroup, TK, TN, gl_MatrixUseB> mb; \
                coopMatLoad(mb, Bs, cur * B_TILE + off, B_STRIDE, layoutB); \
                [[unroll]] for (uint i = 0; i < FRAGS_M; ++i) { \
                    acc[i * FRAGS_N + j] = coopMatMulAdd(ma[i], mb, acc[i * FRAGS_N + j]); \
                } \
            } \
        }
#endif

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint tilesN = (p.N + BN - 1) / BN;
    const uint tilesM = (p.M + BM - 1) / BM;
    const uint tiles = tilesN * tilesM;
    const uint groups = gl_NumWorkGroups.x * gl_NumWorkGroups.y;
    const int layoutA = TRANS_A ? gl_CooperativeMatrixLayoutColumnMajor : gl_CooperativeMatrixLayoutRowMajor;
    const int layoutB = TRANS_B ? gl_CooperativeMatrixLayoutColumnMajor : gl_CooperativeMatrixLayoutRowMajor;
    const bool wholeA = p.lda % GW == 0 && (p.batch == 1 || p.strideA % GW == 0);
    const bool wholeB = p.ldb % GW == 0 && (p.batch == 1 || p.strideB % GW == 0);
#ifdef INPUT16
    const float alpha = p.alpha / operand_scale(a_scale_bits[0]) / operand_scale(b_scale_bits[0]);   // each exact
#else
    const float alpha = p.alpha;
#endif

    for (uint z = gl_WorkGroupID.z; z < p.batch; z += gl_NumWorkGroups.z) {
        kz = z + 1 == p.batch ? p.kLast : p.K;
        const uint slices = (kz + BK - 1) / BK;
        const uint baseA = z * p.strideA;
        const uint baseB = z * p.strideB;
        const uint baseC = z * p.strideC;
        for (uint tile = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x; tile < tiles; tile += groups) {
            const uint row0 = (tile / tilesN) * BM;
            const uint col0 = (tile % tilesN) * BN;

#ifdef COOPMAT2
            coopmat<float, gl_ScopeWorkgroup, BM, BN, gl_MatrixUseAccumulator> acc =
                coopmat<float, gl_ScopeWorkgroup, BM, BN, gl_MatrixUseAccumulator>(0.0);
#else
            const uint sg = gl_SubgroupID;
            const uint wm0 = (sg / WARPS_N) * WM;  // this subgroup's block inside the tile
            const uint wn0 = (sg % WARPS_N) * WN;
            coopmat<float, gl_ScopeSubgroup, TM, TN, gl_MatrixUseAccumulator> acc[FRAGS_M * FRAGS_N];
            [[unroll]] for (uint i = 0; i < FRAGS_M * FRAGS_N; ++i) {
                acc[i] = coopmat<float, gl_ScopeSubgroup, TM, TN, gl_MatrixUseAccumulator>(0.0);
            }
#endif

#ifdef DIRECT
            // Operands through clamped tensor layouts: zero outside the matrix, so edge tiles and a K that is no
            // multiple of BK need no test; a transposed operand is read through a transposing view.
            tensorLayoutNV<2, gl_CooperativeMatrixClampModeConstantNV> la = createTensorLayoutNV(2, gl_CooperativeMatrixClampModeConstantNV);
            tensorLayoutNV<2, gl_CooperativeMatrixClampModeConstantNV> lb = createTensorLayoutNV(2, gl_CooperativeMatrixClampModeConstantNV);
            la = setTensorLayoutDimensionNV(la, TRANS_A ? kz : p.M, TRANS_A ? p.M : kz);
            la = setTensorLayoutStrideNV(la, p.lda, 1);
            lb = setTensorLayoutDimensionNV(lb, TRANS_B ? p.N : kz, TRANS_B ? kz : p.N);
            lb = setTensorLayoutStrideNV(lb, p.ldb, 1);
            tensorViewNV<2, false, 1, 0> transposed = createTensorViewNV(2, false, 1, 0);
            for (uint k0 = 0; k0 < kz; k0 += BK) {
                coopmat<OPERAND, gl_ScopeWorkgroup, BM, BK, gl_MatrixUseA> ma;
                coopmat<OPERAND, gl_ScopeWorkgroup, BK, BN, gl_MatrixUseB> mb;
                if (TRANS_A) {
                    coopMatLoadTensorNV(ma, AT, baseA, sliceTensorLayoutNV(la, k0, BK, row0, BM), transposed);
                } else {
                    coopMatLoadTensorNV(ma, AT, baseA, sliceTensorLayoutNV(la, row0, BM, k0, BK));
                }
                if (TRANS_B) {
                    coopMatLoadTensorNV(mb, BT, baseB, sliceTensorLayoutNV(lb, col0, BN, k0, BK), transposed);
                } else {
                    coopMatLoadTensorNV(mb, BT, baseB, sliceTensorLayoutNV(lb, k0, BK, col0, BN));
                }
                acc = coopMatMulAdd(ma, mb, acc);
            }
#else
            // The strided loads' words (units of GW operands): this invocation's first word of slice 0, the step
            // between its words and the step between slices.
            const bool interiorA = wholeA && row0 + BM <= p.M;
            const bool interiorB = wholeB && col0 + BN <= p.N;
            const uvec2 wa = tile_word(tid, A_WPR, A_WORDS);   // this invocation's first word: row, word column
            const uvec2 wb = tile_word(tid, B_WPR, B_WORDS);
            const uint atA = (baseA + (TRANS_A ? wa.x * p.lda + row0 : (row0 + wa.x) * p.lda)) / GW + wa.y;
            const uint stepA = THREADS / A_WPR * p.lda / GW;
            const uint sliceA = TRANS_A ? BK * p.lda / GW : BK / GW;
            const uint atB = (baseB + (TRANS_B ? (col0 + wb.x) * p.ldb : wb.x * p.ldb + col0)) / GW + wb.y;
            const uint stepB = THREADS / B_WPR * p.ldb / GW;
            const uint sliceB = TRANS_B ? BK / GW : BK * p.ldb / GW;
            const uint shA = wa.x * A_STRIDE + wa.y;   // this invocation's first word in a shared tile
            const uint shB = wb.x * B_STRIDE + wb.y;
            WORD ra[A_PER_THREAD];
            WORD rb[B_PER_THREAD];
            LOAD_SLICE(0, 0);
            barrier();  // the previous tile's last reads of buffer 0 are done
            STORE_SLICE(0);
            barrier();

            uint s = 0;
            // Interior tiles, while the next slice lies inside K: slice t + 1's strided loads, unconditional, are
            // issued at the end of iteration t - 1 and stored after slice t's products, across the loop's back edge.
            // (The spec-constant terms are interleaved with the others: grouped first, spirv-opt fails on this loop.)
            if (A_STRIDED && interiorA && B_STRIDED && interiorB) {
                const uint whole = kz / BK;
                if (whole > 1) {
                    LOAD_STRIDED_A(1)
                    LOAD_STRIDED_B(1)
                }
                for (uint t = 0; t + 1 < whole; ++t) {
                    MULTIPLY_SLICE(t % BUFFERS);
                    if (BUFFERS == 1) {
                        barrier();
                    }
                    STORE_SLICE((t + 1) % BUFFERS);
                    const uint ahead = min(t + 2, whole - 1);   // the last iteration loads a slice again, unused
                    LOAD_STRIDED_A(ahead)
                    LOAD_STRIDED_B(ahead)
                    barrier();
                }
                s = whole > 0 ? whole - 1 : 0;
            }
            for (; s < slices; ++s) {
                const uint cur = s % BUFFERS;
                const bool more = s + 1 < slices;
                if (more) {
                    LOAD_SLICE((s + 1) * BK, s + 1);
                }

                MULTIPLY_SLICE(cur);

                if (more) {
                    if (BUFFERS == 1) {
                        barrier();   // one buffer: every subgroup is done reading this slice before it is overwritten
                    }
                    STORE_SLICE((s + 1) % BUFFERS);
                }
                barrier();
            }
#endif

#ifdef COOPMAT2
            // Clamped layouts drop out-of-range stores and read C only inside the matrix.
            tensorLayoutNV<2, gl_CooperativeMatrixClampModeConstantNV> lc = createTensorLayoutNV(2, gl_CooperativeMatrixClampModeConstantNV);
            lc = setTensorLayoutDimensionNV(lc, p.M, p.N);
            lc = setTensorLayoutStrideNV(lc, p.ldc, 1);
            acc = acc * alpha;
            if (p.beta != 0.0) {
                coopmat<float, gl_ScopeWorkgroup, BM, BN, gl_MatrixUseAccumulator> old;
                coopMatLoadTensorNV(old, C, baseC, sliceTensorLayoutNV(lc, row0, BM, col0, BN));
                acc = acc + old * p.beta;
            }
            coopMatStoreTensorNV(acc, C, baseC, sliceTensorLayoutNV(lc, row0, BM, col0, BN));
#else
            const bool plain = alpha == 1.0 && p.beta == 0.0;
            const uint lane = gl_SubgroupInvocationID;
            [[unroll]] for (uint i = 0; i < FRAGS_M; ++i) {
                [[unroll]] for (uint j = 0; j < FRAGS_N; ++j) {
                    const uint gr = row0 + wm0 + i * TM;
                    const uint gc = col0 + wn0 + j * TN;
                    // Whole fragments go straight to C; edge fragments, or alpha / beta, through this subgroup's
                    // staging area, element by element. Every subgroup passes the same subgroup barriers whichever
                    // way its fragments go: lavapipe lost later fragments' stores when subgroups of one workgroup
                    // passed different numbers of them (docs/PERF.md).
#ifdef OUT_BF16
                    coopMatStore(acc[i * FRAGS_N + j], Cs, sg * TM * TN, TN, gl_CooperativeMatrixLayoutRowMajor);
#else
                    const bool direct = plain && gr + TM <= p.M && gc + TN <= p.N;
                    if (direct) {
                        coopMatStore(acc[i * FRAGS_N + j], C, baseC + gr * p.ldc + gc, p.ldc, gl_CooperativeMatrixLayoutRowMajor);
                    } else {
                        coopMatStore(acc[i * FRAGS_N + j], Cs, sg * TM * TN, TN, gl_CooperativeMatrixLayoutRowMajor);
                    }
#endif
                    subgroupMemoryBarrierShared();
                    subgroupBarrier();
#ifdef OUT_BF16
                    // Neighbours in pairs (TN is even), one loop kept rolled: unrolled for every fragment, the CPU
                    // driver's compiler took minutes over it.
                    const bool words = (p.ldc | baseC | gc) % 2 == 0;
                    [[dont_unroll]] for (uint e = 2 * lane; e < TM * TN; e += 2 * gl_SubgroupSize) {
                        const uint r = gr + e / TN;
                        const uint c = gc + e % TN;
                        if (r >= p.M || c >= p.N) {
                            continue;
                        }
                        const uint at = baseC + r * p.ldc + c;
                        vec2 v = alpha * vec2(Cs[sg * TM * TN + e], Cs[sg * TM * TN + e + 1]);
                        if (words && c + 1 < p.N) {
                            if (p.beta != 0.0) {
                                const uint old = CW[at / 2];
                                v += p.beta * vec2(uintBitsToFloat(old << 16), uintBitsToFloat(old & 0xFFFF0000u));
                            }
                            CW[at / 2] = bf16_bits(v.x) | bf16_bits(v.y) << 16;
                        } else {
                            C_STORE(at, p.beta == 0.0 ? v.x : v.x + p.beta * C_LOAD(at));
                            if (c + 1 < p.N) {
                                C_STORE(at + 1, p.beta == 0.0 ? v.y : v.y + p.beta * C_LOAD(at + 1));
                            }
                        }
                    }
#else
                    if (!direct) {
                        for (uint e = lane; e < TM * TN; e += gl_SubgroupSize) {
                            const uint r = gr + e / TN;
                            const uint c = gc + e % TN;
                            if (r < p.M && c < p.N) {
                                const uint at = baseC + r * p.ldc + c;
                                const float v = alpha * Cs[sg * TM * TN + e];
                                C[at] = p.beta == 0.0 ? v : v + p.beta * C[at];
                            }
                        }
                    }
#endif
                    subgroupMemoryBarrierShared();
                    subgroupBarrier();
                }
            }
#endif
        }
    }
}
