using Mamba2.Model.Modules;
using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// The precision policy through the model: a layer whose projections run in fp32-fast or bf16 against the float64
/// layer, at the mode's tolerance, forward and every gradient. Where the build or device cannot run a mode, setting
/// it must fail with a reason (and MAMBA2_TEST_REQUIRE turns that into a failure, as for the GEMM tests).
/// </summary>
public class PrecisionTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    [Fact]
    public void NamesToleranceAndDefault()
    {
        foreach (var p in Enum.GetValues<Precision>())
        {
            Assert.True(PrecisionPolicy.TryParse(p.Name().ToUpperInvariant(), out var parsed));
            Assert.Equal(p, parsed);
        }

        Assert.False(PrecisionPolicy.TryParse("fp8", out _));
        Assert.Equal([1e-5, 2e-3, 1e-2], Enum.GetValues<Precision>().Select(p => p.Tolerance()));
        Assert.Null(PrecisionPolicy.WhyNot(Device, Precision.Fp32));
        var expected = !Device.Info.IsCpu && PrecisionPolicy.WhyNot(Device, Precision.Fp32Fast) is null ? Precision.Fp32Fast : Precision.Fp32;
        Assert.Equal(expected, PrecisionPolicy.DefaultFor(Device));
    }

    /// <summary>bf16ViaF16: bf16's products as scaled f16 (MAMBA2_BF16_PRODUCTS=f16), what devices without bf16 cooperative matrices run.</summary>
    [Theory]
    [InlineData(Precision.Fp32Fast, true, false)]
    [InlineData(Precision.Fp32Fast, false, false)]
    [InlineData(Precision.Bf16, true, false)]
    [InlineData(Precision.Bf16, false, true)]
    public void LayerMatchesTheFloat64LayerAtTheModesTolerance(Precision precision, bool causal, bool bf16ViaF16)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        using var tuning = OpTuning.Override(Device, t => t with { Bf16Products = bf16ViaF16 ? GemmOperands.Bf16ViaF16 : null });
        var config = new Mamba2Config(DModel: 32) { DState = 8, HeadDim = 8, NGroups = 2, ChunkSize = 16, Causal = causal };
        const int b = 2, l = 29;
        using var layer = Mamba2Layer.Initialize(Device, config, rng);
        if (!PrecisionAvailability.Runs(Device, precision))
        {
            var e = Assert.Throws<MissingFeatureException>(() => layer.Precision = precision);
            Assert.Contains(precision.Name(), e.Message);
            return;
        }

        layer.Precision = precision;
        Assert.Equal(TensorDType.F32, layer.ActivationType);   // fp32 activations unless asked for
        layer.StoreActivationsAsBf16 = true;
        var what = $"{precision.Name()}{(bf16ViaF16 ? " via f16" : "")} causal {causal} seed {seed}";
        var error = LayerCheck.AgainstFloat64(Device, layer, b, l, rng, precision.Tolerance(), what);

        // Not an fp32 run by accident: the output is off the exact one by more than fp32 rounding.
        Assert.True(error > 1e-5, $"{what}: as exact as fp32 ({error})");

        // In bf16 the SSD's activations are bf16 tensors (where the device has 16-bit storage), fp32 otherwise.
        var expected = precision == Precision.Bf16 && Device.Capabilities.Storage16Bit ? TensorDType.BF16 : TensorDType.F32;
        Assert.Equal(expected, layer.ActivationType);
        using var u = Tensor.FromArray(Device, "u", TestMath.Uniform(rng, b * l * config.DModel, -1, 1), b, l, config.DModel);
        using var acts = layer.Forward(u);
        Assert.All(new[] { acts.X, acts.B, acts.C, acts.Ssd.Y }, t => Assert.Equal(expected, t.DType));

        // in_proj's output (z, xBC, dt) too, written bf16 by the KHR product where it runs (this layer has no bias).
        var projected = expected == TensorDType.BF16 && TensorCoreGemm.IsAvailable(Device, precision.Operands(Device), TensorCoreApi.Khr)
            ? TensorDType.BF16
            : TensorDType.F32;
        Assert.Equal(projected, layer.InProjOutputType);
        Assert.Equal(projected, acts.XBC.Tensor.DType);
        Assert.Equal(TensorDType.F32, acts.Dt.DType);
    }

    [Theory]
    [InlineData(Precision.Fp32Fast)]
    [InlineData(Precision.Bf16)]
    public void ALayerOnPackedInputIsTheLayerOnItsTensor(Precision precision)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var config = new Mamba2Config(DModel: 32) { DState = 8, HeadDim = 8, NGroups = 2, ChunkSize = 16 };
        const int b = 2, l = 23;
        using var layer = Mamba2Layer.Initialize(Device, config, rng);
        using var u = Tensor.FromArray(Device, "u", TestMath.Uniform(rng, b * l * config.DModel, -1, 1), b, l, config.DModel);
        using var dout = Tensor.FromArray(Device, "dout", TestMath.Uniform(rng, b * l * config.DModel, -1, 1), b, l, config.DModel);
        if (!PrecisionAvailability.Runs(Device, precision))
        {
            return;
        }

        using (var fp32Packed = Gemm.Pack(u, precision))
        {
            // A packed input is only for the products of its precision.
            var refused = Assert.Throws<ArgumentException>(() => layer.Forward(fp32Packed));
            Assert.Contains("u", refused.ParamName);
        }

        layer.Precision = precision;
        using var packed = Gemm.Pack(u, precision);
        using var fromTensor = layer.Forward(u);
        using var fromPacked = layer.Forward(packed);
        var what = $"{precision.Name()} seed {seed}";
        Assert.True(fromTensor.Output.ToArray().SequenceEqual(fromPacked.Output.ToArray()), $"{what}: outputs differ");
        var (duTensor, gradsTensor) = layer.Backward(dout, fromTensor);
        var (duPacked, gradsPacked) = layer.Backward(dout, fromPacked);
        using (duTensor)
        using (duPacked)
        {
            Assert.True(duTensor.ToArray().SequenceEqual(duPacked.ToArray()), $"{what}: du differs");
        }

        foreach (var (name, g) in gradsTensor)
        {
            using (g)
            using (var other = gradsPacked[name])
            {
                Assert.True(g.ToArray().SequenceEqual(other.ToArray()), $"{what}: grad {name} differs");
            }
        }

        using var narrow = Tensor.FromArray(Device, "v", TestMath.Uniform(rng, b * l * 16, -1, 1), b, l, 16);
        using var narrowPacked = Gemm.Pack(narrow, precision);
        Assert.Throws<ArgumentException>(() => layer.Forward(narrowPacked));
    }

    [Theory]
    [InlineData("bf16", GemmOperands.Bf16)]
    [InlineData(" F16 ", GemmOperands.Bf16ViaF16)]
    [InlineData("auto", null)]
    [InlineData(null, null)]
    public void Bf16ProductsVariableNamesAForm(string? text, GemmOperands? expected) =>
        Assert.Equal(expected, OpTuning.ParseBf16Products(text));

    [Fact]
    public void UnknownBf16ProductsNameTheVariable()
    {
        var e = Assert.Throws<ArgumentException>(() => OpTuning.ParseBf16Products("fp8"));
        Assert.Contains($"{OpTuning.Bf16ProductsVariable}=fp8", e.Message);
    }

    [Fact]
    public void ForcedBf16ProductsAreWhatBf16Multiplies()
    {
        using (OpTuning.Override(Device, t => t with { Bf16Products = GemmOperands.Bf16ViaF16 }))
        {
            Assert.Equal(GemmOperands.Bf16ViaF16, Precision.Bf16.Operands(Device));
            Assert.Equal((GemmOperands.Bf16ViaF16, OperandStaging.Converted), PrecisionPolicy.GemmOf(Precision.Bf16, Device));
        }

        // Unforced: bf16 where the device multiplies it, else the f16 form where that runs (lavapipe), else bf16's refusal.
        var auto = Precision.Bf16.Operands(Device);
        Assert.Equal(TensorCoreGemm.IsAvailable(Device, GemmOperands.Bf16) || !TensorCoreGemm.IsAvailable(Device, GemmOperands.Bf16ViaF16)
            ? GemmOperands.Bf16 : GemmOperands.Bf16ViaF16, auto);
        Assert.Equal(GemmOperands.F16, Precision.Fp32Fast.Operands(Device));
    }

    [Fact]
    public void TheModelsPrecisionIsEveryLayers()
    {
        var config = new Mamba2LMConfig(VocabSize: 7, NLayer: 2, new Mamba2Config(DModel: 16) { DState = 8, HeadDim = 8, ChunkSize = 16 });
        using var lm = Mamba2LM.Initialize(Device, config, new Random(3));
        Assert.Equal(Precision.Fp32, lm.Precision);
        var target = PrecisionPolicy.WhyNot(Device, Precision.Fp32Fast) is null ? Precision.Fp32Fast : Precision.Fp32;
        lm.Precision = target;
        Assert.All(lm.Layers, block => Assert.Equal(target, block.Mixer.Precision));
    }
}
