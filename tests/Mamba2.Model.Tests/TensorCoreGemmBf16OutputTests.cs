using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Model.Tests.Reference;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// The tensor-core GEMM writing a bf16 C (the KHR variant's OUT_BF16 build: in_proj's output in a bf16 model): every
/// element is the fp32 product of the same variant and tile rounded once to nearest even, bit for bit, and so within
/// bf16's tolerance of float64; edge fragments, odd row lengths (the 16-bit path), alpha and beta (which read the old C
/// as bf16) and batches included.
/// </summary>
public class TensorCoreGemmBf16OutputTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    public static TheoryData<GemmOperands, OperandStaging> Variants => new(
        (GemmOperands.F16, OperandStaging.InKernel), (GemmOperands.F16, OperandStaging.Converted), (GemmOperands.Bf16, OperandStaging.InKernel),
        (GemmOperands.Bf16, OperandStaging.Converted), (GemmOperands.Bf16ViaF16, OperandStaging.Converted));

    [Theory]
    [MemberData(nameof(Variants))]
    public void Bf16OutputIsTheFp32ProductRoundedOnce(GemmOperands operands, OperandStaging staging)
    {
        if (!Device.Capabilities.Storage16Bit)
        {
            Assert.Throws<MissingFeatureException>(() => Tensor.Empty(Device, "c", TensorDType.BF16, 4, 4));
            return;
        }

        if (TensorCoreGemm.WhyNot(Device, operands, TensorCoreApi.Khr, staging) is not null)
        {
            using var g = new GemmCase(Device, 1, 8, 8, 8, false, false, 0f);
            using var c = Tensor.Empty(Device, "c", TensorDType.BF16, 8, 8);
            Assert.Throws<MissingFeatureException>(() => Gemm.Run(g.A, g.B, c, operands: operands, staging: staging));
            Assert.False(TensorCoreGemm.WritesBf16(Device, operands));
            return;
        }

        Assert.True(TensorCoreGemm.WritesBf16(Device, operands));
        // The default tile and mostly in_proj's transposes: each specialization is a pipeline the CPU driver compiles
        // for many seconds (a large output's tile for minutes), so the cases share two. The epilogue is per fragment:
        // a larger tile only has more of them.
        TensorCoreTile Tile(int m, int n) => TensorCoreGemm.ChooseTile(Device.Capabilities, operands, TensorCoreApi.Khr, m, n,
            TensorCoreGemm.ResolveStaging(Device, operands, TensorCoreApi.Khr, staging))!;
        var small = Tile(0, 0);
        (int Batch, int M, int N, int K, bool Ta, bool Tb, float Alpha, float Beta, TensorCoreTile Tile)[] cases =
        [
            (1, 1, 1, 1, false, true, 1f, 0f, small),
            (1, 17, 33, 65, false, true, 1f, 0f, small),          // odd rows: 16-bit stores
            (1, 129, 131, 37, false, true, -0.5f, 0.75f, small),  // beta reads the old bf16 C
            (2, 33, 64, 48, false, true, 1f, 0f, small),          // batched, even rows: pairs
            (3, 19, 70, 40, true, false, 1.25f, 1f, small),
            (1, 300, 328, 64, false, true, 1f, 0f, small),        // edge fragments beside whole ones
            (1, 100, 73, 64, false, true, 0.5f, 0f, small),
        ];
        foreach (var (batch, m, n, k, ta, tb, alpha, beta, tile) in cases)
        {
            using var g = new GemmCase(Device, batch, m, n, k, ta, tb, beta);
            var what = $"{operands} {staging} {tile} b{batch} {m}x{n}x{k} ta={ta} tb={tb} alpha={alpha} beta={beta} seed {g.Seed}";
            // The old C as bf16 values in both runs, so that beta multiplies the same numbers; NaN where beta is 0 (poison).
            var old = beta == 0f ? g.CV : [.. g.CV.Select(v => TensorCoreGemmTests.Round(v, GemmOperands.Bf16))];
            using var c32 = Tensor.FromArray(Device, "c32", old, [.. g.C.Shape]);
            using var c16 = Tensor.FromArray(Device, "c16", old, TensorDType.BF16, [.. g.C.Shape]);
            Gemm.Run(g.A, g.B, c32, ta, tb, alpha, beta, operands: operands, api: TensorCoreApi.Khr, staging: staging, tensorTile: tile);
            Gemm.Run(g.A, g.B, c16, ta, tb, alpha, beta, operands: operands, api: TensorCoreApi.Auto, staging: staging, tensorTile: tile);
            var full = c32.ToArray();
            var actual = c16.ToArray();
            for (var i = 0; i < actual.Length; i++)
            {
                var expected = TensorCoreGemmTests.Round(full[i], GemmOperands.Bf16);
                Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(actual[i]),
                    $"{what}: element {i} is {actual[i]}, the fp32 product {full[i]} rounds to {expected}");
            }

            var exact = GemmReference.Run(g.AV, g.BV, old, batch, m, n, k, ta, tb, alpha, beta);
            TestMath.AssertClose(actual, exact, Precision.Bf16.Tolerance(), what + " (against float64)");
        }
    }

    [Fact]
    public void Bf16OutputsAreRefusedWhereNoTensorCoreKhrProductWritesThem()
    {
        if (!Device.Capabilities.Storage16Bit)
        {
            return;   // no bf16 tensor can be made (Bf16OutputIsTheFp32ProductRoundedOnce)
        }

        using var g = new GemmCase(Device, 1, 8, 8, 8, false, false, 0f);
        using var c = Tensor.Empty(Device, "c16", TensorDType.BF16, 8, 8);
        var e = Assert.Throws<ArgumentException>(() => Gemm.Run(g.A, g.B, c));
        Assert.Contains("c16", e.Message);
        Assert.Contains("tensor-core", e.Message);
        e = Assert.Throws<ArgumentException>(() => Gemm.Run(g.A, g.B, c, operands: GemmOperands.F16, api: TensorCoreApi.NvCooperativeMatrix2));
        Assert.Contains("KHR", e.Message);
        using (OpTuning.Override(Device, t => t with { GemmApi = TensorCoreApi.NvCooperativeMatrix2 }))
        {
            Assert.False(TensorCoreGemm.WritesBf16(Device, GemmOperands.Bf16));   // a module then keeps the output fp32
        }
    }
}
