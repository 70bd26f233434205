using Mamba2.Model.Modules;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

public class Mamba2LayerTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    private static Mamba2Config Small(bool causal, bool dHasHdim, bool normPerGroup) => new(DModel: 16)
    {
        NormPerGroup = normPerGroup,
        DState = 8,
        HeadDim = 8,
        NGroups = 2,
        ChunkSize = 16,
        Causal = causal,
        DHasHdim = dHasHdim,
    };

    [Theory]
    [InlineData(true, false, true)]
    [InlineData(false, true, true)]   // bidirectional layer, D per (h, p)
    [InlineData(true, false, false)]  // the gated norm over all of d_inner, as transformers has it
    public void OutputAndEveryGradientMatchTheFloat64Layer(bool causal, bool dHasHdim, bool normPerGroup)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var config = Small(causal, dHasHdim, normPerGroup);
        const int b = 2, l = 37;
        using var layer = Mamba2Layer.Initialize(Device, config, rng);
        LayerCheck.AgainstFloat64(Device, layer, b, l, rng, 1e-5, $"causal {causal} D_has_hdim {dHasHdim} norm per group {normPerGroup} seed {seed}");
    }

    [Fact]
    public void TypedParametersAreTheNamedOnes()
    {
        var config = new Mamba2Config(DModel: 32) { DState = 16, HeadDim = 16 };
        using var layer = Mamba2Layer.Initialize(Device, config, new Random(5));
        Assert.Same(layer["in_proj.weight"], layer.InProjWeight);
        Assert.Same(layer["conv1d.weight"], layer.Conv1dWeight);
        Assert.Same(layer["dt_bias"], layer.DtBias);
        Assert.Same(layer["A_log"], layer.ALog);
        Assert.Same(layer["D"], layer.D);
        Assert.Same(layer["norm.weight"], layer.NormWeight);
        Assert.Same(layer["out_proj.weight"], layer.OutProjWeight);
        Assert.Equal(config.ConvBias, layer.Conv1dBias is not null);
        Assert.Equal(config.Bias, layer.InProjBias is not null);
        Assert.Equal(config.Bias, layer.OutProjBias is not null);
    }

    [Fact]
    public void InitializationFollowsMambaSsm()
    {
        var config = new Mamba2Config(DModel: 32) { DState = 16, HeadDim = 16 };
        using var layer = Mamba2Layer.Initialize(Device, config, new Random(5));
        var aLog = layer["A_log"].ToArray();
        Assert.All(aLog, v => Assert.InRange(Math.Exp(v), 1.0 - 1e-6, 16.0 + 1e-6));
        var dtBias = layer["dt_bias"].ToArray();
        // softplus(dt_bias) is the initial dt, log-uniform in [dt_min, dt_max].
        Assert.All(dtBias, v => Assert.InRange(Math.Log(1 + Math.Exp(v)), 0.001 - 1e-6, 0.1 + 1e-6));
        Assert.All(layer["D"].ToArray(), v => Assert.Equal(1f, v));
        Assert.Equal([config.DInProj, 32], layer["in_proj.weight"].Shape);
        Assert.Equal([config.ConvDim, 1, 4], layer["conv1d.weight"].Shape);
        Assert.True(Mamba2.Model.Training.Trainer.Decays("backbone.layers.0.mixer.in_proj.weight"));
        Assert.False(Mamba2.Model.Training.Trainer.Decays("backbone.layers.0.mixer.A_log"));
        Assert.Throws<ArgumentException>(() => new Mamba2Config(DModel: 30) { HeadDim = 16 }.Validate());
    }
}
